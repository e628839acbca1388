"""Real lesions pasted into other livers: more tumour examples from the same few patients.

With three real tumour patients per fold, a tumour stage learns *their* lesions where they
are, rather than what makes a lesion (``docs/real_ct_experiments.md``). Copy-paste
augmentation (TumorCP, Yang et al., MICCAI 2021) shows each real lesion again in another
liver, at another place, size and orientation:

1. :func:`lesion_patches` cuts every lesion of a donor patient out of its CT, as HU
   *relative to the donor's liver* (its median outside the tumours), with its mask;
2. :func:`paste_lesion` scales, flips and turns a patch onto the host's voxel grid, finds a
   place inside the host's liver clear of other lesions, and blends it in at the host's own
   liver level (a soft edge, so no seam of pasted pixels);
3. :func:`pasted_case` makes one new patient from a host and a bank of patches, and
   :func:`write_pasted_patients` writes several, as 3D-IRCADb folders that the slice cache
   reads like any other patient.

The donors and hosts of a leave-one-out fold must be its training patients only, never its
test patient: ``tumour_loo`` checks this from ``pasted.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage

from liverseg_helpers.atomic import read_json, write_json_atomic
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.tumours.tumour import label_lesions

PASTED_FILE = "pasted.json"
MIN_DONOR_LESION_ML = 0.5  # smaller lesions are a few voxels on 5 mm slices: noise, not shape
SCALE_RANGE = (0.8, 1.25)  # a pasted lesion's size, relative to the donor's
INSIDE_LIVER = 0.98  # share of a pasted lesion's voxels that must fall in the host's liver
EDGE_SIGMA_MM = 1.0  # blur of the blending weight, in-plane
PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class LesionPatch:
    """One real lesion, cut out of its CT.

    Attributes:
        source: ``"<case id> lesion <id>"``.
        relative_hu: float32 ``[z, y, x]``: HU minus the donor liver's median, in the box.
        mask: bool, same shape: the lesion's voxels.
        spacing_mm: Voxel size ``(z, y, x)`` of the donor.
    """

    source: str
    relative_hu: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, float, float]


def liver_median_hu(case: Case) -> float:
    """Median HU of the liver outside its tumours (the level a pasted lesion is set against).

    Raises:
        DataError: No liver voxel outside the tumours.
    """
    liver = case.masks.get(LIVER)
    if liver is None:
        raise DataError(f"{case.source or case.case_id}: no liver mask to paste lesions into")
    tumour = case.masks.get(TUMOUR)
    healthy = liver & ~tumour if tumour is not None else liver
    if not healthy.any():
        raise DataError(f"{case.source or case.case_id}: no liver voxel outside the tumours")
    return float(np.median(case.volume[healthy]))


def lesion_ids(case: Case) -> np.ndarray:
    """One id per lesion: ``case.lesions``, or the components of the tumour mask."""
    if case.lesions is not None:
        return np.asarray(case.lesions)
    tumour = case.masks.get(TUMOUR)
    return label_lesions(np.zeros(case.shape, bool) if tumour is None else tumour)


def lesion_patches(case: Case, min_ml: float = MIN_DONOR_LESION_ML) -> list[LesionPatch]:
    """Every lesion of ``case`` of at least ``min_ml`` mL, in HU relative to its liver.

    Each patch is the lesion's bounding box plus a one-voxel rim, so the blended edge
    carries the donor's own border.
    """
    ids = lesion_ids(case)
    if not ids.any():
        return []
    median = liver_median_hu(case)
    stats = cc3d.statistics(ids.astype(np.uint32, copy=False))
    patches = []
    for lesion_id, boxes in enumerate(stats["bounding_boxes"]):
        voxels = int(stats["voxel_counts"][lesion_id])
        if lesion_id == 0 or voxels * case.voxel_volume_ml < min_ml:
            continue
        box = tuple(
            slice(max(0, s.start - 1), min(n, s.stop + 1))
            for s, n in zip(boxes, case.shape, strict=True)
        )
        patches.append(
            LesionPatch(
                source=f"{case.case_id} lesion {lesion_id}",
                relative_hu=(case.volume[box].astype(np.float32) - median),
                mask=ids[box] == lesion_id,
                spacing_mm=tuple(float(s) for s in case.spacing_mm),
            )
        )
    return patches


def fit_to_host(
    patch: LesionPatch, host_spacing_mm: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The patch on the host's voxel grid: a random size in ``SCALE_RANGE``, flips and a turn
    in-plane (a half turn only, where the host's pixels are not square).

    Returns:
        ``(relative_hu, mask)`` on the host's grid; the mask may be empty for a tiny lesion
        on thick slices.
    """
    scale = rng.uniform(*SCALE_RANGE)
    zoom = [scale * p / h for p, h in zip(patch.spacing_mm, host_spacing_mm, strict=True)]
    relative = ndimage.zoom(patch.relative_hu, zoom, order=1)
    mask = ndimage.zoom(patch.mask.astype(np.float32), zoom, order=1) > 0.5
    # a quarter turn would stretch the lesion where the host's rows and columns differ in size
    square = abs(float(host_spacing_mm[1]) - float(host_spacing_mm[2])) < 1e-3
    turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    relative, mask = (np.rot90(a, turns, axes=(1, 2)) for a in (relative, mask))
    for axis in (0, 1, 2):
        if rng.random() < 0.5:
            relative, mask = np.flip(relative, axis), np.flip(mask, axis)
    return np.ascontiguousarray(relative), np.ascontiguousarray(mask)


