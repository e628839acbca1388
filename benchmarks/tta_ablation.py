"""Test-time augmentation on leave-one-patient-out folds. An experiment, not a test.

Test-time augmentation (TTA) runs the model on transformed copies of each slice, undoes the
transform on each probability map, and averages them before the 0.5 threshold: an ensemble
that needs no extra training. For every fold of the given crossval variant folders, on the
fold's unseen test patient, this script compares, in 3D at native resolution with the course's
post-processing:

* ``none``: the model once (the figure every other table reports);
* ``zoom 3``: + copies zoomed by 0.9 and 1.1 about the slice centre;
* ``zoom 5``: + copies zoomed by 0.8 and 1.25 as well;
* ``shift 3``: + copies shifted by 6 input pixels diagonally, both ways;
* ``all``: all seven copies.

No flips: the liver lies on the patient's right, and a network trained without flips has never
seen it on the left. Prints one markdown table: a row per fold and set, then each set's mean.

Usage::

    python benchmarks/tta_ablation.py runs/cv/aligned runs/cv_seed43/aligned \\
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

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import postprocess, predict  # noqa: E402
from liverseg_helpers.preparation import preprocess  # noqa: E402
from liverseg_helpers.research import ensemble  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

# name -> (zoom factor, (dy, dx) shift in input pixels)
TRANSFORMS = {
    "identity": (1.0, (0, 0)),
    "zoom 0.9": (0.9, (0, 0)),
    "zoom 1.1": (1.1, (0, 0)),
    "zoom 0.8": (0.8, (0, 0)),
    "zoom 1.25": (1.25, (0, 0)),
    "shift +6": (1.0, (6, 6)),
    "shift -6": (1.0, (-6, -6)),
}
SETS = {
    "none": ["identity"],
    "zoom 3": ["identity", "zoom 0.9", "zoom 1.1"],
    "zoom 5": ["identity", "zoom 0.9", "zoom 1.1", "zoom 0.8", "zoom 1.25"],
    "shift 3": ["identity", "shift +6", "shift -6"],
    "all": list(TRANSFORMS),
}


def transform_slices(stack: np.ndarray, zoom: float, shift: tuple[int, int]) -> np.ndarray:
    """Zoom ``[n, S, S]`` slices about their centre by ``zoom``, then shift them (0 fill)."""
    centre = (stack.shape[1] - 1) / 2
    matrix = np.array([1.0, 1.0 / zoom, 1.0 / zoom])
    offset = np.array([0.0, centre - centre / zoom - shift[0], centre - centre / zoom - shift[1]])
    return ndimage.affine_transform(stack, matrix, offset=offset, order=1, cval=0.0)


def undo_transform(stack: np.ndarray, zoom: float, shift: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`transform_slices` (shift back, then zoom by ``1 / zoom``)."""
    centre = (stack.shape[1] - 1) / 2
    matrix = np.array([1.0, zoom, zoom])
    offset = np.array(
        [0.0, centre - centre * zoom + zoom * shift[0], centre - centre * zoom + zoom * shift[1]]
    )
    return ndimage.affine_transform(stack, matrix, offset=offset, order=1, cval=0.0)


def score_fold(fold_dir: Path, data_dir: Path) -> list[dict]:
    """Rows of one fold: every TTA set's metrics on the fold's test patient."""
    test_id = ensemble.fold_test_patient(fold_dir / "last.keras")
    case = io.load_case(data_dir / test_id)
    model, settings = predict.load_prediction_model(fold_dir / "last.keras")
    if settings.context_slices or settings.view != "axial":
        raise SystemExit(f"{fold_dir}: 2.5D and non-axial models are not handled by this script")
    images = preprocess.preprocess_volume(case.volume, settings, case.spacing_mm)[..., 0]
    small = {}
    for name, (zoom, shift) in TRANSFORMS.items():
        moved = transform_slices(images, zoom, shift)[..., None]
        small[name] = undo_transform(predict.run_model_on_slices(model, moved), zoom, shift)
    rows = []
    for set_name, members in SETS.items():
        mean = np.mean([small[name] for name in members], axis=0)
        probs = preprocess.restore_slices(mean, case.volume.shape[1:], settings, case.spacing_mm)
        mask = postprocess.mask_from_probs(probs, case.spacing_mm[0])
        scores = evaluate.evaluate_masks(mask, case.masks["liver"], case.spacing_mm)
        rows.append(
            {
                "run": str(fold_dir.parent),
                "patient": test_id,
                "tta": set_name,
                **{k: scores[k] for k in ("dice", "assd_mm", "hd95_mm")},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant_dirs", nargs="+", type=Path, help="crossval variant folders")
    parser.add_argument("--data", type=Path, required=True, help="folder of the real patients")
    args = parser.parse_args()
    rows = []
    for variant_dir in args.variant_dirs:
        folds = sorted(variant_dir.glob("fold_*/last.keras"))
        if not folds:
            raise SystemExit(f"{variant_dir}: no fold_*/last.keras")
        for model_path in folds:
            rows += score_fold(model_path.parent, args.data)
    table = pd.DataFrame(rows)
    mean = table.groupby("tta", sort=False)[["dice", "assd_mm", "hd95_mm"]].mean()
    mean = mean.reset_index().assign(run="mean", patient=f"{len(rows) // len(SETS)} folds")
    print(format_markdown(pd.concat([table, mean]).set_index("run"), digits=4))


if __name__ == "__main__":
    main()
