"""Fine-tuned fold networks against the network they started from, on the same patients.

Reads the folds of a fine-tuning recipe (``six_tuned``, ``research/variants.py``) under a
crossval folder, and scores, on each fold's test patient, the network the recipe started from
(its ``Variant.init_weights``) the same way the fold was scored: 3D, native resolution, the
course's post-processing, the fold model's own preprocessing (its sidecar), so that only the
weights differ. Folds whose test patient the starting network may have seen are named and
left out (``--seen``; the starting file, the axial file shipped until 2026-12-07, restored by
``research.start_file``, was trained on the two IRCAD patients). Prints one markdown row per
patient, the means, the checks of the rule written before the run
(docs/real_ct_experiments.md, "Fine-tuning the shipped network"), and a JSON line.

With ``--start-from DIR`` (folds trained by ``crossval --start-from DIR``), each fold's start is
DIR's fold that tests the same patient and never saw it, as scored by its own crossval run
(its ``metrics.json``); no fold is left out. ``--pool`` adds the finished folds of other
fine-tuning runs to a mean over all their patients.

With ``--with V2 V3``, each fold's networks of the recipes given are averaged with its first
one (as the shipped axial file averages three networks), and that average is run with the
shipped coronal file the way ``liverseg predict`` runs its pair (``predict.predict_case``:
the coronal file left out where the scan stops inside the liver), against the pair shipped
until 2026-12-07 (the starting file with the same coronal file), on the same patients.

Usage::

    python benchmarks/fine_tuning.py runs/tuned
    python benchmarks/fine_tuning.py runs/tuned --with six_tuned_2 six_tuned_3
    python benchmarks/fine_tuning.py runs/ircad_tuned --start-from runs/ircad_start/aligned_wide \
        --pool runs/tuned/six_tuned
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from liverseg_helpers import config, io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import pipeline, predict  # noqa: E402
from liverseg_helpers.research import crossval, start_file  # noqa: E402
from liverseg_helpers.research.ensemble import (
    export_ensemble,  # noqa: E402
    fold_test_patient,  # noqa: E402
)
from liverseg_helpers.research.variants import REPO_ROOT, VARIANTS  # noqa: E402
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


def fold_case_path(fold_dir: Path, test_id: str) -> Path:
    """The test patient's folder in the cohort the fold was trained from (its config.json)."""
    return Path(json.loads((fold_dir / "config.json").read_text())["data_dir"]) / test_id


def pair_scores(models: list[Path], case: io.Case) -> dict:
    """Dice and ASSD of ``liverseg predict``'s road (post-processing on) with these models."""
    pred = predict.predict_case(models, case).pred
    return evaluate.evaluate_masks(pred, case.masks["liver"], case.spacing_mm)


