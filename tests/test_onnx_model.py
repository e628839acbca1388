"""ONNX twins of the liver networks (``inference/onnx_model.py``, ``--runtime onnx``) and
their int8 twins (``inference/onnx_int8.py``, ``--runtime onnx-int8``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX Runtime: pip install -e '.[onnx]'")
pytest.importorskip("tf2onnx", reason="tf2onnx: pip install -e '.[onnx]'")

from test_predict import SIZE, build_tiny_unet, write_toy_patient  # noqa: E402

from liverseg_helpers.errors import DataError, ModelFileError  # noqa: E402
from liverseg_helpers.inference import onnx_int8, onnx_model, pipeline, predict  # noqa: E402
from liverseg_helpers.io.case import Case  # noqa: E402
from liverseg_helpers.preparation.preprocess import PreprocessSettings  # noqa: E402
from liverseg_helpers.training import model_files  # noqa: E402


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test exports its twins into its own cache folder."""
    monkeypatch.setenv(onnx_model.CACHE_ENV, str(tmp_path / "onnx"))


@pytest.fixture
def tall_case() -> Case:
    """32 slices of 4 mm (128 mm, enough for a coronal network) of a 64 x 64 ellipsoid liver."""
    zz, yy, xx = np.indices((32, 64, 64))
    liver = ((zz - 16) / 10) ** 2 + ((yy - 30) / 18) ** 2 + ((xx - 26) / 14) ** 2 <= 1
    volume = np.where(liver, 250, -150).astype(np.int16)
    return Case("tall", volume, (4.0, 0.8, 0.8), masks={"liver": liver}, format="phantom")


@pytest.fixture
def axial_and_coronal(tmp_path):
    """An axial file averaging two tiny UNets and a coronal file of one, with sidecars."""
    from liverseg_helpers import config
    from liverseg_helpers.research import ensemble

    config.set_seeds(3)  # the same untrained networks every run

    axial = model_files.save_model(
        ensemble.average_models([build_tiny_unet(), build_tiny_unet()]),
        tmp_path / "axial.keras",
        PreprocessSettings(image_size=SIZE),
    )
    coronal_settings = PreprocessSettings(image_size=SIZE, view="coronal", target_spacing_mm=3.0)
    coronal = model_files.save_model(build_tiny_unet(), tmp_path / "cor.keras", coronal_settings)
    return axial, coronal


def op_types(path) -> set[str]:
    """The kinds of operation an ONNX file's graph holds."""
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def onnx_output_names(path) -> list[str]:
    """The names of an ONNX file's outputs."""
    import onnx

    return [output.name for output in onnx.load(str(path)).graph.output]


@pytest.fixture
def keras_in_float32(monkeypatch):
    """Keras predicts in float32 as the twins do, also on a CPU with bfloat16 hardware (where
    ``precision="auto"`` would pick bfloat16, and the probabilities would differ by more
    than the 1e-5 these tests allow)."""
    from liverseg_helpers.inference import precision

    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)


def test_a_twin_predicts_what_its_model_predicts_and_is_exported_once(
    tmp_path, tall_case, axial_and_coronal, monkeypatch, keras_in_float32
):
    axial, coronal = axial_and_coronal
    twin = onnx_model.onnx_twin(coronal)
    assert twin.parent == tmp_path / "onnx" and twin.suffix == ".onnx"
    side = json.loads((tmp_path / "onnx" / f"{twin.name}.json").read_text())
    assert side["preprocess"]["view"] == "coronal" and side["exported_from"] == "cor.keras"
    keras_probs = predict.predict_case(coronal, tall_case).probs
    onnx_result = predict.predict_case(twin, tall_case, precision="float32")
    np.testing.assert_allclose(onnx_result.probs, keras_probs, atol=1e-5)
    network, settings = predict.load_prediction_model(twin)
    assert isinstance(network, onnx_model.OnnxNetwork) and settings.view == "coronal"
    # A file that averages networks is exported one network at a time, then joined in one
    # graph that averages them (less memory than exporting it whole): the same probabilities.
    joined = onnx_model.onnx_twin(axial)
    assert op_types(joined) >= {"Add", "Mul"} and onnx_output_names(joined) == ["probs"]
    np.testing.assert_allclose(
        predict.predict_case(joined, tall_case, precision="float32").probs,
        predict.predict_case(axial, tall_case).probs,
        atol=1e-5,
    )
    # Asked again, the cached twin is read, not exported again; a twin is its own twin.
    monkeypatch.setattr(onnx_model, "export_twin", lambda *a, **k: pytest.fail("exported again"))
    assert onnx_model.onnx_twin(coronal) == twin
    assert onnx_model.onnx_twin(twin) == twin
    # A changed model file gets a twin of its own (named by its SHA-256).
    other = model_files.save_model(build_tiny_unet(), coronal, PreprocessSettings(image_size=SIZE))
    assert onnx_model.twin_path(other) != twin


