"""Fine-tuned fold networks against the network they started from, on the same patients.

Reads the folds of a fine-tuning recipe (``six_tuned``, ``research/variants.py``) under a
crossval folder, and scores, on each fold's test patient, the network the recipe started from
(its ``Variant.init_weights``) the same way the fold was scored: 3D, native resolution, the
course's post-processing, the fold model's own preprocessing (its sidecar), so that only the
weights differ. Folds whose test patient the starting network may have seen are named and
left out (``--seen``; the shipped axial file was trained on the two IRCAD patients). Prints
one markdown row per patient, the means, the checks of the rule written before the run
(docs/real_ct_experiments.md, "Fine-tuning the shipped network"), and a JSON line.

Usage::

    python benchmarks/fine_tuning.py runs/tuned
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from liverseg_helpers import config  # noqa: E402
from liverseg_helpers.research import crossval  # noqa: E402
from liverseg_helpers.research.ensemble import fold_test_patient  # noqa: E402
from liverseg_helpers.research.variants import VARIANTS  # noqa: E402
from liverseg_helpers.training import model as model_mod  # noqa: E402
from liverseg_helpers.training import model_files  # noqa: E402

SHIPPED_TRAINING_PATIENTS = ["3Dircadb1.1", "3Dircadb1.7"]


def starting_network(variant_name: str, fold_model: Path, dest: Path) -> Path:
    """The recipe's starting network saved as one float32 file with the fold model's sidecar."""
    variant = VARIANTS[variant_name]
    net = model_mod.model_from_profile(config.get_profile("real", **variant.overrides))
    model_files.load_initial_weights(net, variant.init_weights_path)
    settings = model_files.read_sidecar(fold_model)["preprocess"]
    return model_files.save_model(net, dest, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="crossval --out folder of the fine-tuning run")
    parser.add_argument("--variant", default="six_tuned", help="the fine-tuning recipe")
    parser.add_argument(
        "--seen",
        nargs="*",
        default=SHIPPED_TRAINING_PATIENTS,
        help="patients the starting network was trained on (their folds are no test)",
    )
    args = parser.parse_args()
    folds = sorted((Path(args.out) / args.variant).glob("fold_*/metrics.json"))
    if not folds:
        raise SystemExit(f"{args.out}/{args.variant}: no finished fold (metrics.json)")
    rows = []
    start_path = None
    for metrics_path in folds:
        fold_model = metrics_path.parent / "last.keras"
        test_id = fold_test_patient(fold_model)
        if test_id in args.seen:
            print(f"{test_id}: left out, the starting network was trained on it")
            continue
        if start_path is None:
            start_path = starting_network(args.variant, fold_model, Path(args.out) / "start.keras")
        tuned = json.loads(metrics_path.read_text())
        cohort = Path(json.loads((metrics_path.parent / "config.json").read_text())["data_dir"])
        start, _ = crossval.evaluate_fold(start_path, cohort / test_id)
        rows.append(
            {
                "patient": test_id,
                "start_dice": start["dice"],
                "start_assd_mm": start["assd_mm"],
                "tuned_dice": tuned["dice"],
                "tuned_assd_mm": tuned["assd_mm"],
                "tuned_train_min": tuned["train_s"] / 60,
            }
        )
    print("| test patient | starting network | fine-tuned | Dice change | training (min) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['patient']} | {r['start_dice']:.3f} / {r['start_assd_mm']:.2f} | "
            f"{r['tuned_dice']:.3f} / {r['tuned_assd_mm']:.2f} | "
            f"{r['tuned_dice'] - r['start_dice']:+.3f} | {r['tuned_train_min']:.1f} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "patient"}
    print(
        f"| **mean of {len(rows)}** | {mean['start_dice']:.3f} / {mean['start_assd_mm']:.2f} | "
        f"{mean['tuned_dice']:.3f} / {mean['tuned_assd_mm']:.2f} | "
        f"{mean['tuned_dice'] - mean['start_dice']:+.3f} | |"
    )
    worst_loss = max(r["start_dice"] - r["tuned_dice"] for r in rows)
    checks = {
        "mean_dice_gain_at_least_0.008": mean["tuned_dice"] - mean["start_dice"] >= 0.008,
        "mean_assd_not_higher": mean["tuned_assd_mm"] <= mean["start_assd_mm"],
        "no_patient_loses_over_0.010": worst_loss <= 0.010,
    }
    print("rule:", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in checks.items()))
    print(json.dumps({"rows": rows, "mean": mean, "checks": checks}))


if __name__ == "__main__":
    main()
