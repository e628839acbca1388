"""What a training run is asked to do (:class:`TrainConfig`) and what it produced
(:class:`TrainResult`); ``config.json`` of the run folder records the former."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras

from liverseg_helpers import config as config_mod
from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.training import losses as losses_mod


@dataclass
class TrainConfig:
    """What to train.

    Attributes:
        data_dir: Cohort folder (3D-IRCADb patients, LiTS/MSD NIfTI, ...); None = a phantom
            cohort generated once into ``run_dir/../data/phantom_<profile>``.
        run_dir: Run folder (created).
        profile: ``smoke``, ``course`` or ``full``.
        seed: Seed of the split, the weights and the augmentation.
        task: ``"liver"`` or ``"tumour"``.
        loss: ``dice_bce`` (the default, ``losses.DEFAULT_LOSS``: soft Dice + BCE), ``dice``
            (the paper's soft Dice alone), ``bce``, ``focal`` or ``tversky``.
        resume: Continue from ``run_dir/last.keras`` at its saved epoch.
        epochs: Override of the profile's epochs (None = the profile's).
        overrides: Further profile fields to change, e.g. ``{"batch_size": 8}``.
        cache_dir: Slice cache folder; None = ``run_dir/../slice_cache/<cohort>``.
        foreground_repeat: Show training slices whose mask has foreground this many times
            per epoch (1 = as selected): oversampling of the rare tumour slices.
        case_repeat: Show the slices of these training patients this many times per epoch,
            e.g. ``{"3Dircadb1.1": 4}``: oversampling of scarce real patients among phantoms.
        batch_norm: Batch normalisation in the UNet; None = the paper's UNet without it for
            the liver, with it for tumours (without it the tumour stage collapses to an
            all-zero output: the sigmoid saturates and Dice gradients vanish).
        split: Explicit ``{"train": [...], "val": [...], "test": [...]}`` case ids to use
            instead of a random ``split_patients`` (e.g. a leave-one-patient-out fold); every
            id must be in the cohort and no id may be in two lists.
        preprocess: Preprocessing settings to change, e.g. ``{"target_spacing_mm": 1.6}``.
        slice_cache: A slice cache folder already built (``slice_cache.build_slice_cache``,
            with the settings this run asks for) to train from instead of ``data_dir``: no CT
            is read, e.g. on a lent GPU machine the CT cannot travel to
            (:mod:`liverseg_helpers.research.fold_bundle`).
        data_workers: Threads preparing the training batches under a backend other than
            TensorFlow (``dataset.make_train_data``); the batches stay the same.
        precision: ``"auto"`` (float32 on a CPU, mixed float16 on a GPU with tensor cores),
            ``"float32"``, or ``"bfloat16"``: the ``mixed_bfloat16`` policy, weights kept in
            float32, about 2x faster training on a CPU with bfloat16 hardware (AVX512-BF16
            or AMX); the saved models are turned back to float32 when loaded for use.
        init_weights: Start from these weights instead of random ones (fine-tuning): a
            ``.keras`` file, or ``file.keras:member_1`` for one network of an ensemble file
            (``model_files.load_initial_weights``); None: random, as the paper.
    """

    data_dir: Path | None
    run_dir: Path
    profile: str
    seed: int = config_mod.DEFAULT_SEED
    task: str = "liver"
    loss: str = losses_mod.DEFAULT_LOSS
    resume: bool = False
    epochs: int | None = None
    overrides: dict = field(default_factory=dict)
    cache_dir: Path | None = None
    foreground_repeat: int = 1
    case_repeat: dict[str, int] = field(default_factory=dict)
    batch_norm: bool | None = None
    split: dict | None = None
    preprocess: dict = field(default_factory=dict)
    slice_cache: Path | None = None
    data_workers: int = 1
    precision: str = "auto"
    init_weights: str | None = None


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: The run folder.
        model_path: ``run_dir/best.keras``.
        history: Per-epoch values over the whole run (resumed parts included), from
            history.csv: ``{"loss": [...], "val_loss": [...], "val_dice_metric": [...], ...}``.
        best_val_dice: Thresholded val Dice at the best-val_loss epoch (None without val data).
        elapsed_s: Wall-clock seconds of this call.
        earlier_s: Seconds earlier calls spent in fit on the epochs this one resumed from
            (``fit_s`` of training_state.json); 0 for a fresh run, None when those calls did
            not record it (runs trained before ``fit_s`` existed).
    """

    run_dir: Path
    model_path: Path
    history: dict[str, list[float]]
    best_val_dice: float | None = None
    elapsed_s: float = 0.0
    earlier_s: float | None = 0.0

    @property
    def total_s(self) -> float:
        """The training's cost over all its calls (NaN when earlier calls are unknown)."""
        return self.elapsed_s + (math.nan if self.earlier_s is None else self.earlier_s)

    def describe_time(self) -> str:
        """This call's minutes and, when it resumed or reused a run, the total recorded."""
        if self.earlier_s == 0:
            return f"{self.elapsed_s / 60:.1f} min"
        if self.earlier_s is None:
            return f"{self.elapsed_s / 60:.1f} min in this call; earlier calls not recorded"
        return f"{self.elapsed_s / 60:.1f} min in this call, {self.total_s / 60:.1f} min in all"


def save_run_config(cfg: TrainConfig, profile: Any, replicas: int = 1) -> Path:
    """Write ``config.json``: what was asked, the profile, Keras version, backend, precision.

    Later runs read it to refuse reusing a folder for another training (``run_reuse``).
    """
    return write_json_atomic(
        {
            **asdict(cfg),
            "profile_settings": profile.to_dict(),
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "precision_policy": keras.mixed_precision.dtype_policy().name,
            "replicas": replicas,
        },
        Path(cfg.run_dir) / "config.json",
    )
