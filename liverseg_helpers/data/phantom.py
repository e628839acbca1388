"""A synthetic abdominal CT phantom: the course's default data when no real CT is at hand.

Each seed gives one "patient": a portal-venous-phase CT of the upper abdomen, in Hounsfield
units, with a liver whose size, shape, position and brightness vary, liver vessels (part of the
liver mask, as in 3D-IRCADb), 0-5 hypodense lesions, and the neighbours that make liver
segmentation hard on real CT: spleen, stomach, heart and muscle of nearly the same HU, ribs,
spine, kidneys, bowel with air. Partial-volume blur and correlated noise are added last, so the
masks describe the anatomy *before* blur, as a manual segmentation would.

The anatomy is drawn in millimetres (x: patient right to left, y: anterior to posterior,
z: feet to head) and sampled on the voxel grid, so any ``size``/``n_slices`` gives the same body.
Arrays are ``[slice, row, column]``; column 0 is the patient's right, as on a radiology screen.

``write_phantom_cohort`` stores patients in the 3D-IRCADb layout (readable by
``io.load_case``) with a ``cohort.json`` written last, so ``ensure_phantom_cohort`` can tell a
finished cohort from an interrupted one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.data.phantom_anatomy import (
    DEFAULT_ANATOMY,
    FOV_MM,
    Z_EXTENT_MM,
    AnatomyOptions,
    draw_patient,
)
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case

#: Bump when the anatomy changes, so cached cohorts are regenerated.
PHANTOM_VERSION = 1
COHORT_FILE = "cohort.json"


def default_spacing_mm(n_slices: int, size: int) -> tuple[float, float, float]:
    """Voxel size that keeps the default field of view for any grid.

    Args:
        n_slices: Number of axial slices.
        size: In-plane pixels (rows = columns).

    Returns:
        ``(slice, row, col)`` spacing in mm: 240 mm along z, 358 mm in-plane (0.7 mm at 512).
    """
    return (Z_EXTENT_MM / n_slices, FOV_MM / size, FOV_MM / size)


def make_phantom_case(
    seed: int,
    n_slices: int = 64,
    size: int = 256,
    lesions: bool = True,
    spacing_mm: tuple[float, float, float] | None = None,
    case_id: str | None = None,
    anatomy: AnatomyOptions = DEFAULT_ANATOMY,
) -> Case:
    """Generate one synthetic abdominal CT with liver and liver-lesion masks.

    The same arguments always give the same arrays. About a quarter of the seeds have no
    lesion even with ``lesions=True``; the others have one to five, some touching the edge.

    Args:
        seed: Patient seed; changes the body, the liver's shape, size, position and HU.
        n_slices: Number of axial slices (feet to head).
        size: In-plane pixels (rows = columns); real CT has 512.
        lesions: Draw hypodense liver lesions.
        spacing_mm: Voxel size ``(slice, row, col)`` in mm; default ``default_spacing_mm``
            (358 mm in-plane, 240 mm along z, whatever the grid).
        case_id: Case name; default ``f"phantom_{seed:03d}"``.
        anatomy: Harder anatomy (:class:`AnatomyOptions`): extrahepatic masses, long left
            lobes. Off by default, so seeds keep their anatomy.

    Returns:
        A ``Case`` (format ``"phantom"``) with an int16 HU volume ``(n_slices, size, size)``,
        masks ``"liver"`` (with its vessels and lesions) and ``"tumour"`` (empty when there is
        no lesion), and ``lesions``, an int32 label map (one id per lesion, 0 elsewhere).

    Raises:
        ValueError: ``n_slices`` below 8 or ``size`` below 32.
    """
    if n_slices < 8 or size < 32:
        raise ValueError(f"phantom grid too small: n_slices={n_slices}, size={size} (min 8, 32)")
    rng = np.random.default_rng(seed)
    spacing = tuple(float(v) for v in (spacing_mm or default_spacing_mm(n_slices, size)))
    shape = (n_slices, size, size)
    origin = (-(size - 1) / 2 * spacing[2], -(size - 1) / 2 * spacing[1], 0.0)
    hu, liver, labels = draw_patient(rng, shape, spacing, origin, lesions, anatomy)
    # Partial-volume blur, then scanner noise that is correlated between neighbouring pixels.
    hu = ndimage.gaussian_filter(hu, sigma=(0.5, 0.7, 0.7), output=np.float32)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0, 0.6, 0.6))
    hu += noise * np.float32(rng.uniform(10, 20) / noise.std())
    volume = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Case(
        case_id=case_id or f"phantom_{seed:03d}",
        volume=volume,
        spacing_mm=spacing,
        origin_mm=origin,
        masks={LIVER: liver, TUMOUR: labels > 0},
        lesions=labels,
        source=f"phantom seed={seed}",
        format="phantom",
    )


def _cohort_settings(
    n_patients: int, seed: int, n_slices: int, size: int, anatomy: AnatomyOptions
) -> dict:
    return {
        **anatomy.changed(),  # only what differs, so default cohorts stay valid
        "generator": "liverseg_helpers.data.phantom",
        "version": PHANTOM_VERSION,
        "seed": seed,
        "n_slices": n_slices,
        "size": size,
        "patients": [f"phantom_{i:03d}" for i in range(1, n_patients + 1)],
    }


def write_phantom_cohort(
    out_dir: str | os.PathLike,
    n_patients: int,
    seed: int = 42,
    n_slices: int = 64,
    size: int = 256,
    overwrite: bool = False,
    anatomy: AnatomyOptions = DEFAULT_ANATOMY,
) -> list[Path]:
    """Write phantom patients ``phantom_001``... in the 3D-IRCADb DICOM layout.

    Patient ``i`` (from 1) uses seed ``seed + i - 1``; every fourth patient from the second
    (``phantom_002``, ``phantom_006``...) has no lesion, on top of the seeds that draw none.
    ``cohort.json`` (seed, grid, patient names) is written last and atomically.

    Args:
        out_dir: Cohort folder (created if missing).
        n_patients: Number of patients, at least 1.
        seed: Seed of the first patient.
        n_slices: Axial slices per patient.
        size: In-plane pixels per slice.
        overwrite: Replace existing patient folders.
        anatomy: Harder anatomy (see :func:`make_phantom_case`).

    Returns:
        The patient folders, in order.

    Raises:
        ValueError: ``n_patients`` below 1.
        OutputExistsError: A patient folder exists and ``overwrite`` is False.
    """
    from liverseg_helpers.io import write_ircadb_patient

    if n_patients < 1:
        raise ValueError(f"{out_dir}: n_patients must be at least 1, got {n_patients}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COHORT_FILE).unlink(missing_ok=True)  # incomplete until every patient is written
    settings = _cohort_settings(n_patients, seed, n_slices, size, anatomy)
    paths = []
    for i, case_id in enumerate(settings["patients"], start=1):
        lesions = i % 4 != 2
        case = make_phantom_case(
            seed + i - 1, n_slices, size, lesions, case_id=case_id, anatomy=anatomy
        )
        paths.append(write_ircadb_patient(case, out_dir / case_id, overwrite=overwrite))
    write_json_atomic(settings, out_dir / COHORT_FILE)
    return paths


def read_cohort_settings(out_dir: str | os.PathLike) -> dict | None:
    """The ``cohort.json`` of a finished phantom cohort, or None when absent or unreadable."""
    path = Path(out_dir) / COHORT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_phantom_cohort(
    out_dir: str | os.PathLike, profile, anatomy: AnatomyOptions = DEFAULT_ANATOMY
) -> Path:
    """Generate the profile's phantom cohort once; reuse it while it is complete and current.

    Args:
        out_dir: Cohort folder.
        profile: A ``config.Profile``; uses ``phantom_patients``, ``phantom_slices`` and
            ``phantom_size`` (seed 42).
        anatomy: Harder anatomy (see :func:`make_phantom_case`).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DataError: ``out_dir`` exists but is not a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: expected a phantom cohort folder, found a file")
    wanted = _cohort_settings(
        profile.phantom_patients, 42, profile.phantom_slices, profile.phantom_size, anatomy
    )
    found = read_cohort_settings(out_dir)
    if found == wanted and all((out_dir / name).is_dir() for name in wanted["patients"]):
        return out_dir
    write_phantom_cohort(
        out_dir,
        profile.phantom_patients,
        42,
        profile.phantom_slices,
        profile.phantom_size,
        overwrite=True,
        anatomy=anatomy,
    )
    return out_dir


def run_phantom_cli(args) -> int:
    """``liverseg phantom``: write a phantom cohort and say what was written and how fast."""
    n_slices, size = args.slices, args.size
    start = time.perf_counter()
    paths = write_phantom_cohort(
        args.out,
        args.patients,
        seed=args.seed,
        n_slices=n_slices,
        size=size,
        overwrite=args.overwrite,
    )
    for path in paths:
        print(f"wrote {path}")
    seconds = time.perf_counter() - start
    print(
        f"{len(paths)} phantom patients ({n_slices} x {size} x {size}) in {args.out} "
        f"in {seconds:.1f} s"
    )
    return 0
