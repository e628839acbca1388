"""Model files: Keras 3 ``.keras`` archives with a JSON sidecar, saved atomically, loaded safely.

Model files are loaded in safe mode (no arbitrary Python code is executed). The sidecar
``<model>.keras.json`` holds the preprocessing settings the model was trained with, so
prediction preprocesses a CT exactly as training did, and the model file's SHA-256, so a model
is never read with another model's settings.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from liverseg_helpers.atomic import atomic_file, write_json_atomic
from liverseg_helpers.data.download import hash_file
from liverseg_helpers.errors import ModelFileError
from liverseg_helpers.inference import precision
from liverseg_helpers.training import losses, quantize
from liverseg_helpers.training.sidecar import read_sidecar, sidecar_path

__all__ = ["read_sidecar", "sidecar_path"]  # kept here too: where every model file is read


def save_model(
    model: keras.Model,
    path: str | os.PathLike,
    settings: Mapping | Any,
    task: str = "liver",
) -> Path:
    """Save a model atomically as ``.keras`` with its JSON sidecar.

    Args:
        model: The model to save (with its optimizer state when compiled).
        path: Target ``.keras`` path.
        settings: Preprocessing settings as a dict or a ``PreprocessSettings`` (``to_dict``).
        task: ``"liver"`` or ``"tumour"``.

    Returns:
        The model path.

    Raises:
        ModelFileError: The path does not end in ``.keras``.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: model files must end in .keras (Keras 3 format)")
    # Keras insists on the .keras suffix, so the temporary file keeps it.
    with atomic_file(path, ".keras") as tmp:
        model.save(tmp)
        model_sha256 = hash_file(tmp, "sha256", progress=False)
    settings_dict = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    sidecar = {
        "preprocess": settings_dict,
        "task": task,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "input_shape": list(model.input.shape[1:]),
        "weights": "int8" if quantize.has_int8_weights(model) else "float32",
        # Model and sidecar are two files, each written atomically: the hash pairs them, so
        # a stop between the two writes cannot pass one model off with another's settings.
        "model_sha256": model_sha256,
    }
    write_json_atomic(sidecar, sidecar_path(path))
    return path


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model in safe mode with the course's losses and metrics.

    Args:
        path: A ``.keras`` file written by :func:`save_model` or ``model.save``.
        compile: Restore the loss, metrics and optimizer state (needed to resume training).
            Without it the model is for use, and one trained in bfloat16 is turned to float32
            (``precision.convert_to_float32``): prediction decides how it computes.

    Returns:
        The loaded model.

    Raises:
        ModelFileError: The file is missing, is not a ``.keras`` archive (legacy ``.h5``,
            SavedModel, a foreign or truncated file), or Keras cannot rebuild it.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir() or path.suffix != ".keras":
        raise ModelFileError(
            f"{path}: not a Keras 3 model file; expected a '.keras' archive "
            "(legacy .h5 and SavedModel folders are not supported: "
            "re-save with model.save('name.keras'))"
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a valid .keras archive (corrupt or truncated file)")
    try:
        model = keras.saving.load_model(
            path,
            custom_objects={**losses.get_custom_objects(), **quantize.get_custom_objects()},
            compile=compile,
            safe_mode=True,
        )
    except Exception as err:  # Keras raises many types (ValueError, KeyError, OSError, ...)
        raise ModelFileError(f"{path}: cannot load the model: {err}") from err
    return model if compile else precision.convert_to_float32(model)


def load_initial_weights(model: keras.Model, source: str | os.PathLike) -> None:
    """Start ``model`` from a saved network's weights instead of random ones (fine-tuning).

    Args:
        model: A freshly built network (e.g. ``model.model_from_profile``).
        source: A ``.keras`` file of one network, or ``file.keras:member_2`` for one network
            of an averaged ensemble file (``research.ensemble``). Int8 weights are expanded
            to float32 (``quantize.float_layer_weights``).

    Raises:
        ModelFileError: The file cannot be loaded, has no such member, or its network is built
            differently (the layer that differs is named).
    """
    head, sep, member = str(source).rpartition(".keras:")
    path = head + ".keras" if sep else str(source)
    member = member if sep else ""
    saved = load_model(path, compile=False)
    if member:
        names = [layer.name for layer in saved.layers]
        if member not in names:
            raise ModelFileError(f"{path}: no network named {member!r} (it holds {names})")
        saved = saved.get_layer(member)
    if len(saved.layers) != len(model.layers):
        raise ModelFileError(
            f"{source}: {len(saved.layers)} layers, the network to train has "
            f"{len(model.layers)}; start from a network of the same recipe"
        )
    for old, new in zip(saved.layers, model.layers, strict=True):
        weights = quantize.float_layer_weights(old)
        shapes = [tuple(w.shape) for w in weights]
        if shapes != [tuple(w.shape) for w in new.weights]:
            raise ModelFileError(
                f"{source}: layer {old.name} holds weights of shapes {shapes}; "
                f"{new.name} of the network to train needs {[tuple(w.shape) for w in new.weights]}"
            )
        new.set_weights(weights)
