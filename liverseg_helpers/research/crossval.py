"""Leave-one-patient-out cross-validation on real CT, with an ablation of training choices.

With a handful of real patients, a random split leaves nothing to learn from or nothing to
test on. Leave-one-patient-out (LOPO) trains one model per patient, on all the *other* real
patients, and tests it on the patient it never saw: every patient is tested exactly once,
always by a model that did not see it. The mean over patients is the honest estimate of
accuracy on a new patient.

Per fold::

    train = the other real patients (+ phantom patients, if the variant adds them)
            (+ every patient of ``train_extra``, e.g. LiTS, less copies of a test patient)
    val   = one phantom patient (never trained on): monitored, not used to pick a model
    test  = the held-out real patient (never in train or val)

Why a phantom val patient: with two real patients there is no third one for early stopping,
and slices of the training patient would only measure how well that patient is memorised.
So every fold trains for the profile's fixed number of epochs and the *last* checkpoint is
tested (``checkpoint="last"``); the phantom val loss is logged as a sanity check only.

A *variant* is one training recipe (:mod:`liverseg_helpers.research.variants`); the cohort
folder and the folds come from :mod:`liverseg_helpers.research.loo_cohort`.

Files written under ``out_dir``::

    cohort/                     symlinks to the real patients and the phantom patients
    train_extra.json            with ``train_extra``: the patients added, the copies left out
    scan_fingerprints.json      with ``train_extra``: what the copy check read (a cache)
    phantom/                    generated phantom cohort (phantom_001 ...)
    slice_cache/                per-settings slice caches
    cohort_masses_lobe/ ...     the same three, once per harder phantom anatomy a variant uses
    <variant>/fold_<patient>/   a run folder of ``train.train`` + ``metrics.json``
    <variant>/per_patient_metrics.csv   one row per test patient, then mean / std / n_valid
    <variant>/per_source_metrics.csv    one row per source (the ``--data`` folder a patient
                                came from): mean of its patients' metrics, n_patients
    ablation.csv, ablation.md   one row per variant: per-fold Dice and ASSD, training time

Several sources (hospitals, scanners) enter as several ``--data`` folders: their patients form
one leave-one-out cohort, each patient is one fold's test patient, and the metrics are also
given per source, since a model can be good on one hospital's scans and poor on another's.

Command: ``liverseg crossval --data DIR [--data DIR ...] --out DIR [--profile real]
[--variant NAME ...] [--train-extra DIR ...]``; :mod:`liverseg_helpers.research.commands` sorts out
its options.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from liverseg_helpers import config as config_mod
from liverseg_helpers.atomic import atomic_file, write_json_atomic, write_text_atomic
from liverseg_helpers.errors import DataError
from liverseg_helpers.preparation.split import read_split_without
from liverseg_helpers.research.ablation_table import (
    format_markdown,
    read_finished_rows,
    summarise_ablation,
)
from liverseg_helpers.research.loo_cohort import (
    Cohort,
    DataDirs,
    extra_training_cases,
    make_cohort_dir,
    make_loo_folds,
    prepare_cohort,
    real_case_paths,
    slice_cache_dir,
    source_of,
)
from liverseg_helpers.research.start_file import fold_start_weights
from liverseg_helpers.research.variants import VARIANTS, Variant
from liverseg_helpers.training.run_reuse import check_same_training, started_same_training


def per_source_table(rows: list[dict], sources: dict[str, str]) -> pd.DataFrame:
    """Mean of each numeric metric over the test patients of each source.

    Args:
        rows: Fold rows (``case_id`` and metrics).
        sources: Case id to source (:func:`source_of`).

    Returns:
        DataFrame indexed by ``source``: ``n_patients``, ``patients`` and the metric means
        (distances of an empty prediction, ``nan``, are skipped).
    """
    table = pd.DataFrame(rows)
    table["source"] = table["case_id"].map(sources)
    numeric = table.select_dtypes("number").columns
    means = table.groupby("source")[list(numeric)].mean()
    groups = table.groupby("source")["case_id"]
    means.insert(0, "patients", groups.agg(" ".join))
    means.insert(0, "n_patients", groups.size())
    return means


@dataclass
class CrossvalResult:
    """What :func:`run_leave_one_out` produced.

    Attributes:
        per_fold: One row per (variant, test patient): metrics, train seconds, epochs.
        ablation: One row per variant (``ablation_table.summarise_ablation``).
        out_dir: The output folder.
    """

    per_fold: pd.DataFrame
    ablation: pd.DataFrame
    out_dir: Path


def evaluate_fold(model_path: Path, case_path: Path, postprocess: bool = True) -> tuple[dict, dict]:
    """3D metrics of a model on one patient at native resolution.

    Args:
        model_path: ``.keras`` model with its sidecar.
        case_path: Patient folder.
        postprocess: Largest component + hole filling (``postprocess.postprocess_mask``).

    Returns:
        ``(metrics, metrics_without_postprocessing)`` dicts of ``evaluate.evaluate_masks``
        plus ``predict_s``.
    """
    from liverseg_helpers import io
    from liverseg_helpers.evaluation import evaluate
    from liverseg_helpers.inference import predict
    from liverseg_helpers.inference.postprocess import mask_from_probs

    case = io.load_case(case_path)
    result = predict.predict_case(model_path, case, postprocess=False)
    raw_pred = result.pred  # thresholded only: postprocess=False
    start = time.perf_counter()
    pred = mask_from_probs(result.probs, case.spacing_mm[0], postprocess=postprocess)
    post_s = time.perf_counter() - start
    truth = case.masks["liver"]
    metrics = evaluate.evaluate_masks(pred, truth, case.spacing_mm)
    metrics["predict_s"] = result.seconds + post_s
    raw = evaluate.evaluate_masks(raw_pred, truth, case.spacing_mm)
    return metrics, raw


def real_repeat(variant: Variant, train_ids: list[str], real_ids: list[str]) -> dict[str, int]:
    """``TrainConfig.case_repeat`` for a variant: its ``real_repeat`` for each real patient."""
    if variant.real_repeat == 1:
        return {}
    real = set(real_ids)
    return {cid: variant.real_repeat for cid in train_ids if cid in real}


def fold_row(case_id: str, metrics: dict, raw: dict) -> dict:
    """One test patient's table row: its metrics and the ``raw_*`` ones without post-processing."""
    raw_kept = {f"raw_{k}": v for k, v in raw.items() if k in ("dice", "assd_mm", "hd95_mm")}
    return {"case_id": case_id, **metrics, **raw_kept}


