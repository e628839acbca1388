"""What each post-processing step adds, on leave-one-patient-out folds. An experiment, not a test.

For every fold of the given crossval variant folders (``runs/cv/aligned`` ...), predicts the
fold's unseen test patient once and scores, in 3D at native resolution:

* ``threshold``: the probability map thresholded at 0.5, nothing else;
* ``+ largest component``: only the largest 3D connected component kept;
* ``+ filled holes``: holes filled slice by slice (the course's post-processing up to here);
* ``+ z smoothing S mm``: the probability map first blurred along z
  (``predict.smooth_across_slices``, Gaussian of S mm), then the two steps above.

Prints one markdown table: a row per step and fold, then the mean of each step over all
folds. Each fold's test patient comes from its ``split.json``, so no model is scored on a
patient it was trained on.

Usage::

    python benchmarks/postprocess_ablation.py runs/cv/aligned runs/cv_seed43/aligned \\
        --data ../shared/data/3Dircadb1
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from liverseg_helpers import evaluate, io, predict  # noqa: E402
from liverseg_helpers.ablation_table import format_markdown  # noqa: E402


def step_masks(probs: np.ndarray, slice_mm: float, sigmas_mm: list[float]) -> dict:
    """Each post-processing step's mask, named as in the table."""
    raw = predict.mask_from_probs(probs, slice_mm, postprocess=False)
    masks = {
        "threshold": raw,
        "+ largest component": predict.postprocess_mask(raw, fill_holes=False),
        "+ filled holes": predict.mask_from_probs(probs, slice_mm),
    }
    for sigma in sigmas_mm:
        step = f"+ z smoothing {sigma:g} mm"
        masks[step] = predict.mask_from_probs(probs, slice_mm, smooth_z_mm=sigma)
    return masks


def score_fold(fold_dir: Path, data_dir: Path, sigmas_mm: list[float]) -> list[dict]:
    """Rows of one fold: every step's metrics on the fold's test patient."""
    split = json.loads((fold_dir / "split.json").read_text())
    (test_id,) = split["test"]
    if test_id in split["train"] or test_id in split["val"]:
        raise SystemExit(f"{fold_dir}: test patient {test_id} was also trained on")
    case = io.load_case(data_dir / test_id)
    probs = predict.predict_case(fold_dir / "last.keras", case, postprocess=False).probs
    rows = []
    for step, mask in step_masks(probs, case.spacing_mm[0], sigmas_mm).items():
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
    args = parser.parse_args()
    rows = []
    for variant_dir in args.variant_dirs:
        folds = sorted(variant_dir.glob("fold_*/last.keras"))
        if not folds:
            raise SystemExit(f"{variant_dir}: no fold_*/last.keras")
        for model_path in folds:
            rows += score_fold(model_path.parent, args.data, args.sigma_mm)
    table = pd.DataFrame(rows)
    steps = list(dict.fromkeys(table["step"]))
    mean = table.groupby("step", sort=False)[["dice", "assd_mm", "hd95_mm"]].mean()
    mean = (
        mean.loc[steps].reset_index().assign(run="mean", patient=f"{len(rows) // len(steps)} folds")
    )
    print(format_markdown(pd.concat([table, mean]).set_index("run"), digits=4))


if __name__ == "__main__":
    main()
