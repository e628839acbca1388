"""Prediction of whole CTs (predict.py), writing the masks (io/mask_output.py), the pipeline."""

from __future__ import annotations

import os
import tempfile
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverseg_helpers.errors import (  # noqa: E402
    DataError,
    ModelFileError,
    OutputExistsError,
)
from liverseg_helpers.inference import ensemble_members, pipeline, postprocess, precision, predict  # noqa: E402
from liverseg_helpers.io import mask_output  # noqa: E402
from liverseg_helpers.io.case import Case  # noqa: E402
from liverseg_helpers.preparation.preprocess import PreprocessSettings  # noqa: E402

SIZE = 32  # network input of the tiny test models
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build_tiny_unet(channels: int = 1, size: int = SIZE):
    from liverseg_helpers.training import model

    return model.build_unet((size, size, channels), base_filters=4, depth=2)


def build_identity_model(size: int = SIZE):
    """'Predicts' the windowed CT itself: liver at 250 HU -> 1, background -> 0."""
    inputs = keras.Input((size, size, 1))
    return keras.Model(inputs, keras.layers.Activation("linear")(inputs))


@pytest.fixture
def toy_case() -> Case:
    """32x64x64 CT: an ellipsoid 'liver' at 250 HU in -150 HU, plus a small 250 HU blob."""
    zz, yy, xx = np.indices((32, 64, 64))
    liver = ((zz - 16) / 10) ** 2 + ((yy - 30) / 18) ** 2 + ((xx - 26) / 14) ** 2 <= 1
    blob = (zz - 16) ** 2 + (yy - 30) ** 2 + (xx - 55) ** 2 <= 4
    volume = np.where(liver | blob, 250, -150).astype(np.int16)
    return Case("toy", volume, (2.0, 0.8, 0.8), masks={"liver": liver}, format="phantom")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_predict_volume_native_grid(toy_case):
    settings = PreprocessSettings(image_size=SIZE)
    probs = predict.predict_volume(build_identity_model(), toy_case.volume, settings, batch_size=5)
    assert probs.shape == toy_case.shape and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    # Identity 'model': the thresholded probabilities give back the bright voxels.
    assert dice(probs > 0.5, toy_case.volume > 0) > 0.9


def test_predict_case_postprocessing_removes_blob(toy_case):
    model = build_identity_model()
    settings = PreprocessSettings(image_size=SIZE)
    raw = predict.predict_case(model, toy_case, postprocess=False, settings=settings)
    clean = predict.predict_case(model, toy_case, settings=settings)
    assert raw.pred[16, 30, 55] and not clean.pred[16, 30, 55]  # the separate blob is gone
    assert dice(clean.pred, toy_case.masks["liver"]) > 0.9
    assert clean.liver_volume_ml == pytest.approx(
        np.count_nonzero(clean.pred) * toy_case.voxel_volume_ml
    )
    assert set(clean.stage_seconds) == {"preprocess", "model", "resize", "postprocess"}
    assert clean.seconds > 0
    smoothed = predict.predict_case(model, toy_case, settings=settings, smooth_z_mm=6.0)
    blurred = postprocess.smooth_across_slices(raw.probs, toy_case.spacing_mm[0], 6.0)
    assert np.array_equal(smoothed.pred, postprocess.postprocess_mask(blurred > 0.5))
    assert not np.array_equal(smoothed.pred, clean.pred)  # the blur changed the outline
    assert np.array_equal(smoothed.probs, raw.probs)  # probs are returned unblurred
    with pytest.raises(DataError, match="threshold"):
        predict.predict_case(model, toy_case, threshold=1.5, settings=settings)


def test_liver_reaches_scan_edge_needs_one_square_cm_on_an_end_slice():
    mask = np.zeros((5, 10, 10), dtype=bool)
    spacing = (1.0, 2.0, 2.0)  # 4 mm2 per pixel
    mask[2] = True  # the middle slice does not count
    assert not ensemble_members.liver_reaches_scan_edge(mask, spacing)
    mask[-1].flat[:24] = True  # 96 mm2
    assert not ensemble_members.liver_reaches_scan_edge(mask, spacing)
    mask[0].flat[:25] = True  # 100 mm2
    assert ensemble_members.liver_reaches_scan_edge(mask, spacing)