def compare_pairs(out: Path, first: str, others: list[str], seen: list[str]) -> list[dict]:
    """Per test patient: the fold's fine-tuned networks averaged, with the shipped coronal
    file, against the former pair (both as ``liverseg predict`` runs a pair)."""
    former = [start_file.ensure_start_file(REPO_ROOT), pipeline.REFERENCE_CORONAL_MODEL]
    rows = []
    for metrics_path in sorted((out / first).glob("fold_*/metrics.json")):
        test_id = fold_test_patient(metrics_path.parent / "last.keras")
        members = [
            out / name / metrics_path.parent.name / "last.keras" for name in [first, *others]
        ]
        if test_id in seen or not all(m.exists() for m in members):
            continue
        for member in members:
            fold_test_patient(member)  # each never saw the test patient
        trio = export_ensemble(members, out / "averaged" / f"{metrics_path.parent.name}.keras")
        case = io.load_case(fold_case_path(metrics_path.parent, test_id))
        tuned = pair_scores([trio, former[1]], case)
        before = pair_scores(former, case)
        rows.append(
            {
                "patient": test_id,
                "start_dice": before["dice"],
                "start_assd_mm": before["assd_mm"],
                "tuned_dice": tuned["dice"],
                "tuned_assd_mm": tuned["assd_mm"],
            }
        )
    return rows


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
    parser.add_argument(
        "--with",
        dest="others",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help="average these recipes' fold networks with --variant's and compare the pair",
    )
    parser.add_argument(
        "--start-from", default=None, help="the crossval --start-from folder of the folds"
    )
    parser.add_argument(
        "--pool", nargs="+", default=[], metavar="DIR", help="other fine-tuned variant folders"
    )
    args = parser.parse_args()
    if args.start_from:
        args.seen = []
    if args.others:
        rows = compare_pairs(Path(args.out), args.variant, args.others, args.seen)
        report(rows, "pair shipped until 2026-12-07", "fine-tuned average + coronal", 0.005)
        return
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
        tuned = json.loads(metrics_path.read_text())
        if args.start_from:
            start_model = Path(start_file.fold_start_weights(args.start_from, test_id))
            start = json.loads(start_model.with_name("metrics.json").read_text())
        else:
            if start_path is None:
                start_path = starting_network(
                    args.variant, fold_model, Path(args.out) / "start.keras"
                )
            start, _ = crossval.evaluate_fold(
                start_path, fold_case_path(metrics_path.parent, test_id)
            )
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
    report(rows, "starting network", "fine-tuned", None if args.start_from else 0.008)
    if args.pool:
        pooled = [
            json.loads(m.read_text())
            for d in args.pool
            for m in Path(d).glob("fold_*/metrics.json")
        ]
        pooled += [
            {"case_id": r["patient"], "dice": r["tuned_dice"], "assd_mm": r["tuned_assd_mm"]}
            for r in rows
        ]
        print_pooled(pooled)


def print_pooled(rows: list[dict]) -> None:
    """The fine-tuned folds of every run given, one per patient, and the goal's checks."""
    ids = [r["case_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"a patient is tested twice among the pooled folds: {sorted(ids)}")
    for r in sorted(rows, key=lambda r: r["case_id"]):
        print(f"{r['case_id']}: {r['dice']:.3f} / {r['assd_mm']:.2f}")
    dice = float(np.mean([r["dice"] for r in rows]))
    assd = float(np.mean([r["assd_mm"] for r in rows]))
    lowest = min(r["dice"] for r in rows)
    met = dice >= 0.95 and assd < 2 and lowest >= 0.92
    print(
        f"mean of {len(rows)}: {dice:.3f} / {assd:.2f} mm, lowest {lowest:.3f}; goal (>= 0.95, "
        f"< 2 mm, none < 0.92) {'met' if met else 'not met'}"
    )


def report(rows: list[dict], before: str, after: str, gain: float | None) -> None:
    """The markdown table, the means, the rule's checks (none when ``gain`` is None: the
    reading has its own rule) and a JSON line."""
    if not rows:
        raise SystemExit("no fold to compare")
    print(f"| test patient | {before} | {after} | Dice change |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['patient']} | {r['start_dice']:.3f} / {r['start_assd_mm']:.2f} | "
            f"{r['tuned_dice']:.3f} / {r['tuned_assd_mm']:.2f} | "
            f"{r['tuned_dice'] - r['start_dice']:+.3f} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "patient"}
    print(
        f"| **mean of {len(rows)}** | {mean['start_dice']:.3f} / {mean['start_assd_mm']:.2f} | "
        f"{mean['tuned_dice']:.3f} / {mean['tuned_assd_mm']:.2f} | "
        f"{mean['tuned_dice'] - mean['start_dice']:+.3f} |"
    )
    worst_loss = max(r["start_dice"] - r["tuned_dice"] for r in rows)
    if gain is None:
        print(json.dumps({"rows": rows, "mean": mean}))
        return
    checks = {
        f"mean_dice_gain_at_least_{gain}": mean["tuned_dice"] - mean["start_dice"] >= gain,
        "mean_assd_not_higher": mean["tuned_assd_mm"] <= mean["start_assd_mm"],
        "no_patient_loses_over_0.010": worst_loss <= 0.010,
    }
    print("rule:", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in checks.items()))
    print(json.dumps({"rows": rows, "mean": mean, "checks": checks}))


if __name__ == "__main__":
    main()
