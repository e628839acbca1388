"""Coronal and sagittal slices (views.py): turning a CT, the slice cache and prediction."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import slice_cache, views
from liverseg_helpers.preparation.preprocess import PreprocessSettings, window_hu

SPACING = (2.0, 0.8, 1.0)  # z, y, x in mm: all different, so a swapped axis shows
TALL = (4.0, 0.8, 1.0)  # the same voxels 120 mm tall: enough for a coronal network


def ellipsoid(shape=(30, 60, 50), centre=(14.0, 25.0, 30.0), radii=(8.0, 15.0, 12.0)):
    """Boolean ellipsoid off the centre of every axis, so a flip or swap moves it."""
    zz, yy, xx = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii, strict=True)) <= 1


def centre_mm(mask: np.ndarray, spacing) -> np.ndarray:
    return (np.argwhere(mask).mean(axis=0) + 0.5) * np.asarray(spacing)


@pytest.mark.parametrize("view", ["coronal", "sagittal"])
def test_turned_mask_keeps_its_place_and_volume(view):
    mask = ellipsoid()
    turned, spacing = views.to_view(mask, SPACING, view, target_spacing_mm=1.5, is_mask=True)
    order = {"coronal": (1, 0, 2), "sagittal": (2, 0, 1)}[view]
    # The new slice axis is resampled to 1.5 mm, the others keep their spacing.
    assert spacing == (1.5, SPACING[order[1]], SPACING[order[2]])
    assert turned.shape[0] == round(mask.shape[order[0]] * SPACING[order[0]] / 1.5)
    assert turned.shape[1:] == (mask.shape[order[1]], mask.shape[order[2]])
    assert turned.dtype == np.uint8
    # Same place (in mm, per axis) and about the same volume.
    np.testing.assert_allclose(
        centre_mm(turned, spacing), centre_mm(mask, SPACING)[list(order)], atol=0.3
    )
    volume_ml = turned.sum() * np.prod(spacing)
    assert volume_ml == pytest.approx(mask.sum() * np.prod(SPACING), rel=0.03)


@pytest.mark.parametrize("view", ["coronal", "sagittal"])
def test_round_trip_gives_the_volume_back(view):
    smooth = ellipsoid().astype(np.float32)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(smooth, 2.0)
    turned, _ = views.to_view(smooth, SPACING, view, target_spacing_mm=0.9)
    back = views.from_view(turned, view, smooth.shape)
    assert back.shape == smooth.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, smooth, atol=0.03)


def test_axial_is_unchanged_and_bad_views_are_refused():
    mask = ellipsoid()
    turned, spacing = views.to_view(mask, None, "axial", None)
    assert turned is mask and spacing is None
    assert views.from_view(turned, "axial", mask.shape) is mask
    with pytest.raises(ValueError, match="one of"):
        views.to_view(mask, SPACING, "oblique", 2.0)
    with pytest.raises(ValueError, match="target_spacing_mm"):
        views.to_view(mask, SPACING, "coronal", None)
    with pytest.raises(DataError, match="case7.*spacing"):
        views.to_view(mask, None, "coronal", 2.0, source="case7")
    with pytest.raises(DataError, match="do not fit"):
        views.from_view(np.zeros((5, 60, 50), np.float32), "coronal", mask.shape)


def test_settings_store_the_view_and_axial_settings_read_as_before():
    axial = PreprocessSettings(image_size=32)
    assert "view" not in axial.to_dict()  # old sidecars and cache keys stay valid
    coronal = PreprocessSettings(image_size=32, target_spacing_mm=2.0, view="coronal")
    assert coronal.to_dict()["view"] == "coronal"
    assert PreprocessSettings.from_dict(coronal.to_dict()) == coronal
    assert slice_cache.cache_key(coronal) != slice_cache.cache_key(
        PreprocessSettings(image_size=32, target_spacing_mm=2.0)
    )
    with pytest.raises(ValueError, match="target_spacing_mm"):
        PreprocessSettings(view="sagittal")


def test_coronal_cache_pairs_each_slice_with_its_mask(tmp_path):
    liver = ellipsoid()
    volume = np.where(liver, 250, -150).astype(np.int16)
    case = Case("p1", volume, SPACING, masks={"liver": liver})
    settings = PreprocessSettings(image_size=48, target_spacing_mm=1.5, view="coronal")
    folder = slice_cache.build_slice_cache([case], settings, tmp_path, seed=0)
    x, y = slice_cache.load_cached_slices(folder, ["p1"], settings=settings, target="liver")
    turned = views.to_view(liver, SPACING, "coronal", 1.5, is_mask=True)[0]
    n_liver = int(turned.any(axis=(1, 2)).sum())
    assert len(x) == n_liver + int(np.ceil(0.25 * n_liver))
    # The CT is bright exactly where the liver is, so image and mask must agree.
    agree = ((x[..., 0] > 0.5) == (y[..., 0] == 1)).mean()
    assert agree > 0.99 and y.sum() > 0


@pytest.mark.parametrize("view", ["coronal", "sagittal"])
def test_prediction_in_another_view_lands_on_the_ct_grid(view):
    keras = pytest.importorskip("keras")
    from liverseg_helpers.inference import predict

    volume = np.where(ellipsoid(), 250, -150).astype(np.int16)
    settings = PreprocessSettings(image_size=64, target_spacing_mm=1.0, view=view)
    inputs = keras.Input((64, 64, 1))  # 'predicts' the windowed CT itself
    identity = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    probs = predict.predict_volume(identity, volume, settings, batch_size=8, spacing_mm=TALL)
    assert probs.shape == volume.shape
    expected = window_hu(volume, settings.window_level_hu, settings.window_width_hu) > 0.5
    found = probs > 0.5
    assert 2 * (found & expected).sum() / (found.sum() + expected.sum()) > 0.97


def save_disagreeing_axial_and_coronal_members(folder) -> list:
    """Two saved 'networks' that scale the windowed CT by 1.0 (axial) and 0.6 (coronal)."""
    keras = pytest.importorskip("keras")
    from liverseg_helpers.training import model_files

    paths = []
    for view, gain in (("axial", 1.0), ("coronal", 0.6)):
        settings = PreprocessSettings(image_size=64, target_spacing_mm=1.0, view=view)
        inputs = keras.Input((64, 64, 1))
        member = keras.Model(inputs, keras.layers.Rescaling(gain)(inputs))
        paths.append(model_files.save_model(member, folder / f"{view}.keras", settings))
    return paths


def test_an_axial_and_a_coronal_model_are_averaged_on_the_ct_grid(tmp_path, capsys):
    import nibabel as nib

    from liverseg_helpers import cli, io
    from liverseg_helpers.inference import postprocess, predict

    truth = ellipsoid()
    case = Case("views", np.where(truth, 250, -150).astype(np.int16), TALL)
    paths = save_disagreeing_axial_and_coronal_members(tmp_path)
    alone = [predict.predict_case(path, case, postprocess=False).probs for path in paths]
    both = predict.predict_case(paths, case, postprocess=False)
    assert np.abs(alone[0] - alone[1]).max() > 0.3
    np.testing.assert_allclose(both.probs, (alone[0] + alone[1]) / 2, atol=1e-6)

    ct_path = io.write_mask_nifti(case.volume, case, tmp_path / "ct.nii.gz")
    out = tmp_path / "mask.nii.gz"
    argv = ["predict", str(ct_path), "--model", str(paths[0]), "--model", str(paths[1])]
    assert cli.main([*argv, "-o", str(out)]) == 0
    mask = np.asarray(nib.load(out).dataobj).transpose(2, 1, 0) > 0  # NIfTI is [x, y, z]
    assert np.array_equal(mask, postprocess.mask_from_probs(both.probs, TALL[0]))
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.97
    printed = capsys.readouterr().out
    assert "liver volume" in printed and f"averaged): {paths[0]}, {paths[1]}" in printed

    with pytest.raises(DataError, match="several"):
        predict.predict_case(paths, case, settings=PreprocessSettings(image_size=64))
    with pytest.raises(DataError, match="at least one"):
        predict.predict_case([], case)


def record_predict_volume_calls(monkeypatch) -> list:
    """Patch ``predict.predict_volume`` to note each call's ``(view, slices)``, in order."""
    from liverseg_helpers.inference import predict

    asked = []
    predict_volume = predict.predict_volume

    def recording_predict_volume(model, volume_hu, settings, *args, **kwargs):
        asked.append((settings.view, kwargs.get("slices")))
        return predict_volume(model, volume_hu, settings, *args, **kwargs)

    monkeypatch.setattr(predict, "predict_volume", recording_predict_volume)
    return asked


