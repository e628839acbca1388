"""The cohort of a leave-one-patient-out run: which patients, in which folder, in which folds.

:func:`prepare_cohort` gathers the real patients of one or several ``--data`` folders (one per
source), generates the phantom patients a recipe adds, and links them all into one cohort
folder (symlinks, no data copied); :func:`make_loo_folds` makes one split per real patient, in
which that patient is the test patient and a phantom the validation patient;
:func:`extra_training_cases` admits extra training cohorts (LiTS, MSD) less the copies of a test
patient. :mod:`liverseg_helpers.research.crossval` trains and scores the folds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from liverseg_helpers import config as config_mod
from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.errors import DataError
from liverseg_helpers.research.variants import Variant

DataDirs = str | os.PathLike | Sequence[str | os.PathLike]


def real_case_paths(data_dirs: DataDirs) -> list[Path]:
    """The real patients of one or several cohort folders (one folder per source).

    Raises:
        DataError: Two patients of the folders have the same id (both paths are named).
    """
    from liverseg_helpers import io

    dirs = [data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else list(data_dirs)
    paths = [p for d in dirs for p in io.list_case_paths(d)]
    seen: dict[str, Path] = {}
    for path in paths:
        case_id = io.case_id_of(path)
        if case_id in seen:
            raise DataError(f"{path}: patient id {case_id!r} is also {seen[case_id]}")
        seen[case_id] = path
    return paths


def source_of(case_path: Path) -> str:
    """A patient's source: the name of the cohort folder holding it (``hcc_tace_seg``)."""
    return Path(case_path).absolute().parent.name


def make_cohort_dir(real_paths: list[Path], phantom_paths: list[Path], cohort_dir: Path) -> Path:
    """One cohort folder of symlinks to the real and phantom patients (no data is copied).

    Args:
        real_paths: Real patient folders.
        phantom_paths: Phantom patient folders.
        cohort_dir: Folder to fill (created; existing correct links are kept).

    Returns:
        ``cohort_dir``.

    Raises:
        DataError: Two patients share a folder name, or a name is taken by another file.
    """
    cohort_dir.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in real_paths + phantom_paths]
    if len(set(names)) != len(names):
        raise DataError(f"{cohort_dir}: patients with the same folder name: {sorted(names)}")
    for path in real_paths + phantom_paths:
        link = cohort_dir / path.name
        target = path.resolve()
        if link.is_symlink() and link.resolve() == target:
            continue
        if link.exists() or link.is_symlink():
            raise DataError(f"{link}: exists and does not link to {target}")
        link.symlink_to(target, target_is_directory=True)
    return cohort_dir


def make_loo_folds(
    real_ids: list[str],
    phantom_ids: list[str],
    phantom_train: int,
    extra_ids: Sequence[str] = (),
) -> list[dict[str, list[str]]]:
    """Leave-one-patient-out splits: each real patient is the test patient once.

    Args:
        real_ids: Real patient ids (at least 2).
        phantom_ids: Phantom ids, sorted; the first is the val patient, the next
            ``phantom_train`` are added to training.
        phantom_train: Phantom patients added to training.
        extra_ids: Patients added to every fold's training, never tested (``train_extra``).

    Returns:
        One ``{"train", "val", "test"}`` dict per real patient, in the order of ``real_ids``.

    Raises:
        DataError: Fewer than 2 real patients, not enough phantom patients, or an extra
            patient that is also a real or phantom one.
    """
    shared = sorted(set(extra_ids) & set(real_ids + phantom_ids))
    if shared:
        raise DataError(f"patients both tested or validated and added to training: {shared}")
    if len(real_ids) < 2:
        raise DataError(f"leave-one-out needs at least 2 real patients, got {real_ids}")
    if len(phantom_ids) < 1 + phantom_train:
        raise DataError(
            f"need {1 + phantom_train} phantom patients (1 val + {phantom_train} train), "
            f"got {len(phantom_ids)}"
        )
    val = [phantom_ids[0]]
    extra = list(phantom_ids[1 : 1 + phantom_train]) + list(extra_ids)
    return [
        {
            "train": sorted([r for r in real_ids if r != test] + extra),
            "val": val,
            "test": [test],
        }
        for test in real_ids
    ]


def slice_cache_dir(out_dir: Path, variant: Variant) -> Path:
    """The slice cache of a variant's cohort (phantoms with other anatomy get their own)."""
    return out_dir / f"slice_cache{variant.cohort_suffix}"


class Cohort(NamedTuple):
    """What :func:`prepare_cohort` built: one folder and the ids of each kind of patient."""

    dir: Path
    real_ids: list[str]
    phantom_ids: list[str]
    extra_ids: list[str]


def extra_training_cases(
    extra_dirs: Sequence[str | os.PathLike], real_paths: list[Path], out_dir: Path
) -> list[Path]:
    """The cases of ``extra_dirs`` that may join training: copies of a real patient left out.

    LiTS and MSD Task03 hold the 3D-IRCADb scans under other names, so each extra case is
    compared by content with each real (test) patient (:func:`leakcheck.find_copies`); the
    copies are left out, printed and listed in ``out_dir/train_extra.json``.
    """
    from liverseg_helpers import io
    from liverseg_helpers.research import leakcheck

    candidates = [p for folder in extra_dirs for p in io.list_case_paths(folder)]
    copies = leakcheck.find_copies(candidates, real_paths, out_dir / "scan_fingerprints.json")
    for copy, original in copies.items():
        print(f"left out of training: {copy} is a copy of {original} (a test patient)")
    kept = [p for p in candidates if p not in copies]
    record = {
        "extra_dirs": [str(d) for d in extra_dirs],
        "added": [str(p) for p in kept],
        "left_out": {str(c): str(o) for c, o in copies.items()},
    }
    write_json_atomic(record, out_dir / "train_extra.json")
    return kept


def prepare_cohort(
    data_dir: DataDirs,
    out_dir: Path,
    profile_name: str,
    variant: Variant,
    extra_paths: Sequence[Path] = (),
) -> Cohort:
    """Phantom cohort + symlink cohort folder (+ extra training patients, already checked by
    :func:`extra_training_cases`)."""
    from liverseg_helpers import io
    from liverseg_helpers.data import phantom

    profile = config_mod.get_profile(profile_name)
    real_paths = real_case_paths(data_dir)
    extra_paths = list(extra_paths)
    suffix = variant.cohort_suffix
    phantom_dir = phantom.ensure_phantom_cohort(
        out_dir / f"phantom{suffix}", profile, variant.anatomy
    )
    phantom_paths = io.list_case_paths(phantom_dir)
    cohort_dir = make_cohort_dir(
        real_paths + extra_paths, phantom_paths, out_dir / f"cohort{suffix}"
    )
    return Cohort(
        cohort_dir,
        [io.case_id_of(p) for p in real_paths],
        sorted(p.name for p in phantom_paths),
        [io.case_id_of(p) for p in extra_paths],
    )
