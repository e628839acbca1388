"""Where do a liver model's errors lie against the true surface, and do the two annotations draw
the liver's edge alike? An experiment, not a test (docs/real_ct_experiments.md, *What the
remaining errors are*).

For every test patient the given crossval folders share, the fold models that never saw it are
averaged on the CT's own grid (``threshold_choice.mean_probs``, checked against each fold's
``split.json``) and thresholded with the course's post-processing, as ``liverseg predict`` does.
Prints three markdown tables:

1. The missed (FN) and false (FP) liver voxels by their distance to the true liver surface,
   with the missed voxels within ``--tumour-mm`` of a liver tumour (IRCAD's liver mask includes
   its tumours) counted apart, and two what-if Dice: with those near-tumour misses found, and
   with every error within ``--edge-mm`` of the surface (away from tumours) undone.
2. In the band of ``--edge-mm`` on both sides of the true surface (tumours and their
   surroundings left out), the share of voxels of each HU bin that the annotation calls liver,
   beside the share the model calls liver. Where the two patients' annotations put different
   shares in the same HU bin, they draw the edge differently; a model trained on one patient
   copies that patient's way.
3. Dice / ASSD after moving the predicted surface out (+) or in (-) by each of ``--offsets-mm``
   (a dilation or erosion by a distance in mm on the CT's voxel spacing). It looks at the
   answer, so it chooses nothing: it says how much of the edge error a uniform offset is.

Usage::

    python benchmarks/liver_edge_errors.py runs/cv3/ensemble_aligned_wide_int8 \\
        runs/cv4/ensemble_aligned_coronal_int8 --data ../shared/data/3Dircadb1
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from multiview_ensemble import shared_fold_models  # noqa: E402
from scipy import ndimage  # noqa: E402
from threshold_choice import mean_probs  # noqa: E402

from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import postprocess  # noqa: E402
from liverseg_helpers.io import ircadb  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

HU_BINS = np.arange(-20, 181, 20)


def dice_of(false_neg: int, false_pos: int, truth_voxels: int) -> float:
    """Dice from the error counts: 2 TP / (2 TP + FP + FN), TP = truth - FN."""
    true_pos = truth_voxels - false_neg
    return 2 * true_pos / (2 * true_pos + false_pos + false_neg)


class Distances(NamedTuple):
    """Each voxel's distance in mm to the true liver surface, and whether it is near a tumour."""

    inside: np.ndarray  # depth inside the true liver (0 outside)
    outside: np.ndarray  # distance outside it (0 inside)
    near_tumour: np.ndarray  # bool: within the radius of a liver tumour voxel


def distances_to(truth, tumour, spacing_mm, tumour_mm: float) -> Distances:
    """Distances on the CT's voxel spacing (a patient without tumours is near none)."""
    return Distances(
        ndimage.distance_transform_edt(truth, sampling=spacing_mm),
        ndimage.distance_transform_edt(~truth, sampling=spacing_mm),
        tumour.any() & (ndimage.distance_transform_edt(~tumour, sampling=spacing_mm) <= tumour_mm),
    )


def error_bands(pred, truth, dist: Distances, edge_mm: float) -> dict:
    """Error voxel counts by distance to the true surface, and the two what-if Dice."""
    inside, outside, near_tumour = dist
    false_neg, false_pos = truth & ~pred, pred & ~truth
    fn_rest = false_neg & ~near_tumour
    row = {"FN": int(false_neg.sum()), "FP": int(false_pos.sum())}
    row["FN near tumours"] = int((false_neg & near_tumour).sum())
    edges = [0.0, edge_mm, 2 * edge_mm, np.inf]
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        label = f"{low:g}-{high:g} mm" if np.isfinite(high) else f"> {low:g} mm"
        row[f"FN {label}"] = int((fn_rest & (inside > low) & (inside <= high)).sum())
        row[f"FP {label}"] = int((false_pos & (outside > low) & (outside <= high)).sum())
    n_truth = int(truth.sum())
    row = {"dice": dice_of(row["FN"], row["FP"], n_truth), **row}
    tumour_fn = row["FN near tumours"]
    row["dice, tumour misses found"] = dice_of(row["FN"] - tumour_fn, row["FP"], n_truth)
    edge_fn, edge_fp = row[f"FN 0-{edge_mm:g} mm"], row[f"FP 0-{edge_mm:g} mm"]
    row["dice, edge errors undone"] = dice_of(row["FN"] - edge_fn, row["FP"] - edge_fp, n_truth)
    return row