def test_a_scan_that_stops_inside_the_liver_is_predicted_by_the_axial_model(tmp_path, monkeypatch):
    from liverseg_helpers.inference import predict

    paths = save_disagreeing_axial_and_coronal_members(tmp_path)
    volume = np.where(ellipsoid(), 250, -150).astype(np.int16)
    spacing = (8.0, 0.8, 1.0)  # tall enough for the coronal member even when cut
    cut = Case("cut", volume[14:], spacing)  # the first slice goes through the liver's middle
    whole = Case("whole", volume, spacing)

    asked = record_predict_volume_calls(monkeypatch)
    with pytest.warns(UserWarning, match="cut: the liver reaches the scan's first or last slice"):
        pair = predict.predict_case(paths, cut, postprocess=False)
    # The first batch showed liver on an end slice: the axial member saw every other slice too,
    # and the coronal one was never run.
    assert [view for view, _ in asked] == ["axial", "axial"]
    assert not (asked[0][1] & asked[1][1]).any() and (asked[0][1] | asked[1][1]).all()
    axial = predict.predict_case(paths[0], cut, postprocess=False)
    np.testing.assert_array_equal(pair.probs, axial.probs)
    alone = [predict.predict_case(path, whole, postprocess=False).probs for path in paths]
    pair = predict.predict_case(paths, whole, postprocess=False, skip_slices=False).probs
    np.testing.assert_allclose(pair, (alone[0] + alone[1]) / 2, atol=1e-6)


