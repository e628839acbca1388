"""The ``liverseg`` command. Each subcommand's work lives in the module of its chapter.

Argument parsing is here; handlers are imported only when their subcommand runs, so
``liverseg info`` starts without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from liverseg_helpers.errors import LiverSegError

# subcommand -> "module:function"; the function takes the parsed arguments, returns an exit code.
HANDLERS = {
    "info": "liverseg_helpers.io.info:run_info_cli",
    "phantom": "liverseg_helpers.data.phantom:run_phantom_cli",
    "data-verify": "liverseg_helpers.data.manifest:run_verify_cli",
    "data-fetch": "liverseg_helpers.data.manifest:run_fetch_cli",
    "train": "liverseg_helpers.training.train:run_train_cli",
    "predict": "liverseg_helpers.inference.pipeline:run_predict_cli",
    "evaluate": "liverseg_helpers.evaluation.evaluate:run_evaluate_cli",
    "course": "liverseg_helpers.course:run_course_cli",
    "crossval": "liverseg_helpers.research.commands:run_crossval_cli",
}


def add_train_precision(p: argparse.ArgumentParser) -> None:
    """The ``--precision`` option of the commands that train (``TrainConfig.precision``)."""
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="training arithmetic: auto (float32 on a CPU, mixed float16 on a recent GPU), "
        "or bfloat16 (up to 2x faster on a CPU with AVX512-BF16 or AMX)",
    )


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    parser = argparse.ArgumentParser(prog="liverseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a CT case: format, shape, spacing, HU, masks")
    p.add_argument("path", help="3D-IRCADb patient folder, DICOM folder/zip, NIfTI, PNG folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("phantom", help="write a synthetic CT cohort in the 3D-IRCADb layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--patients", type=int, default=3, help="number of patients")
    p.add_argument("--seed", type=int, default=42, help="seed of the first patient")
    p.add_argument("--slices", type=int, default=64, help="slices per patient")
    p.add_argument("--size", type=int, default=256, help="in-plane pixels (real CT: 512)")
    p.add_argument("--overwrite", action="store_true", help="replace existing patients")

    data = sub.add_parser("data", help="dataset cards: verify or fetch a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("verify", help="check a local copy against its dataset card")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--dataset", default=None, help="card name (guessed from the layout if absent)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = data_sub.add_parser("fetch", help="download and verify a dataset (needs internet)")
    p.add_argument("dataset", help="card name, e.g. ircadb, lits, msd_task03_liver")
    p.add_argument("--out", required=True, help="download folder")
    p.add_argument("--url", default=None, help="override the card's URL (a mirror or a file://)")

    p = sub.add_parser("train", help="train a UNet on a cohort")
    p.add_argument("--data", default=None, help="cohort folder (default: generated phantom)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="run folder (default: runs/<profile>, runs/<profile>-tumour for --task tumour)",
    )
    p.add_argument("--profile", default=None, help="smoke, course or full")
    p.add_argument("--task", default="liver", choices=["liver", "tumour"], help="what to segment")
    p.add_argument(
        "--loss", default=None, help="dice_bce (default), dice (the paper's), bce, focal, tversky"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_train_precision(p)

    p = sub.add_parser("predict", help="segment a whole CT and write the mask")
    p.add_argument("input", help="DICOM series (folder/zip), 3D-IRCADb patient, or NIfTI file")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help=".keras model (default: shipped reference); repeat to average several on the CT's "
        "grid, e.g. an axial and a coronal model",
    )
    p.add_argument("-o", "--out", required=True, help="output .nii.gz, PNG folder, or .dcm (SEG)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability threshold (with --tumours: the tumour stage's; the liver's stays 0.5)",
    )
    p.add_argument(
        "--no-postprocess", action="store_true", help="skip 3D post-processing (not with --tumours)"
    )
    p.add_argument(
        "--smooth-z-mm",
        type=float,
        default=0.0,
        help="blur probabilities along z first, in mm (not with --tumours)",
    )
    p.add_argument("--tumours", action="store_true", help="also segment liver tumours (0/1/2)")
    p.add_argument("--tumour-model", default=None, help="tumour .keras model")
    p.add_argument(
        "--fast",
        action="store_true",
        help="one network (the first of the axial model) instead of the averaged ensemble: "
        "a quarter of the model work, slightly less accurate (for CPUs without bfloat16)",
    )
    p.add_argument(
        "--axial-step-mm",
        type=float,
        default=0.0,
        help="axial networks see slices at most this far apart and the ones between are "
        "drawn from them (3.2: every second 1.6 mm slice, about 0.7x the networks' time, 0.5x "
        "with --fast; outlines move about 0.06 mm: docs/results.md); 0: every slice",
    )
    p.add_argument(
        "--runtime",
        choices=["auto", "keras", "onnx", "onnx-int8"],
        default="auto",
        help="onnx: run the liver networks' ONNX twins in ONNX Runtime (the same masks, "
        "1.5-3x sooner on a CPU, without importing TensorFlow; exported once to "
        "$LIVERSEG_ONNX_CACHE or ~/.cache/liverseg/onnx); onnx-int8: their int8 twins "
        "(8-bit arithmetic, calibrated once on phantoms; about 0.65x the time, outlines move "
        "a little: docs/results.md); auto (default): on a CPU where it is installed, "
        "onnx-int8 for the pair where the CPU has VNNI, else onnx; keras on a GPU",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    p = sub.add_parser("evaluate", help="3D metrics of a predicted mask against the truth")
    p.add_argument("pred", help="predicted mask (NIfTI/NRRD, or a case folder)")
    p.add_argument("gt", help="true mask (NIfTI/NRRD, or a case folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("course", help="run the six notebooks with papermill")
    p.add_argument(
        "--profile", default=None, help="smoke, course or full (default: $LIVERSEG_PROFILE, course)"
    )
    p.add_argument("--data", default=None, help="cohort folder (default: generated phantom)")
    p.add_argument("--out", default=None, help="run folder (default: runs/course-<profile>)")
    p.add_argument("--seed", type=int, default=42, help="random seed")

    p = sub.add_parser("crossval", help="leave-one-patient-out training, 3D metrics, ablation")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="cohort of real patients (>= 2 in all); repeat for several sources",
    )
    p.add_argument("--out", required=True, help="output folder (run folders, tables)")
    p.add_argument("--profile", default=None, help="profile (default: real)")
    p.add_argument(
        "--variant",
        action="append",
        default=None,
        help="recipe to cross-validate (repeatable; 'all': every recipe of the ablation table)",
    )
    p.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[42],
        help="random seed; several: run each and score (or, with --reference --export, ship) "
        "the average of their models",
    )
    p.add_argument("--checkpoint", default="last", choices=["last", "best"], help="model tested")
    p.add_argument(
        "--fold",
        action="append",
        default=None,
        metavar="PATIENT",
        help="train only the fold that tests this patient (repeatable); finished folds still "
        "count in the tables",
    )
    p.add_argument(
        "--start-from",
        default=None,
        metavar="DIR",
        help="another run's variant folder (e.g. runs/pre/aligned_wide): each fold starts from "
        "its fold that tests the same patient (fine-tuning that never sees the test patient)",
    )
    p.add_argument(
        "--train-extra",
        action="append",
        default=None,
        metavar="DIR",
        help="cohort (e.g. LiTS, MSD Task03) added to every fold's training, never tested; "
        "scans that copy a --data patient are left out (repeatable)",
    )
    p.add_argument(
        "--reference",
        action="append",
        default=None,
        help="train this variant on all patients (with --ensemble-of: repeatable)",
    )
    p.add_argument("--export", default=None, help="with --reference: copy the model here")
    p.add_argument(
        "--int8",
        action="store_true",
        help="store convolution weights as int8 (a quarter of the size) in --export and "
        "in the averaged models scored (--ensemble-of, several --seed)",
    )
    p.add_argument(
        "--fov-range-mm",
        nargs=2,
        type=float,
        default=None,
        metavar=("SMALLEST", "LARGEST"),
        help="with --ensemble-of and --export: record the fields of view (mm) the networks "
        "learnt from; prediction resamples a CT outside them",
    )
    p.add_argument(
        "--ensemble-of",
        nargs="+",
        default=None,
        metavar="DIR",
        help="crossval folders (one per seed): score the average of their --variant folds "
        "(repeat --variant to mix recipes) "
        "(--export: also save the average of all those folds), or with --reference and "
        "--export save the average of their reference models",
    )
    p.add_argument(
        "--pack",
        default=None,
        metavar="BUNDLE",
        help="train nowhere: write the unfinished folds' slices and plan to BUNDLE, to train "
        "on a GPU machine (python -m liverseg_helpers.research.fold_bundle BUNDLE --out DIR)",
    )
    p.add_argument(
        "--unpack",
        default=None,
        metavar="DIR",
        help="put the fold archives of DIR (trained from a --pack bundle) in place under "
        "--out; the same command without --unpack then scores them",
    )
    add_train_precision(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``liverseg`` console script."""
    # TensorFlow's C++ start-up lines would bury the command's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    key = args.command if args.command != "data" else f"data-{args.data_command}"
    module_name, func_name = HANDLERS[key].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except LiverSegError as err:
        print(f"liverseg {key.replace('-', ' ')}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