def test_an_axial_network_resamples_a_field_of_view_it_never_learnt(toy_case):
    fit_fov = ensemble_members.settings_for_field_of_view
    learnt = PreprocessSettings(image_size=SIZE, fov_range_mm=(263.0, 440.0))
    square = (10, 512, 512)
    assert fit_fov(learnt, square, (1.0, 0.7, 0.7)) is learnt  # 358 mm
    wide = fit_fov(learnt, square, (1.0, 1.0, 1.0))  # 512 mm
    assert wide.target_spacing_mm == pytest.approx(440.0 / SIZE)
    narrow = fit_fov(learnt, square, (1.0, 0.5, 0.5))  # 256 mm
    assert narrow.target_spacing_mm == pytest.approx(263.0 / SIZE)
    # The wider side decides: 400 rows x 1.2 mm = 480 mm, though 512 columns x 0.8 = 410 mm.
    tall = fit_fov(learnt, (10, 400, 512), (1.0, 1.2, 0.8))
    assert tall.target_spacing_mm == pytest.approx(440.0 / SIZE)
    for unchanged in (
        PreprocessSettings(image_size=SIZE),  # no range recorded: every model but the shipped one
        PreprocessSettings(image_size=SIZE, target_spacing_mm=2.0, fov_range_mm=(263, 440)),
        PreprocessSettings(
            image_size=SIZE, target_spacing_mm=3.0, view="coronal", fov_range_mm=(263, 440)
        ),
    ):
        assert fit_fov(unchanged, square, (1.0, 1.0, 1.0)) is unchanged
    assert fit_fov(learnt, square, None) is learnt
    with pytest.raises(ValueError, match="fov_range_mm"):
        PreprocessSettings(fov_range_mm=(440.0, 263.0))
    # Sidecars without the range hash as before; with it, it reads back.
    assert "fov_range_mm" not in PreprocessSettings().to_dict()
    assert PreprocessSettings.from_dict(learnt.to_dict()) == learnt

    # predict_case resamples: the toy CT's 51 mm are padded into a 263 mm square.
    identity = build_identity_model()
    probs = predict.predict_case(identity, toy_case, postprocess=False, settings=learnt).probs
    expected = predict.predict_volume(
        identity, toy_case.volume, replace(learnt, target_spacing_mm=263.0 / SIZE), 8, (2, 0.8, 0.8)
    )
    np.testing.assert_array_equal(probs, expected)
    whole = predict.predict_volume(identity, toy_case.volume, learnt)
    assert np.abs(probs - whole).max() > 0.3
    # A PNG export's 1 mm spacing is nominal: its field of view is unknown, so nothing changes.
    png = replace(toy_case, volume=np.clip(toy_case.volume + 150, 0, 255), format="png")
    probs = predict.predict_case(identity, png, postprocess=False, settings=learnt).probs
    np.testing.assert_array_equal(
        probs, predict.predict_volume(identity, png.volume, learnt, grey_levels=True)
    )


def test_postprocess_mask_steps():
    pred = np.zeros((6, 20, 20), bool)
    pred[1:5, 2:12, 2:12] = True
    pred[2, 5:8, 5:8] = False  # hole inside one slice
    pred[3, 16:18, 16:18] = True  # small separate component
    both = postprocess.postprocess_mask(pred)
    assert both[2, 6, 6] and not both[3, 16, 16]
    only_cc = postprocess.postprocess_mask(pred, fill_holes=False)
    assert not only_cc[2, 6, 6] and not only_cc[3, 16, 16]
    only_fill = postprocess.postprocess_mask(pred, keep_largest=False)
    assert only_fill[2, 6, 6] and only_fill[3, 16, 16]
    same = postprocess.postprocess_mask(pred, keep_largest=False, fill_holes=False)
    assert np.array_equal(same, pred)
    assert not postprocess.postprocess_mask(np.zeros((2, 4, 4))).any()
    with pytest.raises(DataError, match="3D"):
        postprocess.postprocess_mask(np.zeros((4, 4)))