def segment_both_ways(patient, models, runtimes, fast, **options) -> dict:
    """``pipeline.segment_ct``'s result for each runtime, the masks written beside the CT."""
    return {
        runtime: pipeline.segment_ct(
            patient,
            patient.parent / f"{runtime}{fast}.nii.gz",
            models,
            fast=fast,
            runtime=runtime,
            **options,
        )
        for runtime in runtimes
    }


def test_the_command_on_onnx_twins_gives_the_keras_masks(
    tmp_path, tall_case, axial_and_coronal, keras_in_float32
):
    axial, coronal = axial_and_coronal
    patient = write_toy_patient(tall_case, tmp_path / "patient")
    models = [str(axial), str(coronal)]
    for fast in (False, True):
        # without post-processing each voxel's label follows its own probability
        ways = segment_both_ways(patient, models, ("keras", "onnx"), fast, postprocess=False)
        keras_probs = ways["keras"].liver.probs
        np.testing.assert_allclose(ways["onnx"].liver.probs, keras_probs, atol=1e-5)
        # Untrained networks answer about 0.5 everywhere, so a voxel within 1e-5 of the
        # threshold may fall either way; every other voxel gets the same label.
        decided = np.abs(keras_probs - 0.5) > 1e-4
        assert decided.mean() > 0.3  # (a blank input slice gives exactly 0.5)
        np.testing.assert_array_equal(ways["onnx"].labels[decided], ways["keras"].labels[decided])
    # --fast exports the axial file's first network alone, and never the coronal file
    names = sorted(path.name for path in (tmp_path / "onnx").glob("*.onnx"))
    assert [name.split("-")[0] for name in names] == ["axial", "axial", "cor"]
    assert sum(name.endswith("-member_1.onnx") for name in names) == 1
    with pytest.raises(DataError, match="runtime must be one of"):
        pipeline.segment_ct(patient, tmp_path / "x.nii.gz", models, runtime="torch")


def test_the_command_with_onnx_twins_never_imports_tensorflow(
    tmp_path, tall_case, axial_and_coronal
):
    axial, coronal = axial_and_coronal
    patient = write_toy_patient(tall_case, tmp_path / "patient")
    for path in (axial, coronal):
        onnx_model.onnx_twin(path)  # exported here; the command below only reads them
    out = tmp_path / "mask.nii.gz"
    script = (
        "import sys\n"
        "from liverseg_helpers import cli\n"
        f"code = cli.main(['predict', {str(patient)!r}, '-o', {str(out)!r}, '--model', "
        f"{str(axial)!r}, '--model', {str(coronal)!r}, '--runtime', 'onnx'])\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules, 'keras imported:', "
        "'keras' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    assert "tensorflow imported: False keras imported: False" in done.stdout
    assert "runtime: ONNX Runtime" in done.stdout and out.exists()


def test_a_broken_twin_or_a_missing_runtime_is_named(tmp_path, axial_and_coronal, monkeypatch):
    _, coronal = axial_and_coronal
    twin = onnx_model.onnx_twin(coronal)
    twin.write_bytes(twin.read_bytes()[:1000])  # truncated
    with pytest.raises(ModelFileError, match=f"{twin.name}: ONNX Runtime cannot read it"):
        onnx_model.OnnxNetwork(twin)
    with pytest.raises(ModelFileError, match="sha256 differs"):  # its sidecar sees it first
        predict.load_prediction_model(twin)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ModelFileError, match=r"needs ONNX Runtime.*pip install"):
        onnx_model.OnnxNetwork(twin)


def test_auto_picks_onnx_runtime_on_a_cpu_with_tensorflow_installed(monkeypatch):
    from pathlib import Path

    from liverseg_helpers.inference import precision

    def where(bfloat16=False, gpu=False, backend="tensorflow", missing=(), vnni=True, fast=False):
        # wherever the decision might ask (it does not any more: the rule on bfloat16 CPUs)
        monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: bfloat16)
        monkeypatch.setattr(onnx_model, "cpu_has_bfloat16", lambda: bfloat16, raising=False)
        monkeypatch.setattr(onnx_model, "cpu_has_vnni", lambda: vnni)
        real_exists = Path.exists
        monkeypatch.setattr(
            Path, "exists", lambda p: gpu if str(p) == "/proc/driver/nvidia" else real_exists(p)
        )
        monkeypatch.setenv("KERAS_BACKEND", backend)
        monkeypatch.setattr(onnx_model, "find_spec", lambda name: name not in missing)
        return onnx_model.choose_runtime("auto", fast)

    assert where() == "onnx-int8"  # the pair, on a CPU with VNNI: int8 twins
    assert where(bfloat16=True) == "onnx-int8"  # Keras's bfloat16 does not pay for its import
    assert where(fast=True) == "onnx"  # one network: float32
    assert where(vnni=False) == "onnx"  # AVX2 only: int8 not measured there
    monkeypatch.setattr(precision, "cpu_flags", lambda: "flags\t: fpu sse4_2 avx2 fma")
    assert not precision.cpu_has_vnni()
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        monkeypatch.setattr(precision, "cpu_flags", lambda flag=flag: f"flags\t: avx2 {flag}")
        assert precision.cpu_has_vnni()
    assert where(gpu=True) == "keras"
    assert where(backend="jax") == "keras"
    assert where(missing=("tf2onnx",)) == "keras"  # could not export the twins
    assert onnx_model.choose_runtime("keras") == "keras"
    with pytest.raises(DataError, match="runtime must be one of"):
        onnx_model.choose_runtime("torch")


