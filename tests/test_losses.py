"""Known-answer tests of liverseg_helpers.training.losses (values worked out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pytest import approx

keras = pytest.importorskip("keras")

from liverseg_helpers.training import losses  # noqa: E402


def _as_batch(*rows):
    """Each row becomes one (1, n, 1) image of the batch: shape (batch, 1, n, 1)."""
    return np.array(rows, dtype="float32").reshape(len(rows), 1, -1, 1)


def value(fn, y_true, y_pred, **kwargs):
    return float(keras.ops.convert_to_numpy(fn(y_true, y_pred, **kwargs)))


TRUE = _as_batch([1, 1, 0, 0])
PRED = _as_batch([1, 0, 1, 0])
EMPTY = _as_batch([0, 0, 0, 0])


def test_dice_coef_known_value():
    # |T*P| = 1, |T| = 2, |P| = 2: (2*1 + 1) / (2 + 2 + 1) = 0.6
    assert value(losses.dice_coef, TRUE, PRED) == pytest.approx(0.6)
    assert value(losses.dice_loss, TRUE, PRED) == pytest.approx(0.4)
    soft = _as_batch([0.5, 0.5, 0.5, 0.5])  # |T*P| = 1, |P| = 2 -> same 0.6
    assert value(losses.dice_coef, TRUE, soft) == pytest.approx(0.6)


def test_dice_empty_masks():
    assert value(losses.dice_coef, EMPTY, EMPTY) == pytest.approx(1.0)  # smoothing: 1/1
    assert value(losses.dice_loss, EMPTY, EMPTY) == pytest.approx(0.0)
    # empty truth, 2 predicted pixels: 1 / (0 + 2 + 1)
    assert value(losses.dice_coef, EMPTY, PRED) == pytest.approx(1 / 3)


def test_dice_aggregates_over_the_batch():
    # image 1: perfect (|T|=|P|=|T*P|=2), image 2: empty truth, 2 false positives.
    y_true = _as_batch([1, 1, 0, 0], [0, 0, 0, 0])
    y_pred = _as_batch([1, 1, 0, 0], [0, 0, 1, 1])
    # batch: |T*P| = 2, |T| = 2, |P| = 4 -> (4 + 1) / (6 + 1)
    assert value(losses.dice_coef, y_true, y_pred) == pytest.approx(5 / 7)
    assert value(losses.dice_metric, y_true, y_pred) == pytest.approx(4 / 6)
    assert value(losses.iou_metric, y_true, y_pred) == pytest.approx(2 / 4)


def test_bce_known_value():
    half = _as_batch([0.5, 0.5, 0.5, 0.5])
    assert value(losses.bce_loss, TRUE, half) == pytest.approx(math.log(2), rel=1e-5)
    assert value(losses.bce_loss, TRUE, TRUE) == pytest.approx(0.0, abs=1e-5)
    # a confidently wrong pixel stays finite thanks to clipping
    assert math.isfinite(value(losses.bce_loss, TRUE, 1 - TRUE))


def test_dice_bce_is_sum():
    half = _as_batch([0.5, 0.9, 0.2, 0.1])
    total = value(losses.bce_loss, TRUE, half) + value(losses.dice_loss, TRUE, half)
    assert value(losses.dice_bce_loss, TRUE, half) == pytest.approx(total, rel=1e-6)


def test_focal_known_value():
    half = _as_batch([0.5, 0.5, 0.5, 0.5])
    # every pixel p_t = 0.5: alpha_t (0.5)^2 ln 2; two fg (0.25), two bg (0.75) -> mean 0.5
    expected = 0.5 * 0.25 * math.log(2)
    assert value(losses.focal_loss, TRUE, half) == pytest.approx(expected, rel=1e-5)
    # gamma 0, alpha 0.5 is half the cross-entropy
    assert value(losses.focal_loss, TRUE, half, gamma=0.0, alpha=0.5) == pytest.approx(
        0.5 * math.log(2), rel=1e-5
    )


def test_tversky_known_value():
    # TP = 1, FP = 1, FN = 1: 1 - (1 + 1) / (1 + 0.3 + 0.7 + 1) = 1/3
    assert value(losses.tversky_loss, TRUE, PRED) == pytest.approx(1 / 3)
    # FN costs more than FP: missing a pixel is worse than a false alarm
    miss = value(losses.tversky_loss, TRUE, _as_batch([1, 0, 0, 0]))
    extra = value(losses.tversky_loss, TRUE, _as_batch([1, 1, 1, 0]))
    assert miss > extra
    # alpha = beta = 0.5 is the dice loss (smooth 0.5 here = smooth 1 after doubling)
    assert value(losses.tversky_loss, TRUE, PRED, alpha=0.5, beta=0.5, smooth=0.5) == approx(
        value(losses.dice_loss, TRUE, PRED)
    )


def test_metrics_threshold_and_empty():
    probs = _as_batch([0.9, 0.4, 0.6, 0.1])  # -> [1, 0, 1, 0]
    assert value(losses.dice_metric, TRUE, probs) == pytest.approx(0.5)
    assert value(losses.iou_metric, TRUE, probs) == pytest.approx(1 / 3)
    assert value(losses.dice_metric, TRUE, _as_batch([0.5, 0.5, 0, 0])) == pytest.approx(1.0)
    assert value(losses.dice_metric, EMPTY, EMPTY) == 1.0
    assert value(losses.iou_metric, EMPTY, EMPTY) == 1.0
    assert value(losses.dice_metric, EMPTY, probs) == 0.0
    assert value(losses.iou_metric, TRUE, EMPTY) == 0.0


def test_get_loss():
    assert losses.get_loss("dice") is losses.dice_loss
    assert losses.get_loss("tversky_loss") is losses.tversky_loss
    assert set(losses.loss_names()) == {"dice", "bce", "dice_bce", "focal", "tversky"}
    for name in losses.loss_names():
        loss = losses.get_loss(name)
        assert math.isfinite(value(loss, TRUE, _as_batch([0.7, 0.2, 0.4, 0.0])))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get_loss("hinge")


def test_losses_are_registered():
    for name, fn in losses.get_custom_objects().items():
        assert keras.saving.get_registered_name(fn) == f"liverseg>{name}"


def test_dice_loss_gradient_points_to_truth():
    import tensorflow as tf  # the default backend of the course

    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written for the TensorFlow backend")
    y_pred = tf.Variable(_as_batch([0.5, 0.5, 0.5, 0.5]))
    with tf.GradientTape() as tape:
        loss = losses.dice_loss(TRUE, y_pred)
    grad = tape.gradient(loss, y_pred).numpy().ravel()
    assert np.all(grad[:2] < 0) and np.all(grad[2:] > 0)  # raise fg, lower bg
