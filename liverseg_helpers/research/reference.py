"""The reference model: one recipe trained on every real patient, exported to ship.

The leave-one-patient-out folds (:mod:`liverseg_helpers.research.crossval`) estimate how well a
recipe does on a patient it never saw; the model that ships is then trained on all of them, and its
scores on these patients are a regression check, not an accuracy figure.

Command: ``liverseg crossval --data DIR [--data DIR ...] --out DIR --reference VARIANT [--int8]
[--export F]`` (several ``--seed``, one ``--data``: :mod:`liverseg_helpers.research.multiseed`).
"""

from __future__ import annotations

import os
from pathlib import Path

from liverseg_helpers import config as config_mod
from liverseg_helpers.research.crossval import (
    DataDirs,
    prepare_cohort,
    real_repeat,
    slice_cache_dir,
    variant_train_config,
)
from liverseg_helpers.research.variants import VARIANTS
from liverseg_helpers.training.run_reuse import started_same_training


def train_reference(
    data_dir: DataDirs,
    out_dir: str | os.PathLike,
    variant: str,
    profile: str = "real",
    seed: int = config_mod.DEFAULT_SEED,
    overrides: dict | None = None,
    precision: str = "auto",
):
    """Train the shipped model: one variant on ALL real patients (no test patient left).

    Its accuracy on these patients is not a generalisation estimate; the LOPO folds are.
    A run folder that already holds this recipe's training is resumed (``TrainConfig.resume``):
    a finished one is reused as it is, an interrupted one continues from its last epoch.

    Args:
        data_dir: The real patients: one cohort folder, or several (one per source).
        overrides: Profile changes on top of the variant's (e.g. tiny models in tests).
        precision: ``TrainConfig.precision``.

    Returns:
        ``train.TrainResult`` of ``out_dir/reference_<variant>``.

    Raises:
        DataError: The run folder holds a training of another seed, profile or recipe.
    """
    from liverseg_helpers.training import train

    out_dir = Path(out_dir)
    chosen = VARIANTS[variant]
    cohort_dir, real_ids, phantom_ids, _ = prepare_cohort(data_dir, out_dir, profile, chosen)
    extra = phantom_ids[1 : 1 + chosen.phantom_train]
    split = {"train": real_ids + extra, "val": [phantom_ids[0]], "test": []}
    run_dir = out_dir / f"reference_{variant}"
    cfg = variant_train_config(
        chosen,
        split,
        cohort_dir,
        run_dir,
        profile,
        seed,
        slice_cache_dir(out_dir, chosen),
        overrides,
        real_repeat(chosen, split["train"], real_ids),
        precision,
    )
    cfg.resume = started_same_training(run_dir, seed, profile, cfg.overrides, cfg.preprocess)
    return train.train(cfg)


def export_model(
    model_path: str | os.PathLike, dest: str | os.PathLike, int8: bool = False
) -> Path:
    """Copy a trained model without its optimizer state (a third of the size), with its sidecar.

    Args:
        model_path: A ``.keras`` file saved by training (``last.keras`` or ``best.keras``).
        dest: Where to write it, e.g. ``models/liver_unet.keras``.
        int8: Store the convolution weights as int8 (``quantize.quantize_int8``: a quarter of
            the size again).

    Returns:
        The written path.
    """
    from liverseg_helpers.training import model_files, quantize

    side = model_files.read_sidecar(model_path) or {}
    trained = model_files.load_model(model_path, compile=False)
    if int8:
        trained = quantize.quantize_int8(trained)
    return model_files.save_model(
        trained, dest, side.get("preprocess", {}), task=side.get("task", "liver")
    )
