"""The baseline a tumour network must beat: a liver-relative HU rule, chosen leave-one-out.

For every grid point of :class:`liverseg_helpers.tumours.hu_rule.HuRule` (offset below the
liver's median HU, smoothing, border erosion, smallest lesion) the rule is run on each
patient with its true liver. Each tumour patient is then scored with the grid point that
gives the best mean tumour Dice on the *other* tumour patients, so no patient's own errors
choose the numbers it is scored with. Tumour-free patients (``--negative``) count the false
lesions of each of those choices. Prints the table, writes it as CSV, ends with a JSON line.

Usage::

    python benchmarks/tumour_hu_rule.py ../shared/data/3Dircadb1/3Dircadb1.1 \\
        ../shared/data/hcc_tace_seg/1720 ../shared/data/hcc_tace_seg/0697 \\
        ../shared/data/hcc_tace_seg/2022 --negative ../shared/data/3Dircadb1/3Dircadb1.7 \\
        --negative ../shared/data/chaos_ct/chaos_ct_1 --csv runs/tumour_hu_rule.csv
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from liverseg_helpers import io
from liverseg_helpers.tumours import hu_rule, lesion_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="patient folders with liver and tumour masks")
    parser.add_argument("--negative", action="append", default=[], help="tumour-free patient")
    parser.add_argument("--csv", default=None, help="write the table here")
    args = parser.parse_args()
    if len(args.cases) < 2:
        parser.error("leave-one-out needs at least two tumour patients")
    start = time.perf_counter()
    rules = hu_rule.rule_grid()
    scores, tumour_ids = {}, []
    for path in args.cases + args.negative:
        case = io.load_case(path)
        scores[case.case_id] = hu_rule.score_rules(case, rules)
        if path in args.cases:
            tumour_ids.append(case.case_id)
    chosen = lesion_eval.choose_leave_one_out(scores, tumour_ids)
    negatives = [case_id for case_id in scores if case_id not in tumour_ids]
    rows = []
    for held_out, rule in chosen.items():
        row = {"patient": held_out, **vars(rule), **scores[held_out][rule]}
        row["false_lesions_on_negatives"] = sum(
            scores[c][rule]["n_false_lesions"] for c in negatives
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    columns = ["patient", "offset_hu", "smooth_mm", "erosion_px", "min_lesion_ml"]
    columns += lesion_eval.SUMMARY_COLUMNS[:7] + ["true_tumour_ml", "pred_tumour_ml", "missed_ml"]
    columns += ["false_lesions_on_negatives"]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table[columns].round(3).to_string(index=False))
    if args.csv:
        lesion_eval.save_tumour_metrics_csv(table[columns], args.csv)
    summary = {
        "mean_tumour_dice": round(float(table["tumour_dice"].mean()), 4),
        "lesions_found": int(table["n_detected"].sum()),
        "lesions_true": int(table["n_true_lesions"].sum()),
        "false_lesions": int(table["n_false_lesions"].sum()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
