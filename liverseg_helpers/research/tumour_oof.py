"""Out-of-fold tumour probabilities of a tumour leave-one-out, and two ways of reading them.

``research.tumour_loo`` trains one stage two per real tumour patient, each never shown that
patient, and scores it at the cascade's threshold of 0.5. This module goes back to those fold
models and keeps their probabilities on their own test patients (with the true liver as stage
one), once, under ``<loo>/oof_probs/``. Two ways of reading them are then scored, each chosen
leave-one-patient-out (``lesion_eval.choose_leave_one_out``: a patient is scored with the
choice that is best on the other patients' out-of-fold results):

* **threshold**: tumour where the probability is above a threshold from :data:`THRESHOLDS`
  (lesions below :data:`MIN_LESION_ML` dropped, as in the cascade);
* **gated rule**: the candidate lesions of the liver-relative HU rule (``tumours.hu_rule``,
  its grid) kept only where the network's highest probability inside the lesion reaches a
  gate from :data:`GATES` (0: the rule alone); rule and gate are chosen together.

It also lists the network's probabilities inside every true lesion, and each patient's best
threshold on its own probabilities (an upper bound: no method could choose it unseen).
With ``--seen`` each fold model is also scored on the real tumour patients it trained on, so a
stage two that memorises its patients shows as high Dice there and none on its test patient.

Command::

    python -m liverseg_helpers.research.tumour_oof --loo runs/tumour_loo_relative [--seen]

Writes ``oof_choices.csv`` (one row per patient and way), ``oof_lesions.csv`` (one row per
true lesion) and with ``--seen`` ``oof_seen.csv`` (one row per fold and training patient) in
the leave-one-out folder, prints them and ends with a JSON summary line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cc3d
import numpy as np
import pandas as pd
from scipy import ndimage

from liverseg_helpers.atomic import atomic_file
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case

THRESHOLDS = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02)
GATES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
MIN_LESION_ML = 0.1  # the cascade's default (tumour.predict_tumours)
PROBS_DIR = "oof_probs"


@dataclass
class FoldPatient:
    """One fold's test patient inside its true liver's box, with its out-of-fold probabilities."""

    case_id: str
    volume_hu: np.ndarray
    liver: np.ndarray  # bool
    true_labels: np.ndarray  # uint8 0/1/2
    probs: np.ndarray  # float32, the fold model's tumour probabilities
    spacing_mm: tuple[float, float, float]


def fold_test_ids(loo_dir: Path) -> list[str]:
    """The test patients of a leave-one-out folder's finished folds (``fold_<id>/metrics.json``).

    Raises:
        DataError: No finished fold.
    """
    ids = sorted(p.parent.name.removeprefix("fold_") for p in loo_dir.glob("fold_*/metrics.json"))
    if not ids:
        raise DataError(
            f"{loo_dir}: no finished fold (fold_<patient>/metrics.json); run tumour_loo"
        )
    return ids


def fold_training_ids(loo_dir: Path, fold_id: str) -> list[str]:
    """The patients fold ``fold_id`` trained on (its ``metrics.json``).

    Raises:
        DataError: The fold trained on its own test patient.
    """
    fold = loo_dir / f"fold_{fold_id}"
    trained_on = json.loads((fold / "metrics.json").read_text())["train"]
    if fold_id in trained_on:
        raise DataError(f"{fold}: the fold trained on its test patient {fold_id}")
    return trained_on


@functools.lru_cache(maxsize=1)
def _load_fold_model(model_path: str, mtime_ns: int) -> tuple:
    """A fold's tumour model and settings, loaded once while one fold's patients are scored
    (``mtime_ns`` in the key: a model file written again is loaded again)."""
    from liverseg_helpers.tumours import tumour

    return tumour.load_tumour_model(model_path)


def fold_patient(loo_dir: Path, fold_id: str, case: Case) -> FoldPatient:
    """Fold ``fold_id``'s model on one patient, inside the patient's true liver box.

    Its own test patient's probabilities (out-of-fold) are predicted once and kept under
    ``<loo>/oof_probs/`` (predicted again when the fold's ``last.keras`` is newer than them);
    any other patient's (one it trained on) are predicted each time.

    Raises:
        DataError: The fold trained on its own test patient, or its model is missing.
    """
    from liverseg_helpers.tumours import hu_rule, tumour

    fold_training_ids(loo_dir, fold_id)
    liver = case.masks["liver"]
    box = hu_rule.liver_box(liver)
    own = case.case_id == fold_id
    cached, model_path = (
        loo_dir / PROBS_DIR / f"{case.case_id}.npy",
        loo_dir / f"fold_{fold_id}" / "last.keras",
    )
    fresh = cached.exists() and cached.stat().st_mtime >= model_path.stat().st_mtime
    if own and fresh:
        probs = np.load(cached)
    else:
        model, settings = _load_fold_model(str(model_path), model_path.stat().st_mtime_ns)
        probs = tumour.predict_tumour_probs(model, settings, case.volume, liver, case.spacing_mm)[
            box
        ].astype(np.float16)
        if own:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(cached, suffix=".npy") as tmp:
                np.save(tmp, probs)
    probs = probs.astype(np.float32)
    if probs.shape != liver[box].shape:
        raise DataError(f"{cached}: shape {probs.shape} != the liver's box {liver[box].shape}")
    return FoldPatient(
        case_id=case.case_id,
        volume_hu=case.volume[box],
        liver=liver[box],
        true_labels=tumour.labels_from_case(case)[box],
        probs=probs,
        spacing_mm=case.spacing_mm,
    )


def seen_patient_rows(loo_dir: Path, fold_id: str, cases: dict[str, Case]) -> list[dict]:
    """Fold ``fold_id``'s scores at 0.5 on the tumour patients (of ``cases``) it trained on."""
    trained_on = fold_training_ids(loo_dir, fold_id)
    rows = []
    for case_id in (c for c in cases if c in trained_on):
        patient = fold_patient(loo_dir, fold_id, cases[case_id])
        scores = score_thresholds(patient, (0.5,))[0.5]
        lesions = pd.DataFrame(lesion_probabilities(patient))
        rows.append(
            {
                "fold": fold_id,
                **_row(case_id, "seen in training", "p > 0.5", scores),
                "median_lesion_prob": float(lesions["median_prob"].median()),
            }
        )
    return rows


def gate_lesions(candidates: np.ndarray, probs: np.ndarray, gate: float) -> np.ndarray:
    """Keep the candidate lesions (26-connected) whose highest probability reaches ``gate``.

    Args:
        candidates: bool ``[z, y, x]``.
        probs: Tumour probabilities, same shape.
        gate: 0 or below keeps every candidate.

    Returns:
        bool, same shape.
    """
    if gate <= 0 or not candidates.any():
        return candidates
    labels, n = cc3d.connected_components(
        candidates.astype(np.uint8), connectivity=26, return_N=True
    )
    peaks = np.asarray(ndimage.maximum(probs, labels, index=np.arange(1, n + 1)))
    return np.isin(labels, np.flatnonzero(peaks >= gate) + 1)


def _scores(patient: FoldPatient, tumour_mask: np.ndarray) -> dict:
    from liverseg_helpers.tumours import lesion_eval, tumour

    pred = tumour.label_map(patient.liver, tumour_mask)
    return lesion_eval.evaluate_tumours(pred, patient.true_labels, patient.spacing_mm)


def score_thresholds(patient: FoldPatient, thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """``{threshold: evaluate_tumours dict}`` of the network's probabilities."""
    from liverseg_helpers.tumours import tumour

    voxel_ml = float(np.prod(patient.spacing_mm)) / 1000.0
    return {
        t: _scores(
            patient,
            tumour.remove_lesions_below_ml(
                (patient.probs > t) & patient.liver, MIN_LESION_ML, voxel_ml
            ),
        )
        for t in thresholds
    }


def score_gated_rules(patient: FoldPatient, gates: Sequence[float] = GATES) -> dict:
    """``{(HuRule, gate): evaluate_tumours dict}`` of the HU rule's lesions gated by the network."""
    from liverseg_helpers.tumours import hu_rule

    rules = hu_rule.rule_grid()
    masks = hu_rule.rule_masks(patient.volume_hu, patient.liver, patient.spacing_mm, rules)
    return {
        (rule, gate): _scores(patient, gate_lesions(mask, patient.probs, gate))
        for rule, mask in masks
        for gate in gates
    }


def lesion_probabilities(patient: FoldPatient) -> list[dict]:
    """The network's probabilities inside each true lesion (26-connected components)."""
    from liverseg_helpers.tumours import tumour

    lesions = tumour.label_lesions(patient.true_labels == tumour.TUMOUR_LABEL)
    voxel_ml = float(np.prod(patient.spacing_mm)) / 1000.0
    rows = []
    for lesion_id in range(1, int(lesions.max()) + 1):
        inside = patient.probs[lesions == lesion_id]
        rows.append(
            {
                "patient": patient.case_id,
                "lesion": lesion_id,
                "volume_ml": inside.size * voxel_ml,
                "max_prob": float(inside.max()),
                "median_prob": float(np.median(inside)),
                "share_above_0.5": float(np.mean(inside > 0.5)),
                "share_above_0.1": float(np.mean(inside > 0.1)),
            }
        )
    return rows


def _row(patient_id: str, way: str, choice: str, scores: dict) -> dict:
    keys = ["tumour_dice", "n_true_lesions", "n_detected", "n_false_lesions"]
    keys += ["true_tumour_ml", "pred_tumour_ml"]
    return {"patient": patient_id, "way": way, "choice": choice, **{k: scores[k] for k in keys}}


def choose_and_score(scored: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """Per patient and way, the leave-one-out choice and its scores, plus the oracle threshold.

    Args:
        scored: ``{way: {case_id: {choice: evaluate_tumours dict}}}`` with ways
            ``"threshold"`` and ``"gated rule"``.
    """
    from liverseg_helpers.tumours import lesion_eval

    rows = []
    for way, by_patient in scored.items():
        ids = list(by_patient)
        for case_id, choice in lesion_eval.choose_leave_one_out(by_patient, ids).items():
            rows.append(_row(case_id, way, describe(choice), by_patient[case_id][choice]))
    for case_id, by_threshold in scored["threshold"].items():
        best = lesion_eval.best_choice(scored["threshold"], [case_id])
        rows.append(_row(case_id, "own best threshold", describe(best), by_threshold[best]))
    return pd.DataFrame(rows)


def describe(choice) -> str:
    """A choice as text: a threshold, or a rule and its gate."""
    if isinstance(choice, tuple):
        rule, gate = choice
        return (
            f"offset {rule.offset_hu:g} HU, smooth {rule.smooth_mm:g} mm, erosion "
            f"{rule.erosion_px} px, min {rule.min_lesion_ml:g} mL; gate {gate:g}"
        )
    return f"p > {choice:g}"


def summary(table: pd.DataFrame) -> dict:
    """Mean tumour Dice, lesions found / true and false lesions, per way."""
    out = {}
    for way, group in table.groupby("way", sort=False):
        out[way] = {
            "mean_tumour_dice": round(float(group["tumour_dice"].mean()), 4),
            "lesions_found": int(group["n_detected"].sum()),
            "lesions_true": int(group["n_true_lesions"].sum()),
            "false_lesions": int(group["n_false_lesions"].sum()),
        }
    return out


def run_tumour_oof(
    loo_dir: str | os.PathLike, seen: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score both ways on every finished fold of a tumour leave-one-out folder (module docstring).

    Args:
        loo_dir: A ``research.tumour_loo`` output folder.
        seen: Also score each fold model on the tumour patients it trained on
            (:func:`seen_patient_rows`; ``oof_seen.csv``), to tell memorising from learning.

    Returns:
        ``(choices table, lesion probabilities table)``, also written as CSV in ``loo_dir``.

    Raises:
        DataError: Fewer than two finished folds, or a fold trained on its test patient.
    """
    from liverseg_helpers import io

    loo_dir = Path(loo_dir)
    ids = fold_test_ids(loo_dir)
    cases = {case_id: io.load_case(loo_dir / "cohort" / case_id) for case_id in ids}
    scored: dict[str, dict] = {"threshold": {}, "gated rule": {}}
    lesions = []
    for case_id in ids:
        patient = fold_patient(loo_dir, case_id, cases[case_id])
        scored["threshold"][case_id] = score_thresholds(patient)
        scored["gated rule"][case_id] = score_gated_rules(patient)
        lesions += lesion_probabilities(patient)
        print(f"{case_id}: scored", flush=True)
    table, lesion_table = choose_and_score(scored), pd.DataFrame(lesions)
    frames = [(table, "oof_choices.csv"), (lesion_table, "oof_lesions.csv")]
    if seen:
        seen_rows = [row for fold_id in ids for row in seen_patient_rows(loo_dir, fold_id, cases)]
        frames.append((pd.DataFrame(seen_rows), "oof_seen.csv"))
    for frame, name in frames:
        with atomic_file(loo_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4g")
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            print(frame.round(3).to_string(index=False))
    return table, lesion_table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loo", required=True, help="a research.tumour_loo output folder")
    parser.add_argument(
        "--seen", action="store_true", help="also score each fold on its training patients"
    )
    args = parser.parse_args(argv)
    table, _ = run_tumour_oof(args.loo, args.seen)
    print(json.dumps(summary(table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