def edge_shares(hu, pred, truth, dist: Distances, edge_mm: float) -> dict:
    """Per HU bin, in the band around the true surface: share of liver, annotation / model."""
    inside, outside, near_tumour = dist
    band = ((inside > 0) & (inside <= edge_mm)) | ((outside > 0) & (outside <= edge_mm))
    band &= ~near_tumour
    which = np.digitize(hu[band], HU_BINS)
    in_truth, in_pred = truth[band], pred[band]
    row = {}
    for i in range(1, len(HU_BINS)):
        chosen = which == i
        label = f"{HU_BINS[i - 1]}..{HU_BINS[i]} HU"
        row[label] = f"{in_truth[chosen].mean():.2f} / {in_pred[chosen].mean():.2f}"
    return row


def offset_scores(pred, truth, spacing_mm, offsets_mm: list[float]) -> dict:
    """Dice / ASSD of the prediction grown (+) or shrunk (-) by each offset in mm."""
    inside = ndimage.distance_transform_edt(pred, sampling=spacing_mm)
    outside = ndimage.distance_transform_edt(~pred, sampling=spacing_mm)
    row = {}
    for offset in offsets_mm:
        moved = pred | (outside <= offset) if offset >= 0 else inside > -offset
        scores = evaluate.evaluate_masks(moved, truth, spacing_mm)
        row[f"{offset:+g} mm"] = f"{scores['dice']:.3f} / {scores['assd_mm']:.2f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant_dirs", nargs="+", type=Path, help="crossval variant folders")
    parser.add_argument("--data", type=Path, required=True, help="folder of 3D-IRCADb patients")
    parser.add_argument("--edge-mm", type=float, default=3.0, help="width of the edge band")
    parser.add_argument("--tumour-mm", type=float, default=5.0, help="'near a tumour' radius")
    parser.add_argument(
        "--offsets-mm",
        type=float,
        nargs="+",
        default=[-2.0, -1.5, -1.0, 0.0, 1.0, 1.5, 2.0, 3.0],
        help="surface offsets to score",
    )
    args = parser.parse_args()
    folds, patients = shared_fold_models(args.variant_dirs)
    errors, shares, offsets = {}, {}, {}
    for patient in patients:
        case = ircadb.load_ircadb_patient(args.data / patient)
        probs = mean_probs([f[patient] for f in folds], case)
        pred = postprocess.mask_from_probs(probs, case.spacing_mm[0])
        truth, tumour = case.masks["liver"].astype(bool), case.masks["tumour"].astype(bool)
        dist = distances_to(truth, tumour, case.spacing_mm, args.tumour_mm)
        errors[patient] = error_bands(pred, truth, dist, args.edge_mm)
        shares[patient] = edge_shares(case.volume, pred, truth, dist, args.edge_mm)
        offsets[patient] = offset_scores(pred, truth, case.spacing_mm, args.offsets_mm)
    print("Errors (voxels) by distance to the true liver surface, tumour surroundings apart:\n")
    print(format_markdown(pd.DataFrame.from_dict(errors, orient="index").astype(object), digits=4))
    print(
        f"\nShare called liver within {args.edge_mm:g} mm of the true surface, "
        "annotation / model, by HU:\n"
    )
    print(format_markdown(pd.DataFrame.from_dict(shares, orient="index"), digits=2))
    print("\nDice / ASSD (mm) with the predicted surface moved out (+) or in (-):\n")
    print(format_markdown(pd.DataFrame.from_dict(offsets, orient="index")))


if __name__ == "__main__":
    main()
