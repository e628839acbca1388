"""Int8 weights: a trained UNet stored in a quarter of the space, computed in float32.

The convolution kernels of the paper's UNet hold 7.8 million float32 numbers (31 MB). Stored
as 8-bit integers with one float32 scale per output filter (symmetric, per-channel
quantization: ``w ~ scale * round(w / scale)``, ``scale = max|w| / 127``), the file shrinks 4
times and the rounding error of each weight is at most half a step, 0.4 % of that filter's
largest weight. The layers below turn the integers back into floats at every call, so
prediction runs the same arithmetic as the float model on any backend (``keras.ops`` only);
only storage changes.

Keras 3 quantizes Dense and Embedding layers (``model.quantize("int8")``) but not
convolutions, hence these two small subclasses. Biases and batch-norm statistics stay float32
(they are a few thousand numbers).

:func:`quantize_int8` turns a float model (or an ensemble of them) into its int8 twin; the
saved file loads with :func:`liverseg_helpers.training.model_files.load_model`, which registers
these layers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

INT8_MAX = 127


def quantize_kernel(kernel: np.ndarray, filter_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-filter int8 quantization of a convolution kernel.

    Args:
        kernel: Float kernel, e.g. ``(3, 3, in, filters)`` for Conv2D or
            ``(2, 2, filters, in)`` for Conv2DTranspose.
        filter_axis: The axis of the output filters (-1 for Conv2D, -2 for Conv2DTranspose).

    Returns:
        ``(q, scale)``: int8 kernel of the same shape, float32 scale of shape ``(filters,)``
        such that ``q * scale`` (broadcast along ``filter_axis``) approximates ``kernel``.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    moved = np.moveaxis(kernel, filter_axis, -1)
    peak = np.abs(moved).reshape(-1, moved.shape[-1]).max(axis=0)
    # An all-zero filter keeps scale 1 (its integers are all 0 anyway), avoiding 0 / 0.
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(moved / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return np.moveaxis(q, -1, filter_axis), scale


class _Int8KernelMixin:
    """Replaces a conv layer's float kernel by ``kernel_int8`` and ``kernel_scale``.

    The subclass sets ``_filter_axis``; ``build`` creates the int8 weights instead of the
    float kernel, and the ``kernel`` property rebuilds the float32 kernel on each call.
    """

    _filter_axis: int

    def build(self, input_shape: Any) -> None:
        in_channels = input_shape[-1]
        shape = list(self.kernel_size) + [in_channels, self.filters]
        if self._filter_axis == -2:  # Conv2DTranspose: (kh, kw, filters, in)
            shape[-2], shape[-1] = shape[-1], shape[-2]
        self.compute_output_shape(input_shape)
        self.kernel_int8 = self.add_weight(
            name="kernel_int8",
            shape=tuple(shape),
            dtype="int8",
            initializer="zeros",
            trainable=False,
        )
        self.kernel_scale = self.add_weight(
            name="kernel_scale", shape=(self.filters,), initializer="ones", trainable=False
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.filters,), initializer="zeros", trainable=False
            )
            if self.use_bias
            else None
        )
        self.built = True

    @property
    def kernel(self) -> Any:
        scale = self.kernel_scale
        if self._filter_axis == -2:
            scale = ops.reshape(scale, (self.filters, 1))
        return ops.multiply(ops.cast(self.kernel_int8, self.compute_dtype), scale)

    # The conv layers save their float kernel by hand; store these weights the plain way.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def set_float_weights(self, kernel: np.ndarray, bias: np.ndarray | None) -> None:
        """Quantize a float kernel into this layer (and copy the bias as it is)."""
        q, scale = quantize_kernel(kernel, self._filter_axis)
        self.kernel_int8.assign(q)
        self.kernel_scale.assign(scale)
        if self.bias is not None:
            self.bias.assign(bias)


@keras.saving.register_keras_serializable(package="liverseg")
class Int8Conv2D(_Int8KernelMixin, keras.layers.Conv2D):
    """``Conv2D`` whose kernel is stored as int8 with a float32 scale per filter."""

    _filter_axis = -1


@keras.saving.register_keras_serializable(package="liverseg")
class Int8Conv2DTranspose(_Int8KernelMixin, keras.layers.Conv2DTranspose):
    """``Conv2DTranspose`` whose kernel is stored as int8 with a float32 scale per filter."""

    _filter_axis = -2


_INT8_TWIN = {keras.layers.Conv2D: Int8Conv2D, keras.layers.Conv2DTranspose: Int8Conv2DTranspose}


def _twin_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh, unbuilt copy of ``layer``: its int8 twin for a convolution, else its class."""
    cls = _INT8_TWIN.get(type(layer), type(layer))
    return cls.from_config(layer.get_config())


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy weights layer by layer, quantizing convolutions, into a clone of ``source``."""
    for old, new in zip(source.layers, target.layers, strict=True):
        if isinstance(old, keras.Model):
            _copy_weights(old, new)
        elif isinstance(new, _Int8KernelMixin):
            new.set_float_weights(
                keras.ops.convert_to_numpy(old.kernel),
                keras.ops.convert_to_numpy(old.bias) if old.use_bias else None,
            )
        else:
            new.set_weights(old.get_weights())


def float_layer_weights(layer: keras.layers.Layer) -> list[np.ndarray]:
    """A layer's weights as its float twin holds them: an int8 convolution's kernel expanded
    to float32 (``q * scale``) and its bias; any other layer's weights as they are."""
    if isinstance(layer, _Int8KernelMixin):
        kernel = [keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)]
        return kernel + ([keras.ops.convert_to_numpy(layer.bias)] if layer.use_bias else [])
    return layer.get_weights()


def quantize_int8(model: keras.Model) -> keras.Model:
    """The int8-weight twin of a float model (nested models, e.g. ensembles, included).

    Args:
        model: A functional Keras model, e.g. from ``build_unet`` or an ensemble of them.

    Returns:
        A new model with the same architecture and layer names, every ``Conv2D`` and
        ``Conv2DTranspose`` replaced by its int8 twin. Its outputs differ from the float
        model's by the rounding of the weights only (see ``tests/test_quantize.py``). Layers
        that are int8 already are copied unchanged (rounding them again is exact), so an
        ensemble may mix int8 and float32 members.
    """
    twin = keras.models.clone_model(model, clone_function=_twin_layer, recursive=True)
    _copy_weights(model, twin)
    return twin


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``model`` with each nested model (an ensemble's member) opened up."""
    found = []
    for layer in model.layers:
        found.extend(all_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def has_int8_weights(model: keras.Model) -> bool:
    """Whether any convolution of ``model`` (or of a nested model) stores int8 weights."""
    return any(isinstance(layer, _Int8KernelMixin) for layer in all_layers(model))


def get_custom_objects() -> dict[str, type]:
    """The int8 layers by name, for ``keras.saving.load_model(custom_objects=...)``."""
    return {cls.__name__: cls for cls in (Int8Conv2D, Int8Conv2DTranspose)}
