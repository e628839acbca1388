"""Leave-one-out folds trained on another machine: pack here, train there, unpack here.

A recipe of the paper's widths over the six real folds takes about 18 hours on 2 CPU cores and
minutes on one GPU. The GPU machine lent to some tasks holds neither the real CT (it does not
travel) nor TensorFlow (Keras runs on JAX there), takes at most 64 MiB of files with the
command and gives back at most 8 files of 16 MiB. So the work is split in three:

1. :func:`pack_folds` (here, with the CT): builds each variant's slice cache as
   ``liverseg crossval`` would, and writes a *bundle*: the cached slices of the patients the
   folds train and validate on (compressed), and ``plan.json``, the ``TrainConfig`` of every
   fold not finished here yet. No CT, only the preprocessed training slices.
2. :func:`train_bundle` (there): trains each fold from the bundle's slices alone
   (``TrainConfig.slice_cache``; no pydicom, SimpleITK or TensorFlow needed), stores its last
   model with int8 weights (a quarter of the size, as the shipped models) and writes one
   ``<variant>__fold_<patient>.tar`` per fold: the run folder ``liverseg crossval`` would
   have made. A time budget stops it before a fold it could not finish, so the finished
   ones come back; the next call trains the rest.
3. :func:`unpack_folds` (here): puts the run folders in place under the crossval output.
   The same ``liverseg crossval`` command then finds each fold finished (its
   ``training_state.json`` says so) and scores it at native resolution, training nothing.

Commands::

    liverseg crossval --data D ... --out runs/six_wide --variant six_wide --pack .gpu/bundle
    python -m liverseg_helpers.research.fold_bundle .gpu/bundle --out $OUT --budget-s 480 \
        --variant six_wide          (then again with --variant six_wide_coronal)
    liverseg crossval --data D ... --out runs/six_wide --variant six_wide --unpack FILES
    liverseg crossval --data D ... --out runs/six_wide --variant six_wide
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from liverseg_helpers import config as config_mod
from liverseg_helpers.atomic import atomic_file, read_json, write_json_atomic
from liverseg_helpers.errors import DataError, OutputExistsError
from liverseg_helpers.preparation.slice_cache import MANIFEST_NAME, read_manifest

PLAN_NAME = "plan.json"
# TrainConfig fields that name this machine's folders or runtime; the plan carries the rest.
LOCAL_FIELDS = {
    "data_dir",
    "run_dir",
    "cache_dir",
    "slice_cache",
    "resume",
    "data_workers",
    "precision",
}
# What a fold's archive holds: the run folder's records and its last model (int8).
RUN_FILES = (
    "config.json",
    "split.json",
    "preprocess.json",
    "history.csv",
    "training_state.json",
    "last.keras",
    "last.keras.json",
)


def fold_finished(run_dir: Path, epochs: int) -> bool:
    """Whether a fold's run folder holds a finished training (scored, or all epochs done)."""
    from liverseg_helpers.training.fit import STATE_FILE
    from liverseg_helpers.training.train_data import epochs_done

    if (run_dir / "metrics.json").exists():
        return True
    state_path = run_dir / STATE_FILE
    if not (state_path.exists() and (run_dir / "last.keras").exists()):
        return False
    return epochs_done(json.loads(state_path.read_text()), epochs) >= epochs


def copy_cache(cache_dir: Path, case_ids: Sequence[str], dest: Path) -> None:
    """Add the slice cache's files of ``case_ids`` to the cache copy ``dest``, compressed; its
    manifest lists only the patients copied (a valid cache for ``load_cached_slices``)."""
    manifest = read_manifest(cache_dir)
    copied = read_manifest(dest)["cases"] if dest.exists() else {}
    dest.mkdir(parents=True, exist_ok=True)
    for case_id in sorted(set(case_ids) - set(copied)):
        entry = manifest["cases"][case_id]
        with np.load(cache_dir / entry["file"]) as data:
            arrays = {name: data[name] for name in data.files}
        with atomic_file(dest / entry["file"]) as tmp:
            np.savez_compressed(tmp, **arrays)
        copied[case_id] = {**entry, "source": f"bundle:{case_id}", "stamp": None}
    write_json_atomic({**manifest, "cases": copied}, dest / MANIFEST_NAME)


