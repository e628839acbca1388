"""The number format a network computes in when it predicts: float32 or bfloat16.

On a CPU with bfloat16 hardware (AVX512-BF16 or AMX) the paper's UNet predicts about 3x faster
in bfloat16, with probabilities that move by about 1e-3; elsewhere (GPU, older CPUs, where
bfloat16 would be emulated) float32 stays. :func:`choose_precision` decides, and
:func:`convert_to_bfloat16` makes the bfloat16 copy of a model; :func:`convert_to_float32`
turns a model trained in bfloat16 (``TrainConfig(precision="bfloat16")``) back, as every model
is loaded for use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liverseg_helpers.errors import DataError

PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_flags() -> str:
    """The CPU's feature flags as Linux lists them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), on Linux."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies and adds 8-bit integers in one instruction (AVX512-VNNI,
    AVX-VNNI or AMX), on Linux: where int8 networks were measured faster (``onnx_int8``)."""
    flags = cpu_flags()
    return any(name in flags for name in ("avx512_vnni", "avx_vnni", "amx_int8"))


def choose_precision(precision: str = "auto") -> str:
    """The precision to predict in: ``"bfloat16"`` or ``"float32"``.

    ``"auto"`` picks bfloat16 on a CPU-only machine with bfloat16 hardware (about 3x faster
    there, for the paper's UNet on 2 cores) and float32 otherwise (GPU, older CPUs, where
    bfloat16 would be emulated and slow).

    Raises:
        DataError: An unknown precision.
    """
    if precision not in PRECISIONS:
        raise DataError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if backend_sees_a_gpu():
        return "float32"
    return "bfloat16" if cpu_has_bfloat16() else "float32"


def backend_sees_a_gpu() -> bool:
    """Whether the Keras backend (TensorFlow, JAX or PyTorch) computes on a GPU here."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform != "cpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def cpu_without_bfloat16() -> bool:
    """A machine that predicts on a CPU without bfloat16 hardware: float32, about 3x slower.

    ``liverseg predict`` then suggests ``--fast`` (one network instead of the ensemble).
    """
    return not backend_sees_a_gpu() and not cpu_has_bfloat16()


def _set_policy(config: dict, policy: str) -> None:
    """Mark every layer of a model config with a dtype ``policy``, except its output layers.

    Nested models (the members of an ensemble) are entered, so their convolutions compute in
    ``policy`` too; their own output layers stay float32, like the outer model's.
    """
    layers = config.get("layers", [])
    outputs = config.get("output_layers", [])
    if outputs and isinstance(outputs[0], str):  # one output: ["probs", 0, 0]
        outputs = [outputs]
    keep = {entry[0] for entry in outputs}
    if not keep and layers:  # Sequential: no output_layers entry; keep its last layer
        keep = {layers[-1].get("config", {}).get("name")}
    for layer in layers:
        layer_config = layer.get("config", {})
        if "layers" in layer_config:  # a nested model: convert its layers instead
            _set_policy(layer_config, policy)
        elif layer.get("class_name") != "InputLayer" and layer_config.get("name") not in keep:
            layer_config["dtype"] = policy


def _with_policy(model: Any, policy: str) -> Any:
    """A copy of ``model`` rebuilt with ``policy`` on its inner layers and the same weights;
    ``model`` itself when it cannot be rebuilt from its config (a subclassed model)."""
    config = model.get_config()
    _set_policy(config, policy)
    try:
        rebuilt = model.__class__.from_config(config)
        rebuilt.set_weights(model.get_weights())
    except Exception:  # noqa: BLE001 - any rebuild failure: keep the model as it is
        return model
    return rebuilt


def computes_in_bfloat16(model: Any) -> bool:
    """Whether any layer of ``model`` (nested models included) computes in bfloat16."""
    from liverseg_helpers.training.quantize import all_layers

    return any(layer.compute_dtype == "bfloat16" for layer in all_layers(model))


def convert_to_float32(model: Any) -> Any:
    """A copy of a model computing in float32: the form every loaded model is used in.

    A model trained under ``mixed_bfloat16`` (``TrainConfig(precision="bfloat16")``) is saved
    with that policy on its layers; loaded for prediction it is turned back, so that
    :func:`choose_precision` alone decides how it computes here. A model that computes in
    float32 already is returned as it is (no copy).
    """
    return _with_policy(model, "float32") if computes_in_bfloat16(model) else model


def convert_to_bfloat16(model: Any) -> Any:
    """A copy of a Keras model computing in bfloat16 (its output layer stays float32).

    Weights stay float32 (``mixed_bfloat16`` policy); probabilities move by about 1e-3,
    which rarely flips a thresholded voxel. A model that cannot be rebuilt from its config
    (a subclassed model) is returned unchanged.
    """
    return _with_policy(model, "mixed_bfloat16")
