"""What each post-processing step adds, on leave-one-patient-out folds. An experiment, not a test.

For every fold of the given crossval variant folders (``runs/cv/aligned`` ...), predicts the
fold's unseen test patient once and scores, in 3D at native resolution:

* ``threshold``: the probability map thresholded at 0.5, nothing else;
* ``+ largest component``: only the largest 3D connected component kept;
* ``+ filled holes``: holes filled slice by slice (the course's post-processing up to here);
* ``+ z smoothing S mm``: the probability map first blurred along z
  (``postprocess.smooth_across_slices``, Gaussian of S mm), then the two steps above;
* ``+ random walker B mm``: the course's mask refined on the CT itself, the nearest this
  course comes to the 3D CRF of the published 3D-IRCADb reference: slice by slice, pixels more
  than B mm inside the mask are liver seeds, pixels more than B mm outside it background
  seeds, and ``skimage.segmentation.random_walker`` decides the band between them from the
  CT's intensities (window -100..250 HU), then the course's post-processing again;
* ``+ 3D closing R mm``: the course's mask closed in 3D with a ball of R mm (dilated, then
  eroded, through Euclidean distance maps on the CT's own voxel spacing), then the course's
  post-processing again. It fills notches in the outline up to about R mm deep, such as
  tumours at the liver's edge, which IRCAD's liver masks include.

Prints one markdown table: a row per step and fold, then the mean of each step over all
folds. Each fold's test patient is checked against its ``split.json`` (an ensemble's: each
member's; ``ensemble.fold_test_patient``), so no model is scored on a patient it was trained
on.

A fold folder of an ensemble (``runs/cv_ens_mix/ensemble_aligned+aligned_long``) is scored
through its ``ensemble.keras``.

Usage::

    python benchmarks/postprocess_ablation.py runs/cv/aligned runs/cv_seed43/aligned \\
        --data ../shared/data/3Dircadb1
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage.segmentation import random_walker  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import postprocess, predict  # noqa: E402
from liverseg_helpers.research import ensemble  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

HU_WINDOW = (-100.0, 250.0)  # liver, vessels and neighbours; bone and air clipped
RANDOM_WALKER_BETA = 1000.0  # edge weight: higher = boundaries follow intensity steps more


def random_walker_refine(mask: np.ndarray, volume: np.ndarray, band_px: int) -> np.ndarray:
    """Re-decide a band of ``band_px`` pixels each side of every slice's mask edge from the CT.

    Args:
        mask: bool ``[z, y, x]``, the course's post-processed mask.
        volume: CT in HU, same shape.
        band_px: Half-width of the undecided band, in pixels.

    Returns:
        bool ``[z, y, x]``, post-processed again.
    """
    lo, hi = HU_WINDOW
    refined = mask.copy()
    for z in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
        inside = ndimage.binary_erosion(mask[z], iterations=band_px)
        near = ndimage.binary_dilation(mask[z], iterations=band_px + 2)
        if not inside.any():
            continue
        box = ndimage.find_objects(near.astype(np.uint8))[0]
        seeds = np.where(inside[box], 1, 0)
        seeds[~ndimage.binary_dilation(mask[z], iterations=band_px)[box]] = 2
        image = (np.clip(volume[z][box], lo, hi) - lo) / (hi - lo)
        refined[z][box] = random_walker(image, seeds, beta=RANDOM_WALKER_BETA, tol=1e-3) == 1
    return postprocess.postprocess_mask(refined)


def close_3d(mask: np.ndarray, radius_mm: float, spacing_mm: tuple) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` on an anisotropic voxel grid.

    Distance maps instead of a structuring element: a 10 mm ball is 35 x 35 x 13 voxels at
    0.57 x 0.57 x 1.6 mm, far too slow for ``binary_closing`` on a whole CT.
    """
    dilated = ndimage.distance_transform_edt(~mask, sampling=spacing_mm) <= radius_mm
    return ndimage.distance_transform_edt(dilated, sampling=spacing_mm) > radius_mm


