"""Scoring liver-tumour predictions: voxel overlap per patient and over a cohort, lesion detection.

Three views of the same prediction, as in LiTS (Bilic et al. 2023):

* **per-patient tumour Dice** – every patient counts once, so a missed 1 mL lesion in a patient
  with nothing else scores as badly as a missed 100 mL one;
* **global Dice** – all patients' voxels pooled (``2 sum|P∩T| / (sum|P| + sum|T|)``), dominated
  by the large tumours;
* **lesion detection** – lesions as connected components: a predicted lesion that overlaps a
  true one (at least one voxel) is a hit, a true lesion that no prediction touches is missed.

Defined values where a ratio would be 0/0, so a tumour-free patient never gives NaN:

=========================== =================================================================
tumour Dice                  1.0 when truth and prediction are both empty (nothing to find,
                             nothing found); 0.0 when only one of them is empty
lesion recall                1.0 when the patient has no true lesion (nothing was missed)
lesion precision             1.0 when nothing is predicted (no false alarm)
global Dice                  1.0 when every patient is empty in truth and prediction
=========================== =================================================================

The counts (``n_true_lesions``, ``n_pred_lesions``, ``n_false_lesions``) are always given
too, so a reader can tell "1.0 because perfect" from "1.0 because empty", and the cohort row
pools counts (recall = all detected / all true lesions) rather than averaging such ratios.

This module does not import TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverseg_helpers.atomic import atomic_file
from liverseg_helpers.errors import DataError
from liverseg_helpers.tumours.tumour import LIVER_LABEL, TUMOUR_LABEL, label_lesions, lesion_table


def _check_pair(pred: np.ndarray, truth: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise DataError(f"{what}: prediction shape {pred.shape} != truth shape {truth.shape}")
    return pred, truth


def tumour_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two tumour masks; 1.0 when both are empty, 0.0 when only one is.

    Args:
        pred: bool/0-1 ``[z, y, x]`` predicted tumour.
        truth: bool/0-1 ``[z, y, x]`` true tumour.

    Raises:
        DataError: Different shapes.
    """
    pred, truth = _check_pair(pred, truth, "tumour_dice")
    pred, truth = pred != 0, truth != 0
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & truth)) / total


def global_dice(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]] | list) -> float:
    """LiTS "Dice global": one Dice over the voxels of all patients pooled.

    Args:
        pairs: ``{case_id: (pred, truth)}`` or a list of ``(pred, truth)`` tumour masks.

    Returns:
        ``2 sum|P∩T| / (sum|P| + sum|T|)``; 1.0 when everything is empty.
    """
    items = pairs.values() if isinstance(pairs, Mapping) else pairs
    inter = total = 0
    for pred, truth in items:
        pred, truth = _check_pair(pred, truth, "global_dice")
        pred, truth = pred != 0, truth != 0
        inter += int(np.count_nonzero(pred & truth))
        total += int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return 1.0 if total == 0 else 2.0 * inter / total


def match_lesions(
    pred_lesions: np.ndarray, true_lesions: np.ndarray, spacing_mm: tuple[float, float, float]
) -> dict:
    """Which true lesions were found and which predicted lesions are real.

    Args:
        pred_lesions: Integer id map ``[z, y, x]`` of predicted lesions (``label_lesions``).
        true_lesions: Integer id map of true lesions (``case.lesions``, one id per lesion).
        spacing_mm: Voxel size ``(z, y, x)`` in mm (for volumes).

    Returns:
        dict with ``n_true_lesions``, ``n_pred_lesions``, ``n_detected`` (true lesions
        touched by a prediction), ``n_false_lesions`` (predicted lesions touching no true
        one), ``lesion_recall``, ``lesion_precision`` (defined values when empty: see the
        module docstring), ``missed_ml`` (volumes of the missed true lesions, mL, largest
        first), ``missed_ids`` / ``false_ids`` (ids in the two maps) and ``detected_ids``.
    """
    pred_lesions, true_lesions = _check_pair(pred_lesions, true_lesions, "match_lesions")
    true_ids = [int(i) for i in np.unique(true_lesions) if i != 0]
    pred_ids = [int(i) for i in np.unique(pred_lesions) if i != 0]
    overlap = (pred_lesions != 0) & (true_lesions != 0)
    pairs = np.unique(np.stack([true_lesions[overlap], pred_lesions[overlap]]), axis=1)
    detected = sorted({int(t) for t in pairs[0]})
    real_pred = {int(p) for p in pairs[1]}
    missed = [i for i in true_ids if i not in detected]
    false = [i for i in pred_ids if i not in real_pred]
    table = lesion_table(true_lesions, spacing_mm).set_index("source_id")
    missed_ml = sorted((float(table.loc[i, "volume_ml"]) for i in missed), reverse=True)
    return dict(
        n_true_lesions=len(true_ids),
        n_pred_lesions=len(pred_ids),
        n_detected=len(detected),
        n_false_lesions=len(false),
        lesion_recall=len(detected) / len(true_ids) if true_ids else 1.0,
        lesion_precision=(len(pred_ids) - len(false)) / len(pred_ids) if pred_ids else 1.0,
        missed_ml=missed_ml,
        missed_ids=missed,
        false_ids=false,
        detected_ids=detected,
    )


