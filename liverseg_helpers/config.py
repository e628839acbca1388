"""Profiles, seeds and paths: the one place where the course is sized.

Three profiles share every code path and differ only in size:

* ``smoke``  – seconds on a 2-core CPU; used by CI and by nbval.
* ``course`` – a learner's CPU, well under an hour for the whole course.
* ``full``   – the paper's network and input (256x256, 32-512 filters, batch 16), for a GPU.

Notebooks and the CLI read the profile from a parameter, falling back to the environment
variable ``LIVERSEG_PROFILE`` (so nbval, which cannot inject parameters, runs the smoke path).
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

DEFAULT_SEED = 42
ENV_PROFILE = "LIVERSEG_PROFILE"
ENV_DATA_DIR = "LIVERSEG_DATA_DIR"
ENV_RUN_DIR = "LIVERSEG_RUN_DIR"


@dataclass(frozen=True)
class Profile:
    """Every size knob of the course.

    Attributes:
        name: ``"smoke"``, ``"course"`` or ``"full"``.
        image_size: Network input side in pixels (slices are resized to it).
        base_filters: Filters of the first UNet level (the paper: 32, doubling per level).
        depth: Number of down-sampling steps (the paper: 4, so 32-64-128-256-512).
        batch_size: Slices per training step (the paper: 16).
        epochs: Maximum epochs (early stopping may end sooner).
        steps_per_epoch: Batches per epoch, or None for one pass over the training slices.
        learning_rate: Adam learning rate (the paper: 1e-3).
        early_stopping_patience: Epochs without val-loss improvement before stopping.
        reduce_lr_patience: Epochs without improvement before halving the learning rate.
        non_liver_fraction: Slices without liver kept, as a share of liver slices.
        context_slices: Neighbouring slices on each side given as extra channels (2.5D); 0 = 2D.
        augment: Apply random geometric and intensity augmentation in training.
        phantom_patients: Patients in the generated phantom cohort.
        phantom_slices: Axial slices per phantom patient.
        phantom_size: In-plane pixels of the phantom CT (real CT: 512).
        val_patients: Patients held out for validation.
        test_patients: Patients held out for the final test.
        lr_schedule: ``"plateau"`` (the paper: halve the learning rate when val loss stalls)
            or ``"cosine"`` (decay from ``learning_rate`` towards 0 over ``epochs``, for
            fixed-length runs without a trustworthy val set).
        zoom_range: Smallest and largest random zoom of the augmentation (< 1 zooms out).
            Real CT is taken with fields of view of about 300 to 500 mm, so one organ
            fills a different share of the 512 px slice from one scanner to the next.
        elastic_alpha_fraction: Std of the augmentation's smooth elastic displacement, as a
            share of the image side (``augment.AugmentSettings``).
    """

    name: str
    image_size: int
    base_filters: int
    depth: int
    batch_size: int
    epochs: int
    steps_per_epoch: int | None
    learning_rate: float
    early_stopping_patience: int
    reduce_lr_patience: int
    non_liver_fraction: float
    context_slices: int
    augment: bool
    phantom_patients: int
    phantom_slices: int
    phantom_size: int
    val_patients: int
    test_patients: int
    lr_schedule: str = "plateau"
    zoom_range: tuple[float, float] = (0.9, 1.1)
    elastic_alpha_fraction: float = 0.01

    def to_dict(self) -> dict:
        """Plain dict, for JSON files in a run folder."""
        return asdict(self)


_COURSE = Profile(
    name="course",
    image_size=128,
    base_filters=16,
    depth=4,
    batch_size=16,
    epochs=25,
    steps_per_epoch=None,
    learning_rate=1e-3,
    early_stopping_patience=10,
    reduce_lr_patience=5,
    non_liver_fraction=0.25,
    context_slices=0,
    augment=True,
    phantom_patients=10,
    phantom_slices=64,
    phantom_size=256,
    val_patients=2,
    test_patients=2,
)

# The other profiles are the course profile with what they change written out.
PROFILES: dict[str, Profile] = {
    "smoke": replace(
        _COURSE,
        name="smoke",
        image_size=64,
        base_filters=8,
        depth=3,
        epochs=8,
        learning_rate=3e-3,
        phantom_patients=5,
        phantom_slices=32,
        phantom_size=128,
        val_patients=1,
        test_patients=1,
    ),
    "course": _COURSE,
    "real": replace(
        _COURSE,
        name="real",
        batch_size=8,
        epochs=15,
        learning_rate=3e-4,
        early_stopping_patience=20,
        reduce_lr_patience=20,
        phantom_patients=9,
        phantom_slices=96,
        val_patients=1,
        test_patients=1,
    ),
    "full": replace(
        _COURSE,
        name="full",
        image_size=256,
        base_filters=32,
        epochs=100,
        phantom_patients=20,
        phantom_slices=96,
        phantom_size=512,
        val_patients=3,
        test_patients=4,
    ),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """Return a profile by name, or the one named by ``$LIVERSEG_PROFILE`` (default ``course``).

    Args:
        name: Profile name; None or "" reads the environment variable.
        **overrides: Fields to change, e.g. ``epochs=3``.

    Raises:
        DataError: Unknown profile name (a ``ValueError``).
        TypeError: Unknown field.
    """
    from liverseg_helpers.errors import DataError

    name = name or os.environ.get(ENV_PROFILE) or "course"
    if name not in PROFILES:
        raise DataError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def set_seeds(seed: int = DEFAULT_SEED) -> None:
    """Seed Python, NumPy and (if already imported) Keras/TensorFlow; ask for deterministic ops.

    This is the only place the course seeds random number generators.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    # Seed Keras only where it is already in use: the data chapters never import it, and
    # importing TensorFlow just to seed it would cost seconds at every start.
    keras = sys.modules.get("keras")
    if keras is None:
        return
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def resolve_dir(value: str | os.PathLike | None, env_var: str, default: str) -> Path:
    """Pick a folder: the explicit value, else ``$env_var``, else ``default``."""
    chosen = value or os.environ.get(env_var) or default
    return Path(chosen).expanduser()
