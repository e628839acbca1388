"""The data side of a training run: patient split, slice cache and input pipelines.

:func:`prepare_training` is the first half of ``train.train``: seeds, the cohort split by
patient (never by slice; an explicit split is checked, and a resumed run keeps its own), the
slice cache (:mod:`liverseg_helpers.preparation.slice_cache`), oversampling of scarce patients
or rare foreground slices, and the batches (:mod:`liverseg_helpers.preparation.dataset`).
Notebook 04 calls it, then builds and fits the model in cells of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg_helpers import config as config_mod
from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.preparation.augment import AugmentSettings
from liverseg_helpers.preparation.split import split_patients_with_lesions
from liverseg_helpers.training import run_reuse
from liverseg_helpers.training.fit import STATE_FILE
from liverseg_helpers.training.train_config import TrainConfig


def _default_cache_dir(run_dir: Path, data_dir: Path) -> Path:
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return run_dir.parent / "slice_cache" / f"{data_dir.name}-{digest}"


def cache_cohort(
    cfg: TrainConfig, profile: Any, run_dir: Path
) -> tuple[Path, Any, Path, list[str]]:
    """The slice cache a run trains from, built from its cohort (or given: ``cfg.slice_cache``).

    Returns:
        ``(data_dir, settings, cache folder, case ids)``: the cohort folder (the cache folder
        itself for ``cfg.slice_cache``), the preprocessing, the cache and its patients.

    Raises:
        DataError: An empty cohort, or a given cache built with other settings.
    """
    from liverseg_helpers.preparation import preprocess, slice_cache

    # The tumour stage (a cascade's second UNet) sees the liver's crop in a tighter window.
    tumour = cfg.task == "tumour"
    if tumour:
        settings = preprocess.tumour_settings(profile, **cfg.preprocess)
    else:
        settings = preprocess.settings_from_profile(profile, **cfg.preprocess)
    if cfg.slice_cache is not None:
        cache_dir = Path(cfg.slice_cache)
        case_ids = slice_cache.cached_case_ids(cache_dir, settings, cfg.task)
        return cache_dir, settings, cache_dir, case_ids

    from tqdm.auto import tqdm

    from liverseg_helpers import io
    from liverseg_helpers.data import phantom

    data_dir = Path(cfg.data_dir) if cfg.data_dir is not None else None
    if data_dir is None:
        data_dir = phantom.ensure_phantom_cohort(
            run_dir.parent / "data" / f"phantom_{profile.name}", profile
        )
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
    manifest = slice_cache.read_manifest(cache_dir)
    sources = {str(Path(p).resolve()) for p in paths}
    case_ids = sorted(cid for cid, entry in manifest["cases"].items() if entry["source"] in sources)
    return data_dir, settings, cache_dir, case_ids


def prepare_data(cfg: TrainConfig, profile: Any, run_dir: Path) -> tuple[dict, Any, Path]:
    """Cohort -> slice cache -> patient split. Returns (split, settings, cache folder)."""
    from liverseg_helpers.preparation import preprocess, slice_cache

    data_dir, settings, cache_dir, case_ids = cache_cohort(cfg, profile, run_dir)
    tumour = cfg.task == "tumour"
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


def epochs_done(state: dict, epochs: int) -> int:
    """Epochs a run's ``training_state.json`` (``state``) has done, of the ``epochs`` asked:
    all of them when early stopping ended it."""
    return epochs if state.get("stopped_early") else int(state.get("epoch", 0))


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
    initial_epoch = epochs_done(state, profile.epochs)

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
        workers=cfg.data_workers,
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