def evaluate_tumours(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    spacing_mm: tuple[float, float, float],
    true_lesions: np.ndarray | None = None,
) -> dict:
    """All tumour scores of one patient.

    Args:
        pred_labels: uint8 0/1/2 label map ``[z, y, x]`` (``tumour.predict_tumours``).
        true_labels: 0/1/2 truth (``tumour.labels_from_case``).
        spacing_mm: Voxel size ``(z, y, x)`` in mm.
        true_lesions: One id per true lesion (``case.lesions``); None = connected components
            of the true tumour (touching lesions then count as one).

    Returns:
        dict: ``tumour_dice``, the keys of :func:`match_lesions`, ``pred_tumour_ml``,
        ``true_tumour_ml``, ``tumour_volume_error_ml`` (pred - true), ``pred_burden``,
        ``true_burden`` (tumour / liver volume) and ``burden_error`` (pred - true, fraction).

    Raises:
        DataError: Shapes differ.
    """
    pred_labels, true_labels = _check_pair(pred_labels, true_labels, "evaluate_tumours")
    pred_tumour, true_tumour = pred_labels == TUMOUR_LABEL, true_labels == TUMOUR_LABEL
    if true_lesions is None:
        true_lesions = label_lesions(true_tumour)
    else:
        true_lesions = np.where(true_tumour, np.asarray(true_lesions), 0)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    scores = dict(tumour_dice=tumour_dice(pred_tumour, true_tumour))
    scores.update(match_lesions(label_lesions(pred_tumour), true_lesions, spacing_mm))
    pred_ml = float(np.count_nonzero(pred_tumour)) * voxel_ml
    true_ml = float(np.count_nonzero(true_tumour)) * voxel_ml
    burdens = {}
    for name, labels in (("pred", pred_labels), ("true", true_labels)):
        liver = int(np.count_nonzero(labels >= LIVER_LABEL))
        tumour = int(np.count_nonzero(labels == TUMOUR_LABEL))
        burdens[name] = tumour / liver if liver else 0.0
    scores.update(
        pred_tumour_ml=pred_ml,
        true_tumour_ml=true_ml,
        tumour_volume_error_ml=pred_ml - true_ml,
        pred_burden=burdens["pred"],
        true_burden=burdens["true"],
        burden_error=burdens["pred"] - burdens["true"],
    )
    return scores


SUMMARY_COLUMNS = [
    "tumour_dice",
    "lesion_recall",
    "lesion_precision",
    "n_true_lesions",
    "n_detected",
    "n_pred_lesions",
    "n_false_lesions",
    "true_tumour_ml",
    "pred_tumour_ml",
    "tumour_volume_error_ml",
    "true_burden",
    "pred_burden",
    "burden_error",
    "missed_ml",
]


