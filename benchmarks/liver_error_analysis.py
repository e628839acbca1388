"""Where does a liver model go wrong on a real patient? The error analysis behind the README.

For one model and one 3D-IRCADb patient, prints one JSON line with:

* ``dice``, ``assd_mm``: the model's 3D scores (post-processing on, as ``liverseg predict``);
* ``false_positive_voxels`` and, for each ``--structure`` (IRCAD mask names such as ``tumor``,
  ``spleen``), how many of them lie inside that structure;
* ``false_negative_voxels`` and how many lie inside the liver tumours (IRCAD's liver mask
  includes them);
* ``ceiling_dice``, ``ceiling_assd_mm``: the best any model with this input size could do, from
  the true mask area-averaged down to the input size (a perfect soft prediction), resized back
  with the same code as inference and thresholded at 0.5.

Usage::

    python benchmarks/liver_error_analysis.py runs/cv/phantom_long/fold_3Dircadb1.7/last.keras \\
        ../shared/data/3Dircadb1/3Dircadb1.7 --structure tumor
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from liverseg_helpers import evaluate, predict, preprocess  # noqa: E402
from liverseg_helpers.io import ircadb  # noqa: E402


def resolution_ceiling(truth: np.ndarray, settings, spacing_mm) -> dict:
    """Scores of a perfect soft prediction at the model's input size."""
    if settings.target_spacing_mm is not None:
        raise SystemExit("ceiling: only for models that resize whole slices")
    size = settings.image_size
    area = cv2.INTER_AREA  # each small pixel = the liver fraction it covers
    small = np.stack(
        [cv2.resize(m.astype(np.float32), (size, size), interpolation=area) for m in truth]
    )
    back = preprocess.restore_slices(small, truth.shape[1:], settings, spacing_mm) > 0.5
    return evaluate.evaluate_masks(back, truth, spacing_mm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".keras liver model")
    parser.add_argument("case", help="3D-IRCADb patient folder")
    parser.add_argument("--structure", action="append", default=[], help="IRCAD mask name")
    args = parser.parse_args()

    case = ircadb.load_ircadb_patient(args.case, extra_structures=args.structure)
    truth = case.masks["liver"]
    model, settings = predict.load_prediction_model(args.model)
    pred = predict.predict_case(model, case, settings=settings).pred
    scores = evaluate.evaluate_masks(pred, truth, case.spacing_mm)
    false_pos, false_neg = pred & ~truth, truth & ~pred
    ceiling = resolution_ceiling(truth, settings, case.spacing_mm)
    row = {
        "model": args.model,
        "case_id": case.case_id,
        "dice": round(scores["dice"], 4),
        "assd_mm": round(scores["assd_mm"], 2),
        "false_positive_voxels": int(false_pos.sum()),
        "false_negative_voxels": int(false_neg.sum()),
        "false_negative_in_liver_tumours": int((false_neg & case.masks["tumour"]).sum()),
        "ceiling_dice": round(ceiling["dice"], 4),
        "ceiling_assd_mm": round(ceiling["assd_mm"], 2),
    }
    for name in args.structure:
        if name not in case.masks:
            raise SystemExit(f"{args.case}: no structure {name!r} in MASKS_DICOM")
        row[f"false_positive_in_{name}"] = int((false_pos & case.masks[name]).sum())
    print(json.dumps(row))


if __name__ == "__main__":
    main()
