"""Score a tumour model (stage two) on held-out patients: the table of models/tumour_unet.md.

For each patient, ``tumour.predict_tumours`` with the true liver as stage one (stage two
alone) and, with ``--liver-model``, with a liver model as stage one; then
``lesion_eval.evaluate_tumour_cohort``. Prints the table and writes it as CSV.

Usage::

    python benchmarks/tumour_score.py models/tumour_unet.keras runs/tumour_cohort/phantom_004 \\
        ../shared/data/3Dircadb1/3Dircadb1.1 --liver-model models/liver_unet.keras \\
        --out runs/tumour_scores.csv
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from liverseg_helpers.research import tumour_loo  # noqa: E402
from liverseg_helpers.tumours import lesion_eval  # noqa: E402

COLUMNS = [
    "stage_one",
    "tumour_dice",
    "global_dice",
    "lesion_recall",
    "lesion_precision",
    "n_true_lesions",
    "n_detected",
    "n_false_lesions",
    "true_tumour_ml",
    "pred_tumour_ml",
    "missed_ml",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="tumour .keras model")
    parser.add_argument("cases", nargs="+", help="patient folders or files with liver masks")
    parser.add_argument("--liver-model", default=None, help="also score with this stage one")
    parser.add_argument("--out", default=None, help="CSV output")
    args = parser.parse_args()
    stage_ones = {"true liver": None}
    if args.liver_model:
        stage_ones["liver model"] = args.liver_model
    tables = []
    for name, liver_model in stage_ones.items():
        livers = [liver_model] if liver_model else None
        results = tumour_loo.cascade_results(args.model, args.cases, livers)
        table = lesion_eval.evaluate_tumour_cohort(results)
        table.insert(0, "stage_one", name)
        tables.append(table)
    table = pd.concat(tables)
    if args.out:
        lesion_eval.save_tumour_metrics_csv(table, args.out)
    with pd.option_context("display.width", 250):
        print(table[COLUMNS].round(3).to_string())


if __name__ == "__main__":
    main()
