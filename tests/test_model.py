"""Tests of liverseg_helpers.training.model: architecture, options, model files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverseg_helpers import config  # noqa: E402
from liverseg_helpers.errors import ModelFileError  # noqa: E402
from liverseg_helpers.training import losses, model_files  # noqa: E402
from liverseg_helpers.training import model as model_mod  # noqa: E402

PAPER_PARAMS = 7_759_521


def test_paper_unet_parameter_count():
    unet = model_mod.build_unet()
    assert unet.count_params() == PAPER_PARAMS
    assert unet.input.shape[1:] == (256, 256, 1)
    assert unet.output.shape[1:] == (256, 256, 1)
    names = [layer.name for layer in unet.layers]
    for name in ("enc1_conv1", "enc4_pool", "bottleneck_conv2", "dec4_up", "dec1_conv2", "probs"):
        assert name in names


def test_conv_flops_known_answer():
    # one 3x3 conv, 1 -> 2 filters on 8x8: 2 * 9 * 1 * 2 * 64 = 2304
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    assert model_mod.count_conv_flops(keras.Model(inputs, outputs)) == 2304
    # 2x2 stride-2 transposed conv 2 -> 3 on a 4x4 input: 2 * 4 * 2 * 3 * 16 = 768
    small = keras.Input((4, 4, 2))
    up = keras.layers.Conv2DTranspose(3, 2, strides=2)(small)
    assert model_mod.count_conv_flops(keras.Model(small, up)) == 768
    # the paper's UNet: 12.03 G multiply-adds per 256x256 slice
    assert model_mod.count_conv_flops(model_mod.build_unet()) == 24_066_916_352


def test_describe_unet_levels_sum_to_total():
    unet = model_mod.build_unet()
    rows = model_mod.describe_unet(unet)
    assert [r["level"] for r in rows][:5] == ["enc1", "enc2", "enc3", "enc4", "bottleneck"]
    assert [r["filters"] for r in rows[:5]] == [32, 64, 128, 256, 512]
    assert rows[4]["resolution"] == "16x16"
    # enc1: conv 3x3x1x32 + 32 bias, conv 3x3x32x32 + 32 bias
    assert rows[0]["params"] == (9 * 1 * 32 + 32) + (9 * 32 * 32 + 32)
    assert sum(r["params"] for r in rows) == PAPER_PARAMS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_norm": True},
        {"dropout": 0.3},
        {"depth": 3},
        {"input_shape": (32, 32, 3)},  # 2.5D: one neighbour slice on each side
        {"upsampling": "bilinear"},
    ],
)
def test_options_build_and_run(kwargs):
    kwargs = {"input_shape": (32, 32, 1), "base_filters": 4, "depth": 2, **kwargs}
    unet = model_mod.build_unet(**kwargs)
    x = np.random.default_rng(0).random((2, *kwargs["input_shape"]), dtype=np.float32)
    probs = keras.ops.convert_to_numpy(unet(x, training=False))
    assert probs.shape == (2, 32, 32, 1)
    assert probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))


def test_option_parameter_counts_differ_as_expected():
    plain = model_mod.build_unet((32, 32, 1), 4, 2).count_params()
    # batch norm: conv biases dropped (-1 per filter), BN adds 4 per filter (2 trainable)
    bn = model_mod.build_unet((32, 32, 1), 4, 2, batch_norm=True).count_params()
    conv_filters = 2 * (4 + 8 + 16 + 8 + 4)
    assert bn == plain + 3 * conv_filters
    assert model_mod.build_unet((32, 32, 1), 4, 2, dropout=0.5).count_params() == plain


def test_bad_input_size_raises():
    with pytest.raises(ValueError, match="divisible"):
        model_mod.build_unet((100, 100, 1), depth=4)
    with pytest.raises(ValueError, match="upsampling"):
        model_mod.build_unet((32, 32, 1), upsampling="nearest")


def test_model_from_profile_uses_context_slices():
    profile = config.get_profile("smoke", context_slices=1)
    unet = model_mod.model_from_profile(profile)
    assert unet.input.shape[1:] == (64, 64, 3)
    assert model_mod.model_from_profile(profile, in_channels=1).input.shape[-1] == 1


def test_receptive_field_matches_impulse_response():
    # paper's depth-4 network: known answer worked out by hand in the docstring's rule
    assert model_mod.receptive_field(4) == 200
    # Check the rule on a real depth-2 net: positive averaging weights, one input impulse;
    # the impulse reaches exactly receptive_field(2) output pixels along a row.
    unet = model_mod.build_unet((64, 64, 1), base_filters=1, depth=2)
    for layer in unet.layers:
        if layer.weights:
            kernel = layer.weights[0]
            kernel.assign(np.full(kernel.shape, 1.0 / np.prod(kernel.shape[:-1]), "float32"))
            layer.weights[1].assign(np.zeros(layer.weights[1].shape, "float32"))
    features = keras.Model(unet.input, unet.get_layer("dec1_conv2").output)
    x = np.zeros((1, 64, 64, 1), "float32")
    x[0, 32, 32, 0] = 1.0
    response = keras.ops.convert_to_numpy(features(x))[0, 32, :, 0]
    reached = np.flatnonzero(response > 0)
    assert reached.max() - reached.min() + 1 == model_mod.receptive_field(2) == 44


def test_plot_architecture_writes_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = model_mod.plot_architecture(model_mod.build_unet((32, 32, 1), 4, 2), tmp_path / "a.png")
    plt.close(fig)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def _tiny_compiled():
    unet = model_mod.build_unet((32, 32, 1), base_filters=4, depth=2)
    unet.compile(optimizer="adam", loss=losses.dice_loss, metrics=[losses.dice_metric])
    return unet


def test_save_load_roundtrip_with_sidecar(tmp_path):
    unet = _tiny_compiled()
    path = model_files.save_model(unet, tmp_path / "best.keras", {"image_size": 32}, task="liver")
    assert path == tmp_path / "best.keras"
    assert not list(tmp_path.glob(".*tmp*"))  # temporary files are gone
    sidecar = json.loads((tmp_path / "best.keras.json").read_text())
    assert sidecar["preprocess"] == {"image_size": 32}
    assert sidecar["task"] == "liver"
    assert sidecar["keras_version"] == keras.__version__
    assert model_files.read_sidecar(path) == sidecar
    loaded = model_files.load_model(path)
    x = np.random.default_rng(1).random((2, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(unet(x)), atol=1e-6
    )
    assert loaded.loss is losses.dice_loss or loaded.loss.__name__ == "dice_loss"


def test_a_sidecar_of_another_version_of_the_model_is_refused(tmp_path):
    """A stop between the model's write and its sidecar's must not pair the two wrongly."""
    path = model_files.save_model(_tiny_compiled(), tmp_path / "best.keras", {"image_size": 32})
    old_sidecar = (tmp_path / "best.keras.json").read_text()
    model_files.save_model(_tiny_compiled(), path, {"image_size": 32, "clahe": True})
    (tmp_path / "best.keras.json").write_text(old_sidecar)  # as if the second write never ran
    with pytest.raises(ModelFileError, match="best.keras.json: written for another version"):
        model_files.read_sidecar(path)


def test_save_model_rejects_other_suffix(tmp_path):
    with pytest.raises(ModelFileError, match="weights.h5"):
        model_files.save_model(_tiny_compiled(), tmp_path / "weights.h5", {})


def test_load_model_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="nope.keras: model file not found"):
        model_files.load_model(tmp_path / "nope.keras")


def test_load_model_legacy_suffix(tmp_path):
    path = tmp_path / "weights.best.hdf5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ModelFileError, match=r"weights.best.hdf5: not a Keras 3 model file"):
        model_files.load_model(path)


def test_load_model_corrupt_file(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ModelFileError, match="broken.keras: not a valid .keras archive"):
        model_files.load_model(path)


def test_load_model_foreign_zip(tmp_path):
    path = tmp_path / "foreign.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="foreign.keras: cannot load the model"):
        model_files.load_model(path)


def test_load_model_truncated_file(tmp_path):
    path = model_files.save_model(_tiny_compiled(), tmp_path / "cut.keras", {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.keras"):
        model_files.load_model(path)