def pack_folds(
    data_dir,
    out_dir: str | os.PathLike,
    variants: Sequence[str],
    bundle_dir: str | os.PathLike,
    profile: str = "real",
    seed: int = config_mod.DEFAULT_SEED,
    overrides: dict | None = None,
) -> Path:
    """Write the bundle of the folds of ``variants`` not yet finished under ``out_dir``.

    Args:
        data_dir: Real patient folder(s), as for ``crossval.run_leave_one_out``.
        out_dir: The crossval output folder (cohort, phantoms, slice caches, fold folders).
        variants: Recipe names (``research.variants.VARIANTS``).
        bundle_dir: Folder to write (replaced if it holds an earlier bundle).
        profile, seed, overrides: As for ``crossval.run_leave_one_out``.

    Returns:
        ``bundle_dir``, holding ``plan.json`` and one compressed slice cache per variant.

    Raises:
        DataError: An unknown variant, one that starts from a model file (the bundle does
            not carry it), or every fold already finished.
        OutputExistsError: ``bundle_dir`` exists and is not a bundle.
    """
    from liverseg_helpers.research.crossval import VARIANTS, fold_configs
    from liverseg_helpers.training.train_data import cache_cohort

    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise DataError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    tuned = [name for name in variants if VARIANTS[name].init_weights]
    if tuned:
        raise DataError(f"{tuned} start from a model file, which a bundle does not carry")
    out_dir, bundle_dir = Path(out_dir), Path(bundle_dir)
    if bundle_dir.exists() and any(bundle_dir.iterdir()):
        if not (bundle_dir / PLAN_NAME).exists():
            raise OutputExistsError(f"{bundle_dir}: exists and is not a fold bundle")
        shutil.rmtree(bundle_dir)
    folds = []
    for name in variants:
        for cfg in fold_configs(name, data_dir, out_dir, profile, seed, overrides):
            profile_settings = config_mod.get_profile(cfg.profile, **cfg.overrides)
            if fold_finished(Path(cfg.run_dir), profile_settings.epochs):
                continue
            _, _, cache_dir, _ = cache_cohort(cfg, profile_settings, Path(cfg.run_dir))
            dest = bundle_dir / f"{name}_{cache_dir.name}"
            copy_cache(cache_dir, cfg.split["train"] + cfg.split["val"], dest)
            folds.append(
                {
                    "run": f"{name}/{Path(cfg.run_dir).name}",
                    "cache": dest.name,
                    "config": {
                        k: v for k, v in dataclasses.asdict(cfg).items() if k not in LOCAL_FIELDS
                    },
                }
            )
    if not folds:
        raise DataError(f"{out_dir}: every fold of {list(variants)} is finished; nothing to pack")
    write_json_atomic({"folds": folds}, bundle_dir / PLAN_NAME)
    return bundle_dir


def read_plan(bundle_dir: str | os.PathLike) -> dict:
    """The ``plan.json`` of a bundle.

    Raises:
        DataError: The folder holds no plan, or an unreadable one.
    """
    return read_json(Path(bundle_dir) / PLAN_NAME, f"no {PLAN_NAME}; write it with --pack first")


def archive_name(run: str) -> str:
    """``six_wide/fold_0697`` -> ``six_wide__fold_0697.tar`` (a flat file name)."""
    return run.replace("/", "__") + ".tar"


def _train_one(fold: dict, bundle_dir: Path, work_dir: Path, out_dir: Path, workers: int) -> Path:
    """Train one fold of the plan, store its last model as int8, archive its run folder."""
    from liverseg_helpers.research.reference import export_model
    from liverseg_helpers.training import train
    from liverseg_helpers.training.run_reuse import started_same_training

    run_dir = work_dir / fold["run"]
    settings = dict(fold["config"])
    cfg = train.TrainConfig(
        data_dir=None,
        run_dir=run_dir,
        slice_cache=bundle_dir / fold["cache"],
        data_workers=workers,
        **settings,
    )
    cfg.resume = started_same_training(
        run_dir, cfg.seed, cfg.profile, cfg.overrides, cfg.preprocess
    )
    train.train(cfg)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        small = export_model(run_dir / "last.keras", Path(tmp) / "last.keras", int8=True)
        archive = out_dir / archive_name(fold["run"])
        with atomic_file(archive) as part, tarfile.open(part, "w") as tar:
            for name in RUN_FILES:
                source = small.parent / name if name.startswith("last.keras") else run_dir / name
                tar.add(source, arcname=f"{fold['run']}/{name}")
    return archive