def test_smooth_across_slices_repairs_one_slice_that_disagrees():
    """A square 12 px wide on every slice but one, where the 2D network lost half of it:
    smoothing along z, then thresholding, gives that slice back its neighbours' outline and
    leaves the slices that agree as they were."""
    probs = np.zeros((9, 20, 20), np.float32)
    probs[:, 2:18, :12] = 1.0
    probs[4, 2:18, 6:12] = 0.0  # the outlier slice
    smooth = postprocess.smooth_across_slices(probs, slice_mm=1.6, sigma_mm=3.2)
    assert np.array_equal(smooth > 0.5, np.broadcast_to(probs[0] > 0.5, probs.shape))
    assert np.array_equal(smooth[:, :, :6], probs[:, :, :6])  # agreeing voxels stay as they are
    assert np.array_equal(postprocess.smooth_across_slices(probs, 1.6, 0.0), probs)
    with pytest.raises(DataError, match="sigma_mm"):
        postprocess.smooth_across_slices(probs, 1.6, -1.0)
    with pytest.raises(DataError, match="shape"):
        postprocess.smooth_across_slices(probs[0], 1.6, 3.2)


def test_model_must_fit_settings():
    settings = PreprocessSettings(image_size=SIZE)
    with pytest.raises(ModelFileError, match="3 input channels"):
        predict.check_model_fits(build_tiny_unet(channels=3), settings)
    with pytest.raises(ModelFileError, match="64x64"):
        predict.check_model_fits(build_tiny_unet(size=64), settings)
    predict.check_model_fits(build_tiny_unet(), settings)


def test_settings_from_sidecar_or_model_shape(tmp_path):
    from liverseg_helpers.training import model_files

    net = build_tiny_unet()
    trained = PreprocessSettings(image_size=SIZE, clahe=True, window_level_hu=60)
    path = model_files.save_model(net, tmp_path / "best.keras", trained)
    assert predict.load_settings_for(path, net) == trained
    bare = tmp_path / "bare.keras"
    net.save(bare)
    with pytest.warns(UserWarning, match="bare.keras: no sidecar .* assuming the course's"):
        assert predict.load_settings_for(bare, net) == PreprocessSettings(image_size=SIZE)
    three = build_tiny_unet(channels=3)
    three.save(tmp_path / "rgb.keras")
    with pytest.raises(ModelFileError, match="rgb.keras.*3 input channels"):
        predict.load_prediction_model(tmp_path / "rgb.keras")


def test_a_model_of_the_other_task_is_refused(tmp_path):
    from liverseg_helpers.training import model_files

    tumour = model_files.save_model(
        build_tiny_unet(), tmp_path / "tumour.keras", PreprocessSettings(image_size=SIZE), "tumour"
    )
    with pytest.raises(
        ModelFileError, match="tumour.keras: its sidecar says it segments the tumour"
    ):
        predict.load_prediction_model(tumour)  # the liver step
    liver = model_files.save_model(
        build_tiny_unet(), tmp_path / "liver.keras", PreprocessSettings(image_size=SIZE)
    )
    with pytest.raises(ModelFileError, match="liver.keras: .* segments the liver"):
        predict.load_prediction_model(liver, task="tumour")
    assert predict.load_prediction_model(tumour, task="tumour")[1].image_size == SIZE


def test_predict_case_from_model_file(tmp_path, toy_case):
    from liverseg_helpers.training import model_files

    path = model_files.save_model(
        build_tiny_unet(), tmp_path / "m.keras", PreprocessSettings(image_size=SIZE)
    )
    result = predict.predict_case(path, toy_case)
    assert result.probs.shape == toy_case.shape and result.pred.dtype == bool
    with pytest.raises(ModelFileError):
        predict.predict_case(tmp_path / "missing.keras", toy_case)


def test_output_kind():
    assert mask_output.output_kind("a/b.nii.gz") == "nifti"
    assert mask_output.output_kind("seg.dcm") == "dicom_seg"
    assert mask_output.output_kind("masks/") == "png"
    assert mask_output.output_kind("masks") == "png"
    with pytest.raises(DataError, match="unknown output"):
        mask_output.output_kind("mask.png")


