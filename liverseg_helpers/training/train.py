"""Training: from a cohort folder to a run folder holding the best model.

A run folder holds everything a later notebook needs::

    run_dir/
        config.json          what was asked (TrainConfig, profile, Keras version, precision)
        split.json           patient ids of train / val / test (split by patient, never by slice)
        preprocess.json      PreprocessSettings used for the slice cache (and by prediction)
        history.csv          one row per epoch (loss, dice_metric, iou_metric, val_*, learning_rate)
        best.keras (+ .json) lowest val_loss so far, with its preprocessing sidecar
        last.keras (+ .json) end of the last finished epoch, for ``resume=True``
        training_state.json  epochs done, best val_loss, early-stopping / LR-plateau counters
        figures/             architecture.png

Callbacks follow the paper: best-val_loss checkpoint, EarlyStopping (patience 10),
ReduceLROnPlateau (factor 0.5, patience 5, min_lr 1e-6). The paper builds the LR reducer
but leaves it out of its callback list; the course uses it. Checkpoints are written
atomically by :func:`liverseg_helpers.training.model_files.save_model` instead of
Keras' ModelCheckpoint, so an interrupted run never leaves a half-written ``best.keras`` and a
resumed run keeps the best val_loss instead of overwriting ``best.keras`` with a worse model.

What to train and what came out are :mod:`~liverseg_helpers.training.train_config`'s
``TrainConfig`` and ``TrainResult``; the data side (patient split, slice cache, batches) is
:mod:`~liverseg_helpers.training.train_data`'s ``prepare_training``; the epochs themselves
are :mod:`~liverseg_helpers.training.fit`'s ``fit_model``. All are importable from here.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from liverseg_helpers import config as config_mod
from liverseg_helpers.errors import DataError
from liverseg_helpers.inference import precision as precision_mod
from liverseg_helpers.training import losses as losses_mod
from liverseg_helpers.training import model as model_mod
from liverseg_helpers.training import model_files, run_reuse
from liverseg_helpers.training.fit import (  # noqa: F401  (re-exported: train.fit_model etc.)
    STATE_FILE,
    RunCheckpoint,
    best_val_dice,
    compile_model,
    fit_model,
    read_history,
)
from liverseg_helpers.training.train_config import (  # noqa: F401  (re-exported)
    TrainConfig,
    TrainResult,
    save_run_config,
)
from liverseg_helpers.training.train_data import (  # noqa: F401  (re-exported)
    TrainingData,
    prepare_training,
    repeat_foreground_slices,
)


@dataclass
class DeviceSetup:
    """Precision and distribution chosen from the visible accelerators."""

    scope: Any
    policy: str
    replicas: int


TRAIN_PRECISIONS = ("auto", "float32", "bfloat16")


def select_device_setup(precision: str = "auto") -> DeviceSetup:
    """The dtype policy and distribution to train with (``TrainConfig.precision``).

    ``"auto"``: mixed float16 on GPUs with compute capability >= 7 (TensorFlow backend), the
    global policy elsewhere; ``"bfloat16"``: ``mixed_bfloat16`` on any device (on a CPU
    without bfloat16 hardware it is emulated, slower than float32, and a warning says so);
    ``"float32"``: float32. MirroredStrategy on > 1 GPU (TensorFlow). Sets the global Keras
    dtype policy as a side effect (``train`` restores it afterwards).

    Raises:
        DataError: An unknown precision.
    """
    if precision not in TRAIN_PRECISIONS:
        raise DataError(f"training precision must be one of {TRAIN_PRECISIONS}, got {precision!r}")
    if precision != "auto":
        policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
        keras.mixed_precision.set_global_policy(policy)
        if precision == "bfloat16" and precision_mod.cpu_without_bfloat16():
            warnings.warn(
                "training in bfloat16 on a CPU without bfloat16 hardware: it is emulated and "
                "slower than float32 here",
                stacklevel=2,
            )
    policy = keras.mixed_precision.dtype_policy().name
    if keras.backend.backend() != "tensorflow":
        return DeviceSetup(contextlib.nullcontext(), policy, 1)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return DeviceSetup(contextlib.nullcontext(), policy, 1)
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)
        for gpu in gpus
    ]
    tensor_cores = min(capabilities) >= (7, 0)  # float16 matmuls several times faster
    if precision == "auto" and tensor_cores:
        keras.mixed_precision.set_global_policy("mixed_float16")
        policy = "mixed_float16"
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return DeviceSetup(strategy.scope(), policy, strategy.num_replicas_in_sync)
    return DeviceSetup(contextlib.nullcontext(), policy, 1)


def train(cfg: TrainConfig) -> TrainResult:
    """Train a UNet on a cohort and fill the run folder (see the module docstring).

    Args:
        cfg: What to train.

    Returns:
        TrainResult with ``run_dir/best.keras`` and the full history.

    Raises:
        ModelFileError: ``resume=True`` but the run folder has no ``last.keras``.
        DataError: The cohort is empty or too small to split.
    """
    start = time.perf_counter()
    data = prepare_training(cfg)
    profile, run_dir, state = data.profile, data.run_dir, data.state
    previous_policy = keras.mixed_precision.dtype_policy()
    setup = select_device_setup(cfg.precision)
    try:
        with setup.scope:
            if cfg.resume:
                model = model_files.load_model(run_dir / "last.keras")
            else:
                batch_norm = cfg.task == "tumour" if cfg.batch_norm is None else cfg.batch_norm
                model = model_mod.model_from_profile(
                    profile, in_channels=data.in_channels, batch_norm=batch_norm
                )
                if cfg.init_weights:
                    model_files.load_initial_weights(model, cfg.init_weights)
                save_run_config(cfg, profile, setup.replicas)
                fig = model_mod.plot_architecture(model, run_dir / "figures" / "architecture.png")
                import matplotlib.pyplot as plt

                plt.close(fig)
            if data.initial_epoch < profile.epochs:
                fit_model(
                    model,
                    data.train_ds,
                    data.val_ds,
                    run_dir,
                    profile,
                    cfg.loss,
                    data.initial_epoch,
                    steps_per_epoch=data.steps_per_epoch,
                    validation_steps=data.validation_steps,
                    settings=data.settings,
                    task=cfg.task,
                )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    history = read_history(run_dir)
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / "best.keras",
        history=history,
        best_val_dice=best_val_dice(history),
        elapsed_s=time.perf_counter() - start,
        earlier_s=float(state["fit_s"]) if "fit_s" in state else (None if state else 0.0),
    )


def run_train_cli(args: Any) -> int:
    """``liverseg train``: train and print the run folder, best val Dice and time.

    The default run folder is ``runs/<profile>`` for the liver and ``runs/<profile>-tumour``
    for the tumour task, so training one never overwrites the other.
    """
    profile = config_mod.get_profile(args.profile)
    default_dir = f"runs/{profile.name}" + ("-tumour" if args.task == "tumour" else "")
    run_dir = config_mod.resolve_dir(args.run_dir, config_mod.ENV_RUN_DIR, default_dir)
    # A resumed run keeps the loss it was trained with unless --loss says otherwise.
    saved = run_reuse.saved_loss(Path(run_dir)) if args.resume else None
    loss = args.loss or saved or losses_mod.DEFAULT_LOSS
    losses_mod.get_loss(loss)  # a typo fails now, not after the slice cache
    cfg = TrainConfig(
        data_dir=Path(args.data) if args.data else None,
        run_dir=run_dir,
        profile=profile.name,
        seed=args.seed,
        task=args.task,
        loss=loss,
        resume=args.resume,
        epochs=args.epochs,
        precision=args.precision,
    )
    result = train(cfg)
    dice = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
    print(f"run folder:    {result.run_dir}")
    print(f"best model:    {result.model_path}")
    print(f"best val dice: {dice}")
    print(f"time:          {result.elapsed_s:.1f} s")
    return 0
