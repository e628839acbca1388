"""The ``liverseg crossval`` command: which research tool each combination of options runs.

* ``--variant V ...``: leave-one-patient-out folds (:mod:`liverseg_helpers.research.crossval`);
* several ``--seed``: each seed's folds and the average of their models
  (:mod:`liverseg_helpers.research.multiseed`);
* ``--ensemble-of DIR ...``: score or export an average of finished folds
  (:mod:`liverseg_helpers.research.ensemble`);
* ``--reference V [--export F]``: one model trained on every real patient
  (:mod:`liverseg_helpers.research.reference`).

The option checks live here, above the modules they dispatch to, so none of those modules
imports another one back.
"""

from __future__ import annotations

import argparse

from liverseg_helpers.errors import DataError
from liverseg_helpers.research import crossval, ensemble, multiseed, reference
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
        result = reference.train_reference(data_dirs, args.out, args.reference[0], profile, seed)
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
    )
    print(crossval.format_markdown(result.ablation))
    print(f"tables: {result.out_dir / 'ablation.csv'}, {result.out_dir / 'ablation.md'}")
    return 0