def test_png_folder_is_atomic_and_refuses_overwrite(tmp_path, monkeypatch):
    import cv2

    mask = np.zeros((3, 8, 8), bool)
    mask[1, 2:5, 2:5] = True
    out = mask_output.write_png_folder(mask, tmp_path / "pred")
    assert sorted(p.name for p in out.iterdir()) == ["image_0.png", "image_1.png", "image_2.png"]
    back = cv2.imread(str(out / "image_1.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    assert np.array_equal(back == 255, mask[1])
    with pytest.raises(OutputExistsError, match="pred"):
        mask_output.write_png_folder(mask, out)

    def failing_imwrite(path, image):
        raise OSError("disk full")

    monkeypatch.setattr(cv2, "imwrite", failing_imwrite)
    with pytest.raises(OSError):
        mask_output.write_png_folder(mask, tmp_path / "pred", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # old output kept, no temp
    assert len(list(out.iterdir())) == 3


def write_toy_patient(toy_case: Case, folder: Path) -> Path:
    io = pytest.importorskip("liverseg_helpers.io")
    if not hasattr(io, "write_ircadb_patient"):
        pytest.skip("io.write_ircadb_patient not available yet")
    return io.write_ircadb_patient(toy_case, folder)


def cli_args(input_path, out, model, **kw) -> Namespace:
    values = dict(
        input=str(input_path),
        model=[str(model)] if model else None,
        out=str(out),
        threshold=0.5,
        no_postprocess=False,
        smooth_z_mm=0.0,
        tumours=False,
        tumour_model=None,
        overwrite=False,
        fast=False,
        axial_step_mm=0.0,
        runtime="keras",
    )
    values.update(kw)
    return Namespace(**values)


@pytest.fixture
def tiny_model_file(tmp_path) -> Path:
    from liverseg_helpers.training import model_files

    return model_files.save_model(
        build_tiny_unet(), tmp_path / "tiny.keras", PreprocessSettings(image_size=SIZE)
    )


def test_cli_nifti_png_and_dicom_seg(tmp_path, toy_case, tiny_model_file, capsys):
    sitk = pytest.importorskip("SimpleITK")
    io = pytest.importorskip("liverseg_helpers.io")
    if not hasattr(io, "load_case") or not hasattr(io, "write_mask_nifti"):
        pytest.skip("io.load_case / io.write_mask_nifti not available yet")
    patient = write_toy_patient(toy_case, tmp_path / "patient")

    out = tmp_path / "pred.nii.gz"
    assert pipeline.run_predict_cli(cli_args(patient, out, tiny_model_file)) == 0
    printed = capsys.readouterr().out
    assert "mL" in printed and " s" in printed
    image = sitk.ReadImage(str(out))
    assert sitk.GetArrayFromImage(image).shape == toy_case.shape
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.0))
    with pytest.raises(OutputExistsError):
        pipeline.run_predict_cli(cli_args(patient, out, tiny_model_file))
    assert pipeline.run_predict_cli(cli_args(patient, out, tiny_model_file, overwrite=True)) == 0

    png = tmp_path / "png_out"
    assert pipeline.run_predict_cli(cli_args(patient, str(png) + "/", tiny_model_file)) == 0
    assert len(list(png.glob("image_*.png"))) == toy_case.shape[0]

    hd = pytest.importorskip("highdicom")
    seg_path = tmp_path / "seg.dcm"
    mask = toy_case.masks["liver"]
    case = io.load_case(patient)
    mask_output.write_dicom_seg(mask, case, seg_path)
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 1
    # Each frame references its source CT image: check the mask slice by slice.
    sources = mask_output.read_source_datasets(patient)
    one_file = sorted((patient / "PATIENT_DICOM").iterdir())[0]
    assert len(mask_output.read_source_datasets(one_file)) == 1  # a one-slice "series"
    ordered = mask_output.order_datasets_like_case(sources, case)
    pixels = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in ordered],
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )
    assert np.array_equal(pixels[..., 0] > 0, mask)


def test_segment_ct_is_the_road_of_the_command(tmp_path, toy_case, tiny_model_file):
    io = pytest.importorskip("liverseg_helpers.io")
    patient = write_toy_patient(toy_case, tmp_path / "patient")
    lines = []
    out = tmp_path / "pred.nii.gz"
    result = pipeline.segment_ct(patient, out, [str(tiny_model_file)], log=lines.append)
    direct = predict.predict_case([tiny_model_file], io.load_case(patient))
    assert result.written == out and out.exists()
    np.testing.assert_array_equal(result.labels, direct.pred)
    assert result.report == [f"liver volume: {direct.liver_volume_ml:.1f} mL"]
    assert lines[0] == f"model: {tiny_model_file}" and lines[1].startswith("read ")
    with pytest.raises(DataError, match="0/1/2 label map"):  # before any model is loaded
        pipeline.segment_ct(patient, tmp_path / "png/", [str(tiny_model_file)], tumours=True)


