"""Parts the phantom's anatomy is drawn from, in millimetres and Hounsfield units.

Smooth random fields, ellipsoids and branching vessel trees, and three parts built from them
for :func:`liverseg_helpers.data.phantom_anatomy.draw_patient`: masses beside the liver, the
spine and the ribs. Coordinates as in
:mod:`liverseg_helpers.data.phantom_anatomy`: x from the patient's right to left, y from front to
back, z from feet to head; arrays ``[z, y, x]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], spacing_mm, cell_mm: float
) -> np.ndarray:
    """Unit-variance random field, smooth over about ``cell_mm`` mm (float32, ``shape``).

    Random values on a coarse lattice are spread to the grid with separable gaussian weights
    (three small matrix products), much faster than ``ndimage.zoom`` on a full volume.
    """
    field = None
    weights = []
    for n, step in zip(shape, spacing_mm, strict=True):
        n_coarse = max(2, int(np.ceil(n * step / cell_mm)) + 2)
        pos = (np.arange(n) + 0.5) / n * (n_coarse - 2) + 0.5  # grid position in lattice units
        w = np.exp(-0.5 * ((pos[:, None] - np.arange(n_coarse)[None]) / 0.6) ** 2)
        weights.append((w / np.sqrt((w**2).sum(1, keepdims=True))).astype(np.float32))
    field = rng.standard_normal([w.shape[1] for w in weights]).astype(np.float32)
    field = np.tensordot(field, weights[2], axes=([2], [1]))  # (cz, cy, nx)
    field = np.einsum("yb,zbx->zyx", weights[1], field)
    return np.tensordot(weights[0], field, axes=([1], [0]))


def ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    """Normalised distance ``sqrt(sum(((p - c) / r)^2))``: < 1 inside the ellipsoid."""
    centre, radii = [float(v) for v in centre], [float(v) for v in radii]  # keep float32
    return np.sqrt(
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    )


def rasterise_tree(
    rng: np.random.Generator, roots: list[tuple], shape, spacing_mm, origin_mm, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random branching vessel tree as centre-line points ``(n, 3)`` in voxels and radii in mm.

    Args:
        roots: ``(start_xyz_mm, direction_xyz, length_mm, radius_mm)`` of each trunk.
    """
    points, radii = [], []
    stack = [(np.asarray(p, float), np.asarray(d, float), ln, r, 0) for p, d, ln, r in roots]
    while stack:
        start, direction, length, radius, gen = stack.pop()
        direction = direction / np.linalg.norm(direction)
        t = np.arange(0.0, length, 1.0)[:, None]
        pts = start + t * direction
        points.append(pts)
        radii.append(np.full(len(pts), radius))
        if gen < depth:
            for sign in (-1.0, 1.0):
                turn = rng.normal(0, 0.25, 3) + sign * 0.6 * np.cross(
                    direction, rng.normal(0, 1, 3)
                )
                stack.append((pts[-1], direction + turn, length * 0.7, radius * 0.68, gen + 1))
    xyz = np.concatenate(points)
    # mm (x, y, z) -> voxel (z, y, x)
    zyx = (xyz[:, ::-1] - np.asarray(origin_mm)[::-1]) / np.asarray(spacing_mm)
    return zyx, np.concatenate(radii)


def draw_vessels(zyx, radii_mm, shape, spacing_mm) -> np.ndarray:
    """Tubes of varying radius around centre-line points (nearest-point distance transform)."""
    idx = np.round(zyx).astype(int)
    keep = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
    idx, radii_mm = idx[keep], radii_mm[keep]
    radius_map = np.zeros(shape, np.float32)
    np.maximum.at(radius_map, tuple(idx.T), radii_mm)
    if not idx.size:
        return np.zeros(shape, bool)
    dist, nearest = ndimage.distance_transform_edt(
        radius_map == 0, sampling=spacing_mm, return_indices=True
    )
    return dist <= radius_map[tuple(nearest)]