def test_the_axial_member_looks_only_at_the_slices_around_the_coronal_liver(tmp_path, monkeypatch):
    from liverseg_helpers.inference import predict

    paths = save_disagreeing_axial_and_coronal_members(tmp_path)
    liver = ellipsoid(shape=(60, 60, 50), centre=(30.0, 25.0, 30.0))  # slices 22 to 38
    case = Case("tall", np.where(liver, 250, -150).astype(np.int16), TALL)
    asked = record_predict_volume_calls(monkeypatch)
    pair = predict.predict_case(paths, case)
    # First one batch of 8 (both ends and the middle), then, once the coronal member ran, the
    # slices where its probabilities exceed 0.2 (22 to 37: its 1 mm slices, turned back, blur
    # the ellipsoid's tips) and 25 mm (7 slices) above and below, less those done.
    assert [view for view, _ in asked] == ["axial", "coronal", "axial"]
    assert np.flatnonzero(asked[0][1]).tolist() == [0, *range(27, 33), 59]
    assert np.flatnonzero(asked[2][1]).tolist() == [*range(15, 27), *range(33, 45)]
    asked.clear()
    every_slice = predict.predict_case(paths, case, skip_slices=False)
    assert asked == [("axial", None), ("coronal", None)]
    assert np.array_equal(pair.pred, every_slice.pred)
    np.testing.assert_allclose(pair.probs[15:45], every_slice.probs[15:45], atol=1e-6)


def test_a_ct_too_short_for_the_coronal_model_is_predicted_by_the_axial_one(tmp_path):
    keras = pytest.importorskip("keras")
    from liverseg_helpers.inference import predict
    from liverseg_helpers.training import model_files

    paths = []
    for view in ("axial", "coronal"):
        settings = PreprocessSettings(image_size=32, target_spacing_mm=1.0, view=view)
        inputs = keras.Input((32, 32, 1))
        member = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
        paths.append(model_files.save_model(member, tmp_path / f"{view}.keras", settings))
    volume = np.where(ellipsoid(), 250, -150).astype(np.int16)
    height = views.MIN_TURNED_HEIGHT_MM
    short = Case("thin", volume[:3], (height / 4, 0.8, 1.0))  # 3 slices: 75 mm
    tall = Case("tall", volume[:4], (height / 4, 0.8, 1.0))  # 4 slices: just tall enough
    assert not views.fits_view(short.shape, short.spacing_mm, "coronal")
    assert views.fits_view(short.shape, short.spacing_mm, "axial")
    assert views.fits_view(tall.shape, tall.spacing_mm, "coronal")

    with pytest.warns(UserWarning, match="thin.*75 mm.*coronal.keras"):
        both = predict.predict_case(paths, short, postprocess=False)
    axial = predict.predict_case(paths[0], short, postprocess=False)
    np.testing.assert_array_equal(both.probs, axial.probs)
    with pytest.raises(DataError, match="thin: .*75 mm.*coronal network needs at least 100 mm"):
        predict.predict_case(paths[1], short)
    with pytest.raises(DataError, match="thin.*75 mm"):
        predict.predict_case([paths[1], paths[1]], short)
    coronal = predict.predict_case(paths[1], tall, postprocess=False).probs
    pair = predict.predict_case(paths, tall, postprocess=False).probs
    axial_tall = predict.predict_case(paths[0], tall, postprocess=False).probs
    np.testing.assert_allclose(pair, (coronal + axial_tall) / 2, atol=1e-6)