def variant_train_config(
    variant: Variant,
    split: dict[str, list[str]],
    cohort_dir: Path,
    run_dir: Path,
    profile: str,
    seed: int,
    cache_dir: Path,
    overrides: dict | None = None,
    case_repeat: dict[str, int] | None = None,
    precision: str = "auto",
):
    """The ``train.TrainConfig`` of one variant's run: its loss, preprocessing and profile
    changes, with ``overrides`` on top (tests shrink the model this way).

    ``case_repeat`` is ``TrainConfig.case_repeat`` (see :func:`real_repeat`; None: none);
    ``precision`` is ``TrainConfig.precision``.
    """
    from liverseg_helpers.training import train

    return train.TrainConfig(
        data_dir=cohort_dir,
        run_dir=run_dir,
        profile=profile,
        seed=seed,
        loss=variant.loss,
        overrides={**variant.overrides, **(overrides or {})},
        cache_dir=cache_dir,
        split=split,
        preprocess=dict(variant.preprocess),
        case_repeat=dict(case_repeat or {}),
        batch_norm=variant.batch_norm,
        precision=precision,
        init_weights=variant.init_weights_path,
    )


def fold_configs(
    variant_name: str,
    data_dir: DataDirs,
    out_dir: Path,
    profile: str,
    seed: int,
    overrides: dict | None = None,
    extra_paths: Sequence[Path] = (),
    precision: str = "auto",
) -> list:
    """The ``train.TrainConfig`` of each leave-one-out fold of one variant, in patient order.

    Prepares the variant's cohort (``loo_cohort.prepare_cohort``: phantoms generated once);
    each fold's run folder is ``out_dir/<variant>/fold_<test patient>``.
    """
    variant = VARIANTS[variant_name]
    cohort_dir, real_ids, phantom_ids, extra_ids = prepare_cohort(
        data_dir, out_dir, profile, variant, extra_paths
    )
    folds = make_loo_folds(real_ids, phantom_ids, variant.phantom_train, extra_ids)
    return [
        variant_train_config(
            variant,
            split,
            cohort_dir,
            out_dir / variant_name / f"fold_{split['test'][0]}",
            profile,
            seed,
            slice_cache_dir(out_dir, variant),
            overrides,
            real_repeat(variant, split["train"], real_ids),
            precision,
        )
        for split in folds
    ]