def test_fast_runs_the_first_network_of_the_first_axial_model(tmp_path, toy_case):
    from liverseg_helpers.research import ensemble
    from liverseg_helpers.training import model_files

    first, second = build_tiny_unet(), build_tiny_unet()
    first_settings = PreprocessSettings(image_size=SIZE)
    first_probs = predict.predict_case(first, toy_case, settings=first_settings)
    averaged = ensemble.average_models([first, second])
    axial = model_files.save_model(averaged, tmp_path / "axial.keras", first_settings)
    coronal_settings = PreprocessSettings(image_size=SIZE, view="coronal", target_spacing_mm=3.0)
    coronal = model_files.save_model(build_tiny_unet(), tmp_path / "cor.keras", coronal_settings)
    network, settings = pipeline.first_axial_network([coronal, axial])
    assert network.name == "member_1" and settings.view == "axial"
    with pytest.raises(ModelFileError, match="none of cor.keras is axial"):
        pipeline.first_axial_network([coronal])
    # the fast road of the command: that one network's mask, not the ensemble's
    patient = write_toy_patient(toy_case, tmp_path / "patient")
    lines = []
    fast = pipeline.segment_ct(
        patient, tmp_path / "fast.nii.gz", [str(axial), str(coronal)], fast=True, log=lines.append
    )
    assert lines[1] == "fast: the first axial network alone (member_1)"
    np.testing.assert_allclose(fast.liver.probs, first_probs.probs, atol=1e-5)
    full = pipeline.segment_ct(patient, tmp_path / "full.nii.gz", [str(axial)])
    assert np.abs(full.liver.probs - fast.liver.probs).max() > 1e-3  # two networks differ


def test_the_command_can_draw_thin_axial_slices_between_seen_ones(tmp_path, toy_case, capsys):
    from liverseg_helpers.training import model_files

    thin = Case("thin", toy_case.volume, (1.0, 0.8, 0.8), masks=toy_case.masks, format="phantom")
    patient = write_toy_patient(thin, tmp_path / "patient")
    settings = PreprocessSettings(image_size=SIZE)
    model = model_files.save_model(build_identity_model(), tmp_path / "m.keras", settings)
    args = cli_args(patient, tmp_path / "step.nii.gz", model, axial_step_mm=3.0)
    assert pipeline.run_predict_cli(args) == 0
    assert "wrote" in capsys.readouterr().out
    step = pipeline.segment_ct(patient, tmp_path / "a.nii.gz", [str(model)], axial_step_mm=3.0)
    every = pipeline.segment_ct(patient, tmp_path / "b.nii.gz", [str(model)])
    seen = np.arange(0, 32, 3)  # every third 1 mm slice, and the last
    np.testing.assert_allclose(step.liver.probs[seen], every.liver.probs[seen], atol=1e-5)
    drawn = (2 * every.liver.probs[9] + every.liver.probs[12]) / 3  # slice 10: 9 and 12 seen
    np.testing.assert_allclose(step.liver.probs[10], drawn, atol=1e-5)
    assert np.abs(step.liver.probs[10] - every.liver.probs[10]).max() > 0.1  # drawn, not seen


@pytest.mark.parametrize("slow_cpu", [True, False])
def test_several_models_on_a_cpu_without_bfloat16_suggest_fast(
    tmp_path, toy_case, tiny_model_file, monkeypatch, slow_cpu
):
    monkeypatch.setattr(pipeline, "cpu_without_bfloat16", lambda: slow_cpu)
    patient = write_toy_patient(toy_case, tmp_path / "patient")
    models = [str(tiny_model_file)] * 2
    lines = []
    pipeline.segment_ct(patient, tmp_path / "two.nii.gz", models, log=lines.append)
    hints = [line for line in lines if "--fast runs one network" in line]
    assert len(hints) == (1 if slow_cpu else 0)
    lines.clear()
    pipeline.segment_ct(patient, tmp_path / "one.nii.gz", models, fast=True, log=lines.append)
    assert not [line for line in lines if "--fast runs one network" in line]


