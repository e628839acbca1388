"""Anatomy of the synthetic CT phantom: tissues drawn in millimetres, in Hounsfield units.

Used by :mod:`liverseg_helpers.data.phantom`; see there for the public API. Coordinates: x from the
patient's right to left, y from front to back, z from feet to head; arrays ``[z, y, x]``.
Every shape is an implicit function (ellipsoids, smooth random fields) evaluated with numpy
broadcasting, so a 64 x 256 x 256 patient takes well under a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

from liverseg_helpers.data.phantom_parts import (
    draw_ribs,
    draw_spine,
    draw_vessels,
    ellipsoid,
    extrahepatic_mass,
    rasterise_tree,
    smooth_noise,
)

#: Field of view of the default grid: 512 pixels of 0.7 mm in-plane, 240 mm along z.
FOV_MM = 358.4
Z_EXTENT_MM = 240.0


@dataclass(frozen=True)
class AnatomyOptions:
    """Harder anatomy, off by default so that every seed keeps its patient.

    All were added after error analysis on real CT (3D-IRCADb patients 1 and 7), so a model
    trained with them has learnt from what its real test patients showed; say so when
    reporting it.

    Attributes:
        extrahepatic_masses: In 60% of patients a hypodense mass beside the liver that is *not*
            liver (adrenal or upper-pole renal tumour, like patient 7's 0.7 L mass).
        long_left_lobe: In 60% of patients the left lobe reaches far to the left, a thin
            "beaver tail" that wraps around the stomach towards the spleen.
        enhanced_liver: Liver drawn at 60-140 HU instead of 60-115 HU, and its lesions at up to
            100 HU instead of 60 HU: a strongly enhancing portal venous phase, as in
            3D-IRCADb (median liver 112 and 120 HU in patients 1 and 7).
        large_lesions: Lesion radii drawn from 4-45 mm instead of 4-24 mm, so some lesions
            are large (patient 1's largest is about 5.4 cm across). Only the lesions change: the
            liver mask of every seed stays the same.
        varied_lesions: Lesion contrast drawn from 80 HU darker to 40 HU brighter than the
            liver, never closer to it than 8 HU, instead of 25-80 HU darker: subtle and
            hyperdense lesions too, as hepatocellular carcinomas look in an arterial or an
            equilibrium phase (HCC-TACE-Seg). Set after measuring the median HU of the real
            tumour patients' lesions (37 HU darker to 26 HU brighter than their livers).
    """

    extrahepatic_masses: bool = False
    long_left_lobe: bool = False
    enhanced_liver: bool = False
    large_lesions: bool = False
    varied_lesions: bool = False

    def changed(self) -> dict:
        """The options that differ from the default (what a cohort.json records)."""
        default = AnatomyOptions()
        return {k: v for k, v in asdict(self).items() if getattr(default, k) != v}

    @property
    def suffix(self) -> str:
        """Folder-name suffix: ``""`` by default, e.g. ``"_masses_lobe"``."""
        short = {
            "extrahepatic_masses": "masses",
            "long_left_lobe": "lobe",
            "enhanced_liver": "enh",
            "large_lesions": "big",
            "varied_lesions": "varied",
        }
        return "".join(f"_{short[f.name]}" for f in fields(self) if getattr(self, f.name))


#: Every option off: the anatomy the course's phantom has always had.
DEFAULT_ANATOMY = AnatomyOptions()


def draw_patient(
    rng: np.random.Generator,
    shape,
    spacing_mm,
    origin_mm,
    lesions: bool,
    anatomy: AnatomyOptions = DEFAULT_ANATOMY,
):
    """Return ``(hu, liver, lesion_labels)`` before blur and noise (see make_phantom_case)."""
    n_z, n_y, n_x = shape
    dz, dy, dx = spacing_mm
    x = (origin_mm[0] + dx * np.arange(n_x, dtype=np.float32)).reshape(1, 1, -1)
    y = (origin_mm[1] + dy * np.arange(n_y, dtype=np.float32)).reshape(1, -1, 1)
    z = (origin_mm[2] + dz * np.arange(n_z, dtype=np.float32)).reshape(-1, 1, 1)
    x2, y2 = x[0], y[0]
    u = rng.uniform

    # Per-patient tissue values (HU, portal venous phase); the liver is not always the
    # brightest soft tissue, so intensity alone does not find it.
    # (The same number of draws with every option, so each seed keeps its other values.)
    hu_fat, hu_muscle = u(-115, -85), u(40, 60)
    hu_liver = u(60, 140) if anatomy.enhanced_liver else u(60, 115)
    hu_spleen = hu_liver + u(-15, 20)
    hu_vessel = hu_liver + u(45, 85)

    # Body outline: an ellipse with a few angular harmonics, flatter at the back.
    a_mm, b_mm = u(148, 172), u(105, 128)
    theta = np.arctan2(y2, x2)
    wobble = sum(u(0, 0.03) * np.cos(k * theta + u(0, 2 * np.pi)) for k in (2, 3, 4))
    b_eff = np.where(y2 > 0, 0.92 * b_mm, b_mm)
    rho2 = np.sqrt((x2 / a_mm) ** 2 + (y2 / b_eff) ** 2) / (1 + wobble)
    z_extent = n_z * dz
    z_dome = origin_mm[2] + z_extent - u(10, 60)
    scale_z = (1 + 0.03 * np.sin((z - z_dome) / 70 + u(0, 6))).astype(np.float32)
    rho = rho2[None] / scale_z
    fat_mm = u(8, 30) * (0.55 + 0.45 * np.clip(-np.sin(theta), 0, 1))
    wall_mm = u(9, 13)
    rho_muscle = 1 - fat_mm / b_mm
    rho_cavity = rho_muscle - wall_mm / b_mm
    body, cavity = rho < 1, rho < rho_cavity[None]

    # Diaphragm: two domes, the right one higher, dropping towards the back and sides.
    z_left = z_dome - u(5, 20)
    dome = np.maximum(
        z_dome - 45 * ((x2 + 60) / 110) ** 2 - 55 * ((y2 - 10) / 110) ** 2,
        z_left - 45 * ((x2 - 60) / 110) ** 2 - 55 * ((y2 - 10) / 110) ** 2,
    )[None]
    thorax = cavity & (z > dome)
    abdomen = cavity & (z < dome - 5)

    hu = np.full(shape, -1000.0, np.float32)
    hu[body] = hu_fat
    hu[rho < rho_muscle[None]] = hu_muscle
    hu[cavity] = hu_fat + 10
    hu[cavity & ~thorax & ~abdomen] = hu_muscle  # the diaphragm muscle
    texture = smooth_noise(rng, shape, spacing_mm, 30.0)
    hu[thorax] = -860 + 25 * texture[thorax]

    # Spine, paraspinal muscles and psoas.
    y_vb = b_mm * u(0.25, 0.33)
    y_canal = y_vb + 30
    for side in (-1, 1):
        erector = ellipsoid(x, y, z * 0, (side * 36, y_canal + 18, 0), (30, 22, 1)) < 1
        hu[erector & body] = hu_muscle
        psoas_r = np.clip((z_dome - 120 - z) * 0.15 + 8, 0, 24)
        psoas = (x - side * 40) ** 2 + (y - y_vb) ** 2 < psoas_r**2
        hu[psoas & cavity] = hu_muscle

    # Heart above the diaphragm, left of the midline.
    d_heart = ellipsoid(x, y, z, (u(5, 30), u(-40, -20), z_dome + u(25, 45)), (65, 52, 55))
    heart = (d_heart < 1) & thorax
    hu[(d_heart < 1.06) & thorax] = hu_fat + 20
    hu[heart] = np.where(d_heart[heart] > 0.8, u(80, 100), u(120, 160))

    # Bowel: smooth random loops below the liver and in front, some with air.
    bowel_field = smooth_noise(rng, shape, spacing_mm, 24.0)
    bowel_field += np.clip((z_dome - 80 - z) / 80, -0.8, 1) - y / 150
    bowel = abdomen & (bowel_field > 0.1)
    hu[bowel] = u(30, 45)
    air_field = smooth_noise(rng, shape, spacing_mm, 15.0)
    lumen_bowel = abdomen & (bowel_field > 0.4)
    hu[lumen_bowel] = u(5, 25) + 15 * air_field[lumen_bowel]  # mottled contents
    hu[abdomen & (bowel_field > 0.4) & (air_field > 0.9)] = -950

    # Stomach (fluid, often an air cap in front) and spleen behind it, both left.
    c_st = (u(45, 70), u(-40, -20), z_dome - u(40, 60))
    d_st = ellipsoid(x, y, z, c_st, np.array([48, 38, 45]) * u(0.75, 1.2))
    stomach = (d_st < 1) & abdomen
    hu[stomach] = hu_muscle
    lumen = stomach & (d_st < 0.85)
    hu[lumen] = u(5, 25)
    if u() < 0.7:
        hu[lumen & (y < c_st[1] - u(0, 25))] = -950
    c_sp = (u(80, 100), u(30, 55), z_dome - u(45, 70))
    d_sp = ellipsoid(x, y, z, c_sp, np.array([30, 55, 55]) * u(0.8, 1.2))
    d_hollow = ellipsoid(x, y, z, (c_sp[0] - 45, c_sp[1] - 25, c_sp[2]), (45, 50, 70))
    spleen = (d_sp < 1) & (d_hollow > 1) & abdomen
    hu[spleen] = hu_spleen

    # Kidneys: enhancing cortex, darker medulla, fat in the sinus; the right one lower.
    hu_cortex = u(150, 200)
    kidneys = np.zeros(shape, bool)
    z_kidneys = []
    for side, z_k in ((-1, z_dome - u(150, 175)), (1, z_dome - u(125, 150))):
        d_k = ellipsoid(x, y, z, (side * 64, y_vb + 16, z_k), np.array([28, 22, 55]) * u(0.9, 1.1))
        kidney = (d_k < 1) & cavity
        # Perirenal fat: kidneys sit behind the liver, never inside it.
        perirenal = ellipsoid(x, y, z, (side * 64, y_vb + 26, z_k), (40, 36, 66)) < 1
        hu[perirenal & cavity] = hu_fat + 15
        kidneys |= perirenal & cavity
        z_kidneys.append(z_k)
        hu[kidney] = np.where(d_k[kidney] > 0.72, hu_cortex, hu_cortex - u(30, 60))
        sinus = kidney & (d_k < 0.55) & (side * x < 64 - 5)
        hu[sinus] = hu_fat + 40

    # Liver: a smooth union of three lobes, perturbed by a smooth random field.
    s = u(0.8, 1.02)
    c_right = (u(-78, -62), u(0, 20), z_dome - u(75, 90) * s)
    d_right = ellipsoid(x, y, z, c_right, np.array([75, 90, u(75, 95)]) * s)
    d_mid = ellipsoid(x, y, z, (u(-25, -5), u(-5, 15), z_dome - 55 * s), np.array([45, 55, 55]) * s)
    c_left = (u(10, 35), u(-50, -35), z_dome - u(38, 58) * s)
    r_left = np.array([u(60, 100), 42, 45]) * s
    taper = np.clip(1 - 0.6 * (x - c_left[0]) / r_left[0], 0.3, 1)
    d_left = np.sqrt(
        ((x - c_left[0]) / r_left[0]) ** 2
        + ((y - c_left[1]) / (r_left[1] * taper)) ** 2
        + ((z - c_left[2]) / (r_left[2] * taper)) ** 2
    )
    liver_field = np.minimum(np.minimum(d_right, d_mid), d_left) - 1
    if anatomy.long_left_lobe and u() < 0.6:
        # The tail runs from the left lobe's tip round the front and side of the stomach.
        c_tail = (c_left[0] + r_left[0] * u(0.7, 1.0), u(-20, 25), c_left[2] + u(-20, 10))
        d_tail = ellipsoid(x, y, z, c_tail, np.array([u(15, 25), u(35, 50), u(30, 45)]) * s)
        liver_field = np.minimum(liver_field, d_tail - 1)
    liver_field += 0.1 * smooth_noise(rng, shape, spacing_mm, 45.0)
    liver = (liver_field < 0) & abdomen & ~kidneys
    # Porta hepatis (fat notch with the portal vein) and the gallbladder are not liver.
    z_hilum = z_dome - u(95, 110) * s
    hilum = ellipsoid(x, y, z, (-10, 8, z_hilum), (20, 16, 22)) < 1
    liver &= ~hilum
    if u() < 0.6:
        gall = ellipsoid(x, y, z, (u(-55, -35), u(-50, -35), z_hilum - 20), (15, 15, 35)) < 1
        liver &= ~gall
        hu[gall & abdomen] = u(0, 20)
    hu[hilum & abdomen] = hu_fat + 10
    ivc = ((x + 22) / 14) ** 2 + ((y - y_vb + 24) / 11) ** 2 < 1
    aorta = (x - 12) ** 2 + (y - y_vb + 32) ** 2 < u(10, 13) ** 2
    liver &= ~(ivc | aorta) & ~np.broadcast_to(body & ~cavity, shape)
    mass = None
    if anatomy.extrahepatic_masses:
        mass = extrahepatic_mass(rng, x, y, z, y_vb, z_kidneys[1], cavity)
    if mass is not None:
        liver &= ~mass  # the mass pushes the liver aside: it is never liver
    hu[liver] = hu_liver + 5 * texture[liver]
    if mass is not None:
        hu[mass] = u(15, 55) + 12 * texture[mass]

    # Portal and hepatic vein trees; inside the liver they belong to the liver mask.
    p_hilum = (-10.0, 8.0, z_hilum)
    p_ivc = (-22.0, y_vb - 24, z_dome - 15)
    roots = [
        (p_hilum, (-1, 0.1, 0.35), 40 * s, 6.0),
        (p_hilum, (1, -0.7, 0.45), 35 * s, 5.0),
        (p_ivc, (-1, -0.3, -0.5), 55 * s, 5.0),
        (p_ivc, (0.1, -1, -0.4), 50 * s, 4.5),
        (p_ivc, (0.8, -0.8, -0.1), 45 * s, 4.0),
    ]
    zyx, radii = rasterise_tree(rng, roots, shape, spacing_mm, origin_mm, depth=3)
    trunk = [((15.0, y_vb - 10, z_hilum - 40), (-25, 18, 40), 48.0, 7.0)]
    zyx_t, radii_t = rasterise_tree(rng, trunk, shape, spacing_mm, origin_mm, depth=0)
    target = liver | (hilum & abdomen)
    box = ndimage.find_objects(target.astype(np.uint8))[0] if target.any() else None
    if box is not None:
        offset = np.array([b.start for b in box])
        sub_shape = tuple(b.stop - b.start for b in box)
        vessels = draw_vessels(
            np.concatenate([zyx, zyx_t]) - offset,
            np.concatenate([radii, radii_t]),
            sub_shape,
            spacing_mm,
        )
        hu[box][vessels & target[box]] = hu_vessel

    labels = np.zeros(shape, np.int32)
    if lesions:
        labels = _draw_lesions(rng, liver, hu, hu_liver, spacing_mm, texture, anatomy)

    # Great vessels, spine, ribs and the CT table.
    hu[ivc & (z < z_dome) & cavity] = hu_vessel - u(0, 30)
    hu[aorta & cavity] = u(150, 200)
    draw_spine(hu, x, y, z, y_vb, rng)
    draw_ribs(hu, rho2, theta, z, scale_z, rho_cavity, b_mm, z_dome, rng)
    table = (y2 > b_mm * 0.92 + 10) & (y2 < b_mm * 0.92 + 16) & (np.abs(x2) < 0.45 * FOV_MM)
    hu[:, table] = 150
    return hu, liver, labels


def _draw_lesions(
    rng, liver, hu, hu_liver, spacing_mm, texture, anatomy: AnatomyOptions
) -> np.ndarray:
    """Paint 0-5 lesions inside ``liver`` in place; return labels.

    Hypodense, 25-80 HU below the liver and at most 60 HU (100 HU with ``enhanced_liver``),
    or with ``varied_lesions`` the contrast of :func:`varied_contrast_hu` (hypo- or
    hyperdense, no upper bound). Radii are log-uniform from 4 mm to 24 mm (45 mm with
    ``large_lesions``).
    """
    max_hu = 100.0 if anatomy.enhanced_liver else 60.0
    max_radius_mm = 45.0 if anatomy.large_lesions else 24.0
    labels = np.zeros(liver.shape, np.int32)
    n_lesions = rng.choice(6, p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.1])
    inside = np.flatnonzero(liver)
    edge = np.flatnonzero(liver & ~ndimage.binary_erosion(liver))
    if not inside.size:
        return labels
    spacing = np.asarray(spacing_mm)
    for lesion_id in range(1, n_lesions + 1):
        pool = edge if rng.uniform() < 0.35 and edge.size else inside
        centre = np.array(np.unravel_index(rng.choice(pool), liver.shape))
        radii_mm = np.exp(rng.uniform(np.log(4), np.log(max_radius_mm))) * rng.uniform(
            0.75, 1.25, 3
        )
        half = np.ceil(radii_mm * 1.3 / spacing).astype(int)
        box = tuple(
            slice(max(c - h, 0), min(c + h + 1, n))
            for c, h, n in zip(centre, half, liver.shape, strict=True)
        )
        grid = np.ogrid[box]
        d = np.sqrt(
            sum(
                ((g - c) * sp / r) ** 2
                for g, c, sp, r in zip(grid, centre, spacing, radii_mm, strict=True)
            )
        )
        d = d + 0.12 * texture[box]
        region = (d < 1) & liver[box] & (labels[box] == 0)
        if not region.any():
            continue
        draw = rng.uniform()
        if anatomy.varied_lesions:
            hu_lesion = max(hu_liver + _varied_contrast_hu(draw), 5.0)
        else:
            hu_lesion = np.clip(hu_liver - (25 + 55 * draw), 5, max_hu)
        values = np.full(d.shape, hu_lesion, np.float32)
        if rng.uniform() < 0.3:  # enhancing rim
            values[d > 0.75] += rng.uniform(15, 35)
        if rng.uniform() < 0.3:  # necrotic centre
            values[d < 0.4] -= rng.uniform(5, 15)
        hu[box][region] = values[region]
        labels[box][region] = lesion_id
    # Consecutive ids 1..k even when a lesion was fully hidden by another.
    ids = np.unique(labels[labels > 0])
    lut = np.zeros(n_lesions + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[labels]


def _varied_contrast_hu(draw: float) -> float:
    """A lesion's HU minus the liver's from one uniform draw in [0, 1): -80..-8 HU for the
    first two thirds, 8..40 HU for the last (one draw, as the default contrast takes, so the
    lesions' shapes and everything drawn after them stay those of the same seed)."""
    if draw < 2 / 3:
        return -8.0 - 72.0 * draw * 1.5
    return 8.0 + 32.0 * (draw - 2 / 3) * 3
