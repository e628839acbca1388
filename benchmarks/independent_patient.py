"""Liver models on a patient no recipe was chosen with. An experiment, not a test.

Every leave-one-patient-out figure of docs/results.md was measured on 3D-IRCADb patients 1 and 7,
and the recipes were chosen by looking at those figures. This script scores models on a third
patient that took no part in any choice: by default dcmqi's 3-slice CT (another scanner, another
hospital, BSD-3 licence; ``../shared/data/dcmqi-ct-3slice``) with its liver mask. Three slices
are too few for a real accuracy figure: read it as a check that the models carry over to a new
scanner, and compare models with each other on it, not with the leave-one-out table.

Prints one markdown row per model: Dice, VOE, RVD, ASSD, HD95 and the volumes, in 3D, with the
course's post-processing. With three slices, the whole top and bottom slice count as
surface, so the ASSD and HD95 come out far smaller than on a whole liver: compare them between
models only.

Usage::

    python benchmarks/independent_patient.py models/liver_unet.keras \\
        runs/cv/aligned/fold_*/last.keras
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import predict  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

DCMQI = Path(__file__).resolve().parents[2] / "shared" / "data" / "dcmqi-ct-3slice"
COLUMNS = ("dice", "voe", "rvd", "assd_mm", "hd95_mm", "pred_volume_ml", "true_volume_ml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help=".keras liver models")
    parser.add_argument("--ct", type=Path, default=DCMQI / "ct-3slice", help="CT case")
    parser.add_argument("--truth", type=Path, default=DCMQI / "liver_seg.nrrd", help="liver mask")
    args = parser.parse_args()
    case = io.load_case(args.ct)
    truth = evaluate.read_mask_file(args.truth).mask
    if truth.shape != case.volume.shape:
        raise SystemExit(f"{args.truth}: mask {truth.shape} != CT {case.volume.shape} ({args.ct})")
    rows = []
    for path in args.models:
        pred = predict.predict_case(path, case).pred
        scores = evaluate.evaluate_masks(pred, truth, case.spacing_mm)
        rows.append({"model": str(path), **{k: float(scores[k]) for k in COLUMNS}})
    print(f"{args.ct}: {case.volume.shape[0]} slices, spacing {case.spacing_mm} mm")
    print(format_markdown(pd.DataFrame(rows).set_index("model")))


if __name__ == "__main__":
    main()
