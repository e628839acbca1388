"""The JSON sidecar of a model file, read without Keras.

``best.keras`` has ``best.keras.json`` beside it (``model_files.save_model`` writes both): the
preprocessing settings the model was trained with, and the model file's SHA-256, so a model is
never read with another model's settings. Reading it needs only the standard library, so the
prediction road through ONNX Runtime (``inference.onnx_model``) never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from liverseg_helpers.data.download import hash_file
from liverseg_helpers.errors import ModelFileError


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """Path of the JSON sidecar of a model file: ``best.keras`` -> ``best.keras.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def read_sidecar(model_path: str | os.PathLike) -> dict | None:
    """The sidecar dict of a model file, or None when it has none.

    Raises:
        ModelFileError: The sidecar exists but is not valid JSON, or was written for another
            version of the model file (its ``model_sha256`` differs).
    """
    side = sidecar_path(model_path)
    if not side.exists():
        return None
    try:
        sidecar = json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{side}: sidecar is not valid JSON ({err})") from err
    expected = sidecar.get("model_sha256")
    if expected and Path(model_path).is_file():
        actual = hash_file(model_path, "sha256", progress=False)
    else:
        actual = expected  # no hash recorded (older files), or no model to compare
    if actual != expected:
        raise ModelFileError(
            f"{side}: written for another version of {Path(model_path).name} (sha256 differs; "
            "a save was interrupted between the model and its sidecar?); save the model again"
        )
    return sidecar
