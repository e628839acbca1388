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
atomically by :func:`liverseg_helpers.model.save_model` instead of Keras' ModelCheckpoint,
so an interrupted run never leaves a half-written ``best.keras`` and a resumed run keeps
the best val_loss instead of overwriting ``best.keras`` with a worse model.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras

from liverseg_helpers import config as config_mod
from liverseg_helpers import losses
from liverseg_helpers import model as model_mod
from liverseg_helpers.errors import DataError, ModelFileError

STATE_FILE = "training_state.json"


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
        loss: ``dice``, ``bce``, ``dice_bce``, ``focal`` or ``tversky``.
        resume: Continue from ``run_dir/last.keras`` at its saved epoch.
        epochs: Override of the profile's epochs (None = the profile's).
        overrides: Further profile fields to change, e.g. ``{"batch_size": 8}``.
        cache_dir: Slice cache folder; None = ``run_dir/../slice_cache/<cohort>``.
    """

    data_dir: Path | None
    run_dir: Path
    profile: str
    seed: int = config_mod.DEFAULT_SEED
    task: str = "liver"
    loss: str = "dice"
    resume: bool = False
    epochs: int | None = None
    overrides: dict = field(default_factory=dict)
    cache_dir: Path | None = None


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
    """

    run_dir: Path
    model_path: Path
    history: dict[str, list[float]]
    best_val_dice: float | None = None
    elapsed_s: float = 0.0


