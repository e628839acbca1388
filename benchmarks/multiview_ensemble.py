"""Multi-view ensembles on leave-one-patient-out folds. An experiment, not a test.

Networks trained on axial, coronal and sagittal slices (variants ``aligned``,
``aligned_coronal``, ``aligned_sagittal``; :mod:`liverseg_helpers.preparation.views`) see the liver
from different sides. For every test patient this script predicts it once with each given crossval
variant folder's fold model, brings every probability map onto the CT's own grid
(``predict.predict_case``), and scores, in 3D at native resolution with the course's
post-processing, each model alone and the average of every combination of them.
``--smooth-z-mm`` adds each model alone with its probabilities blurred along z first
(``postprocess.smooth_across_slices``): the cheaper way to make a 2D network's outlines agree
from slice to slice, to compare with a second view.

Each fold model's test patient is checked against its ``split.json``
(``ensemble.fold_test_patient``), so no model is scored on a patient it was trained on.

Prints one markdown table: a row per combination and patient, then each combination's mean.
``--csv`` also writes the rows.

Usage::

    python benchmarks/multiview_ensemble.py runs/cv/aligned runs/cv/aligned_coronal \\
        runs/cv/aligned_sagittal --data ../shared/data/3Dircadb1

Several sources: repeat ``--data`` (``--data ../shared/data/3Dircadb1 --data
../shared/data/chaos_ct``), as for ``liverseg crossval``.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import postprocess, predict  # noqa: E402
from liverseg_helpers.research import crossval, ensemble  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

METRICS = (
    "dice",
    "voe",
    "rvd",
    "assd_mm",
    "hd95_mm",
    "mssd_mm",
    "pred_volume_ml",
    "true_volume_ml",
)


def fold_models(variant_dir: Path) -> dict[str, Path]:
    """``{test patient: fold model}`` of one crossval variant folder's finished folds (a fold
    still training has a ``last.keras`` but no ``metrics.json`` yet), or of an ensemble folder
    of ``liverseg crossval --ensemble-of`` (``fold_*/ensemble.keras``)."""
    finished = sorted(p.parent for p in variant_dir.glob("fold_*/metrics.json"))
    paths = [
        fold / "ensemble.keras" if (fold / "ensemble.keras").exists() else fold / "last.keras"
        for fold in finished
    ]
    if not paths:
        raise SystemExit(f"{variant_dir}: no finished fold (fold_*/metrics.json)")
    return {ensemble.fold_test_patient(path): path for path in paths}


def shared_fold_models(variant_dirs: list[Path]) -> tuple[list[dict[str, Path]], list[str]]:
    """Each folder's ``{test patient: fold model}`` (:func:`fold_models`), and the test patients
    all folders share, sorted; exits when they share none."""
    folds = [fold_models(d) for d in variant_dirs]
    patients = sorted(set.intersection(*(set(f) for f in folds)))
    if not patients:
        raise SystemExit("the variant folders share no test patient")
    return folds, patients


def score_patient(case, members: dict[str, Path], smooth_z_mm: list[float]) -> list[dict]:
    """Rows of one patient: each model alone (also z-blurred) and every average of two or more."""
    probs = {
        name: predict.predict_case(path, case, postprocess=False).probs
        for name, path in members.items()
    }
    ways = []  # (row name, probabilities, z blur in mm)
    for size in range(1, len(probs) + 1):
        for combo in itertools.combinations(probs, size):
            ways.append((" + ".join(combo), np.mean([probs[n] for n in combo], axis=0), 0.0))
            if size == 1:
                ways += [(f"{combo[0]}, z blur {s:g} mm", probs[combo[0]], s) for s in smooth_z_mm]
    rows = []
    for models, mean, sigma_mm in ways:
        mask = postprocess.mask_from_probs(mean, case.spacing_mm[0], smooth_z_mm=sigma_mm)
        scores = evaluate.evaluate_masks(mask, case.masks["liver"], case.spacing_mm)
        rows.append({"models": models, "patient": case.case_id, **{k: scores[k] for k in METRICS}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant_dirs", nargs="+", type=Path, help="crossval variant folders")
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="folder of the real patients (repeatable: one per source)",
    )
    parser.add_argument("--csv", type=Path, help="also write the rows here")
    parser.add_argument(
        "--smooth-z-mm", type=float, nargs="*", default=[], help="z blurs to try on each model"
    )
    args = parser.parse_args()
    models, patients = shared_fold_models(args.variant_dirs)
    folds = dict(zip(map(str, args.variant_dirs), models, strict=True))
    case_paths = {io.case_id_of(p): p for p in crossval.real_case_paths(args.data)}
    rows = []
    for patient in patients:
        case = io.load_case(case_paths[patient])
        members = {name: f[patient] for name, f in folds.items()}
        rows += score_patient(case, members, args.smooth_z_mm)
    table = pd.DataFrame(rows)
    mean = table.groupby("models", sort=False)[list(METRICS)].mean().reset_index()
    mean["patient"] = f"mean of {len(patients)}"
    table = pd.concat([table, mean]).set_index("models")
    if args.csv:
        table.to_csv(args.csv)
    print(format_markdown(table, digits=4))


if __name__ == "__main__":
    main()