def find_place(
    mask: np.ndarray, liver: np.ndarray, taken: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, int] | None:
    """A corner where ``mask`` lies in ``liver`` (``INSIDE_LIVER``) and off ``taken``, or None."""
    candidates = np.argwhere(liver & ~taken)
    if len(mask) == 0 or not mask.any() or len(candidates) == 0:
        return None
    half = np.array(mask.shape) // 2
    limit = np.array(liver.shape) - np.array(mask.shape)
    if (limit < 0).any():
        return None
    n_mask = int(mask.sum())
    for _ in range(PLACEMENT_TRIES):
        corner = np.clip(candidates[rng.integers(len(candidates))] - half, 0, limit)
        box = tuple(slice(c, c + n) for c, n in zip(corner, mask.shape, strict=True))
        inside = int(np.count_nonzero(liver[box][mask]))
        if inside >= INSIDE_LIVER * n_mask and not taken[box][mask].any():
            return tuple(int(c) for c in corner)
    return None


def paste_lesion(
    volume: np.ndarray,
    liver: np.ndarray,
    lesions: np.ndarray,
    patch: LesionPatch,
    spacing_mm: Sequence[float],
    liver_hu: float,
    rng: np.random.Generator,
) -> bool:
    """Paste one lesion into a host, in place: ``volume`` (float32 HU) and ``lesions`` (ids).

    The lesion is set at ``liver_hu`` plus its HU relative to its own liver, blended over a
    soft edge (``EDGE_SIGMA_MM``); its voxels inside the host's liver get a new lesion id.

    Returns:
        False when no place was found (nothing changed).
    """
    relative, mask = fit_to_host(patch, spacing_mm, rng)
    taken = ndimage.binary_dilation(lesions > 0, iterations=2)
    corner = find_place(mask, liver, taken, rng)
    if corner is None:
        return False
    box = tuple(slice(c, c + n) for c, n in zip(corner, mask.shape, strict=True))
    sigma = [0.0] + [EDGE_SIGMA_MM / float(s) for s in spacing_mm[1:]]
    weight = np.clip(ndimage.gaussian_filter(mask.astype(np.float32), sigma), 0.0, 1.0)
    weight = np.maximum(weight, mask)  # the lesion itself is wholly replaced
    region = volume[box]
    volume[box] = region * (1.0 - weight) + (liver_hu + relative) * weight
    lesions[box][mask & liver[box]] = int(lesions.max()) + 1
    return True