# Int8 twins (inference/onnx_int8.py) and --runtime onnx-int8


@pytest.fixture
def small_phantoms(monkeypatch):
    """Calibration phantoms of 16 slices of 64 x 64 pixels, not 64 of 512 x 512: seconds."""
    monkeypatch.setattr(onnx_int8, "PHANTOM_SLICES", 16)
    monkeypatch.setattr(onnx_int8, "PHANTOM_PIXELS", 64)


def test_an_int8_twin_is_quantized_once_from_what_the_network_sees_on_phantoms(
    tmp_path, tall_case, axial_and_coronal, monkeypatch, small_phantoms, capsys
):
    _, coronal = axial_and_coronal
    float_twin = onnx_model.onnx_twin(coronal)
    batches = onnx_int8.calibration_batches(*predict.load_prediction_model(float_twin))
    # the slices the coronal network is given: batches of its input, windowed to [0, 1]
    assert batches and all(batch.shape[1:] == (SIZE, SIZE, 1) for batch in batches)
    assert 0.0 <= min(b.min() for b in batches) and max(b.max() for b in batches) <= 1.0
    assert max(b.max() for b in batches) > 0.5  # not only blank slices

    said = []
    twin = onnx_int8.int8_twin(coronal, log=said.append)
    assert twin == tmp_path / "onnx" / f"{float_twin.stem}-int8.onnx"
    assert len(said) == 1 and "quantizing" in said[0]  # its float twin was exported above
    assert "histogram" not in capsys.readouterr().out  # the calibrator's chatter is kept quiet
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(twin)
    assert "QuantizeLinear" not in op_types(float_twin)
    side = json.loads((tmp_path / "onnx" / f"{twin.name}.json").read_text())
    assert side["preprocess"]["view"] == "coronal" and side["exported_from"] == "cor.keras"
    assert "int8" in side["arithmetic"] and "901" in side["arithmetic"]

    # It predicts about what its float twin predicts, and is read from the cache next time.
    float_probs = predict.predict_case(float_twin, tall_case, precision="float32").probs
    int8_probs = predict.predict_case(twin, tall_case, precision="float32").probs
    assert not np.array_equal(int8_probs, float_probs)  # integer arithmetic, not a copy
    np.testing.assert_allclose(int8_probs, float_probs, atol=0.05)
    monkeypatch.setattr(onnx_int8, "quantize_twin", lambda *a: pytest.fail("quantized again"))
    assert onnx_int8.int8_twin(coronal) == twin
    # an .onnx file of the user's own gets an int8 twin in the cache, named by its hash
    own = tmp_path / "mine.onnx"
    own.write_bytes(float_twin.read_bytes())
    assert onnx_int8.int8_path(own).parent == tmp_path / "onnx"
    assert onnx_int8.int8_path(own).name.startswith("mine-")


def test_the_command_on_int8_twins(tmp_path, tall_case, axial_and_coronal, small_phantoms):
    axial, coronal = axial_and_coronal
    patient = write_toy_patient(tall_case, tmp_path / "patient")
    models = [str(axial), str(coronal)]
    for fast in (False, True):
        ways = segment_both_ways(patient, models, ("onnx", "onnx-int8"), fast)
        np.testing.assert_allclose(
            ways["onnx-int8"].liver.probs, ways["onnx"].liver.probs, atol=0.05
        )
    names = sorted(path.name for path in (tmp_path / "onnx").glob("*-int8.onnx"))
    assert len(names) == 3 and sum("-member_1-" in name for name in names) == 1
    assert onnx_model.choose_runtime("onnx-int8") == "onnx-int8"


def test_a_file_that_cannot_be_quantized_is_named(tmp_path, axial_and_coronal, monkeypatch):
    _, coronal = axial_and_coronal
    float_twin = onnx_model.onnx_twin(coronal)
    monkeypatch.setattr(onnx_int8, "calibration_batches", lambda *args: [])
    out = tmp_path / "onnx" / "broken-int8.onnx"
    with pytest.raises(ModelFileError, match=f"{float_twin.name}: ONNX Runtime could not"):
        onnx_int8.quantize_twin(float_twin, out)
    assert not out.exists() and not list(out.parent.glob("broken*"))  # nothing half-written
