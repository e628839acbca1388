"""Int8 weights (quantize.py): rounding bounds, the int8 twin of a UNet, its file and ensembles."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverseg_helpers.errors import ModelFileError  # noqa: E402
from liverseg_helpers.research import ensemble  # noqa: E402
from liverseg_helpers.training import model as model_lib  # noqa: E402
from liverseg_helpers.training import model_files, quantize  # noqa: E402

SETTINGS = {"image_size": 32, "window_level_hu": 50.0}


def tiny_unet(seed: int, batch_norm: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return model_lib.build_unet((32, 32, 1), base_filters=8, depth=2, batch_norm=batch_norm)


def slices(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((3, 32, 32, 1)).astype("float32")


@pytest.mark.parametrize("filter_axis", [-1, -2])
def test_quantize_kernel_rounds_each_filter_within_half_a_step(filter_axis):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 5, 7)).astype("float32")
    kernel[..., 2] *= 100  # filters of very different size each get their own scale
    if filter_axis == -2:
        kernel[:, :, 3, :] = 0  # an all-zero filter must not divide by zero
    q, scale = quantize.quantize_kernel(kernel, filter_axis)

    assert q.dtype == np.int8 and q.shape == kernel.shape
    n_filters = kernel.shape[filter_axis]
    assert scale.shape == (n_filters,)
    broadcast = scale if filter_axis == -1 else scale[:, None]
    error = np.abs(q * broadcast - kernel)
    assert np.all(error <= broadcast / 2 + 1e-7)
    # Each filter's largest weight maps to +-127 (the whole int8 range); a zero filter to 0.
    peak_q = np.abs(np.moveaxis(q, filter_axis, -1)).reshape(-1, n_filters).max(axis=0)
    peak = np.abs(np.moveaxis(kernel, filter_axis, -1)).reshape(-1, n_filters).max(axis=0)
    np.testing.assert_array_equal(peak_q, np.where(peak > 0, 127, 0))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_int8_twin_predicts_like_the_float_model(batch_norm):
    float_model = tiny_unet(1, batch_norm)
    twin = quantize.quantize_int8(float_model)
    x = slices()
    expected, got = float_model.predict(x, verbose=0), twin.predict(x, verbose=0)

    assert quantize.has_int8_weights(twin) and not quantize.has_int8_weights(float_model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in float_model.layers]
    assert np.abs(got - expected).max() < 0.01
    # The weights were really copied: a fresh network of the same shape predicts otherwise.
    assert np.abs(tiny_unet(2, batch_norm).predict(x, verbose=0) - expected).max() > 0.01
    # Quantizing again changes nothing: int8 layers round back to the same integers.
    again = quantize.quantize_int8(twin)
    np.testing.assert_allclose(again.predict(x, verbose=0), got, atol=1e-6)


def test_int8_file_is_smaller_and_reloads_the_same_predictions(tmp_path):
    keras.utils.set_random_seed(3)
    float_model = model_lib.build_unet((32, 32, 1), base_filters=16, depth=3)
    float_path = model_files.save_model(float_model, tmp_path / "float.keras", SETTINGS)
    twin = quantize.quantize_int8(float_model)
    int8_path = model_files.save_model(twin, tmp_path / "int8.keras", SETTINGS)

    ratio = float_path.stat().st_size / int8_path.stat().st_size
    assert 3.0 < ratio < 4.1, ratio
    assert model_files.read_sidecar(int8_path)["weights"] == "int8"
    assert model_files.read_sidecar(float_path)["weights"] == "float32"
    loaded = model_files.load_model(int8_path, compile=False)
    x = slices(1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), twin.predict(x, verbose=0))


def test_int8_ensemble_export_matches_the_float_ensemble(tmp_path):
    paths = [
        model_files.save_model(tiny_unet(seed), tmp_path / f"m{seed}.keras", SETTINGS)
        for seed in (1, 2)
    ]
    float_path = ensemble.export_ensemble(paths, tmp_path / "ens.keras")
    int8_path = ensemble.export_ensemble(paths, tmp_path / "ens_int8.keras", int8=True)
    float_ens = model_files.load_model(float_path, compile=False)
    int8_ens = model_files.load_model(int8_path, compile=False)

    assert quantize.has_int8_weights(int8_ens)
    assert not quantize.has_int8_weights(float_ens)
    x = slices(2)
    np.testing.assert_allclose(
        int8_ens.predict(x, verbose=0), float_ens.predict(x, verbose=0), atol=0.01
    )
    assert ensemble.ensemble_name("aligned_wide", int8=True) == "ensemble_aligned_wide_int8"


def test_a_network_starts_from_one_member_of_an_int8_ensemble_file(tmp_path):
    """``model_files.load_initial_weights``: ``file.keras:member_2`` puts that member's weights,
    int8 kernels expanded to float32, into a fresh float network, which then answers as the
    member does inside the file."""
    paths = [
        model_files.save_model(tiny_unet(seed), tmp_path / f"m{seed}.keras", SETTINGS)
        for seed in (1, 2)
    ]
    ens_path = ensemble.export_ensemble(paths, tmp_path / "ens.keras", int8=True)
    member = model_files.load_model(ens_path, compile=False).get_layer("member_2")
    fresh = tiny_unet(seed=9)
    x = slices(3)
    assert not np.allclose(fresh.predict(x, verbose=0), member.predict(x, verbose=0), atol=1e-3)
    model_files.load_initial_weights(fresh, f"{ens_path}:member_2")
    np.testing.assert_allclose(
        fresh.predict(x, verbose=0), member.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert not quantize.has_int8_weights(fresh)
    # A float file of one network works as it is, without a member.
    model_files.load_initial_weights(fresh, paths[0])
    np.testing.assert_array_equal(
        fresh.get_weights()[0], model_files.load_model(paths[0]).get_weights()[0]
    )


def test_starting_weights_of_another_network_are_refused_with_the_file_and_layer(tmp_path):
    path = model_files.save_model(tiny_unet(1), tmp_path / "m.keras", SETTINGS)
    with pytest.raises(ModelFileError, match=r"m.keras: no network named 'member_1'"):
        model_files.load_initial_weights(tiny_unet(2), f"{path}:member_1")
    wider = model_lib.build_unet((32, 32, 1), base_filters=16, depth=2)
    with pytest.raises(ModelFileError, match=r"m.keras: layer .* holds weights of shapes"):
        model_files.load_initial_weights(wider, path)
    deeper = model_lib.build_unet((32, 32, 1), base_filters=8, depth=3)
    with pytest.raises(ModelFileError, match=r"layers, the network to train has"):
        model_files.load_initial_weights(deeper, path)