def fold_scores_path(cfg) -> Path:
    """Where a fold's row is written once it is trained and scored (its ``metrics.json``)."""
    return Path(cfg.run_dir) / "metrics.json"


def run_fold(variant_name: str, cfg, checkpoint: str = "last") -> dict:
    """Train one fold (or reuse a finished one of the same training) and evaluate it.

    An interrupted fold of the same training continues from its last finished epoch.

    Args:
        variant_name: The recipe's name (for the row).
        cfg: The fold's ``train.TrainConfig`` (:func:`variant_train_config`); its split has
            one test patient.
        checkpoint: ``"last"`` or ``"best"``: the model scored.

    Returns:
        Row dict: variant, test case_id, metrics, ``raw_*`` metrics without post-processing,
        train_s (over all calls, see ``train.TrainResult.total_s``), epochs.

    Raises:
        DataError: The run's split.json puts the test patient in train or val, or a finished
            run folder holds another seed's or recipe's training (:func:`check_same_training`).
    """
    from liverseg_helpers.training import train

    run_dir, cohort_dir = Path(cfg.run_dir), Path(cfg.data_dir)
    done = fold_scores_path(cfg)
    if done.exists():
        check_same_training(run_dir, cfg.seed, cfg.profile, cfg.overrides, cfg.preprocess)
        return json.loads(done.read_text())
    cfg.resume = started_same_training(
        run_dir, cfg.seed, cfg.profile, cfg.overrides, cfg.preprocess
    )
    result = train.train(cfg)
    test_id = cfg.split["test"][0]
    used = read_split_without(run_dir / "split.json", test_id)
    metrics, raw = evaluate_fold(run_dir / f"{checkpoint}.keras", cohort_dir / test_id)
    row = {
        "variant": variant_name,
        **fold_row(test_id, metrics, raw),
        "train_s": result.total_s,
        "epochs": len(result.history.get("loss", [])),
        "train_patients": used["train"],
        "checkpoint": checkpoint,
    }
    write_json_atomic(row, done)
    return row