def train_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    budget_s: float | None = None,
    work_dir: str | os.PathLike | None = None,
    workers: int = 8,
    variants: Sequence[str] = (),
    log=print,
) -> list[Path]:
    """Train the bundle's folds (those without an archive in ``out_dir`` yet), in plan order.

    Args:
        bundle_dir: A folder written by :func:`pack_folds`.
        out_dir: Where the fold archives go (``$OUT`` on the lent machine).
        budget_s: Start no fold that the slowest fold so far says would end after this
            many seconds from the call's start (None: train them all).
        work_dir: Run folders while training (default ``bundle_dir/runs``; not sent back).
        workers: Threads preparing training batches (``TrainConfig.data_workers``).
        variants: Train only these recipes' folds (empty: all). The lent machine sends back
            at most 8 files of 64 MiB in all, six folds of the paper's widths (int8, about
            8 MB each): one call per recipe.
        log: Called with a line per fold.

    Returns:
        The archives written by this call.

    Raises:
        DataError: ``bundle_dir`` holds no plan.
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    plan = read_plan(bundle_dir)
    work = Path(work_dir) if work_dir else bundle_dir / "runs"
    work.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, slowest, written = time.perf_counter(), 0.0, []
    unknown = sorted(set(variants) - {fold["run"].split("/")[0] for fold in plan["folds"]})
    if unknown:
        raise DataError(f"{bundle_dir}: the plan has no folds of {unknown}")
    for fold in plan["folds"]:
        if (out_dir / archive_name(fold["run"])).exists():
            continue
        if variants and fold["run"].split("/")[0] not in variants:
            continue
        elapsed = time.perf_counter() - start
        if budget_s is not None and elapsed + slowest > budget_s:
            log(f"stopped before {fold['run']}: {elapsed:.0f} s spent of a {budget_s:.0f} s budget")
            break
        fold_start = time.perf_counter()
        written.append(_train_one(fold, bundle_dir, work, out_dir, workers))
        seconds = time.perf_counter() - fold_start
        slowest = max(slowest, seconds)
        log(f"{fold['run']}: trained in {seconds:.0f} s -> {written[-1].name}")
    return written


def unpack_folds(files_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Put the fold archives of ``files_dir`` in place as run folders under ``out_dir``.

    Each archive must hold one run folder ``<variant>/fold_<patient>/`` and nothing else;
    members that would leave ``out_dir`` are refused (``download.safe_extract``).

    Returns:
        The run folders placed.

    Raises:
        DataError: No archive in ``files_dir``, or one that holds something else.
        OutputExistsError: The run folder already holds files (a fold trained here).
    """
    from liverseg_helpers.data.download import list_archive_members, safe_extract

    archives = sorted(Path(files_dir).glob("*__fold_*.tar"))
    if not archives:
        raise DataError(f"{files_dir}: no fold archives (<variant>__fold_<patient>.tar)")
    out_dir, placed = Path(out_dir), []
    out_dir.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        names = list_archive_members(archive)  # refuses unsafe members before anything else
        runs = {tuple(Path(name).parts[:2]) for name in names}
        if len(runs) != 1 or any(len(Path(name).parts) != 3 for name in names):
            raise DataError(f"{archive}: expected the files of one run folder <variant>/fold_<id>/")
        variant, fold = runs.pop()
        if not fold.startswith("fold_"):
            raise DataError(f"{archive}: {variant}/{fold} is not a fold's run folder")
        run_dir = out_dir / variant / fold
        if run_dir.exists() and any(run_dir.iterdir()):
            raise OutputExistsError(
                f"{archive.name}: {run_dir} already holds a training (finished or not); move it "
                "away to use the one trained from the bundle"
            )
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            safe_extract(archive, tmp)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            if run_dir.exists():
                run_dir.rmdir()
            os.replace(Path(tmp) / variant / fold, run_dir)
        placed.append(run_dir)
    return placed


def main(argv: list[str] | None = None) -> int:
    """``python -m liverseg_helpers.research.fold_bundle BUNDLE --out DIR [--budget-s S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="folder written by liverseg crossval --pack")
    parser.add_argument("--out", required=True, help="where the fold archives go ($OUT)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds to stay within")
    parser.add_argument("--workers", type=int, default=8, help="threads preparing batches")
    parser.add_argument(
        "--variant", action="append", default=[], help="train only this recipe's folds"
    )
    args = parser.parse_args(argv)
    written = train_bundle(
        args.bundle, args.out, args.budget_s, workers=args.workers, variants=args.variant
    )
    print(f"{len(written)} fold archive(s) in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
