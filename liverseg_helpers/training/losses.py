"""Segmentation losses and metrics in ``keras.ops`` (any Keras backend).

All functions take ``y_true`` (batch, H, W, 1) with values in {0, 1} and ``y_pred``
(batch, H, W, 1) foreground probabilities in [0, 1], and reduce over the whole batch (the
paper flattens the batch into one vector), returning a scalar.

Why ``dice_loss = 1 - dice`` and not the paper's ``-dice``: both have the same gradient, so
training is identical, but ``1 - dice`` is >= 0 with 0 meaning a perfect overlap. It can be
added to binary cross-entropy (``dice_bce``) and read next to the other losses in a history
plot, and "val_loss fell below 0.1" means the same thing for every loss.

Every function is registered as ``liverseg>name`` so saved models load in safe mode.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from liverseg_helpers.errors import DataError

EPSILON = 1e-7  # keeps log() finite at probabilities of exactly 0 or 1


def _flatten_pair(y_true, y_pred):
    # float32 even under mixed precision: sums over 256*256*16 pixels overflow float16.
    y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    return y_true, y_pred


@keras.saving.register_keras_serializable(package="liverseg")
def dice_coef(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice coefficient of the paper: (2 |T*P| + s) / (|T| + |P| + s), s = 1.

    Probabilities are used as they are (no threshold), so it is differentiable. The smoothing
    term makes two empty masks score 1 and avoids 0/0.

    Args:
        y_true: (batch, H, W, 1) mask in {0, 1}.
        y_pred: (batch, H, W, 1) probabilities in [0, 1].
        smooth: Added to numerator and denominator.

    Returns:
        Scalar float32 in (0, 1].
    """
    y_true, y_pred = _flatten_pair(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred)
    return (2.0 * intersection + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


@keras.saving.register_keras_serializable(package="liverseg")
def dice_loss(y_true, y_pred):
    """``1 - dice_coef``: 0 for a perfect overlap (the paper minimises ``-dice_coef``)."""
    return 1.0 - dice_coef(y_true, y_pred)


@keras.saving.register_keras_serializable(package="liverseg")
def bce_loss(y_true, y_pred):
    """Binary cross-entropy averaged over all pixels of the batch (nats)."""
    y_true, y_pred = _flatten_pair(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    return -ops.mean(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))


@keras.saving.register_keras_serializable(package="liverseg")
def dice_bce_loss(y_true, y_pred):
    """``bce_loss + dice_loss``: pixel-wise gradients early, overlap-driven later."""
    return bce_loss(y_true, y_pred) + dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="liverseg")
def focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float = 0.25):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log(p_t)``, mean over pixels.

    Down-weights easy, confidently right pixels (most of the background) by ``(1-p_t)^gamma``.

    Args:
        y_true: (batch, H, W, 1) mask in {0, 1}.
        y_pred: (batch, H, W, 1) probabilities.
        gamma: Focusing exponent (0 gives weighted cross-entropy).
        alpha: Weight of foreground pixels; background gets ``1 - alpha`` (Lin et al.: 0.25).
    """
    y_true, y_pred = _flatten_pair(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    p_t = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
    alpha_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    return -ops.mean(alpha_t * ops.power(1.0 - p_t, gamma) * ops.log(p_t))


@keras.saving.register_keras_serializable(package="liverseg")
def tversky_loss(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """Tversky loss (Salehi et al. 2017): ``1 - (TP + s) / (TP + alpha FP + beta FN + s)``.

    With beta > alpha a missed liver pixel (FN) costs more than a false alarm (FP), which
    raises recall on small structures such as tumours. alpha = beta = 0.5 gives Dice.

    Args:
        y_true: (batch, H, W, 1) mask in {0, 1}.
        y_pred: (batch, H, W, 1) probabilities.
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        smooth: Added to numerator and denominator.
    """
    y_true, y_pred = _flatten_pair(y_true, y_pred)
    tp = ops.sum(y_true * y_pred)
    fp = ops.sum((1.0 - y_true) * y_pred)
    fn = ops.sum(y_true * (1.0 - y_pred))
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def _hard_counts(y_true, y_pred, threshold: float):
    y_true, y_pred = _flatten_pair(y_true, y_pred)
    pred = ops.cast(y_pred >= threshold, "float32")
    true = ops.cast(y_true >= 0.5, "float32")
    return ops.sum(true * pred), ops.sum(true), ops.sum(pred)


@keras.saving.register_keras_serializable(package="liverseg")
def dice_metric(y_true, y_pred, threshold: float = 0.5):
    """Dice of the thresholded prediction over the whole batch; 1 when both masks are empty.

    Args:
        y_true: (batch, H, W, 1) mask in {0, 1}.
        y_pred: (batch, H, W, 1) probabilities.
        threshold: Probability at or above which a pixel counts as foreground.

    Returns:
        Scalar float32 in [0, 1].
    """
    inter, n_true, n_pred = _hard_counts(y_true, y_pred, threshold)
    denom = n_true + n_pred
    return ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="liverseg")
def iou_metric(y_true, y_pred, threshold: float = 0.5):
    """Intersection over union (Jaccard) of the thresholded prediction; 1 when both empty."""
    inter, n_true, n_pred = _hard_counts(y_true, y_pred, threshold)
    union = n_true + n_pred - inter
    return ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)


def get_custom_objects() -> dict[str, Callable]:
    """Every loss and metric by name, for ``keras.saving.load_model(custom_objects=...)``."""
    return {
        fn.__name__: fn
        for fn in (
            dice_coef,
            dice_loss,
            bce_loss,
            dice_bce_loss,
            focal_loss,
            tversky_loss,
            dice_metric,
            iou_metric,
        )
    }


# The course trains the liver with soft Dice + BCE, not the paper's soft Dice alone. With Dice
# alone at Adam 1e-3 and no batch norm (the paper's setting) the network can die in the first
# epochs, its sigmoid saturated at "no liver", and soft Dice gives it no gradient back: the
# course profile did so at epoch 3 (seed 42, 2-core AVX-512 CPU), as did the first real-data
# fold. BCE gives every pixel a gradient, so a network that predicts nothing still learns.
DEFAULT_LOSS = "dice_bce"


def loss_names() -> list[str]:
    """Names accepted by :func:`get_loss`."""
    return ["dice", "bce", "dice_bce", "focal", "tversky"]


def get_loss(name: str) -> Callable:
    """The loss function for a short name.

    Args:
        name: One of ``dice``, ``bce``, ``dice_bce``, ``focal``, ``tversky`` (a ``_loss``
            suffix is accepted too).

    Raises:
        ValueError: Unknown name.
    """
    key = name.lower().removesuffix("_loss")
    table = {
        "dice": dice_loss,
        "bce": bce_loss,
        "dice_bce": dice_bce_loss,
        "focal": focal_loss,
        "tversky": tversky_loss,
    }
    if key not in table:
        raise DataError(f"unknown loss {name!r}; choose one of {loss_names()}")
    return table[key]
