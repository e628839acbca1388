"""Tests of the slice cache, tf.data / PyDataset pipelines and augmentation."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

import liverseg_helpers.io as lio
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import dataset, slice_cache
from liverseg_helpers.preparation.augment import AugmentSettings, augment_batch_numpy
from liverseg_helpers.preparation.preprocess import PreprocessSettings

matplotlib.use("Agg")

SETTINGS = PreprocessSettings(image_size=32)
NO_INTENSITY = AugmentSettings(
    gamma_min=1.0, gamma_max=1.0, contrast=0.0, brightness=0.0, noise_std_max=0.0
)


def make_case(case_id: str = "p1", n_slices: int = 16, size: int = 48, liver: bool = True) -> Case:
    """Sphere 'liver' (60 HU) on slices 5..11 with a small 'tumour' (0 HU) in it."""
    z, y, x = np.mgrid[:n_slices, :size, :size]
    r2 = ((y - size / 2) ** 2 + (x - size / 2) ** 2) / (size / 4) ** 2
    liver_mask = (((z - 8) / 4) ** 2 + r2 < 1) & liver
    tumour_mask = liver_mask & (r2 < 0.1)
    volume = np.where(liver_mask, 60, -100).astype(np.int16)
    volume[tumour_mask] = 0
    return Case(
        case_id, volume, (2.0, 1.0, 1.0), masks={"liver": liver_mask, "tumour": tumour_mask}
    )


def test_cache_holds_liver_slices_plus_share(tmp_path):
    case = make_case()
    folder = slice_cache.build_slice_cache([case], SETTINGS, tmp_path, seed=0)
    assert folder.parent == tmp_path and folder.name.startswith("liver_")
    n_liver = int(case.masks["liver"].any(axis=(1, 2)).sum())
    with np.load(folder / "p1.npz") as data:
        assert data["images"].dtype == np.float16 and data["masks"].dtype == np.uint8
        indices = data["slice_indices"]
    assert len(indices) == n_liver + int(np.ceil(0.25 * n_liver))
    x, y = slice_cache.load_cached_slices(folder, ["p1"], settings=SETTINGS, target="liver")
    assert x.shape == (len(indices), 32, 32, 1) and x.dtype == np.float32
    assert y.shape == (len(indices), 32, 32, 1) and set(np.unique(y)) == {0, 1}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["settings"] == SETTINGS.to_dict() and manifest["cases"]["p1"][
        "n_slices"
    ] == len(x)


def test_cache_reused_when_unchanged_rebuilt_when_settings_change(tmp_path):
    case = make_case()
    folder = slice_cache.build_slice_cache([case], SETTINGS, tmp_path)
    stamp = (folder / "p1.npz").stat().st_mtime_ns
    assert slice_cache.build_slice_cache([case], SETTINGS, tmp_path) == folder
    assert (folder / "p1.npz").stat().st_mtime_ns == stamp  # not rewritten
    other = PreprocessSettings(image_size=32, window_level_hu=60)
    other_folder = slice_cache.build_slice_cache([case], other, tmp_path)
    assert other_folder != folder
    assert slice_cache.build_slice_cache([case], SETTINGS, tmp_path, seed=7) != folder


def test_load_with_other_settings_is_an_error(tmp_path):
    folder = slice_cache.build_slice_cache([make_case()], SETTINGS, tmp_path)
    with pytest.raises(DataError, match="manifest.json: cache built with settings"):
        slice_cache.load_cached_slices(folder, settings=PreprocessSettings(image_size=64))
    with pytest.raises(DataError, match="not in the cache"):
        slice_cache.load_cached_slices(folder, ["p9"])
    with pytest.raises(DataError, match="not a slice cache"):
        slice_cache.load_cached_slices(tmp_path)


def test_foreign_manifest_in_cache_folder_triggers_rebuild(tmp_path):
    folder = slice_cache.build_slice_cache([make_case()], SETTINGS, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["settings"]["image_size"] = 999  # as if written by other settings
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert slice_cache.build_slice_cache([make_case()], SETTINGS, tmp_path) == folder
    x, _ = slice_cache.load_cached_slices(folder, settings=SETTINGS)
    assert x.shape[1] == 32


def test_file_from_another_cache_is_an_error(tmp_path):
    folder = slice_cache.build_slice_cache([make_case()], SETTINGS, tmp_path)
    other = slice_cache.build_slice_cache(
        [make_case()], PreprocessSettings(image_size=16), tmp_path
    )
    (folder / "p1.npz").write_bytes((other / "p1.npz").read_bytes())
    with pytest.raises(DataError, match="p1.npz: belongs to another cache"):
        slice_cache.load_cached_slices(folder)


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        slice_cache.build_slice_cache([make_case()], SETTINGS, tmp_path)
    folder = next(tmp_path.iterdir())
    assert list(folder.iterdir()) == []  # no half-written npz, no temp file, no manifest
    monkeypatch.undo()
    slice_cache.build_slice_cache([make_case()], SETTINGS, tmp_path)
    assert slice_cache.load_cached_slices(folder)[0].shape[0] > 0


def test_paths_are_loaded_once_with_io(tmp_path, monkeypatch):
    calls = []

    def fake_load_case(path):
        calls.append(path)
        return make_case("from_path", n_slices=12)

    monkeypatch.setattr(lio, "load_case", fake_load_case, raising=False)
    src = tmp_path / "patient_a"
    src.mkdir()
    folder = slice_cache.build_slice_cache([src, make_case("p2")], SETTINGS, tmp_path / "cache")
    slice_cache.build_slice_cache([src], SETTINGS, tmp_path / "cache")
    assert len(calls) == 1
    (src / "image_0").write_bytes(b"rewritten in place")  # e.g. a cohort generated again
    slice_cache.build_slice_cache([src], SETTINGS, tmp_path / "cache")
    assert len(calls) == 2  # read again, not served stale from the cache
    slice_cache.build_slice_cache([src], SETTINGS, tmp_path / "cache")
    assert len(calls) == 2
    assert sorted(json.loads((folder / "manifest.json").read_text())["cases"]) == [
        "from_path",
        "p2",
    ]


def test_empty_liver_mask_or_empty_selection_is_an_error(tmp_path):
    # An empty liver mask is a lost or mis-paired mask file: refused, naming the case.
    with pytest.raises(DataError, match="b: the liver mask is empty"):
        slice_cache.build_slice_cache(
            [make_case("a"), make_case("b", liver=False)], SETTINGS, tmp_path
        )
    # Without a liver mask, slices are chosen on the target; none anywhere is an error too.
    cases = [make_case("a", liver=False), make_case("b", liver=False)]
    for case in cases:
        del case.masks["liver"]
    with pytest.raises(DataError, match=r"no slice selected in any case \(\['a', 'b'\]\)"):
        slice_cache.build_slice_cache(cases, SETTINGS, tmp_path, target="tumour")


def test_bad_cases_name_the_case(tmp_path):
    case = make_case("broken_mask")
    case.masks["liver"] = case.masks["liver"].astype(np.uint8) * 255
    with pytest.raises(DataError, match="broken_mask.*not binary"):
        slice_cache.build_slice_cache([case], SETTINGS, tmp_path)
    case = make_case("nan_ct")
    case.volume = case.volume.astype(np.float32)
    case.volume[3, 0, 0] = np.nan
    with pytest.raises(DataError, match="nan_ct: 1 NaN/infinite HU"):
        slice_cache.build_slice_cache([case], SETTINGS, tmp_path)
    with pytest.raises(DataError, match="no 'vessels' mask"):
        slice_cache.build_slice_cache([make_case("c")], SETTINGS, tmp_path, target="vessels")


def test_png_case_is_cached_from_its_grey_levels(tmp_path):
    case = make_case("exported")
    case.volume = np.where(case.masks["liver"], 200, 0).astype(np.float32)  # grey levels
    case.format = "png"
    folder = slice_cache.build_slice_cache([case], SETTINGS, tmp_path)
    x, _ = slice_cache.load_cached_slices(folder, ["exported"])
    assert x.min() == 0.0  # grey 0 is black, not the window's image of 0 HU (0.375)
    assert x.max() == pytest.approx(200 / 255, abs=1e-3)


def test_tumour_target_cropped_to_liver(tmp_path):
    case = make_case()
    full = slice_cache.build_slice_cache([case], SETTINGS, tmp_path, target="tumour")
    crop = slice_cache.build_slice_cache(
        [case], SETTINGS, tmp_path, target="tumour", crop_to="liver", crop_margin_px=2
    )
    assert full.name.startswith("tumour_") and crop != full
    _, y_full = slice_cache.load_cached_slices(full, target="tumour")
    _, y_crop = slice_cache.load_cached_slices(crop, target="tumour")
    assert 0 < y_full.sum() < y_crop.sum()  # the crop zooms in on the liver
    with np.load(crop / "p1.npz") as data:
        r0, r1, c0, c1 = data["crop_box"]
    assert r1 - r0 == c1 - c0 < 48


def test_numpy_augmentation_moves_image_and_mask_together():
    x, y = _toy_xy()
    images, masks = augment_batch_numpy(x, y, np.random.default_rng(0), NO_INTENSITY)
    assert not np.array_equal(masks, y)  # something moved
    np.testing.assert_array_equal(images > 0.5, masks > 0.5)
    assert set(np.unique(masks)) <= {0.0, 1.0}


def test_plot_augmentation_grid_from_arrays():
    fig = dataset.plot_augmentation_grid(_toy_xy(), n=4, seed=0)
    assert len(fig.axes) == 8


def test_numpy_sequence_batches_and_reproducible():
    x, y = _toy_xy(10)
    seq = dataset.make_numpy_sequence(x, y, batch_size=4, seed=3)
    assert len(seq) == 3
    images, masks = seq[0]
    assert images.shape == (4, 32, 32, 1) and masks.dtype == np.float32
    again = dataset.make_numpy_sequence(x, y, batch_size=4, seed=3)[0]
    np.testing.assert_array_equal(images, again[0])
    assert seq[2][0].shape[0] == 2
    seq.on_epoch_end()
    assert not np.array_equal(seq[0][0], images)


def _toy_xy(n: int = 6, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images equal to their masks (off-centre squares), so alignment is checkable."""
    y = np.zeros((n, size, size, 1), dtype=np.uint8)
    for i in range(n):
        y[i, 4 + i % 4 : 20 + i % 4, 8:24] = 1
    return y.astype(np.float32), y