def _write_json(data: Mapping, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_history(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Read ``history.csv`` of a run folder as columns (``epoch`` included); {} when absent."""
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(
                float(value) if value not in ("", None) else math.nan
            )
    return columns


def compile_model(model: keras.Model, profile: Any, loss_name: str) -> keras.Model:
    """Compile with Adam (the profile's learning rate), a named loss and Dice/IoU metrics."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=profile.learning_rate),
        loss=losses.get_loss(loss_name),
        metrics=[losses.dice_metric, losses.iou_metric],
    )
    return model


class RunCheckpoint(keras.callbacks.Callback):
    """Save ``last.keras`` every epoch and ``best.keras`` on a new lowest val_loss, atomically.

    Also writes ``training_state.json`` and, when training resumes, puts the saved
    early-stopping and LR-plateau counters back (it must come after those callbacks in the
    list, because their ``on_train_begin`` resets them).
    """

    def __init__(
        self,
        run_dir: Path,
        settings: Mapping,
        task: str,
        state: Mapping | None,
        early_stopping: keras.callbacks.EarlyStopping,
        reduce_lr: keras.callbacks.ReduceLROnPlateau,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.settings = settings
        self.task = task
        self.state = dict(state or {})
        self.early_stopping = early_stopping
        self.reduce_lr = reduce_lr
        self.best = self.state.get("best_val_loss", math.inf)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.state:
            return
        self.early_stopping.best = self.state.get("best_val_loss")
        self.early_stopping.wait = self.state.get("early_stopping_wait", 0)
        self.reduce_lr.best = self.state.get("reduce_lr_best", self.reduce_lr.best)
        self.reduce_lr.wait = self.state.get("reduce_lr_wait", 0)
        self.reduce_lr.cooldown_counter = self.state.get("reduce_lr_cooldown", 0)
        if "learning_rate" in self.state:
            self.model.optimizer.learning_rate = self.state["learning_rate"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        val_loss = logs.get("val_loss")
        if val_loss is not None and val_loss < self.best:
            self.best = float(val_loss)
            self.state["best_epoch"] = epoch + 1
            model_mod.save_model(self.model, self.run_dir / "best.keras", self.settings, self.task)
        elif val_loss is None and not (self.run_dir / "best.keras").exists():
            model_mod.save_model(self.model, self.run_dir / "best.keras", self.settings, self.task)
        model_mod.save_model(self.model, self.run_dir / "last.keras", self.settings, self.task)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.state.update(
            epoch=epoch + 1,
            best_val_loss=self.best,
            learning_rate=lr,
            early_stopping_wait=int(self.early_stopping.wait),
            reduce_lr_best=self.reduce_lr.best,
            reduce_lr_wait=int(self.reduce_lr.wait),
            reduce_lr_cooldown=int(self.reduce_lr.cooldown_counter),
            stopped_early=bool(self.model.stop_training),
        )
        _write_json(self.state, self.run_dir / STATE_FILE)


def _fit_arguments(data: Any) -> dict:
    """``x``/``y`` for numpy (x, y) tuples, ``x`` alone for tf.data / PyDataset."""
    if isinstance(data, tuple) and len(data) == 2:
        return {"x": data[0], "y": data[1]}
    return {"x": data}


def fit_model(
    model: keras.Model,
    train_data: Any,
    val_data: Any,
    run_dir: str | os.PathLike,
    profile: Any,
    loss_name: str,
    initial_epoch: int = 0,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    settings: Mapping | Any | None = None,
    task: str = "liver",
    verbose: int | str = 2,
) -> dict[str, list[float]]:
    """Train a model with the paper's callbacks, checkpointing into ``run_dir``.

    Args:
        model: A UNet; compiled here unless it resumes (``initial_epoch > 0`` and compiled,
            e.g. loaded from ``last.keras`` with its optimizer state).
        train_data: ``tf.data.Dataset`` / ``keras.utils.PyDataset`` of (x, y) batches, or a
            numpy tuple (x float32 (n, H, W, C), y (n, H, W, 1) in {0, 1}), shuffled with
            ``profile.batch_size``.
        val_data: Same kinds, or None (then best.keras is simply the first epoch's model).
        run_dir: Run folder for history.csv, best.keras, last.keras, training_state.json.
        profile: A ``config.Profile`` (learning_rate, batch_size, epochs, patiences).
        loss_name: Name for :func:`liverseg_helpers.losses.get_loss`.
        initial_epoch: Epochs already done (resume); history.csv is appended to.
        epochs: Total epochs to reach (None = ``profile.epochs``).
        steps_per_epoch: Batches per epoch (None = ``profile.steps_per_epoch``, or one pass).
        validation_steps: Validation batches (None = one pass).
        settings: Preprocessing settings for the model sidecars (dict or PreprocessSettings);
            None = image size and context slices of the profile.
        task: ``"liver"`` or ``"tumour"``, for the sidecars.
        verbose: Keras verbosity; 2 = one line per epoch (readable in logs and papermill).

    Returns:
        ``History.history`` of this call: lists per metric, one value per epoch run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if initial_epoch == 0 or not getattr(model, "compiled", False):
        compile_model(model, profile, loss_name)
    if settings is None:
        settings = {"image_size": profile.image_size, "context_slices": profile.context_slices}
    settings = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    state = None
    state_path = run_dir / STATE_FILE
    if initial_epoch > 0 and state_path.exists():
        state = json.loads(state_path.read_text())

    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=profile.early_stopping_patience
    )
    # The paper's reducer: halve the LR after 5 flat epochs (min_delta = its epsilon=1e-4).
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss",
        mode="min",
        factor=0.5,
        patience=profile.reduce_lr_patience,
        min_delta=1e-4,
        cooldown=2,
        min_lr=1e-6,
        verbose=1,
    )
    callbacks = [
        early_stopping,
        reduce_lr,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        RunCheckpoint(run_dir, settings, task, state, early_stopping, reduce_lr),
    ]
    fit_kwargs = _fit_arguments(train_data)
    if "y" in fit_kwargs:
        fit_kwargs.update(batch_size=profile.batch_size, shuffle=True)
    else:  # datasets shuffle themselves (seeded); Keras would only warn
        fit_kwargs.update(shuffle=False)
    history = model.fit(
        **fit_kwargs,
        validation_data=val_data,
        epochs=epochs if epochs is not None else profile.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch or profile.steps_per_epoch,
        validation_steps=validation_steps,
        callbacks=callbacks,
        verbose=verbose,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


@dataclass
class DeviceSetup:
    """Precision and distribution chosen from the visible accelerators."""

    scope: Any
    policy: str
    replicas: int


def select_device_setup() -> DeviceSetup:
    """Mixed float16 on GPUs with compute capability >= 7 and MirroredStrategy on > 1 GPU.

    Only with the TensorFlow backend; on CPU (or other backends) nothing changes. Sets the
    global Keras dtype policy as a side effect (``train`` restores it afterwards).
    """
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
    if min(capabilities) >= (7, 0):  # tensor cores: float16 matmuls are several times faster
        keras.mixed_precision.set_global_policy("mixed_float16")
        policy = "mixed_float16"
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return DeviceSetup(strategy.scope(), policy, strategy.num_replicas_in_sync)
    return DeviceSetup(contextlib.nullcontext(), policy, 1)


def _default_cache_dir(run_dir: Path, data_dir: Path) -> Path:
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return run_dir.parent / "slice_cache" / f"{data_dir.name}-{digest}"


def prepare_data(cfg: TrainConfig, profile: Any, run_dir: Path) -> tuple[dict, Any, Path]:
    """Cohort -> slice cache -> patient split. Returns (split, settings, cache folder)."""
    from tqdm.auto import tqdm

    from liverseg_helpers import dataset, io, phantom, preprocess

    data_dir = Path(cfg.data_dir) if cfg.data_dir is not None else None
    if data_dir is None:
        data_dir = phantom.ensure_phantom_cohort(
            run_dir.parent / "data" / f"phantom_{profile.name}", profile
        )
    settings = preprocess.settings_from_profile(profile)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else _default_cache_dir(run_dir, data_dir)
    paths = io.list_case_paths(data_dir)
    if not paths:
        raise DataError(f"{data_dir}: no cases found")
    # Cached patients are skipped without being read; new ones are loaded one at a time.
    cache_dir = dataset.build_slice_cache(
        tqdm(paths, desc="slice cache", disable=None),
        settings,
        cache_root,
        target=cfg.task,
        seed=cfg.seed,
    )
    manifest = json.loads((cache_dir / dataset.MANIFEST_NAME).read_text())
    sources = {str(Path(p).resolve()) for p in paths}
    case_ids = sorted(cid for cid, entry in manifest["cases"].items() if entry["source"] in sources)
    split_path = run_dir / "split.json"
    if cfg.resume and split_path.exists():
        split = json.loads(split_path.read_text())
    else:
        split = preprocess.split_patients(
            case_ids, profile.val_patients, profile.test_patients, cfg.seed
        )
    if not split.get("train") or not split.get("val"):
        raise DataError(
            f"{data_dir}: {len(case_ids)} patients is too few for a train and a val split "
            f"(val_patients={profile.val_patients}, test_patients={profile.test_patients})"
        )
    _write_json({**split, "data_dir": str(data_dir)}, split_path)
    _write_json(settings.to_dict(), run_dir / "preprocess.json")
    return split, settings, cache_dir


def _infinite(data: Any) -> bool:
    cardinality = getattr(data, "cardinality", None)
    return cardinality is not None and int(cardinality()) == -1  # tf.data.INFINITE_CARDINALITY


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
    overrides = dict(cfg.overrides)
    if cfg.epochs is not None:
        overrides["epochs"] = cfg.epochs
    profile = config_mod.get_profile(cfg.profile, **overrides)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "figures").mkdir(exist_ok=True)
    state_path, last_path = run_dir / STATE_FILE, run_dir / "last.keras"
    if cfg.resume and not (state_path.exists() and last_path.exists()):
        raise ModelFileError(f"{last_path}: nothing to resume (train without resume first)")
    config_mod.set_seeds(cfg.seed)

    split, settings, cache_dir = prepare_data(cfg, profile, run_dir)
    from liverseg_helpers import dataset

    x_train, y_train = dataset.load_cached_slices(cache_dir, split["train"])
    x_val, y_val = dataset.load_cached_slices(cache_dir, split["val"])
    if keras.backend.backend() == "tensorflow":
        train_ds = dataset.make_train_ds(
            x_train, y_train, profile.batch_size, cfg.seed, augment=profile.augment
        )
        val_ds = dataset.make_val_ds(x_val, y_val, profile.batch_size)
    else:
        train_ds = dataset.make_numpy_sequence(
            x_train, y_train, profile.batch_size, cfg.seed, profile.augment
        )
        val_ds = dataset.make_numpy_sequence(x_val, y_val, profile.batch_size, cfg.seed, False)
    per_epoch = math.ceil(len(x_train) / profile.batch_size)
    steps = profile.steps_per_epoch or (per_epoch if _infinite(train_ds) else None)
    val_steps = math.ceil(len(x_val) / profile.batch_size) if _infinite(val_ds) else None

    previous_policy = keras.mixed_precision.dtype_policy()
    setup = select_device_setup()
    try:
        with setup.scope:
            if cfg.resume:
                state = json.loads(state_path.read_text())
                initial_epoch = int(state["epoch"])
                model = model_mod.load_model(last_path)
                if state.get("stopped_early"):
                    initial_epoch = profile.epochs  # early stopping already ended this run
            else:
                initial_epoch = 0
                model = model_mod.model_from_profile(profile, in_channels=x_train.shape[-1])
                _write_json(
                    {
                        **asdict(cfg),
                        "profile_settings": profile.to_dict(),
                        "keras_version": keras.__version__,
                        "backend": keras.backend.backend(),
                        "precision_policy": setup.policy,
                        "replicas": setup.replicas,
                    },
                    run_dir / "config.json",
                )
                fig = model_mod.plot_architecture(model, run_dir / "figures" / "architecture.png")
                import matplotlib.pyplot as plt

                plt.close(fig)
            if initial_epoch < profile.epochs:
                fit_model(
                    model,
                    train_ds,
                    val_ds,
                    run_dir,
                    profile,
                    cfg.loss,
                    initial_epoch,
                    steps_per_epoch=steps,
                    validation_steps=val_steps,
                    settings=settings,
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
    )


def best_val_dice(history: Mapping[str, list[float]]) -> float | None:
    """Val Dice (thresholded) at the epoch with the lowest val_loss, or None."""
    val_loss, val_dice = history.get("val_loss"), history.get("val_dice_metric")
    if not val_loss or not val_dice:
        return None
    best = min(range(len(val_loss)), key=lambda i: val_loss[i])
    return float(val_dice[best])


def run_train_cli(args: Any) -> int:
    """``liverseg train``: train and print the run folder, best val Dice and time."""
    profile = config_mod.get_profile(args.profile)
    run_dir = config_mod.resolve_dir(args.run_dir, config_mod.ENV_RUN_DIR, f"runs/{profile.name}")
    cfg = TrainConfig(
        data_dir=Path(args.data) if args.data else None,
        run_dir=run_dir,
        profile=profile.name,
        seed=args.seed,
        task=args.task,
        loss=args.loss or "dice",
        resume=args.resume,
        epochs=args.epochs,
    )
    result = train(cfg)
    dice = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
    print(f"run folder:    {result.run_dir}")
    print(f"best model:    {result.model_path}")
    print(f"best val dice: {dice}")
    print(f"time:          {result.elapsed_s:.1f} s")
    return 0
