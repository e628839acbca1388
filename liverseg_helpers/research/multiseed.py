"""One command for several seeds: each seed's runs, then the average of their models.

One network trained on one real patient depends on its seed (from 0.88 to 0.94 Dice on the
same patient), and the average of a few seeds' networks removes most of that luck. The
shipped model and its leave-one-patient-out table are such averages, and this module makes
each of them one command instead of a loop plus an ensemble step:

* ``liverseg crossval --data D --out O --variant V --seed 42 43 44 [--int8]``: the LOPO runs
  of each seed in ``O/seed_<s>/`` (:func:`crossval.run_leave_one_out`), then, per variant,
  the per-patient scores of the average of the seeds' fold models that never saw the patient,
  in ``O/ensemble_<V>[_int8]/`` (:func:`ensemble.run_ensemble_lopo`);
* ``liverseg crossval --data D --out O --reference V --seed 42 43 44 [--int8] --export F``:
  the reference model of each seed (all real patients) in ``O/seed_<s>/reference_<V>/``, then
  their average saved to ``F`` (:func:`ensemble.export_ensemble`).

Finished runs are reused and an interrupted one resumes, so the command can be run again after
a stop and continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from liverseg_helpers.errors import DataError
from liverseg_helpers.research import crossval, ensemble, reference


def seed_dirs(out_dir: str | os.PathLike, seeds: list[int]) -> list[Path]:
    """The output folder of each seed: ``out_dir`` itself for one seed, else ``seed_<s>/``.

    Raises:
        DataError: No seed, or a seed given twice (its runs would be averaged twice).
    """
    if not seeds:
        raise DataError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise DataError(f"seeds must differ, got {seeds}")
    out_dir = Path(out_dir)
    return [out_dir] if len(seeds) == 1 else [out_dir / f"seed_{s}" for s in seeds]


def run_seeds_lopo(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    variants: list[str],
    seeds: list[int],
    profile: str = "real",
    int8: bool = False,
    overrides: dict | None = None,
    train_extra: Sequence[str | os.PathLike] = (),
    precision: str = "auto",
) -> dict:
    """LOPO runs at each seed, then the per-patient scores of each variant's seed average.

    Args:
        data_dir: The real patients.
        out_dir: Output folder (see the module docstring for its layout).
        variants: Variant names (each is averaged over the seeds on its own).
        seeds: Two or more seeds.
        profile: Profile name (``real``; ``smoke`` in tests).
        int8: Score the int8-weight twin of each average (what ``--int8 --export`` ships).
        overrides: Profile changes for every run (e.g. tiny models in tests).
        train_extra: Cohorts added to every fold's training (``crossval.run_leave_one_out``).
        precision: ``TrainConfig.precision`` of the runs trained.

    Returns:
        ``{variant: per-patient table}`` of the averages (``evaluate.evaluate_cohort``).
    """
    dirs = seed_dirs(out_dir, seeds)
    if len(dirs) < 2:
        raise DataError("averaging over seeds needs at least two seeds")
    for seed, folder in zip(seeds, dirs, strict=True):
        print(f"seed {seed}: leave-one-patient-out runs in {folder}", flush=True)
        crossval.run_leave_one_out(
            data_dir,
            folder,
            profile,
            seed,
            variants,
            overrides=overrides,
            train_extra=train_extra,
            precision=precision,
        )
    return {
        name: ensemble.run_ensemble_lopo(data_dir, dirs, name, out_dir, int8) for name in variants
    }


def train_seed_references(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    variant: str,
    seeds: list[int],
    profile: str = "real",
    overrides: dict | None = None,
    precision: str = "auto",
) -> list[Path]:
    """The reference model (trained on every real patient) of one variant at each seed.

    Returns:
        Each seed's ``reference_<variant>/last.keras``.
    """
    paths = []
    for seed, folder in zip(seeds, seed_dirs(out_dir, seeds), strict=True):
        result = reference.train_reference(
            data_dir, folder, variant, profile, seed, overrides, precision
        )
        path = result.run_dir / "last.keras"
        took = result.describe_time()
        print(f"seed {seed}: reference model {path} ({took}; a finished run is reused)", flush=True)
        paths.append(path)
    return paths


def run_multiseed_cli(args: argparse.Namespace) -> int:
    """``liverseg crossval --seed S1 S2 ...``: several seeds and their average (module doc)."""
    profile = args.profile or "real"
    if args.reference:  # one variant: liverseg crossval checked --reference and --export
        paths = train_seed_references(
            args.data, args.out, args.reference[0], args.seed, profile, precision=args.precision
        )
        if args.export:
            dest = ensemble.export_ensemble(paths, args.export, args.int8)
            print(f"exported the average of {len(paths)} reference models to {dest}")
        return 0
    if not args.variant:
        raise DataError("--seed with several seeds needs --variant (or --reference)")
    if args.checkpoint != "last":
        # ensemble.fold_members averages each fold's last.keras.
        raise DataError("several seeds are averaged at their last checkpoint; drop --checkpoint")
    tables = run_seeds_lopo(
        args.data,
        args.out,
        args.variant,
        args.seed,
        profile,
        args.int8,
        train_extra=args.train_extra or (),
        precision=args.precision,
    )
    for name, table in tables.items():
        print(f"{ensemble.ensemble_name(name, args.int8)} (seeds {args.seed}):")
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    return 0
