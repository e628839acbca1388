"""Tests of liverseg_helpers.preparation: preprocess and split (no TensorFlow needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liverseg_helpers.config import get_profile
from liverseg_helpers.errors import DataError
from liverseg_helpers.preparation import preprocess as pp

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_sphere_volume(n_slices: int = 16, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A 'liver' sphere of 60 HU in -100 HU 'fat' (int16 HU, bool mask)."""
    z, y, x = np.mgrid[:n_slices, :size, :size]
    mask = ((z - n_slices / 2) / (n_slices / 4)) ** 2 + (
        (y - size / 2) ** 2 + (x - size / 2) ** 2
    ) / (size / 4) ** 2 < 1
    return np.where(mask, 60, -100).astype(np.int16), mask


def test_window_hu_known_values():
    hu = np.array([-1000, -150, 50, 250, 3000], dtype=np.int16)
    out = pp.window_hu(hu)  # liver window W 400 / L 50: -150..250 HU
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(pp.window_hu(hu, level_hu=40, width_hu=80)[1:3], [0.0, 0.625])


def test_apply_clahe_keeps_range_and_raises_contrast():
    rng = np.random.default_rng(0)
    images = (0.45 + 0.05 * rng.random((2, 64, 64))).astype(np.float32)  # low contrast
    out = pp.apply_clahe(images, clip_limit=4.0, tile_grid=4)
    assert out.shape == images.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 2 * images.std()
    assert pp.apply_clahe(images[0]).shape == (64, 64)


def test_resize_linear_for_images_nearest_for_masks():
    images = np.full((3, 64, 48), 0.25, dtype=np.float32)
    resized = pp.resize_slices(images, 32)
    assert resized.shape == (3, 32, 32)
    np.testing.assert_allclose(resized, 0.25, atol=1e-6)
    _, mask = make_sphere_volume(4, 64)
    small = pp.resize_mask(mask, (16, 24))
    assert small.shape == (4, 16, 24) and small.dtype == np.uint8
    assert set(np.unique(small)) <= {0, 1}