@pytest.mark.parametrize(
    "slice_mm, slow_cpu, hinted", [(1.0, True, 1), (2.0, True, 0), (1.0, False, 0)]
)
def test_thin_slices_on_a_cpu_without_bfloat16_suggest_the_axial_step(
    tmp_path, toy_case, tiny_model_file, monkeypatch, slice_mm, slow_cpu, hinted
):
    monkeypatch.setattr(pipeline, "cpu_without_bfloat16", lambda: slow_cpu)
    spacing = (slice_mm, 0.8, 0.8)
    case = Case("thin", toy_case.volume, spacing, masks=toy_case.masks, format="phantom")
    patient = write_toy_patient(case, tmp_path / "patient")
    lines = []
    pipeline.segment_ct(patient, tmp_path / "a.nii.gz", [str(tiny_model_file)], log=lines.append)
    assert len([line for line in lines if "--axial-step-mm 3.2" in line]) == hinted
    lines.clear()
    pipeline.segment_ct(
        patient, tmp_path / "b.nii.gz", [str(tiny_model_file)], log=lines.append, axial_step_mm=3.2
    )
    assert not [line for line in lines if "--axial-step-mm" in line]  # asked for already


def test_cpu_without_bfloat16_is_a_cpu_only_machine_without_the_hardware(monkeypatch):
    for gpu, bf16, slow in [(False, False, True), (False, True, False), (True, False, False)]:
        monkeypatch.setattr(precision, "backend_sees_a_gpu", lambda gpu=gpu: gpu)
        monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda bf16=bf16: bf16)
        assert precision.cpu_without_bfloat16() is slow
        assert precision.choose_precision("auto") == ("bfloat16" if bf16 and not gpu else "float32")


def test_default_models_are_the_shipped_axial_and_coronal_pair(tmp_path, monkeypatch):
    axial, coronal = tmp_path / "liver_unet.keras", tmp_path / "liver_unet_coronal.keras"
    monkeypatch.setattr(pipeline, "REFERENCE_MODEL", axial)
    monkeypatch.setattr(pipeline, "REFERENCE_CORONAL_MODEL", coronal)
    coronal.write_bytes(b"")
    with pytest.raises(ModelFileError, match="no reference model"):  # never coronal alone
        pipeline.resolve_model_paths(None)
    axial.write_bytes(b"")
    assert pipeline.resolve_model_paths(None) == [axial, coronal]
    assert pipeline.resolve_model_paths(["mine.keras"]) == [Path("mine.keras")]
    coronal.unlink()
    assert pipeline.resolve_model_paths(None) == [axial]


def test_cli_errors(tmp_path, toy_case, tiny_model_file, monkeypatch):
    from liverseg_helpers.tumours import tumour  # --tumours: the cascade (tests/test_tumour.py)

    monkeypatch.setattr(tumour, "REFERENCE_TUMOUR_MODEL", tmp_path / "none.keras")
    with pytest.raises(ModelFileError, match="--task tumour"):
        args = cli_args(tmp_path, tmp_path / "x.nii.gz", tiny_model_file, tumours=True)
        pipeline.run_predict_cli(args)
    monkeypatch.setattr(pipeline, "REFERENCE_MODEL", tmp_path / "none.keras")
    with pytest.raises(ModelFileError, match="liverseg train"):
        pipeline.run_predict_cli(cli_args(tmp_path, tmp_path / "x.nii.gz", None))
    nifti_case = Case("n", toy_case.volume, toy_case.spacing_mm, source=str(tmp_path / "ct.nii"))
    with pytest.raises(DataError, match="DICOM input"):
        mask_output.write_dicom_seg(toy_case.masks["liver"], nifti_case, tmp_path / "s.dcm")
    assert not os.path.exists(tmp_path / "s.dcm")