def extrahepatic_mass(rng, x, y, z, y_vb, z_kidney, cavity) -> np.ndarray | None:
    """A hypodense mass beside the liver that is not liver (adrenal or upper-pole renal tumour).

    Real abdomens have masses next to the liver (3D-IRCADb patient 7 has a 0.7 L one). A model
    that has only seen hypodense lesions *inside* the liver mask learns that any hypodense blob
    touching liver is liver; these masses teach it the liver's outline instead.
    Drawn in 60% of patients (None otherwise), behind and below the right lobe.
    """
    if rng.uniform() >= 0.6:
        return None
    u = rng.uniform
    centre = (u(-90, -50), y_vb + u(-15, 15), z_kidney + u(20, 70))
    radii = np.array([u(25, 60), u(25, 55), u(30, 70)])
    return (ellipsoid(x, y, z, centre, radii) < 1) & cavity


def draw_spine(hu, x, y, z, y_vb, rng) -> None:
    """Vertebrae (cortical shell, cancellous core, discs, posterior elements), in place."""
    period_mm = rng.uniform(28, 34)
    phase = ((z - rng.uniform(0, period_mm)) % period_mm) / period_mm  # (n_z, 1, 1)
    y_canal = y_vb + 30
    d_vb = np.sqrt((x / 22) ** 2 + ((y - y_vb) / 19) ** 2)
    r_canal = np.sqrt(x**2 + (y - y_canal) ** 2)
    disc = phase < 0.17
    hu_cortex, hu_cancellous = rng.uniform(500, 900), rng.uniform(180, 300)
    body = np.broadcast_to(d_vb < 1, hu.shape)
    hu[body] = np.where(np.broadcast_to(d_vb > 0.85, hu.shape)[body], hu_cortex, hu_cancellous)
    hu[body & np.broadcast_to(disc, hu.shape)] = 90
    arch = (r_canal > 9) & (r_canal < 15) & (y > y_canal - 8)
    spinous = (np.abs(x) < 4) & (y > y_canal + 12) & (y < y_canal + 45)
    transverse = (np.abs(y - y_canal + 2) < 4) & (np.abs(x) > 12) & (np.abs(x) < 32)
    posterior = (
        arch
        | (spinous & (phase > 0.3) & (phase < 0.7))
        | (transverse & (phase > 0.45) & (phase < 0.7))
    )
    posterior = np.broadcast_to(posterior & (phase > 0.2), hu.shape)
    hu[posterior] = hu_cortex * 0.7
    hu[np.broadcast_to(r_canal < 9, hu.shape)] = 15


def draw_ribs(hu, rho2, theta, z, scale_z, rho_cavity, b_mm, z_dome, rng) -> None:
    """Ribs: bone arcs in the body wall that slope down towards the front, in place."""
    phi = np.arccos(np.clip(np.sin(theta), -1, 1))  # angle from the posterior midline
    band2d = (rho2 > (rho_cavity - 0.01) * 0.97) & (rho2 < (rho_cavity + 13 / b_mm) * 1.03)
    rows, cols = np.nonzero(band2d)
    rho_b = rho2[rows, cols][None] / scale_z[:, :, 0]  # (n_z, n_band)
    lo, hi = rho_cavity[rows, cols][None], rho_cavity[rows, cols][None] + 9 / b_mm
    period, slope = rng.uniform(26, 32), rng.uniform(90, 120)
    u_rib = (z[:, :, 0] - (z_dome + 25) + slope * phi[rows, cols][None] / np.pi) / period
    k = np.round(u_rib)
    dz_mm = np.abs(u_rib - k) * period
    phi_max = np.pi * np.clip(0.85 - 0.05 * np.maximum(-k, 0), 0.35, 0.85)
    phi_b = phi[rows, cols][None]
    rib = (dz_mm < 4.5) & (rho_b > lo) & (rho_b < hi) & (phi_b > 0.15 * np.pi) & (k <= 0)
    rib &= phi_b < phi_max
    cortex = (dz_mm > 3.0) | (rho_b < lo + 1.5 / b_mm) | (rho_b > hi - 1.5 / b_mm)
    values = np.where(cortex, rng.uniform(450, 750), rng.uniform(180, 280))
    zi, bi = np.nonzero(rib)
    hu[zi, rows[bi], cols[bi]] = values[zi, bi]
