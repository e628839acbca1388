"""Running a network only on the slices that need it (inference/region.py)."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg_helpers.inference import region


def test_blank_slices_are_run_once_and_chosen_ones_always():
    images = np.zeros((6, 4, 4, 1), dtype=np.float32)
    images[[1, 4], 2, 2] = 0.5
    blank = region.blank_slices(images)
    assert blank.tolist() == [True, False, True, True, False, True]
    indices, stand_in = region.slices_to_run(np.ones(6, dtype=bool), blank)
    assert indices.tolist() == [0, 1, 4] and stand_in == 0
    chosen = np.array([False, True, False, True, True, False])
    indices, stand_in = region.slices_to_run(chosen, blank)
    assert indices.tolist() == [1, 3, 4] and stand_in == 3
    indices, stand_in = region.slices_to_run(~blank, blank)
    assert indices.tolist() == [1, 4] and stand_in is None


def test_the_slab_spans_the_largest_piece_plus_the_margin():
    probs = np.zeros((40, 8, 8), dtype=np.float32)
    probs[15:25, 2:6, 2:6] = 0.3  # the liver: above the 0.2 threshold
    probs[33, 0, 0] = 0.9  # a lone voxel elsewhere: not the largest piece
    slab = region.liver_slab(probs, (2.0, 1.0, 1.0), margin_mm=5.0)  # 3 slices of margin
    assert np.flatnonzero(slab).tolist() == list(range(12, 28))
    thin = region.liver_slab(probs, (2.0, 1.0, 1.0), threshold=0.5, margin_mm=0.0)
    assert np.flatnonzero(thin).tolist() == [33]  # only the lone voxel is above 0.5
    assert region.liver_slab(probs, (2.0, 1.0, 1.0), threshold=0.95) is None
    near_end = region.liver_slab(probs[10:], (2.0, 1.0, 1.0), margin_mm=20.0)
    assert np.flatnonzero(near_end).tolist() == list(range(0, 25))  # cut off at the borders


def test_the_first_batch_holds_both_ends_and_the_middle():
    assert np.flatnonzero(region.first_batch(40, 8)).tolist() == [0, *range(17, 23), 39]
    assert region.first_batch(5, 8).all()
    assert np.flatnonzero(region.first_batch(40, 2)).tolist() == [0, 39]


def test_chosen_slices_get_the_probabilities_of_a_whole_run():
    keras = pytest.importorskip("keras")
    from liverseg_helpers.inference import predict
    from liverseg_helpers.training import model

    net = model.build_unet((32, 32, 1), base_filters=4, depth=2)
    images = np.zeros((12, 32, 32, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    images[3:9, 8:24, 8:24] = rng.random((6, 16, 16, 1))
    seen = []

    class Counting(keras.Model):
        def predict_on_batch(self, x):
            seen.append(len(x))
            return net.predict_on_batch(x)

    whole = predict.run_model_on_slices(net, images, batch_size=4)
    assert np.abs(whole[0]).max() > 0  # a blank slice's answer is not 0: it must be copied
    counting = Counting()
    same = region.run_on_chosen_slices(
        lambda part: predict.run_model_on_slices(counting, part, batch_size=1), images
    )
    np.testing.assert_allclose(same, whole, atol=1e-5)
    assert len(seen) == 7  # the six slices with something in them and one blank one
    chosen = np.zeros(12, dtype=bool)
    chosen[[0, 4, 5]] = True
    part = region.run_on_chosen_slices(
        lambda part: predict.run_model_on_slices(net, part, batch_size=4), images, chosen
    )
    np.testing.assert_allclose(part[chosen], whole[chosen], atol=1e-5)
    assert not part[~chosen].any()


@pytest.mark.parametrize("context_slices", [0, 1])
def test_predict_volume_on_chosen_slices_matches_a_whole_run(context_slices):
    keras = pytest.importorskip("keras")
    from liverseg_helpers.errors import DataError
    from liverseg_helpers.inference import predict
    from liverseg_helpers.preparation.preprocess import PreprocessSettings
    from liverseg_helpers.training import model

    settings = PreprocessSettings(image_size=32, context_slices=context_slices)
    keras.utils.set_random_seed(1)
    net = model.build_unet((32, 32, settings.n_channels), base_filters=4, depth=2)
    zz, yy, xx = np.indices((10, 48, 48))
    volume = np.where((zz - 5) ** 2 + (yy - 24) ** 2 + (xx - 20) ** 2 < 60, 200, -50)
    chosen = np.zeros(10, dtype=bool)
    chosen[[0, 3, 4, 9]] = True
    whole = predict.predict_volume(net, volume, settings)
    part = predict.predict_volume(net, volume, settings, slices=chosen)
    np.testing.assert_allclose(part[chosen], whole[chosen], atol=1e-5)
    assert not part[~chosen].any() and whole[~chosen].any()
    none = predict.predict_volume(net, volume, settings, slices=np.zeros(10, dtype=bool))
    assert not none.any()
    coronal = PreprocessSettings(
        image_size=32, target_spacing_mm=2.0, view="coronal", context_slices=context_slices
    )
    with pytest.raises(DataError, match="this model is coronal"):
        predict.predict_volume(net, volume, coronal, spacing_mm=(12.0, 1.0, 1.0), slices=chosen)
