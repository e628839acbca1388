"""Where does a liver model go wrong on a real patient? The error analysis behind the record
in docs/real_ct_experiments.md.

For one model and one 3D-IRCADb patient, prints one JSON line with:

* ``dice``, ``assd_mm``: the model's 3D scores (post-processing on, as ``liverseg predict``);
* ``false_positive_voxels`` and, for each ``--structure`` (IRCAD mask names such as ``tumor``,
  ``spleen``), how many of them lie inside that structure;
* ``false_negative_voxels`` and how many lie inside the liver tumours (IRCAD's liver mask
  includes them);
* ``ceiling_dice``, ``ceiling_assd_mm``: the best any model with this input size could do, from
  the true mask area-averaged down to the input size (a perfect soft prediction), resized back
  with the same code as inference and thresholded at 0.5;
* ``dice_shifted_minus``, ``dice_shifted_plus``: the Dice after moving the model's probability
  map by -/+ (f - 1) / 2 native pixels in rows and columns (f: native size / input size, 1.5 px
  at 512 -> 128). A model trained on masks that sat off their images' pixel grid (the course
  before commit 830a6a7, see ``slice_geometry.resize_mask``) scores clearly better with
  ``minus`` than as it is; a model trained on aligned masks scores best unshifted.

Usage::

    python benchmarks/liver_error_analysis.py runs/cv/phantom_long/fold_3Dircadb1.7/last.keras \\
        ../shared/data/3Dircadb1/3Dircadb1.7 --structure tumor
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import postprocess, predict  # noqa: E402
from liverseg_helpers.io import ircadb  # noqa: E402
from liverseg_helpers.preparation import preprocess  # noqa: E402


def resolution_ceiling(truth: np.ndarray, settings, spacing_mm) -> dict:
    """Scores of a perfect soft prediction at the model's input size."""
    if settings.target_spacing_mm is not None:
        raise SystemExit("ceiling: only for models that resize whole slices")
    small = preprocess.mask_coverage(truth, settings.image_size)  # the liver share of each pixel
    back = preprocess.restore_slices(small, truth.shape[1:], settings, spacing_mm) > 0.5
    return evaluate.evaluate_masks(back, truth, spacing_mm)


def grid_shift_dice(probs: np.ndarray, truth: np.ndarray, settings, spacing_mm) -> dict:
    """Dice of the probability map moved by -/+ half a block less half a pixel, in-plane."""
    half = (truth.shape[1] / settings.image_size - 1) / 2
    scores = {}
    for label, shift in (("minus", -half), ("plus", half)):
        moved = ndimage.shift(probs, (0, shift, shift), order=1, mode="nearest")
        pred = postprocess.postprocess_mask(moved > 0.5)
        scores[f"dice_shifted_{label}"] = round(
            evaluate.evaluate_masks(pred, truth, spacing_mm)["dice"], 4
        )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".keras liver model")
    parser.add_argument("case", help="3D-IRCADb patient folder")
    parser.add_argument("--structure", action="append", default=[], help="IRCAD mask name")
    args = parser.parse_args()

    case = ircadb.load_ircadb_patient(args.case, extra_structures=args.structure)
    truth = case.masks["liver"]
    model, settings = predict.load_prediction_model(args.model)
    result = predict.predict_case(model, case, settings=settings)
    pred = result.pred
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
    if settings.target_spacing_mm is None:
        row.update(grid_shift_dice(result.probs, truth, settings, case.spacing_mm))
    for name in args.structure:
        if name not in case.masks:
            raise SystemExit(f"{args.case}: no structure {name!r} in MASKS_DICOM")
        row[f"false_positive_in_{name}"] = int((false_pos & case.masks[name]).sum())
    print(json.dumps(row))


if __name__ == "__main__":
    main()