@pytest.mark.real_data
@pytest.mark.slow
def test_real_ircadb_dicom_seg_roundtrip(tmp_path):
    patient = SHARED_DATA / "3Dircadb1" / "3Dircadb1.1"
    if not patient.exists():
        pytest.skip(f"real data not found at {patient}")
    io = pytest.importorskip("liverseg_helpers.io")
    pytest.importorskip("highdicom")
    case = io.load_case(patient)
    # IRCAD's files lack the FrameOfReferenceUID a DICOM-SEG must reference: a clear error.
    with pytest.raises(DataError, match="Frame Of Reference.*nii.gz"):
        mask_output.write_dicom_seg(case.masks["liver"], case, tmp_path / "liver.dcm")
    assert list(tmp_path.iterdir()) == []


def test_bfloat16_copy_predicts_like_float32(toy_case):
    net = build_tiny_unet()
    fast = precision.convert_to_bfloat16(net)
    assert fast is not net
    assert fast.layers[1].compute_dtype == "bfloat16" and fast.layers[-1].compute_dtype == "float32"
    settings = PreprocessSettings(image_size=SIZE)
    probs32 = predict.predict_volume(net, toy_case.volume, settings, precision="float32")
    probs16 = predict.predict_volume(net, toy_case.volume, settings, precision="bfloat16")
    assert probs16.dtype == np.float32
    assert np.abs(probs32 - probs16).max() < 0.02
    assert precision.choose_precision("float32") == "float32"
    assert precision.choose_precision("auto") in ("float32", "bfloat16")
    with pytest.raises(DataError, match="precision"):
        precision.choose_precision("fp8")


def test_bfloat16_copy_reaches_inside_an_int8_ensemble():
    from liverseg_helpers.research import ensemble
    from liverseg_helpers.training import quantize

    net = quantize.quantize_int8(ensemble.average_models([build_tiny_unet(), build_tiny_unet()]))
    fast = precision.convert_to_bfloat16(net)
    member = fast.get_layer("member_1")
    convs = [layer for layer in member.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == "bfloat16" for layer in convs[:-1])
    assert convs[-1].compute_dtype == "float32"  # each member's sigmoid output stays float32
    assert quantize.has_int8_weights(fast)
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 1)).astype("float32")
    assert np.abs(fast.predict(x, verbose=0) - net.predict(x, verbose=0)).max() < 0.02


@pytest.mark.real_data
@pytest.mark.slow
def test_cli_main_on_real_ircadb_patient(tmp_path, tiny_model_file, capsys):
    patient = SHARED_DATA / "3Dircadb1" / "3Dircadb1.1"
    if not patient.exists():
        pytest.skip(f"real data not found at {patient}")
    sitk = pytest.importorskip("SimpleITK")
    from liverseg_helpers import cli

    out = tmp_path / "liver.nii.gz"
    argv = ["predict", str(patient), "--model", str(tiny_model_file), "-o", str(out)]
    assert cli.main(argv) == 0
    assert "liver volume" in capsys.readouterr().out
    image = sitk.ReadImage(str(out))
    assert sitk.GetArrayFromImage(image).shape == (129, 512, 512)
    assert image.GetSpacing()[2] == pytest.approx(1.6)
    assert cli.main(argv) == 2  # exists, no --overwrite: error message, exit code 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.real_data
def test_dicom_seg_matches_dcmqi_reference():
    folder = SHARED_DATA / "dcmqi-ct-3slice"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder}")
    io = pytest.importorskip("liverseg_helpers.io")
    hd = pytest.importorskip("highdicom")
    sitk = pytest.importorskip("SimpleITK")
    # Stored values are not HU here (RescaleIntercept -1024), the SEG must still reference
    # the three source images by position, and equal dcmqi's own liver SEG.
    case = io.load_case(folder / "ct-3slice")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "liver_seg.nrrd"))) > 0
    out = mask_output.write_dicom_seg(mask, case, Path(tempfile.mkdtemp()) / "seg.dcm")
    ordered = mask_output.order_datasets_like_case(
        mask_output.read_source_datasets(case.source), case
    )
    uids = [ds.SOPInstanceUID for ds in ordered]
    ours = hd.seg.segread(out).get_pixels_by_source_instance(
        uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    reference = hd.seg.segread(folder / "liver.dcm").get_pixels_by_source_instance(
        uids,
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
        ignore_spatial_locations=True,
    )
    assert np.array_equal(ours[..., 0] > 0, mask)
    assert np.array_equal(ours > 0, reference > 0)
