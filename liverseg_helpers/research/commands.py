"""The ``liverseg crossval`` command: which research tool each combination of options runs.

* ``--variant V ...``: leave-one-patient-out folds (:mod:`liverseg_helpers.research.crossval`);
* several ``--seed``: each seed's folds and the average of their models
  (:mod:`liverseg_helpers.research.multiseed`);
* ``--ensemble-of DIR ...``: score or export an average of finished folds
  (:mod:`liverseg_helpers.research.ensemble`);
* ``--reference V [--export F]``: one model trained on every real patient
  (:mod:`liverseg_helpers.research.reference`);
* ``--pack BUNDLE`` / ``--unpack DIR``: the folds trained on another machine
  (:mod:`liverseg_helpers.research.fold_bundle`).

The option checks live here, above the modules they dispatch to, so none of those modules
imports another one back.
"""

from __future__ import annotations

import argparse

from liverseg_helpers.errors import DataError
from liverseg_helpers.research import crossval, ensemble, fold_bundle, multiseed, reference
from liverseg_helpers.research.variants import VARIANTS


def run_crossval_cli(args: argparse.Namespace) -> int:
    """``liverseg crossval``: LOPO cross-validation (or ``--reference``: the shipped model)."""
    profile = args.profile or "real"
    if len(args.data) > 1 and (args.ensemble_of or len(args.seed) > 1):
        raise DataError(
            "several --data folders are pooled by leave-one-out and --reference (one seed) "
            "only; --ensemble-of and several --seed take one --data"
        )
    data_dirs, args.data = args.data, args.data[0]
    if args.train_extra and (args.reference or args.ensemble_of):
        raise DataError(
            "--train-extra adds patients to leave-one-out training; it does not apply to "
            "--reference or --ensemble-of"
        )
    not_one_seed_loo = (
        args.pack or args.unpack or args.ensemble_of or args.reference or len(args.seed) > 1
    )
    if args.fold and not_one_seed_loo:
        raise DataError("--fold picks the leave-one-out folds of one seed to train: --variant V")
    if args.fov_range_mm and not (args.ensemble_of and args.export):
        raise DataError("--fov-range-mm is recorded by --export with --ensemble-of")
    if args.start_from and not_one_seed_loo:
        raise DataError("--start-from starts the leave-one-out folds of one seed: --variant V")
    if args.precision != "auto" and (args.pack or args.unpack or args.ensemble_of):
        raise DataError(
            "--precision sets how this machine trains; --pack, --unpack and --ensemble-of "
            "train nothing here"
        )
    if args.pack or args.unpack:
        return run_bundle_cli(args, data_dirs, profile)
    if args.ensemble_of:
        return ensemble.run_ensemble_cli(args)
    if args.reference and len(args.reference) > 1:
        raise DataError("--reference trains one variant; several need --ensemble-of")
    if args.export and not args.reference:
        raise DataError(
            "--export saves a model trained with --reference (or --ensemble-of); add --reference V"
        )
    if not (args.variant or args.reference):
        raise DataError(
            f"name the recipes: --variant V (repeatable), or --variant all for all {len(VARIANTS)} "
            "(the whole ablation ladder: days on a 2-core CPU), or --reference V"
        )
    if args.variant == ["all"]:
        args.variant = list(VARIANTS)
    if args.int8 and len(args.seed) == 1 and not args.export:
        raise DataError(
            "--int8 stores the weights of an exported or averaged model: add --export, several "
            "--seed, or --ensemble-of"
        )
    if len(args.seed) > 1:
        return multiseed.run_multiseed_cli(args)
    seed = args.seed[0]
    if args.reference:
        result = reference.train_reference(
            data_dirs, args.out, args.reference[0], profile, seed, precision=args.precision
        )
        print(f"reference model: {result.run_dir / 'last.keras'} ({result.describe_time()})")
        if args.export:
            dest = reference.export_model(result.run_dir / "last.keras", args.export, args.int8)
            print(f"exported to {dest}")
        return 0
    result = crossval.run_leave_one_out(
        data_dirs,
        args.out,
        profile,
        seed,
        args.variant,
        args.checkpoint,
        train_extra=args.train_extra or (),
        folds=args.fold or (),
        precision=args.precision,
        start_from=args.start_from,
    )
    print(crossval.format_markdown(result.ablation))
    print(f"tables: {result.out_dir / 'ablation.csv'}, {result.out_dir / 'ablation.md'}")
    return 0


def run_bundle_cli(args: argparse.Namespace, data_dirs: list[str], profile: str) -> int:
    """``--pack BUNDLE``: write the unfinished folds' bundle; ``--unpack DIR``: place the
    trained folds under ``--out`` (then the command without it scores them)."""
    if args.pack and args.unpack:
        raise DataError("--pack writes a bundle, --unpack places its trained folds: one at a time")
    if args.reference or args.ensemble_of or args.train_extra or len(args.seed) > 1:
        raise DataError("--pack and --unpack take leave-one-out folds of one seed: --variant V")
    if args.unpack:
        for run_dir in fold_bundle.unpack_folds(args.unpack, args.out):
            print(f"placed {run_dir}")
        print("score them: the same command without --unpack")
        return 0
    if not args.variant or args.variant == ["all"]:
        raise DataError("--pack needs the recipes to train there: --variant V (repeatable)")
    bundle = fold_bundle.pack_folds(
        data_dirs, args.out, args.variant, args.pack, profile, args.seed[0]
    )
    n_folds = len(fold_bundle.read_plan(bundle)["folds"])
    size_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6
    print(f"bundle {bundle}: {n_folds} fold(s), {size_mb:.1f} MB")
    print(f"train them: python -m liverseg_helpers.research.fold_bundle {bundle} --out DIR")
    return 0