def run_leave_one_out(
    data_dir: DataDirs,
    out_dir: str | os.PathLike,
    profile: str = "real",
    seed: int = config_mod.DEFAULT_SEED,
    variants: list[str] | None = None,
    checkpoint: str = "last",
    overrides: dict | None = None,
    train_extra: Sequence[str | os.PathLike] = (),
    folds: Sequence[str] = (),
    precision: str = "auto",
    start_from: str | os.PathLike | None = None,
) -> CrossvalResult:
    """Leave-one-patient-out training and 3D evaluation for each variant.

    Finished folds (``metrics.json`` in their run folder) are reused, so an interrupted run
    continues where it stopped.

    Args:
        data_dir: Cohort of real patients (e.g. ``../shared/data/3Dircadb1``), or several
            cohorts, one per source (their patients are pooled; metrics also per source).
        out_dir: Output folder (outside the repo, or under the git-ignored ``runs/``).
        profile: Profile name (``real``; ``smoke`` for tests).
        seed: Seed of weights, augmentation and slice choice.
        variants: Names from :data:`VARIANTS` (None = all, in ladder order).
        checkpoint: ``"last"`` (fixed epochs, see the module docstring) or ``"best"``.
        overrides: Profile changes for every variant (e.g. ``{"epochs": 1}`` in tests).
        train_extra: Cohort folders (e.g. LiTS, MSD) whose patients join every fold's
            training and are never tested; copies of a real patient's scan are left out.
        folds: Test patients whose folds to train (empty: all). The other folds are not
            trained; those already finished still count in the tables.
        precision: ``TrainConfig.precision`` of the folds trained by this call.
        start_from: Another run's variant folder: each fold trained starts from its fold
            that tests the same patient (``start_file.fold_start_weights``), not from the
            variant's own ``init_weights``.

    Returns:
        :class:`CrossvalResult`; the tables are also written to ``out_dir``.

    Raises:
        DataError: Unknown variant, fewer than 2 real patients, a leaked split, or a fold
            named in ``folds`` that is no real patient's.
    """
    names = list(VARIANTS) if not variants else list(variants)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise DataError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    config_mod.get_profile(profile)  # a typo fails before any data is read
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from liverseg_helpers import io
    from liverseg_helpers.evaluation import evaluate

    real_paths = real_case_paths(data_dir)
    sources = {io.case_id_of(p): source_of(p) for p in real_paths}
    unknown_folds = sorted(set(folds) - set(sources))
    if unknown_folds:
        raise DataError(
            f"--fold {unknown_folds}: no such test patient; choose from {list(sources)}"
        )
    # The copy check reads every extra scan: once per run, for all variants.
    extra_paths = extra_training_cases(train_extra, real_paths, out_dir) if train_extra else []
    rows = []
    for name in names:
        variant_rows = []
        for cfg in fold_configs(
            name, data_dir, out_dir, profile, seed, overrides, extra_paths, precision
        ):
            test_id = cfg.split["test"][0]
            if folds and test_id not in folds and not fold_scores_path(cfg).exists():
                print(f"{name:<10} test {test_id}: not trained (not among --fold)", flush=True)
                continue
            if start_from is not None:
                cfg.init_weights = fold_start_weights(start_from, test_id)
            row = run_fold(name, cfg, checkpoint)
            print(
                f"{name:<10} test {row['case_id']}: dice {row['dice']:.4f} "
                f"assd {row['assd_mm']:.2f} mm, trained {row['train_s'] / 60:.1f} min",
                flush=True,
            )
            variant_rows.append(row)
        table = evaluate.evaluate_cohort(
            [
                {k: v for k, v in r.items() if k not in ("variant", "train_patients", "checkpoint")}
                for r in variant_rows
            ]
        )
        evaluate.save_metrics_csv(table, out_dir / name / "per_patient_metrics.csv")
        by_source = per_source_table(variant_rows, sources)
        with atomic_file(out_dir / name / "per_source_metrics.csv") as tmp:
            by_source.to_csv(tmp, float_format="%.4g")
        print(by_source[["n_patients", "dice", "assd_mm", "hd95_mm"]].to_string(), flush=True)
        rows.extend(variant_rows)
    per_fold = pd.DataFrame(rows)
    all_rows = pd.DataFrame(read_finished_rows(out_dir))
    ablation = summarise_ablation(all_rows if len(all_rows) else per_fold, VARIANTS)
    with atomic_file(out_dir / "ablation.csv") as tmp:
        ablation.to_csv(tmp, float_format="%.4g")
    write_text_atomic(out_dir / "ablation.md", format_markdown(ablation))
    return CrossvalResult(per_fold=per_fold, ablation=ablation, out_dir=out_dir)


__all__ = [
    "VARIANTS",
    "Variant",
    "CrossvalResult",
    "Cohort",
    "make_cohort_dir",
    "extra_training_cases",
    "make_loo_folds",
    "per_source_table",
    "real_case_paths",
    "source_of",
    "slice_cache_dir",
    "evaluate_fold",
    "variant_train_config",
    "fold_configs",
    "run_fold",
    "summarise_ablation",
    "format_markdown",
    "run_leave_one_out",
]
