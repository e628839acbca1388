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
atomically by :func:`liverseg_helpers.training.model.save_model` instead of Keras' ModelCheckpoint,
so an interrupted run never leaves a half-written ``best.keras`` and a resumed run keeps
the best val_loss instead of overwriting ``best.keras`` with a worse model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from liverseg_helpers import config as config_mod
from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.preparation.augment import AugmentSettings
from liverseg_helpers.preparation.split import split_patients_with_lesions
from liverseg_helpers.training import losses as losses_mod
from liverseg_helpers.training import model as model_mod
from liverseg_helpers.training import run_reuse
from liverseg_helpers.training.fit import (  # noqa: F401  (re-exported: train.fit_model etc.)
    STATE_FILE,
    RunCheckpoint,
    best_val_dice,
    compile_model,
    fit_model,
    read_history,
)


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

    from liverseg_helpers import io
    from liverseg_helpers.data import phantom
    from liverseg_helpers.preparation import preprocess, slice_cache

    data_dir = Path(cfg.data_dir) if cfg.data_dir is not None else None
    if data_dir is None:
        data_dir = phantom.ensure_phantom_cohort(
            run_dir.parent / "data" / f"phantom_{profile.name}", profile
        )
    # The tumour stage (a cascade's second UNet) sees the liver's crop in a tighter window.
    tumour = cfg.task == "tumour"
    if tumour:
        settings = preprocess.tumour_settings(profile, **cfg.preprocess)
    else:
        settings = preprocess.settings_from_profile(profile, **cfg.preprocess)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else _default_cache_dir(run_dir, data_dir)
    paths = io.list_case_paths(data_dir)
    if not paths:
        raise DataError(f"{data_dir}: no cases found")
    # Cached patients are skipped without being read; new ones are loaded one at a time.
    cache_dir = slice_cache.build_slice_cache(
        tqdm(paths, desc="slice cache", disable=None),
        settings,
        cache_root,
        target=cfg.task,
        seed=cfg.seed,
        crop_to="liver" if tumour else None,
        crop_margin_px=preprocess.TUMOUR_CROP_MARGIN_PX,
    )
    manifest = json.loads((cache_dir / slice_cache.MANIFEST_NAME).read_text())
    sources = {str(Path(p).resolve()) for p in paths}
    case_ids = sorted(cid for cid, entry in manifest["cases"].items() if entry["source"] in sources)
    split_path = run_dir / "split.json"
    if cfg.resume and split_path.exists():
        split = json.loads(split_path.read_text())
        if cfg.split is not None:
            check_resumed_split(split, check_split(cfg.split, case_ids, data_dir), split_path)
    elif cfg.split is not None:
        split = check_split(cfg.split, case_ids, data_dir)
    elif tumour:  # validation patients with lesions, else the best checkpoint judges on nothing
        with_lesions = [
            cid for cid in case_ids if slice_cache.load_cached_slices(cache_dir, [cid])[1].any()
        ]
        split = split_patients_with_lesions(
            case_ids, with_lesions, profile.val_patients, profile.test_patients, cfg.seed
        )
    else:
        split = preprocess.split_patients(
            case_ids, profile.val_patients, profile.test_patients, cfg.seed
        )
    if not split.get("train") or not split.get("val"):
        raise DataError(
            f"{data_dir}: {len(case_ids)} patients is too few for a train and a val split "
            f"(val_patients={profile.val_patients}, test_patients={profile.test_patients})"
        )
    write_json_atomic({**split, "data_dir": str(data_dir)}, split_path)
    write_json_atomic(settings.to_dict(), run_dir / "preprocess.json")
    return split, settings, cache_dir


def check_resumed_split(saved: dict, asked: dict[str, list[str]], split_path: Path) -> None:
    """Refuse to resume a run on other patients than those it was started with.

    Args:
        saved: The run's ``split.json``.
        asked: The explicit split of this call, checked (:func:`check_split`).
        split_path: The ``split.json``, for the message.

    Raises:
        DataError: A list of ``asked`` differs from the saved one.
    """
    for name, ids in asked.items():
        if sorted(saved.get(name, [])) != ids:
            raise DataError(
                f"{split_path}: the run was started with {name} patients "
                f"{sorted(saved.get(name, []))}, this call asks for {ids}; resume it with the "
                "same split or train into another folder"
            )


def check_split(split: dict, case_ids: list[str], source: Path) -> dict[str, list[str]]:
    """Check an explicit split: known ids, each patient in one list only.

    Args:
        split: ``{"train": [...], "val": [...], "test": [...]}`` (``test`` may be absent).
        case_ids: The patients of the cohort.
        source: Cohort folder, for messages.

    Returns:
        The split with sorted lists and a ``test`` list.

    Raises:
        DataError: An unknown id or a patient in two lists.
    """
    out = {name: sorted(str(c) for c in split.get(name, [])) for name in ("train", "val", "test")}
    unknown = sorted(set(sum(out.values(), [])) - set(case_ids))
    if unknown:
        raise DataError(f"{source}: split names patients not in the cohort: {unknown}")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(out[a]) & set(out[b]))
        if shared:
            raise DataError(f"{source}: patients {shared} are in both {a} and {b}")
    return out