def liver_slab(case: Case, margin: int) -> Case:
    """The case cut to its liver's slices plus ``margin`` slices each side (origin moved).

    Raises:
        DataError: The case has no liver mask, or an empty one.
    """
    liver = case.masks.get(LIVER)
    rows = np.flatnonzero(liver.reshape(len(liver), -1).any(axis=1)) if liver is not None else []
    if len(rows) == 0:
        raise DataError(f"{case.source or case.case_id}: no liver voxel to paste lesions into")
    z0, z1 = max(0, int(rows[0]) - margin), min(len(liver), int(rows[-1]) + 1 + margin)
    axis = np.array(case.direction, dtype=float).reshape(3, 3)[:, 2]  # the slice index's axis
    origin = tuple(float(o) for o in np.add(case.origin_mm, axis * z0 * case.spacing_mm[0]))
    ids = lesion_ids(case)[z0:z1]
    return Case(
        case_id=case.case_id,
        volume=case.volume[z0:z1],
        spacing_mm=case.spacing_mm,
        origin_mm=origin,
        direction=case.direction,
        masks={LIVER: liver[z0:z1], TUMOUR: ids > 0},
        lesions=ids.astype(np.int32),
        source=case.source,
        format=case.format,
    )


def pasted_case(
    host: Case,
    patches: Sequence[LesionPatch],
    n_lesions: int,
    rng: np.random.Generator,
    case_id: str,
    margin_slices: int = 8,
) -> tuple[Case, list[str]]:
    """A new patient: ``host`` (cut to its liver's slices) with ``n_lesions`` pasted lesions.

    The host's own lesions are kept. Patches are drawn with replacement.

    Returns:
        ``(case, the sources of the lesions pasted)``.

    Raises:
        DataError: No patch to paste, or none could be placed in the host's liver.
    """
    if not patches:
        raise DataError(f"{case_id}: no donor lesion to paste")
    slab = liver_slab(host, margin_slices)
    volume = slab.volume.astype(np.float32)
    liver, lesions = slab.masks[LIVER], slab.lesions.copy()
    liver_hu = liver_median_hu(slab)
    pasted = []
    for _ in range(n_lesions):
        patch = patches[int(rng.integers(len(patches)))]
        if paste_lesion(volume, liver, lesions, patch, slab.spacing_mm, liver_hu, rng):
            pasted.append(patch.source)
    if not pasted:
        raise DataError(f"{case_id}: no lesion fitted in the liver of {host.case_id}")
    masks = {LIVER: liver | (lesions > 0), TUMOUR: lesions > 0}
    case = Case(
        case_id=case_id,
        volume=np.round(volume).astype(np.int16),
        spacing_mm=slab.spacing_mm,
        origin_mm=slab.origin_mm,
        direction=slab.direction,
        masks=masks,
        lesions=lesions,
        format="pasted",
    )
    return case, pasted


