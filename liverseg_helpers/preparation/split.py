"""Split patients, never slices, into train / validation / test.

Neighbouring CT slices are 1-5 mm apart and look almost the same. A random split of slices
(as in the paper) puts slice 41 of a patient in the test set and slices 40 and 42 in the
training set, so the test score measures memory, not generalisation.
:func:`slice_level_leak_report` counts how often that happens; :func:`split_patients` and
:func:`kfold_patients` avoid it. Re-exported by :mod:`liverseg_helpers.preparation.preprocess`.

This module does not import TensorFlow or Keras.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from liverseg_helpers.errors import DataError


def _check_ids(case_ids: Sequence[str], needed: int, what: str) -> list[str]:
    ids = sorted(str(c) for c in case_ids)  # sorted: the split depends on the seed only
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise DataError(f"{what}: case ids appear twice: {duplicates}")
    if len(ids) < needed:
        raise DataError(f"{what}: {len(ids)} patients, need at least {needed}")
    return ids


def read_split_without(split_path: str | os.PathLike, test_id: str) -> dict[str, list[str]]:
    """Read a run's ``split.json``, checking that ``test_id`` was neither trained nor validated on.

    Returns:
        The split (``train``, ``val``, ``test`` lists of patient ids).

    Raises:
        DataError: the file is missing, is not JSON, lacks a ``train`` or ``val`` list, or
            ``test_id`` is in one of them.
    """
    try:
        split = json.loads(Path(split_path).read_text())
    except FileNotFoundError:
        raise DataError(f"{split_path}: split file not found; was the run finished?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{split_path}: corrupt split file ({err})") from None
    if not isinstance(split, dict):
        split = {}
    missing = [k for k in ("train", "val") if not isinstance(split.get(k), list)]
    if missing:
        raise DataError(f"{split_path}: split file lacks the list(s) {missing}")
    if test_id in split["train"] + split["val"]:
        raise DataError(f"{split_path}: test patient {test_id} was used in training")
    return split


def split_patients(
    case_ids: Sequence[str], n_val: int, n_test: int, seed: int = 42
) -> dict[str, list[str]]:
    """Random patient-level split.

    Args:
        case_ids: One id per patient (unique).
        n_val: Patients for validation.
        n_test: Patients for the final test.
        seed: Random seed; the same ids and seed give the same split in any input order.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted; every patient in
        exactly one list.

    Raises:
        DataError: Duplicate ids, or fewer than ``n_val + n_test + 1`` patients.
    """
    ids = _check_ids(case_ids, n_val + n_test + 1, "split_patients")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    return {
        "train": sorted(shuffled[n_val + n_test :]),
        "val": sorted(shuffled[:n_val]),
        "test": sorted(shuffled[n_val : n_val + n_test]),
    }


def kfold_patients(case_ids: Sequence[str], k: int, seed: int = 42) -> list[dict[str, list[str]]]:
    """K-fold cross-validation folds over patients.

    Args:
        case_ids: One id per patient (unique).
        k: Number of folds (>= 2).
        seed: Random seed.

    Returns:
        ``k`` dicts ``{"train": [...], "val": [...]}``; each patient is in ``val`` of exactly
        one fold; fold sizes differ by at most one.

    Raises:
        DataError: Duplicate ids, ``k < 2`` or fewer patients than folds.
    """
    if k < 2:
        raise DataError(f"kfold_patients: k must be >= 2, got {k}")
    ids = _check_ids(case_ids, k, "kfold_patients")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = [set(fold.tolist()) for fold in np.array_split(order, k)]
    return [
        {
            "train": sorted(ids[i] for i in order if i not in fold),
            "val": sorted(ids[i] for i in fold),
        }
        for fold in folds
    ]


def slice_level_leak_report(
    slices_per_patient: Mapping[str, int | Sequence[int]],
    test_fraction: float = 0.2,
    seed: int = 42,
) -> dict[str, float]:
    """Show what a random slice-level split (the paper's) does to the test set.

    Args:
        slices_per_patient: ``{case_id: n_slices}`` or ``{case_id: slice_indices}``
            (e.g. the slices picked by ``select_slices``).
        test_fraction: Share of slices drawn at random for the test set.
        seed: Random seed.

    Returns:
        ``n_test_slices``; ``n_test_with_train_neighbour`` (test slices whose slice above or
        below, same patient, is in training); ``share_with_train_neighbour``;
        ``n_patients`` and ``n_patients_on_both_sides``. A patient-level split gives 0 for
        the last two leak counts by construction.
    """
    slices = [
        (case_id, int(index))
        for case_id, value in sorted(slices_per_patient.items())
        for index in (range(value) if isinstance(value, int) else value)
    ]
    rng = np.random.default_rng(seed)
    n_test = int(round(test_fraction * len(slices)))
    is_test = np.zeros(len(slices), dtype=bool)
    is_test[rng.permutation(len(slices))[:n_test]] = True
    train = {s for s, t in zip(slices, is_test, strict=True) if not t}
    test = [s for s, t in zip(slices, is_test, strict=True) if t]
    leaking = sum((c, i - 1) in train or (c, i + 1) in train for c, i in test)
    both = {c for c, _ in test} & {c for c, _ in train}
    return {
        "n_test_slices": len(test),
        "n_test_with_train_neighbour": int(leaking),
        "share_with_train_neighbour": leaking / len(test) if test else 0.0,
        "n_patients": len(slices_per_patient),
        "n_patients_on_both_sides": len(both),
    }


def split_patients_with_lesions(
    case_ids: Sequence[str],
    lesion_ids: Sequence[str],
    n_val: int,
    n_test: int,
    seed: int = 42,
) -> dict[str, list[str]]:
    """Patient split for the tumour task: validation patients all have lesions.

    A validation patient without a lesion cannot tell a network that finds lesions from one
    that predicts none, so the best-val checkpoint and early stopping would judge on nothing.
    The test patients are those of :func:`split_patients` with the same ids and seed (the
    liver model's test patients stay unseen by both stages); validation patients are drawn
    from the remaining patients with lesions, keeping at least one of them for training.

    Args:
        case_ids: One id per patient (unique).
        lesion_ids: The patients whose tumour mask is not empty.
        n_val: Validation patients wanted; fewer when too few patients have lesions.
        n_test: Patients for the final test.
        seed: Random seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted; every patient in
        exactly one list, every ``val`` patient in ``lesion_ids``.

    Raises:
        DataError: An id of ``lesion_ids`` not in ``case_ids``, or fewer than two patients
            with lesions outside the test set (one to train on, one to validate on).
    """
    split = split_patients(case_ids, n_val, n_test, seed)
    lesion_set = {str(c) for c in lesion_ids}
    unknown = sorted(lesion_set - set(split["train"] + split["val"] + split["test"]))
    if unknown:
        raise DataError(f"split_patients_with_lesions: lesion ids not in the cohort: {unknown}")
    rest = sorted(split["train"] + split["val"])
    with_lesions = [c for c in rest if c in lesion_set]
    if len(with_lesions) < 2:
        raise DataError(
            f"split_patients_with_lesions: {len(with_lesions)} patient(s) with lesions outside "
            f"the test set {split['test']}; need two, one to train on and one to validate on"
        )
    order = np.random.default_rng(seed).permutation(len(with_lesions))
    val = {with_lesions[i] for i in order[: min(n_val, len(with_lesions) - 1)]}
    return {
        "train": [c for c in rest if c not in val],
        "val": sorted(val),
        "test": split["test"],
    }
