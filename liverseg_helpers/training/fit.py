"""The training loop: compile, the paper's callbacks, atomic checkpoints, resume.

:func:`fit_model` works on any data Keras accepts (``tf.data``, ``PyDataset``, numpy
``(x, y)``), so it can be used without a cohort; :func:`liverseg_helpers.training.train.train`
builds the data and calls it. Files it writes in the run folder: ``history.csv``, ``best.keras``,
``last.keras`` (each with a ``.json`` sidecar) and ``training_state.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.figures import viz
from liverseg_helpers.training import losses, model_files
from liverseg_helpers.training.run_reuse import STATE_FILE


def read_history(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Read ``history.csv`` of a run folder as columns (``epoch`` included); {} when absent."""
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return {}
    table = viz.read_history(path).astype(float)  # the one reader of history files
    return {column: table[column].tolist() for column in table.columns}


def compile_model(model: keras.Model, profile: Any, loss_name: str) -> keras.Model:
    """Compile with Adam (the profile's learning rate), a named loss and Dice/IoU metrics."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=profile.learning_rate),
        loss=losses.get_loss(loss_name),
        metrics=[losses.dice_metric, losses.iou_metric],
    )
    make_training_variables(model)
    return model


def make_training_variables(model: keras.Model) -> None:
    """Make the variables training adds to a compiled model, before it trains.

    Adam keeps two running averages per weight, and the loss and each metric keep running
    totals. Left alone, TensorFlow makes them while it first traces the training step into a
    graph, and must then trace the whole step a second time (about 2 s of a 2-core CPU, at the
    start of every training). Here one slice of zeros goes through the network, the loss and
    the metrics outside any graph; the totals are then reset, and Adam's averages start at
    zero as they would have, so the training itself is unchanged.
    """
    if not model.built or model.optimizer is None:
        return
    x = np.zeros((1, *model.input_shape[1:]), dtype="float32")
    y = np.zeros((1, *model.output_shape[1:]), dtype="float32")
    y_pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=y_pred)
    model.compute_metrics(x, y, y_pred)
    model.reset_metrics()
    if not model.optimizer.built:  # a model loaded with its optimizer state has them
        model.optimizer.build(model.trainable_variables)


class RunCheckpoint(keras.callbacks.Callback):
    """Save ``last.keras`` every epoch and ``best.keras`` on a new lowest val_loss, atomically.

    Also writes ``training_state.json`` (with ``fit_s``, the seconds spent in fit over every
    call so far) and, when training resumes, puts the saved
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
        self.fit_s_before = float(self.state.get("fit_s", 0.0))  # earlier calls (resume)
        self.began = time.perf_counter()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.began = time.perf_counter()
        if not self.state:
            return
        self.early_stopping.best = self.state.get("best_val_loss")
        self.early_stopping.wait = self.state.get("early_stopping_wait", 0)
        self.reduce_lr.best = self.state.get("reduce_lr_best", self.reduce_lr.best)
        self.reduce_lr.wait = self.state.get("reduce_lr_wait", 0)
        self.reduce_lr.cooldown_counter = self.state.get("reduce_lr_cooldown", 0)
        if "learning_rate" in self.state:
            self.model.optimizer.learning_rate = self.state["learning_rate"]

    def _save(self, name: str) -> None:
        """Write the model atomically as ``run_dir/name`` with its settings sidecar."""
        model_files.save_model(self.model, self.run_dir / name, self.settings, self.task)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        val_loss = logs.get("val_loss")
        if val_loss is not None and val_loss < self.best:
            self.best = float(val_loss)
            self.state["best_epoch"] = epoch + 1
            self._save("best.keras")
        elif val_loss is None and not (self.run_dir / "best.keras").exists():
            self._save("best.keras")
        self._save("last.keras")
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
            # Seconds in fit over every call, up to this epoch: a resumed run's true cost.
            fit_s=self.fit_s_before + time.perf_counter() - self.began,
        )
        write_json_atomic(self.state, self.run_dir / STATE_FILE)


class StopWhenCollapsed(keras.callbacks.Callback):
    """Stop a liver training whose network has died: for ``patience`` epochs in a row, a
    training Dice under ``min_dice`` and a training loss that fell by less than
    ``min_loss_drop`` (a fraction of the epoch before's).

    A dead network outputs (nearly) the same probability everywhere, so it predicts no liver,
    its loss stops moving and more epochs do not bring it back (docs/results.md gives a
    measured case). A network that is alive but has learnt the background first also predicts
    no liver, but its loss falls, so it is not stopped. Stopping says so at once, with a
    warning naming the run folder, instead of after hours; the cure is another seed, or
    Dice + BCE. Not used for tumours, whose Dice can rightly stay near 0 for several
    epochs.
    """

    def __init__(
        self,
        run_dir: Path,
        patience: int = 3,
        min_dice: float = 0.01,
        min_loss_drop: float = 0.05,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.patience = patience
        self.min_dice = min_dice
        self.min_loss_drop = min_loss_drop
        self.low_epochs = 0
        self.last_loss: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        dice, loss = (logs or {}).get("dice_metric"), (logs or {}).get("loss")
        if dice is None:
            return
        falling = (
            loss is not None
            and self.last_loss is not None
            and self.last_loss - loss > self.min_loss_drop * abs(self.last_loss)
        )
        self.last_loss = loss
        self.low_epochs = self.low_epochs + 1 if dice < self.min_dice and not falling else 0
        if self.low_epochs >= self.patience:
            self.model.stop_training = True
            warnings.warn(
                f"{self.run_dir}: training collapsed: training Dice below {self.min_dice:g} "
                f"and a loss that stopped falling for {self.patience} epochs in a row (the "
                f"network predicts no liver); stopped at epoch {epoch + 1}. Train again with "
                "another seed, or with the loss dice_bce.",
                RuntimeWarning,
                stacklevel=2,
            )


def cosine_learning_rate(epoch: int, epochs: int, peak: float) -> float:
    """Learning rate of ``epoch`` (0-based) under cosine decay from ``peak`` towards 0."""
    return 0.5 * peak * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def lr_schedule_callback(profile: Any, epochs: int) -> keras.callbacks.Callback | None:
    """A per-epoch learning-rate schedule for ``profile.lr_schedule``, or None for "plateau".

    The rate depends on the epoch number only, so a resumed run continues the same curve.

    Raises:
        ValueError: An unknown schedule name.
    """
    name = getattr(profile, "lr_schedule", "plateau")
    if name == "plateau":
        return None
    if name != "cosine":
        raise ValueError(f"unknown lr_schedule {name!r}; choose 'plateau' or 'cosine'")
    peak = profile.learning_rate
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: cosine_learning_rate(epoch, epochs, peak)
    )


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
        loss_name: Name for :func:`liverseg_helpers.training.losses.get_loss`.
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
    else:  # resumed with its optimizer state; the loss's and metrics' totals are still to make
        make_training_variables(model)
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
    schedule = lr_schedule_callback(profile, epochs if epochs is not None else profile.epochs)
    callbacks = [
        early_stopping,
        reduce_lr,
        *([schedule] if schedule else []),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        *([StopWhenCollapsed(run_dir)] if task == "liver" else []),
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


def best_val_dice(history: Mapping[str, list[float]]) -> float | None:
    """Val Dice (thresholded) at the epoch with the lowest val_loss, or None."""
    val_loss, val_dice = history.get("val_loss"), history.get("val_dice_metric")
    if not val_loss or not val_dice:
        return None
    best = min(range(len(val_loss)), key=lambda i: val_loss[i])
    return float(val_dice[best])
