"""Running a network only on the slices that need it (inference/region.py)."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg_helpers.inference import region


def counting_model(net, seen: list):
    """``net`` that appends the size of every batch it predicts to ``seen``."""
    keras = pytest.importorskip("keras")

    class Counting(keras.Model):
        def predict_on_batch(self, x):
            seen.append(len(x))
            return net.predict_on_batch(x)

    counting = Counting()
    counting.inputs = net.inputs  # so predict_volume can check its input shape
    return counting


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
    pytest.importorskip("keras")
    from liverseg_helpers.inference import predict
    from liverseg_helpers.training import model

    net = model.build_unet((32, 32, 1), base_filters=4, depth=2)
    images = np.zeros((12, 32, 32, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    images[3:9, 8:24, 8:24] = rng.random((6, 16, 16, 1))
    seen = []
    whole = predict.run_model_on_slices(net, images, batch_size=4)
    assert np.abs(whole[0]).max() > 0  # a blank slice's answer is not 0: it must be copied
    counting = counting_model(net, seen)
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


def test_the_slice_step_keeps_the_axial_slices_at_most_step_mm_apart():
    assert region.slice_step(1.6, 3.2) == 2
    assert region.slice_step(0.8, 3.2) == 4
    assert region.slice_step(1.25, 3.2) == 2
    assert region.slice_step(2.0, 3.2) == 1  # 4 mm would be too far
    assert region.slice_step(5.0, 3.2) == 1
    assert region.slice_step(1.6, 0.0) == 1  # 0: every slice


def test_thinning_keeps_every_step_th_slice_and_both_ends_of_each_run():
    chosen = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1], dtype=bool)
    kept = region.thinned(chosen, 2)
    assert np.flatnonzero(kept).tolist() == [1, 3, 5, 7, 8, 10, 12, 13]
    assert np.array_equal(region.thinned(chosen, 1), chosen)
    assert not region.thinned(np.zeros(5, dtype=bool), 3).any()


def test_the_slices_between_are_drawn_along_z_from_their_neighbours():
    ramp = np.broadcast_to(np.arange(9, dtype=np.float32)[:, None, None] / 8, (9, 3, 3)).copy()
    wanted = np.ones(9, dtype=bool)
    wanted[0] = False
    seen = []

    def predict_slices(ran):
        seen.append(np.flatnonzero(ran).tolist())
        return np.where(ran[:, None, None], ramp, 0.0).astype(np.float32)

    probs = region.predict_thinned(predict_slices, wanted, 3)
    assert seen == [[1, 4, 7, 8]]
    np.testing.assert_allclose(probs[1:], ramp[1:], atol=1e-6)  # a straight line is exact
    assert not probs[0].any()  # not wanted: left at 0
    with pytest.raises(ValueError, match="both sides"):
        region.fill_between(ramp.copy(), np.eye(1, 9, 4, dtype=bool)[0], np.ones(9, dtype=bool))


def test_predict_volume_with_a_step_runs_fewer_slices_and_draws_the_rest():
    keras = pytest.importorskip("keras")
    from liverseg_helpers.inference import predict
    from liverseg_helpers.preparation.preprocess import PreprocessSettings
    from liverseg_helpers.training import model

    f32 = "float32"  # "auto" is bfloat16 on CPUs with it; this test is about slices, not precision
    keras.utils.set_random_seed(2)
    net = model.build_unet((32, 32, 1), base_filters=4, depth=2)
    seen = []
    counting = counting_model(net, seen)
    zz, yy, xx = np.indices((9, 48, 48))
    volume = np.where((zz - 4) ** 2 + (yy - 24) ** 2 + (xx - 20) ** 2 < 60, 200, -50)
    settings = PreprocessSettings(image_size=32)
    spacing = (1.6, 1.0, 1.0)
    whole = predict.predict_volume(net, volume, settings, spacing_mm=spacing, precision=f32)
    step = predict.predict_volume(
        counting, volume, settings, batch_size=1, spacing_mm=spacing, step_mm=3.2, precision=f32
    )
    assert sum(seen) == 5  # slices 0, 2, 4, 6 and 8 (none blank)
    np.testing.assert_allclose(step[::2], whole[::2], atol=1e-5)
    np.testing.assert_allclose(step[1::2], (whole[:-1:2] + whole[2::2]) / 2, atol=1e-5)
    chosen = np.zeros(9, dtype=bool)
    chosen[3:7] = True
    part = predict.predict_volume(
        net, volume, settings, spacing_mm=spacing, slices=chosen, precision=f32
    )
    part_step = predict.predict_volume(
        net, volume, settings, spacing_mm=spacing, slices=chosen, step_mm=3.2, precision=f32
    )
    np.testing.assert_allclose(part_step[[3, 5, 6]], part[[3, 5, 6]], atol=1e-5)
    assert not part_step[~chosen].any()
