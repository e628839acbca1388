"""The shipped liver models on real patients, scored and timed as `liverseg predict` runs them.

Runs ``liverseg predict``'s own road (``pipeline.segment_ct``: the shipped axial + coronal
pair by default, post-processing on) on every patient of the cohort folders given, then
scores each written mask against the expert one in 3D at the CT's native resolution, and
times each prediction (reading, both networks, post-processing and writing). The models
shipped until 2026-12-07 were trained on 3D-IRCADb patients only, so for them the CHAOS and
HCC-TACE-Seg patients of ``../shared/data`` are other hospitals, other scanners and, for
HCC-TACE-Seg, 5 mm slices and an arterial phase. The axial file shipped since then was
fine-tuned on all six, so with it this script gives training-set scores (a check that the
file works, ``models/liver_unet.md``); ``--model`` scores any other files. Prints one
markdown row per patient and one per source, and writes both as CSV. With ``--fast``, the
road of ``liverseg predict --fast`` (one network instead of the averaged ensemble).

Usage::

    python benchmarks/external_test.py --data ../shared/data/chaos_ct \\
        --data ../shared/data/hcc_tace_seg --out runs/external_test
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import pipeline  # noqa: E402
from liverseg_helpers.research import crossval  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

COLUMNS = ("dice", "voe", "rvd", "assd_mm", "mssd_mm", "hd95_mm", "pred_volume_ml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="cohort folder (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="folder for masks and tables")
    parser.add_argument("--model", action="append", default=None, help="default: shipped pair")
    parser.add_argument("--fast", action="store_true", help="liverseg predict --fast's network")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    paths = crossval.real_case_paths(args.data)
    rows = []
    for path in paths:
        case_id = io.case_id_of(path)
        out = args.out / f"{case_id}.nii.gz"
        result = pipeline.segment_ct(
            path, out, models=args.model, overwrite=True, fast=args.fast, read_masks=True
        )
        truth = result.case.masks["liver"]
        scores = evaluate.evaluate_masks(result.labels, truth, result.case.spacing_mm)
        rows.append(
            {
                "case_id": case_id,
                **{k: float(scores[k]) for k in COLUMNS},
                "true_volume_ml": float(scores["true_volume_ml"]),
                "slices": result.case.shape[0],
                "predict_s": result.seconds,
            }
        )
        print(f"{case_id}: Dice {scores['dice']:.4f}, {result.seconds:.1f} s", flush=True)
    per_patient = pd.DataFrame(rows).set_index("case_id")
    sources = {io.case_id_of(p): crossval.source_of(p) for p in paths}
    per_source = crossval.per_source_table(rows, sources)
    per_patient.to_csv(args.out / "per_patient_metrics.csv", float_format="%.4g")
    per_source.to_csv(args.out / "per_source_metrics.csv", float_format="%.4g")
    print(format_markdown(per_patient))
    print(format_markdown(per_source))
    mean = per_patient[list(COLUMNS) + ["predict_s"]].mean()
    print(f"mean of {len(rows)} patients: Dice {mean['dice']:.4f}, ASSD {mean['assd_mm']:.2f} mm")


if __name__ == "__main__":
    main()