@pytest.mark.parametrize("view", ["coronal", "sagittal"])
def test_tumour_cache_cropped_to_the_liver_selects_liver_slices(tmp_path, view):
    liver = ellipsoid()
    tumour = ellipsoid(radii=(3.0, 4.0, 4.0))
    volume = np.where(liver, 100, -150).astype(np.int16)
    volume[tumour] = 0
    case = Case("p1", volume, SPACING, masks={"liver": liver, "tumour": tumour})
    settings = PreprocessSettings(image_size=48, target_spacing_mm=1.5, view=view)
    folder = slice_cache.build_slice_cache(
        [case], settings, tmp_path, target="tumour", crop_to="liver", crop_margin_px=2
    )
    with np.load(folder / "p1.npz") as data:
        chosen, (r0, r1, c0, c1) = data["slice_indices"], data["crop_box"]
    # The slices are chosen on the liver turned after the same in-plane crop.
    cropped = views.to_view(liver[:, r0:r1, c0:c1], SPACING, view, 1.5, is_mask=True)[0]
    liver_slices = np.flatnonzero(cropped.any(axis=(1, 2)))
    assert np.isin(liver_slices, chosen).all() and chosen.max() < len(cropped)


def test_png_cases_cannot_be_turned_and_cut_masks_warn():
    from liverseg_helpers.preparation import preprocess

    coronal = PreprocessSettings(image_size=32, target_spacing_mm=1.0, view="coronal")
    grey = np.full((4, 8, 8), 100, dtype=np.int16)
    with pytest.raises(DataError, match="slice1.png.*cannot be turned"):
        preprocess.preprocess_volume(grey, coronal, (1, 1, 1), "slice1.png", grey_levels=True)
    small = PreprocessSettings(image_size=16, target_spacing_mm=1.0)
    wide = np.zeros((2, 40, 40), dtype=np.uint8)
    wide[:, 18:22, 1:39] = 1  # 38 mm wide: a 16 mm square cuts it
    with pytest.warns(UserWarning, match="case9.*cuts .* mask pixels"):
        preprocess.preprocess_mask(wide, small, (1.0, 1.0, 1.0), source="case9")


def test_an_ensemble_in_bfloat16_is_converted_once_and_predicts_like_float32(tmp_path, monkeypatch):
    from liverseg_helpers.inference import precision, predict

    paths = save_disagreeing_axial_and_coronal_members(tmp_path)
    liver = ellipsoid(shape=(60, 60, 50), centre=(30.0, 25.0, 30.0))
    case = Case("tall", np.where(liver, 250, -150).astype(np.int16), TALL)
    converted = []
    convert = precision.convert_to_bfloat16

    def counting_convert(model):
        converted.append(model)
        return convert(model)

    monkeypatch.setattr(predict, "convert_to_bfloat16", counting_convert)
    fast = predict.predict_case(paths, case, precision="bfloat16")
    assert len(converted) == 2  # one per member, though the axial one ran in two parts
    slow = predict.predict_case(paths, case, precision="float32")
    assert np.abs(fast.probs - slow.probs).max() < 0.02
    assert 2 * (fast.pred & slow.pred).sum() / (fast.pred.sum() + slow.pred.sum()) > 0.99
