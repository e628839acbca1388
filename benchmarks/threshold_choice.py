"""The liver threshold, chosen on a patient no fold model was trained on. An experiment, not a test.

Every figure of the course thresholds the probabilities at 0.5. Choosing another threshold on
the test patients would be choosing on the answer, so this script chooses it on a patient that
no fold model was trained on (by default each fold's validation phantom, a monitor only) and
then reports what that choice does on the unseen real patients.

For each real test patient it takes, from each given folder, the fold model that never saw
that patient (``multiview_ensemble.shared_fold_models``), checks that none of them was trained
on the choice case either (``ensemble.fold_training_patients``), averages their probabilities
on both cases (as ``liverseg predict`` averages its pair) and scores every threshold, in 3D at
native resolution with the course's post-processing. The chosen threshold t* has the highest mean
Dice on the choice case over the folds (a tie goes to the one nearest 0.5).

Prints two markdown tables: every threshold on the choice case and on the real patients, each
with its mean over the folds, and the real patients at 0.5 and at t*. ``--csv`` also writes
the first.

Usage::

    python benchmarks/threshold_choice.py runs/cv3/ensemble_aligned_wide_int8 \\
        runs/cv4/ensemble_aligned_coronal_int8 --data ../shared/data/3Dircadb1 \\
        --choice-case runs/cv/phantom_masses_lobe/phantom_001
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from multiview_ensemble import shared_fold_models  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import postprocess, predict  # noqa: E402
from liverseg_helpers.research import ensemble  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

METRICS = ("dice", "rvd", "assd_mm", "hd95_mm")
DEFAULT_THRESHOLDS = [round(0.30 + 0.05 * i, 2) for i in range(9)]  # 0.30 ... 0.70


def mean_probs(models: list[Path], case) -> np.ndarray:
    """The average of the models' probability maps on the case's own grid."""
    return np.mean([predict.predict_case(m, case, postprocess=False).probs for m in models], axis=0)


def score_thresholds(probs: np.ndarray, case, thresholds: list[float]) -> list[dict]:
    """One row per threshold: the course's post-processed mask scored against the truth."""
    rows = []
    for threshold in thresholds:
        mask = postprocess.mask_from_probs(probs, case.spacing_mm[0], threshold=threshold)
        scores = evaluate.evaluate_masks(mask, case.masks["liver"], case.spacing_mm)
        rows.append({"threshold": threshold, **{k: scores[k] for k in METRICS}})
    return rows


def choose_threshold(choice_rows: pd.DataFrame) -> float:
    """The threshold with the highest mean Dice over the folds; a tie goes nearest 0.5."""
    dice = choice_rows.groupby("threshold")["dice"].mean().round(6)
    best = dice[dice == dice.max()].index
    return float(min(best, key=lambda t: (abs(t - 0.5), t)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant_dirs", nargs="+", type=Path, help="crossval variant folders")
    parser.add_argument("--data", type=Path, required=True, help="folder of the real patients")
    parser.add_argument(
        "--choice-case", type=Path, required=True, help="patient folder the threshold is chosen on"
    )
    parser.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS)
    parser.add_argument("--csv", type=Path, help="also write every row here")
    args = parser.parse_args()
    if 0.5 not in args.thresholds:
        parser.error("--thresholds must include 0.5, the course's threshold")
    folds, patients = shared_fold_models(args.variant_dirs)
    choice = io.load_case(args.choice_case)
    rows = []
    for patient in patients:
        models = [f[patient] for f in folds]
        for model in models:
            if choice.case_id in ensemble.fold_training_patients(model):
                raise SystemExit(f"{model}: was trained on the choice case {choice.case_id}")
        case = io.load_case(args.data / patient)
        for role, scored in (("choice", choice), ("test", case)):
            for row in score_thresholds(mean_probs(models, scored), scored, args.thresholds):
                rows.append({"fold": patient, "role": role, "case": scored.case_id, **row})
    table = pd.DataFrame(rows)
    chosen = choose_threshold(table[table.role == "choice"])
    means = table.groupby(["role", "threshold"], as_index=False)[list(METRICS)].mean()
    means["fold"], means["case"] = f"mean of {len(patients)}", ""
    table = pd.concat([table, means], ignore_index=True)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(format_markdown(table.set_index("role"), digits=4))
    test = table[(table.role == "test") & table.threshold.isin([0.5, chosen])]
    print(f"\nchosen on {choice.case_id}: t* = {chosen:g}\n")
    print(format_markdown(test.set_index("fold"), digits=4))


if __name__ == "__main__":
    main()