def test_add_context_channels_replicates_edges():
    images = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 2), np.float32)
    stacked = pp.add_context_channels(images, 1)
    assert stacked.shape == (4, 2, 2, 3)
    np.testing.assert_array_equal(stacked[:, 0, 0], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    assert pp.add_context_channels(images, 0).shape == (4, 2, 2, 1)


@pytest.mark.parametrize("context_slices", [0, 2])
def test_preprocess_volume_shape_and_range(context_slices):
    volume, mask = make_sphere_volume(10, 48)
    settings = pp.PreprocessSettings(image_size=32, context_slices=context_slices, clahe=True)
    x = pp.preprocess_volume(volume, settings)
    assert x.shape == (10, 32, 32, 1 + 2 * context_slices) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    y = pp.preprocess_mask(mask, settings)
    assert y.shape == (10, 32, 32, 1) and y.dtype == np.uint8


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_preprocess_volume_rejects_non_finite_hu(bad):
    volume = make_sphere_volume()[0].astype(np.float32)
    volume[5, 3, 3] = bad
    with pytest.raises(DataError, match=r"case_7: 1 NaN/infinite HU values \(first in slice 5\)"):
        pp.preprocess_volume(volume, pp.PreprocessSettings(image_size=16), source="case_7")


def test_preprocess_rejects_non_binary_mask_and_wrong_ndim():
    _, mask = make_sphere_volume()
    with pytest.raises(DataError, match="case_3: mask is not binary"):
        pp.preprocess_mask(mask.astype(np.uint8) * 255, pp.PreprocessSettings(), source="case_3")
    with pytest.raises(DataError, match="expected a volume"):
        pp.preprocess_volume(np.zeros((32, 32)), pp.PreprocessSettings())


def test_resampling_to_common_spacing_known_size():
    # 32-pixel square block at 1 mm; at 2 mm it must cover 16 x 16 pixels, centred.
    mask = np.zeros((2, 64, 64), dtype=bool)
    mask[:, 16:48, 16:48] = True
    settings = pp.PreprocessSettings(image_size=48, target_spacing_mm=2.0)
    y = pp.preprocess_mask(mask, settings, spacing_mm=(3.0, 1.0, 1.0))
    assert y.shape == (2, 48, 48, 1)
    assert y[0].sum() == 16 * 16
    assert y[0, 24, 24, 0] == 1 and y[0, 2, 2, 0] == 0
    with pytest.raises(DataError, match="spacing_mm must be given"):
        pp.preprocess_volume(mask.astype(np.int16), settings)


@pytest.mark.parametrize("target_spacing_mm", [None, 0.7, 1.5])
def test_restore_slices_inverts_geometry(target_spacing_mm):
    volume, mask = make_sphere_volume(6, 64)
    spacing_mm = (2.0, 0.8, 0.8)
    settings = pp.PreprocessSettings(image_size=48, target_spacing_mm=target_spacing_mm)
    y = pp.preprocess_mask(mask, settings, spacing_mm).astype(np.float32)
    back = pp.restore_slices(y, mask.shape[1:], settings, spacing_mm) > 0.5
    assert back.shape == mask.shape
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.9


@pytest.mark.parametrize("shape", [(301, 201), (300, 201), (301, 200), (401, 250)])
def test_restore_slices_puts_each_pixel_back_in_place(shape):
    """Odd and even sides, padded (301 x 201 into 256) or cropped (401): no one-pixel shift."""
    mask = np.zeros((1, *shape), dtype=bool)
    mask[0, 100:103, 120:123] = True
    settings = pp.PreprocessSettings(image_size=256, target_spacing_mm=1.0)
    y = pp.preprocess_mask(mask, settings, spacing_mm=(2.0, 1.0, 1.0)).astype(np.float32)
    back = pp.restore_slices(y, shape, settings, (2.0, 1.0, 1.0)) > 0.5
    np.testing.assert_array_equal(back, mask)


def test_png_grey_levels_are_scaled_not_windowed_again():
    """A PNG export was windowed once; windowing its 0..255 again would squeeze it."""
    volume, _ = make_sphere_volume(4, 64)
    settings = pp.PreprocessSettings(image_size=64)
    from_hu = pp.preprocess_volume(volume, settings)
    grey = np.round(pp.window_hu(volume, 50, 400) * 255).astype(np.float32)  # the export
    from_png = pp.preprocess_volume(grey, settings, grey_levels=True)
    np.testing.assert_allclose(from_png, from_hu, atol=1 / 255)
    windowed_again = pp.preprocess_volume(grey, settings)
    assert np.abs(windowed_again - from_hu).max() > 0.3  # what used to happen
    with pytest.raises(DataError, match="sphere: grey levels must lie in 0..255"):
        pp.preprocess_volume(volume.astype(np.float32), settings, source="sphere", grey_levels=True)


def test_select_slices_all_liver_plus_share():
    mask = np.zeros((30, 4, 4), dtype=bool)
    mask[10:20, 1, 1] = True
    picked = pp.select_slices(mask, 0.3, np.random.default_rng(0))
    assert len(picked) == 13 and set(range(10, 20)) <= set(picked.tolist())
    assert np.all(np.diff(picked) > 0)
    assert pp.select_slices(mask, 0.0, np.random.default_rng(0)).tolist() == list(range(10, 20))
    assert len(pp.select_slices(mask, 10.0, np.random.default_rng(0))) == 30
    assert len(pp.select_slices(np.zeros((5, 4, 4)), 0.5, np.random.default_rng(0))) == 0


def test_find_crop_box_square_with_margin():
    mask = np.zeros((3, 100, 100), dtype=bool)
    mask[1, 40:50, 30:70] = True
    box = pp.find_crop_box(mask, margin_px=5)
    r0, r1, c0, c1 = box
    assert r1 - r0 == c1 - c0 == 50  # 40 wide + 2 * 5 margin, squared
    assert (c0, c1) == (25, 75) and r0 <= 35 and r1 >= 55
    assert pp.crop_inplane(mask, box).sum() == mask.sum()
    with pytest.raises(DataError, match="empty"):
        pp.find_crop_box(np.zeros((2, 8, 8), dtype=bool))


def test_settings_round_trip_and_profile():
    settings = pp.PreprocessSettings(clahe=True, target_spacing_mm=0.8)
    assert pp.PreprocessSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(DataError, match="unknown keys"):
        pp.PreprocessSettings.from_dict({"window_level": 40})
    with pytest.raises(ValueError):
        pp.PreprocessSettings(window_width_hu=0)
    profile = get_profile("smoke")
    from_profile = pp.settings_from_profile(profile, clahe=True)
    assert from_profile.image_size == profile.image_size and from_profile.clahe


def test_split_patients_disjoint_and_reproducible():
    ids = [f"patient_{i:02d}" for i in range(12)]
    split = pp.split_patients(ids, n_val=2, n_test=3, seed=1)
    assert [len(split[k]) for k in ("train", "val", "test")] == [7, 2, 3]
    assert sorted(sum(split.values(), [])) == ids
    assert pp.split_patients(ids[::-1], 2, 3, seed=1) == split
    assert pp.split_patients(ids, 2, 3, seed=2) != split
    with pytest.raises(DataError, match="twice"):
        pp.split_patients(ids + ["patient_00"], 1, 1)
    with pytest.raises(DataError, match="need at least"):
        pp.split_patients(ids[:3], 2, 1)


def test_patient_split_puts_no_patient_on_both_sides():
    # Slices tagged with their patient: a patient-level split never shares a patient.
    n_slices = {f"p{i}": 20 + i for i in range(8)}
    split = pp.split_patients(list(n_slices), n_val=1, n_test=2, seed=0)
    side_of = {cid: side for side, ids in split.items() for cid in ids}
    slices = [(cid, k) for cid, n in n_slices.items() for k in range(n)]
    train_patients = {c for c, _ in slices if side_of[c] == "train"}
    test_patients = {c for c, _ in slices if side_of[c] == "test"}
    assert train_patients and test_patients and not train_patients & test_patients


def test_kfold_patients_each_patient_validated_once():
    ids = [f"p{i}" for i in range(7)]
    folds = pp.kfold_patients(ids, k=3, seed=0)
    assert len(folds) == 3
    assert sorted(sum((f["val"] for f in folds), [])) == sorted(ids)
    for fold in folds:
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(ids)
    with pytest.raises(DataError):
        pp.kfold_patients(ids, k=1)


def test_slice_level_leak_report_shows_the_leak():
    report = pp.slice_level_leak_report({"a": 100, "b": 80}, test_fraction=0.2, seed=0)
    assert report["n_test_slices"] == 36
    assert report["n_patients_on_both_sides"] == 2
    assert report["share_with_train_neighbour"] > 0.8  # most test slices have a train neighbour
    lone = pp.slice_level_leak_report({"a": [0, 10, 20, 30]}, test_fraction=0.5)
    assert lone["n_test_with_train_neighbour"] == 0  # no adjacent slices, no neighbour leak


def test_preprocess_imports_no_tensorflow():
    code = (
        "import sys, liverseg_helpers.preparation.preprocess, liverseg_helpers.preparation.split;"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.real_data
def test_real_ircadb_patient_preprocesses():
    folder = DATA_DIR / "3Dircadb1" / "3Dircadb1.1"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    from liverseg_helpers import io

    load = getattr(io, "load_case", None) or io.load_ircadb_patient
    case = load(folder)
    settings = pp.PreprocessSettings(image_size=128)
    x = pp.preprocess_volume(case.volume, settings, case.spacing_mm, source=case.case_id)
    y = pp.preprocess_mask(case.masks["liver"], settings, case.spacing_mm)
    assert x.shape == (129, 128, 128, 1)
    assert int(y.any(axis=(1, 2, 3)).sum()) == 98  # README: liver on 98 slices
    liver_mean = float(x[y[..., 0] == 1].mean())
    assert 0.35 < liver_mean < 0.85  # liver (~40-150 HU) sits mid-window


@pytest.mark.parametrize("size", [128, 96])
def test_resize_mask_stays_on_the_image_grid(size):
    # An off-centre block: nearest neighbour (top-left sample of each block) moved it 1.5 px.
    mask = np.zeros((1, 512, 512), dtype=np.uint8)
    mask[0, 101:299, 150:347] = 1
    small = pp.resize_mask(mask, size)
    centre_small = pp.centre_in_source_px(small[0], 512 / size)
    centre_full = np.argwhere(mask[0]).mean(axis=0)
    np.testing.assert_allclose(centre_small, centre_full, atol=0.5)
    # Growing back the way predictions are (linear, then 0.5) restores the outline to within
    # the coarse grid's steps.
    restored = pp.resize_slices(small.astype(np.float32), 512) >= 0.5
    truth = mask == 1
    assert (restored & truth).sum() / (restored | truth).sum() > 0.97


def test_resize_mask_treats_nonzero_as_foreground():
    labels = np.zeros((1, 8, 8), dtype=np.uint8)
    labels[0, :4] = 255
    small = pp.resize_mask(labels, 4)
    np.testing.assert_array_equal(small[0, :2], 1)
    np.testing.assert_array_equal(small[0, 2:], 0)


def test_read_split_without_returns_the_split_or_names_the_leaking_file(tmp_path):
    from liverseg_helpers.preparation.split import read_split_without

    path = tmp_path / "split.json"
    path.write_text('{"train": ["p2"], "val": ["p3"], "test": ["p1"]}')
    assert read_split_without(path, "p1")["train"] == ["p2"]
    with pytest.raises(DataError, match=r"split.json: test patient p3 was used in training"):
        read_split_without(path, "p3")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "split file not found"),
        ("{not json", "corrupt split file"),
        ('{"train": []}', "split file lacks"),
        ("[]", "split file lacks"),
    ],
)
def test_read_split_without_names_a_missing_or_broken_file(tmp_path, text, problem):
    from liverseg_helpers.preparation.split import read_split_without

    path = tmp_path / "split.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=rf"split.json: {problem}"):
        read_split_without(path, "p1")