def test_check_xy_rejects_bad_arrays():
    x, y = _toy_xy()
    with pytest.raises(DataError, match="not binary"):
        dataset.make_numpy_sequence(x, y * 255, 2, seed=0)
    with pytest.raises(DataError, match="does not fit"):
        dataset.make_numpy_sequence(x, y[:3], 2, seed=0)


# --- tf.data (imports TensorFlow; a few seconds) ---------------------------------------


def test_train_ds_deterministic_and_synchronised():
    pytest.importorskip("tensorflow")
    x, y = _toy_xy(12)
    first = next(iter(dataset.make_train_ds(x, y, 4, seed=5, augment_settings=NO_INTENSITY)))
    again = next(iter(dataset.make_train_ds(x, y, 4, seed=5, augment_settings=NO_INTENSITY)))
    other = next(iter(dataset.make_train_ds(x, y, 4, seed=6, augment_settings=NO_INTENSITY)))
    images, masks = (np.asarray(t) for t in first)
    assert images.shape == (4, 32, 32, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images, np.asarray(again[0]))
    np.testing.assert_array_equal(masks, np.asarray(again[1]))
    assert not np.array_equal(images, np.asarray(other[0]))
    assert set(np.unique(masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(images > 0.5, masks > 0.5)  # same warp on both
    # Augmentation really moves things: no augmented mask equals any input mask.
    assert not any(np.array_equal(m, t) for m in masks for t in y.astype(np.float32))


def test_train_ds_intensity_changes_image_only_and_epochs_differ():
    pytest.importorskip("tensorflow")
    x, y = _toy_xy(8)
    ds = dataset.make_train_ds(x, y, 8, seed=1)
    epoch1 = [np.asarray(t) for t in next(iter(ds))]
    epoch2 = [np.asarray(t) for t in next(iter(ds))]
    assert not np.array_equal(epoch1[0], epoch2[0])  # re-augmented every epoch
    assert set(np.unique(epoch1[1])) <= {0.0, 1.0}  # masks stay binary
    assert 0.0 <= epoch1[0].min() and epoch1[0].max() <= 1.0
    plain = [np.asarray(t) for t in next(iter(dataset.make_train_ds(x, y, 8, 1, augment=False)))]
    np.testing.assert_array_equal(plain[0], plain[1])  # shuffled, but untouched
    assert sorted(plain[1].sum(axis=(1, 2, 3))) == sorted(y.sum(axis=(1, 2, 3)).astype(float))
    fig = dataset.plot_augmentation_grid(ds, n=4)
    assert len(fig.axes) == 4


def test_val_ds_is_unchanged_and_ordered():
    pytest.importorskip("tensorflow")
    x, y = _toy_xy(5)
    batches = list(dataset.make_val_ds(x, y, batch_size=2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_dataset_imports_without_tensorflow():
    code = (
        "import sys, liverseg_helpers.preparation.dataset;"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