def repeat_foreground_slices(
    x: np.ndarray, y: np.ndarray, repeat: int
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the slices whose mask has foreground, so a rare class is seen more often.

    Args:
        x: Images ``(n, S, S, C)``.
        y: Masks ``(n, S, S, 1)`` of 0/1.
        repeat: How many times each foreground slice appears (1 = unchanged).

    Returns:
        ``(x, y)`` with ``n + (repeat - 1) * n_foreground`` slices (shuffled later).

    Raises:
        ValueError: ``repeat`` below 1.
    """
    if repeat < 1:
        raise ValueError(f"foreground_repeat must be >= 1, got {repeat}")
    counts = np.where(y.reshape(len(y), -1).any(axis=1), repeat, 1)
    return np.repeat(x, counts, axis=0), np.repeat(y, counts, axis=0)


def repeat_cases(case_ids: list[str], repeat: dict[str, int]) -> list[str]:
    """The training case ids with each id in ``repeat`` listed that many times.

    Raises:
        ValueError: A count below 1, or a repeated id that is not a training case (a typo would
            otherwise silently train without the oversampling).
    """
    unknown = sorted(set(repeat) - set(case_ids))
    if unknown:
        raise ValueError(f"case_repeat names patients not in training: {unknown}")
    bad = {cid: n for cid, n in repeat.items() if n < 1}
    if bad:
        raise ValueError(f"case_repeat counts must be >= 1, got {bad}")
    return [cid for cid in case_ids for _ in range(repeat.get(cid, 1))]


def _infinite(data: Any) -> bool:
    cardinality = getattr(data, "cardinality", None)
    return cardinality is not None and int(cardinality()) == -1  # tf.data.INFINITE_CARDINALITY


@dataclass
class TrainingData:
    """Everything ``model.fit`` needs for one training, from :func:`prepare_training`.

    Attributes:
        profile: The profile with the run's overrides applied.
        run_dir: The run folder (created).
        split: Patient ids of ``train``, ``val`` and ``test``.
        settings: PreprocessSettings of the slice cache (saved beside the model).
        train_ds: Shuffled, augmented training batches (``tf.data`` or ``PyDataset``).
        val_ds: Validation batches, in order, not augmented.
        steps_per_epoch: Batches per epoch (None: one pass over ``train_ds``).
        validation_steps: Validation batches (None: one pass over ``val_ds``).
        in_channels: Input channels of a slice (1 + 2 * context slices).
        initial_epoch: Epochs already done (more than 0 only when resuming).
        state: ``training_state.json`` of a resumed run ({} for a fresh one).
    """

    profile: Any
    run_dir: Path
    split: dict
    settings: Any
    train_ds: Any
    val_ds: Any
    steps_per_epoch: int | None
    validation_steps: int | None
    in_channels: int
    initial_epoch: int = 0
    state: dict = field(default_factory=dict)


def prepare_training(cfg: TrainConfig) -> TrainingData:
    """Seed, split the cohort by patient, build the slice cache and the input pipelines.

    The first half of :func:`train`; notebook 04 calls it and then compiles and fits the
    model in cells of its own, so that both give the same history at the same seed (tested).

    Args:
        cfg: What to train.

    Returns:
        The training data and what the fit needs besides the model.

    Raises:
        ModelFileError: ``resume=True`` but the run folder has no ``last.keras``.
        DataError: The cohort is empty or too small to split.
    """
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
    if cfg.resume:
        run_reuse.check_same_loss(run_dir, cfg.loss)
    config_mod.set_seeds(cfg.seed)
    state = json.loads(state_path.read_text()) if cfg.resume else {}
    initial_epoch = int(state.get("epoch", 0))
    if state.get("stopped_early"):
        initial_epoch = profile.epochs  # early stopping already ended this run

    split, settings, cache_dir = prepare_data(cfg, profile, run_dir)
    from liverseg_helpers.preparation import dataset, slice_cache

    x_train, y_train = slice_cache.load_cached_slices(
        cache_dir, repeat_cases(split["train"], cfg.case_repeat)
    )
    x_train, y_train = repeat_foreground_slices(x_train, y_train, cfg.foreground_repeat)
    x_val, y_val = slice_cache.load_cached_slices(cache_dir, split["val"])
    zoom_min, zoom_max = profile.zoom_range
    augment_settings = AugmentSettings(
        scale_min=zoom_min,
        scale_max=zoom_max,
        elastic_alpha_fraction=profile.elastic_alpha_fraction,
    )
    train_ds = dataset.make_train_data(
        x_train,
        y_train,
        profile.batch_size,
        cfg.seed,
        profile.augment,
        augment_settings,
        first_epoch=initial_epoch,
    )
    val_ds = dataset.make_val_data(x_val, y_val, profile.batch_size)
    per_epoch = math.ceil(len(x_train) / profile.batch_size)
    steps = profile.steps_per_epoch or (per_epoch if _infinite(train_ds) else None)
    val_steps = math.ceil(len(x_val) / profile.batch_size) if _infinite(val_ds) else None
    return TrainingData(
        profile=profile,
        run_dir=run_dir,
        split=split,
        settings=settings,
        train_ds=train_ds,
        val_ds=val_ds,
        steps_per_epoch=steps,
        validation_steps=val_steps,
        in_channels=int(x_train.shape[-1]),
        initial_epoch=initial_epoch,
        state=state,
    )


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
    setup = select_device_setup()
    try:
        with setup.scope:
            if cfg.resume:
                model = model_mod.load_model(run_dir / "last.keras")
            else:
                batch_norm = cfg.task == "tumour" if cfg.batch_norm is None else cfg.batch_norm
                model = model_mod.model_from_profile(
                    profile, in_channels=data.in_channels, batch_norm=batch_norm
                )
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
    )
    result = train(cfg)
    dice = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
    print(f"run folder:    {result.run_dir}")
    print(f"best model:    {result.model_path}")
    print(f"best val dice: {dice}")
    print(f"time:          {result.elapsed_s:.1f} s")
    return 0