def evaluate_tumour_cohort(
    results: Mapping[str, tuple[np.ndarray, np.ndarray, tuple, np.ndarray | None]],
) -> pd.DataFrame:
    """Per-patient tumour scores and a ``cohort`` row.

    Args:
        results: ``{case_id: (pred_labels, true_labels, spacing_mm, true_lesions)}``;
            ``true_lesions`` may be None.

    Returns:
        DataFrame indexed by case id (columns :data:`SUMMARY_COLUMNS`) plus a ``cohort`` row:
        ``tumour_dice`` = mean per-patient Dice (LiTS "Dice per case"), ``global_dice`` =
        pooled Dice (LiTS "Dice global"), lesion counts summed and recall / precision from
        the pooled counts, volumes and burden errors as means.
    """
    rows, pairs = {}, {}
    for case_id, (pred, truth, spacing_mm, lesions) in results.items():
        rows[case_id] = evaluate_tumours(pred, truth, spacing_mm, lesions)
        pairs[case_id] = (pred == TUMOUR_LABEL, np.asarray(truth) == TUMOUR_LABEL)
    table = pd.DataFrame.from_dict(rows, orient="index")[SUMMARY_COLUMNS]
    table["global_dice"] = np.nan
    if not rows:
        return table
    table.loc["cohort"] = pd.Series(pooled_row(table, global_dice(pairs)))
    table.index.name = "case_id"
    return table


def pooled_row(table: pd.DataFrame, global_dice_value: float = float("nan")) -> dict:
    """The ``cohort`` row of per-patient tumour scores (:data:`SUMMARY_COLUMNS`).

    Args:
        table: One row per patient, as :func:`evaluate_tumours` gives them.
        global_dice_value: The pooled Dice, when the masks are at hand (:func:`global_dice`).

    Returns:
        Mean per-patient Dice, lesion counts summed with recall / precision from the pooled
        counts, volumes and burden errors as means, all missed lesions' volumes.
    """
    sums = table[["n_true_lesions", "n_detected", "n_pred_lesions", "n_false_lesions"]].sum()
    n_real_pred = sums.n_pred_lesions - sums.n_false_lesions
    cohort = dict(
        tumour_dice=table["tumour_dice"].mean(),
        lesion_recall=sums.n_detected / sums.n_true_lesions if sums.n_true_lesions else 1.0,
        lesion_precision=n_real_pred / sums.n_pred_lesions if sums.n_pred_lesions else 1.0,
        **{key: int(value) for key, value in sums.items()},
        **{
            key: table[key].mean()
            for key in (
                "true_tumour_ml",
                "pred_tumour_ml",
                "tumour_volume_error_ml",
                "true_burden",
                "pred_burden",
                "burden_error",
            )
        },
        missed_ml=sorted(sum(table["missed_ml"], []), reverse=True),
        global_dice=global_dice_value,
    )
    return cohort


def best_choice(
    scores: Mapping[str, Mapping[Any, dict]], case_ids: list[str], key: str = "tumour_dice"
) -> Any:
    """The choice with the best mean ``key`` over ``case_ids``.

    Args:
        scores: ``{case_id: {choice: evaluate_tumours(...) dict}}``, the same choices, in the
            same order, for every patient (ties go to the first).
        case_ids: The patients to average over; at least one.
    """
    choices = list(scores[case_ids[0]])
    return max(choices, key=lambda c: np.mean([scores[i][c][key] for i in case_ids]))


def choose_leave_one_out(
    scores: Mapping[str, Mapping[Any, dict]], case_ids: list[str], key: str = "tumour_dice"
) -> dict[str, Any]:
    """For each patient, the choice with the best mean ``key`` on the *other* patients.

    So no patient's own errors choose the numbers it is scored with.

    Args:
        scores: As for :func:`best_choice`.
        case_ids: The patients to choose for (and from); at least two.

    Returns:
        ``{case_id: chosen choice}``.

    Raises:
        DataError: Fewer than two patients.
    """
    if len(case_ids) < 2:
        raise DataError(f"leave-one-out needs at least two patients, got {list(case_ids)}")
    return {
        held_out: best_choice(scores, [c for c in case_ids if c != held_out], key)
        for held_out in case_ids
    }


def save_tumour_metrics_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write :func:`evaluate_tumour_cohort`'s table as CSV, atomically."""
    with atomic_file(path) as tmp:
        table.to_csv(tmp)
    return Path(path)