def test_liver_reference_shifts_the_ct_so_livers_of_any_phase_look_alike():
    liver = np.zeros((4, 16, 16), bool)
    liver[:, 4:12, 4:12] = True
    lesion = np.zeros_like(liver)
    lesion[:, 6:8, 6:8] = True
    absolute = pp.PreprocessSettings()
    relative = pp.PreprocessSettings(liver_reference_hu=100.0)
    looks = []
    for liver_hu in (60, 120):  # an arterial-phase and a portal-venous liver
        volume = np.full(liver.shape, -100, np.int16)
        volume[liver] = liver_hu
        volume[lesion] = liver_hu - 30
        assert pp.shift_to_liver_reference(volume, liver, absolute) is volume  # off: untouched
        shifted = pp.shift_to_liver_reference(volume, liver, relative)
        assert np.median(shifted[liver]) == 100.0 and shifted[lesion].max() == 70.0
        looks.append(shifted)
    assert np.array_equal(looks[0][liver], looks[1][liver])
    with pytest.raises(DataError, match="missing or empty"):
        pp.shift_to_liver_reference(looks[0], np.zeros_like(liver), relative, "ct.nii")
    with pytest.raises(DataError, match="!= CT"):
        pp.shift_to_liver_reference(looks[0], liver[:-1], relative)


def test_liver_reference_is_saved_only_when_set():
    assert "liver_reference_hu" not in pp.PreprocessSettings().to_dict()
    settings = pp.PreprocessSettings(liver_reference_hu=100.0)
    assert pp.PreprocessSettings.from_dict(settings.to_dict()) == settings
