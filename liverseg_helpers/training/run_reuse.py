"""Reuse a run folder only when it holds the same training.

Long runs (a cross-validation fold, a reference model) are reused when finished and resumed
when interrupted, so a command stopped after hours continues where it stopped. A folder is
only reused for the training it records in its ``config.json``: the same seed, profile and
profile overrides. Anything else would report or ship another seed's or recipe's model under
this one's name, or mix two recipes in one model.

This module does not import TensorFlow or Keras.
"""

from __future__ import annotations

import json
from pathlib import Path

from liverseg_helpers.errors import DataError

STATE_FILE = "training_state.json"  # written by fit.py after every epoch, read to resume


def check_same_training(
    run_dir: Path, seed: int, profile: str, overrides: dict, preprocess: dict
) -> None:
    """Refuse to reuse a run folder whose ``config.json`` records another training.

    Reusing it would report (or ship) another seed's or recipe's model under this one's name;
    resuming it would mix two recipes in one model.

    Args:
        run_dir: The run folder.
        seed, profile, overrides: The training asked for.
        preprocess: Its preprocessing settings (``TrainConfig.preprocess``). A
            ``config.json`` without them recorded the defaults (``{}``).

    Raises:
        DataError: No ``config.json``, or another seed, profile, profile overrides or
            preprocessing settings.
    """
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise DataError(f"{run_dir}: a training without its config.json; move it away first")
    saved = json.loads(config_path.read_text())
    # Through JSON, as config.json stored it (tuples become lists).
    saved.setdefault("preprocess", {})
    wanted = {"seed": seed, "profile": profile, "overrides": overrides, "preprocess": preprocess}
    wanted = json.loads(json.dumps(wanted))
    differ = {k: saved.get(k) for k, v in wanted.items() if saved.get(k) != v}
    if differ:
        raise DataError(
            f"{run_dir} holds another training ({differ}, wanted {wanted}); "
            "choose another --out or move it away"
        )


def started_same_training(
    run_dir: Path, seed: int, profile: str, overrides: dict, preprocess: dict
) -> bool:
    """Whether ``run_dir`` holds a resumable training of this seed, profile and recipe.

    Raises:
        DataError: It holds a training of another seed, profile, recipe or preprocessing
            (:func:`check_same_training`).
    """
    if not ((run_dir / STATE_FILE).exists() and (run_dir / "last.keras").exists()):
        return False
    check_same_training(run_dir, seed, profile, overrides, preprocess)
    return True


def saved_loss(run_dir: Path) -> str | None:
    """The loss a run folder's ``config.json`` records (None: no such file or entry)."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return None
    return json.loads(config_path.read_text()).get("loss")


def check_same_loss(run_dir: Path, loss: str) -> None:
    """Refuse to resume a run with another loss than it was trained with (one model, one loss).

    Raises:
        DataError: ``config.json`` records another loss; names the file and both losses.
    """
    saved = saved_loss(run_dir)
    if saved is not None and saved != loss:
        raise DataError(
            f"{run_dir / 'config.json'}: this run was trained with the loss {saved!r}, not "
            f"{loss!r}; resume it with the same loss (liverseg train --resume --loss {saved})"
        )
