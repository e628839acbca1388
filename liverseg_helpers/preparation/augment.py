"""Random augmentation of CT slice batches, in TensorFlow (tf.data) and in NumPy (any backend).

Geometry (rotation, scaling, shift, elastic deformation) must move image and mask together,
or the network learns from a liver outline that no longer matches the CT. Both versions
build ONE sampling grid per slice and warp the image and mask channels concatenated, so
they cannot drift apart; the warped mask is re-binarised (> 0.5). Intensity changes
(gamma, contrast, brightness, noise) touch the image only.

The TensorFlow version draws every random number with stateless ops seeded per batch, so a
dataset with the same seed gives the same batches; the warp itself is OpenCV's ``remap``
(called through ``tf.numpy_function``), shared with the NumPy version, because on a CPU it
is about ten times faster than the same bilinear gather written in TF ops. TensorFlow is
imported inside the functions: this module imports without it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random transforms (each sample draws its own values).

    Attributes:
        rotation_deg: Maximum rotation either way, degrees.
        scale_min: Smallest zoom factor (< 1 zooms out).
        scale_max: Largest zoom factor.
        shift_fraction: Maximum shift either way, as a share of the image side.
        elastic_alpha_fraction: Std of the elastic displacement, as a share of the side.
        elastic_grid: Control points per side of the smooth displacement field.
        elastic_probability: Share of samples that get an elastic deformation.
        gamma_min: Smallest gamma (< 1 brightens mid-greys).
        gamma_max: Largest gamma.
        contrast: Contrast factor drawn from ``1 +- contrast`` around the slice mean.
        brightness: Offset drawn from ``+- brightness`` (intensities are in [0, 1]).
        noise_std_max: Largest Gaussian noise std (each sample draws one in [0, max]).
    """

    rotation_deg: float = 15.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    shift_fraction: float = 0.06
    elastic_alpha_fraction: float = 0.01
    elastic_grid: int = 5
    elastic_probability: float = 0.5
    gamma_min: float = 0.8
    gamma_max: float = 1.25
    contrast: float = 0.1
    brightness: float = 0.05
    noise_std_max: float = 0.02

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def _source_coords(rr, cc, angle_rad, scale, shift_rc, field_rc, xp):
    """Where each output pixel samples the input (one formula for NumPy and TF).

    ``rr``, ``cc``: pixel grid ``(rows, cols)``; ``angle_rad``, ``scale``: ``(B,)``;
    ``shift_rc``: ``(B, 2)`` pixels; ``field_rc``: ``(B, rows, cols, 2)`` pixels (elastic).
    Returns ``(src_r, src_c)``, each ``(B, rows, cols)``: rotate and scale about the centre,
    shift, then add the smooth displacement.
    """
    rows, cols = rr.shape[0], rr.shape[1]
    rel_r = rr[None] - (rows - 1) / 2.0
    rel_c = cc[None] - (cols - 1) / 2.0
    cos = xp.cos(angle_rad)[:, None, None] / scale[:, None, None]
    sin = xp.sin(angle_rad)[:, None, None] / scale[:, None, None]
    src_r = cos * rel_r - sin * rel_c + (rows - 1) / 2.0 - shift_rc[:, 0, None, None]
    src_c = sin * rel_r + cos * rel_c + (cols - 1) / 2.0 - shift_rc[:, 1, None, None]
    return src_r + field_rc[..., 0], src_c + field_rc[..., 1]


def _adjust_intensity(images, gamma, contrast, brightness, noise, xp):
    """Gamma, contrast around the slice mean, brightness, noise; clipped to [0, 1]."""
    images = xp.clip(images, 0.0, 1.0) ** gamma[:, None, None, None]
    mean = xp.mean(images, axis=(1, 2, 3), keepdims=True)
    images = (images - mean) * contrast[:, None, None, None] + mean
    images = images + brightness[:, None, None, None] + noise
    return xp.clip(images, 0.0, 1.0)