def write_pasted_patients(
    out_dir: str | os.PathLike,
    hosts: Sequence[Path],
    donors: Sequence[Path],
    copies: int,
    n_lesions: int,
    seed: int,
    prefix: str = "pasted",
) -> list[Path]:
    """Write ``copies`` pasted patients per host, ``<prefix>_<host>_<k>``, and ``pasted.json``.

    Finished folders are kept (each is written atomically); those ``pasted.json`` records are
    not drawn again, and no CT is read when none is left to write. ``pasted.json`` lists the
    hosts, the donors and each patient's lesions; it is written last.

    Args:
        out_dir: Folder of the new patients.
        hosts: Patients whose livers receive the lesions.
        donors: Patients whose lesions are pasted.
        copies: New patients per host.
        n_lesions: Lesions pasted into each.
        seed: Seeds the draws; patient ``k`` of a host always gets the same lesions.

    Returns:
        The patient folders.

    Raises:
        DataError: The donors hold no lesion of ``MIN_DONOR_LESION_ML`` or more, or
            ``out_dir`` was written with other hosts, donors or settings.
    """
    import zlib

    from liverseg_helpers import io
    from liverseg_helpers.io.ircadb_writer import write_ircadb_patient

    out_dir = Path(out_dir)
    plan = dict(
        hosts=sorted(io.case_id_of(p) for p in hosts),
        donors=sorted(io.case_id_of(p) for p in donors),
        copies=copies,
        n_lesions=n_lesions,
        seed=seed,
    )
    record_path = out_dir / PASTED_FILE
    finished = {}
    if record_path.exists():
        record = read_json(record_path, "unreadable")
        if {k: record.get(k) for k in plan} != plan:
            raise DataError(f"{record_path}: written for {record}, not {plan}; use another folder")
        finished = record["cases"]
    out_dir.mkdir(parents=True, exist_ok=True)
    patches: list[LesionPatch] | None = None  # read only if a patient is left to write
    written, cases = [], {}
    for host_path in hosts:
        host = None
        for k in range(1, copies + 1):
            case_id = f"{prefix}_{io.case_id_of(host_path)}_{k}"
            folder = out_dir / case_id
            if folder.exists() and case_id in finished:  # written and recorded by a past call
                cases[case_id] = finished[case_id]
                written.append(folder)
                continue
            if patches is None:
                patches = [p for path in donors for p in lesion_patches(io.load_case(path))]
                if not patches:
                    raise DataError(
                        f"donors {plan['donors']}: no lesion of {MIN_DONOR_LESION_ML} mL or more"
                    )
            host = host or io.load_case(host_path)
            rng = np.random.default_rng([seed, zlib.crc32(case_id.encode())])
            case, pasted = pasted_case(host, patches, n_lesions, rng, case_id)
            if not folder.exists():
                write_ircadb_patient(case, folder)
            cases[case_id] = dict(host=host.case_id, lesions=pasted)
            written.append(folder)
    write_json_atomic(dict(plan, cases=cases), record_path)
    return written


def check_pasted_for_fold(out_dir: str | os.PathLike, test_id: str) -> None:
    """Refuse pasted patients that carry the test patient's liver or lesions.

    Raises:
        DataError: ``pasted.json`` missing, or ``test_id`` among its hosts or donors.
    """
    record = read_json(Path(out_dir) / PASTED_FILE, "no pasted patients written")
    if test_id in record["hosts"] or test_id in record["donors"]:
        raise DataError(
            f"{Path(out_dir) / PASTED_FILE}: the test patient {test_id} is a host or a donor"
        )


def paste_for_fold(
    out_dir: str | os.PathLike,
    cohort: Path,
    test_id: str,
    with_tumour: Sequence[Path],
    without: Sequence[Path],
    copies: int,
    n_lesions: int,
    seed: int,
) -> list[str]:
    """A leave-one-out fold's pasted patients, written once and linked into its cohort.

    The hosts are every patient but ``test_id`` (``"all"``: every patient, for the model to
    ship), the donors every tumour patient but ``test_id``; patients are named
    ``paste-<test_id>_<host>_<k>``.

    Returns:
        Their ids, to train on.
    """
    from liverseg_helpers.research.loo_cohort import make_cohort_dir

    hosts = [p for p in [*with_tumour, *without] if p.name != test_id]
    donors = [p for p in with_tumour if p.name != test_id]
    paths = write_pasted_patients(
        out_dir, hosts, donors, copies, n_lesions, seed, prefix=f"paste-{test_id}"
    )
    check_pasted_for_fold(out_dir, test_id)
    make_cohort_dir(paths, [], cohort)
    return [p.name for p in paths]