def step_masks(
    probs: np.ndarray,
    spacing_mm: tuple[float, float, float],
    sigmas_mm: list[float],
    volume: np.ndarray,
    bands_mm: list[float],
    closings_mm: list[float],
) -> dict:
    """Each post-processing step's mask, named as in the table."""
    slice_mm, pixel_mm = spacing_mm[0], spacing_mm[1]
    raw = postprocess.mask_from_probs(probs, slice_mm, postprocess=False)
    masks = {
        "threshold": raw,
        "+ largest component": postprocess.postprocess_mask(raw, fill_holes=False),
        "+ filled holes": postprocess.mask_from_probs(probs, slice_mm),
    }
    for sigma in sigmas_mm:
        step = f"+ z smoothing {sigma:g} mm"
        masks[step] = postprocess.mask_from_probs(probs, slice_mm, smooth_z_mm=sigma)
    for band_mm in bands_mm:
        band_px = max(1, round(band_mm / pixel_mm))
        masks[f"+ random walker {band_mm:g} mm"] = random_walker_refine(
            masks["+ filled holes"], volume, band_px
        )
    for radius in closings_mm:
        closed = close_3d(masks["+ filled holes"].astype(bool), radius, spacing_mm)
        masks[f"+ 3D closing {radius:g} mm"] = postprocess.postprocess_mask(closed)
    return masks


def score_fold(
    model_path: Path,
    data_dir: Path,
    sigmas_mm: list[float],
    bands_mm: list[float],
    closings_mm: list[float],
) -> list[dict]:
    """Rows of one fold: every step's metrics on the fold's test patient."""
    fold_dir = model_path.parent
    test_id = ensemble.fold_test_patient(model_path)
    case = io.load_case(data_dir / test_id)
    probs = predict.predict_case(model_path, case, postprocess=False).probs
    rows = []
    steps = step_masks(probs, case.spacing_mm, sigmas_mm, case.volume, bands_mm, closings_mm)
    for step, mask in steps.items():
        scores = evaluate.evaluate_masks(mask, case.masks["liver"], case.spacing_mm)
        rows.append(
            {
                "run": str(fold_dir.parent),
                "patient": test_id,
                "step": step,
                **{k: scores[k] for k in ("dice", "assd_mm", "hd95_mm")},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant_dirs", nargs="+", type=Path, help="crossval variant folders")
    parser.add_argument("--data", type=Path, required=True, help="folder of the real patients")
    parser.add_argument(
        "--sigma-mm", type=float, nargs="+", default=[1.6, 3.2, 4.8], help="z smoothing to try"
    )
    parser.add_argument(
        "--random-walker-mm",
        type=float,
        nargs="*",
        default=[],
        help="half-widths of the band the random walker re-decides (none by default)",
    )
    parser.add_argument(
        "--closing-mm",
        type=float,
        nargs="*",
        default=[],
        help="radii of the 3D closing to try (none by default)",
    )
    args = parser.parse_args()
    rows = []
    for variant_dir in args.variant_dirs:
        folds = sorted(variant_dir.glob("fold_*/last.keras")) or sorted(
            variant_dir.glob("fold_*/ensemble.keras")
        )
        if not folds:
            raise SystemExit(f"{variant_dir}: no fold_*/last.keras or fold_*/ensemble.keras")
        for model_path in folds:
            rows += score_fold(
                model_path, args.data, args.sigma_mm, args.random_walker_mm, args.closing_mm
            )
    table = pd.DataFrame(rows)
    steps = list(dict.fromkeys(table["step"]))
    mean = table.groupby("step", sort=False)[["dice", "assd_mm", "hd95_mm"]].mean()
    mean = (
        mean.loc[steps].reset_index().assign(run="mean", patient=f"{len(rows) // len(steps)} folds")
    )
    print(format_markdown(pd.concat([table, mean]).set_index("run"), digits=4))


if __name__ == "__main__":
    main()