def _warp_numpy(stack: np.ndarray, src_r: np.ndarray, src_c: np.ndarray) -> np.ndarray:
    """Bilinear sampling of ``stack`` (B, H, W, C) at ``(src_r, src_c)`` (B, H, W); 0 outside.

    OpenCV's ``remap`` is ~10x faster on a CPU than the same gather written in TF ops, and
    it releases the GIL, so tf.data runs several batches in parallel.
    """
    warped = np.empty(stack.shape, dtype=np.float32)
    for i in range(len(stack)):
        out = cv2.remap(
            np.ascontiguousarray(stack[i], dtype=np.float32),
            np.ascontiguousarray(src_c[i], dtype=np.float32),  # cv2 maps: x = column, y = row
            np.ascontiguousarray(src_r[i], dtype=np.float32),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        warped[i] = out.reshape(stack.shape[1:])  # cv2 drops a single channel axis
    return warped


def augment_batch_tf(images, masks, seed, settings: AugmentSettings | None = None):
    """Augment one batch inside a ``tf.data`` ``map`` (random numbers from TF stateless ops).

    Args:
        images: float32 tensor ``(B, S, S, C)`` in ``[0, 1]``.
        masks: float32 tensor ``(B, S, S, 1)`` of 0/1.
        seed: int tensor of shape ``(2,)``; the same seed gives the same output.
        settings: Transform ranges (defaults: :class:`AugmentSettings`).

    Returns:
        ``(images, masks)`` with the same shapes; masks are 0/1 float32.
    """
    import tensorflow as tf

    s = settings or AugmentSettings()
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)
    shape = tf.shape(images)
    b, rows, cols = shape[0], images.shape[1], images.shape[2]
    side = float(min(rows, cols))

    def uniform(i, size, low, high):
        return tf.random.stateless_uniform(size, seeds[i], low, high)

    angle = uniform(0, [b], -s.rotation_deg, s.rotation_deg) * (math.pi / 180.0)
    scale = uniform(1, [b], s.scale_min, s.scale_max)
    shift = uniform(2, [b, 2], -s.shift_fraction, s.shift_fraction) * side
    grid = [b, s.elastic_grid, s.elastic_grid, 2]
    coarse = tf.random.stateless_normal(grid, seeds[3]) * (s.elastic_alpha_fraction * side)
    coarse *= tf.cast(uniform(4, [b, 1, 1, 1], 0.0, 1.0) < s.elastic_probability, tf.float32)
    field = tf.image.resize(coarse, [rows, cols], method="bicubic")
    rr, cc = tf.meshgrid(
        tf.range(rows, dtype=tf.float32), tf.range(cols, dtype=tf.float32), indexing="ij"
    )
    src_r, src_c = _source_coords(rr, cc, angle, scale, shift, field, tf)

    n_image = images.shape[-1]
    stack = tf.concat([images, tf.cast(masks, images.dtype)], axis=-1)
    warped = tf.numpy_function(_warp_numpy, [stack, src_r, src_c], tf.float32, stateful=False)
    warped = tf.ensure_shape(warped, stack.shape)
    images, masks = warped[..., :n_image], tf.cast(warped[..., n_image:] > 0.5, tf.float32)

    gamma = tf.exp(uniform(5, [b], math.log(s.gamma_min), math.log(s.gamma_max)))
    contrast = uniform(6, [b], 1.0 - s.contrast, 1.0 + s.contrast)
    brightness = uniform(7, [b], -s.brightness, s.brightness)
    noise_std = uniform(8, [b, 1, 1, 1], 0.0, s.noise_std_max)
    noise = tf.random.stateless_normal(tf.shape(images), seeds[8]) * noise_std
    images = _adjust_intensity(images, gamma, contrast, brightness, noise, tf.experimental.numpy)
    return images, masks


def augment_batch_numpy(
    images: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    settings: AugmentSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one batch with NumPy and OpenCV (no TensorFlow; for the JAX backend).

    Same transforms and ranges as :func:`augment_batch_tf` (different random numbers).

    Args:
        images: float ``(B, S, S, C)`` in ``[0, 1]``.
        masks: ``(B, S, S, 1)`` of 0/1.
        rng: NumPy generator.
        settings: Transform ranges (defaults: :class:`AugmentSettings`).

    Returns:
        ``(images, masks)`` as float32, masks 0/1.
    """
    s = settings or AugmentSettings()
    b, rows, cols, n_image = images.shape
    side = float(min(rows, cols))
    angle = np.deg2rad(rng.uniform(-s.rotation_deg, s.rotation_deg, b)).astype(np.float32)
    scale = rng.uniform(s.scale_min, s.scale_max, b).astype(np.float32)
    shift = rng.uniform(-s.shift_fraction, s.shift_fraction, (b, 2)).astype(np.float32) * side
    coarse = rng.normal(size=(b, s.elastic_grid, s.elastic_grid, 2)).astype(np.float32)
    coarse *= (
        s.elastic_alpha_fraction * side * (rng.uniform(size=(b, 1, 1, 1)) < s.elastic_probability)
    )
    field = np.stack([cv2.resize(c, (cols, rows), interpolation=cv2.INTER_CUBIC) for c in coarse])
    rr, cc = np.meshgrid(
        np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij"
    )
    src_r, src_c = _source_coords(rr, cc, angle, scale, shift, field, np)

    stack = np.concatenate([images.astype(np.float32), masks.astype(np.float32)], axis=-1)
    warped = _warp_numpy(stack, src_r, src_c)
    out_images = warped[..., :n_image]
    out_masks = (warped[..., n_image:] > 0.5).astype(np.float32)

    gamma = np.exp(rng.uniform(math.log(s.gamma_min), math.log(s.gamma_max), b))
    contrast = rng.uniform(1.0 - s.contrast, 1.0 + s.contrast, b)
    brightness = rng.uniform(-s.brightness, s.brightness, b)
    noise_std = rng.uniform(0.0, s.noise_std_max, (b, 1, 1, 1))
    noise = rng.normal(size=out_images.shape) * noise_std
    out_images = _adjust_intensity(out_images, gamma, contrast, brightness, noise, np)
    return out_images.astype(np.float32), out_masks
