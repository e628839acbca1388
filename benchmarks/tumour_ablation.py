"""Class imbalance in the tumour stage: loss and sampling ablation. An experiment, not a test.

Trains the cascade's second stage (``train.TrainConfig(task="tumour")``, the same UNet and
training path as the liver) once per configuration on one cohort and split, then scores each
model on the held-out phantom patients and, when given, real 3D-IRCADb patients. It scores the
last epoch: on tumour-free validation batches the batch Dice loss is lowest for an empty
prediction, so the lowest val_loss is a poor choice for a tumour model. Stage one is the true
liver (``--liver-model`` uses a liver model instead), so the numbers measure stage two alone.

The cohort: a phantom cohort (``liverseg phantom``), optionally with real tumour-free patients
linked in as negatives (``--negative``; symbolic links, no copy). Results go to ``OUT/ablation.csv``
(one row per configuration and test patient, plus cohort rows) and ``OUT/<config>/`` runs.

Usage::

    liverseg phantom --out runs/tumour_cohort --patients 14 --seed 100 --slices 48 --size 256
    python benchmarks/tumour_ablation.py --data runs/tumour_cohort --out runs/tumour_ablation \\
        --negative ../shared/data/3Dircadb1/3Dircadb1.7 \\
        --real-test ../shared/data/3Dircadb1/3Dircadb1.1 --epochs 12 \\
        --override image_size=96 --override base_filters=8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.preparation import preprocess  # noqa: E402
from liverseg_helpers.research import crossval, tumour_loo  # noqa: E402
from liverseg_helpers.training import train  # noqa: E402
from liverseg_helpers.tumours import lesion_eval  # noqa: E402

# name: (loss, foreground_repeat)
CONFIGS = {
    "dice": ("dice", 1),
    "dice_bce": ("dice_bce", 1),
    "focal": ("focal", 1),
    "tversky": ("tversky", 1),
    "dice_bce_repeat4": ("dice_bce", 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="phantom cohort folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--negative", action="append", default=[], help="tumour-free patient")
    parser.add_argument("--real-test", action="append", default=[], help="real test patient")
    parser.add_argument("--profile", default="course", help="size profile")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per configuration")
    parser.add_argument("--val", type=int, default=2, help="phantom val patients")
    parser.add_argument("--test", type=int, default=2, help="phantom test patients")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    parser.add_argument("--liver-model", default=None, help="stage one (default: true liver)")
    parser.add_argument("--seed", type=int, default=42, help="seed")
    parser.add_argument(
        "--override", action="append", default=[], help="profile field, e.g. image_size=96"
    )
    args = parser.parse_args()

    overrides = {
        k: float(v) if "." in v or "e" in v else int(v)
        for k, v in (item.split("=") for item in args.override)
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    negatives = [Path(p) for p in args.negative]
    cohort = crossval.make_cohort_dir(
        negatives, io.list_case_paths(args.data), Path(tempfile.mkdtemp(dir=out))
    )
    phantom_ids = [p.name for p in io.list_case_paths(args.data)]
    split = preprocess.split_patients(phantom_ids, args.val, args.test, args.seed)
    split["train"] += [p.name for p in negatives]  # real negatives: training only
    rows = []
    for name in args.configs.split(","):
        loss, repeat = CONFIGS[name]
        started = time.perf_counter()
        result = train.train(
            train.TrainConfig(
                data_dir=cohort,
                run_dir=out / name,
                profile=args.profile,
                seed=args.seed,
                task="tumour",
                loss=loss,
                epochs=args.epochs,
                split=split,
                foreground_repeat=repeat,
                overrides=overrides,
                cache_dir=out / "cache",
            )
        )
        train_s = time.perf_counter() - started
        groups = {
            "phantom": [cohort / c for c in split["test"]],
            "real": [Path(p) for p in args.real_test],
        }
        for group, paths in groups.items():
            if not paths:
                continue
            table = lesion_eval.evaluate_tumour_cohort(
                tumour_loo.cascade_results(
                    result.run_dir / "last.keras",
                    paths,
                    [args.liver_model] if args.liver_model else None,
                )
            )
            table = table.rename(index={"cohort": f"cohort_{group}"})
            for case_id, row in table.iterrows():
                rows.append(
                    dict(
                        config=name,
                        loss=loss,
                        foreground_repeat=repeat,
                        overrides=json.dumps(overrides),
                        group=group,
                        case_id=case_id,
                        best_val_dice=result.best_val_dice,
                        train_s=round(train_s),
                        epochs=len(result.history.get("loss", [])),
                        **row.drop("missed_ml").to_dict(),
                        missed_ml=json.dumps([round(v, 2) for v in row["missed_ml"]]),
                    )
                )
            print(name, group, train_s, flush=True)
            print(
                table[
                    [
                        "tumour_dice",
                        "global_dice",
                        "lesion_recall",
                        "lesion_precision",
                        "n_true_lesions",
                        "n_false_lesions",
                    ]
                ]
                .round(3)
                .to_string(),
                flush=True,
            )
        pd.DataFrame(rows).to_csv(out / "ablation.csv", index=False)
    (out / "split.json").write_text(json.dumps(split, indent=2))
    print(f"wrote {out / 'ablation.csv'}")


if __name__ == "__main__":
    main()
