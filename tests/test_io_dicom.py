"""DICOM series reading: geometry order, HU rescale, zips, and every bad-input error."""

from __future__ import annotations

import zipfile

import numpy as np
import pydicom
import pytest
from io_fixtures import make_ct_slice, write_series

from liverseg_helpers.errors import DataError, DicomSeriesError, UnsafeArchiveError
from liverseg_helpers.io import load_case, load_dicom_series
from liverseg_helpers.io.files import CaseNotFoundError


def test_slices_sorted_by_position_not_name(tmp_path):
    # slice_0 is the highest slice: name order and geometry disagree on purpose
    write_series(tmp_path / "ct", [4.0, 0.0, 2.0, 6.0])
    case = load_dicom_series(tmp_path / "ct")
    assert case.shape == (4, 8, 8)
    # stored value = z*10 + 1024, intercept -1024 -> HU = z*10
    np.testing.assert_array_equal(case.volume[:, 0, 0], [0, 20, 40, 60])
    assert case.volume.dtype == np.int16
    assert case.spacing_mm == pytest.approx((2.0, 0.7, 0.7))
    assert case.origin_mm == pytest.approx((-10.0, -20.0, 0.0))
    assert case.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert case.format == "dicom" and case.masks == {}


def test_fractional_rescale_gives_float32(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    for k in range(2):
        ds = make_ct_slice(float(k))
        ds.RescaleSlope = 0.5
        pydicom.dcmwrite(folder / f"s{k}", ds, enforce_file_format=True)
    case = load_dicom_series(folder)
    assert case.volume.dtype == np.float32
    assert case.volume[1, 0, 0] == pytest.approx((10 + 1024) * 0.5 - 1024)


@pytest.mark.parametrize(
    ("tag", "value", "problem"),
    [
        ("RescaleIntercept", None, "RescaleIntercept is missing"),
        ("RescaleSlope", None, "RescaleSlope is missing"),
        ("RescaleSlope", 0, "RescaleSlope is 0"),
    ],
)
def test_missing_or_zero_rescale_is_an_error_naming_the_file(tmp_path, tag, value, problem):
    """Reading stored values as HU would be off by the scanner's offset (here 1024 HU)."""
    folder = tmp_path / "ct"
    folder.mkdir()
    for k in range(2):
        ds = make_ct_slice(float(k))
        if k == 1:
            if value is None:
                delattr(ds, tag)
            else:
                setattr(ds, tag, value)
        pydicom.dcmwrite(folder / f"s{k}", ds, enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match=rf"s1: {problem}"):
        load_dicom_series(folder)


def test_zip_series_reads_like_folder(tmp_path):
    paths = write_series(tmp_path / "ct", [0.0, 1.5, 3.0])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, f"ct/{p.name}")
    from_zip = load_case(archive)
    from_folder = load_case(tmp_path / "ct")
    np.testing.assert_array_equal(from_zip.volume, from_folder.volume)
    assert from_zip.spacing_mm == pytest.approx(from_folder.spacing_mm)
    assert from_zip.case_id == "series"


def test_unsafe_zip_member_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.dcm", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"evil\.zip.*\.\./outside"):
        load_dicom_series(archive)
    with zipfile.ZipFile(tmp_path / "abs.zip", "w") as zf:
        zf.writestr("/etc/passwd", b"x")
    with pytest.raises(UnsafeArchiveError, match="abs.zip"):
        load_dicom_series(tmp_path / "abs.zip")


def test_non_ct_modality_named(tmp_path):
    write_series(tmp_path / "ct", [0.0, 1.0], modality="MR")
    with pytest.raises(DicomSeriesError, match=r"slice_0\.dcm: Modality is MR, expected CT"):
        load_dicom_series(tmp_path / "ct")


def test_missing_pixel_data_named(tmp_path):
    paths = write_series(tmp_path / "ct", [0.0, 1.0])
    ds = pydicom.dcmread(paths[1])
    del ds.PixelData
    ds.save_as(paths[1])
    with pytest.raises(DicomSeriesError, match=r"slice_1\.dcm: no pixel data"):
        load_dicom_series(tmp_path / "ct")


@pytest.mark.parametrize("n_kept", [100, 300, -200, -120, -20])
def test_truncated_file_named(tmp_path, n_kept):
    # n_kept > 0: keep the first n bytes (broken header); < 0: lose the last -n bytes (pixels)
    paths = write_series(tmp_path / "ct", [0.0, 1.0])
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:n_kept])
    with pytest.raises(DicomSeriesError, match=r"slice_0\.dcm: .*(truncated|corrupt|no pixel)"):
        load_dicom_series(tmp_path / "ct")


def test_not_dicom_file_named(tmp_path):
    write_series(tmp_path / "ct", [0.0, 1.0])
    (tmp_path / "ct" / "junk").write_bytes(b"\x00" * 300)
    with pytest.raises(DicomSeriesError, match=r"junk: not a DICOM file"):
        load_dicom_series(tmp_path / "ct")


def test_two_series_mixed(tmp_path):
    write_series(tmp_path / "ct", [0.0, 1.0], series_uid="1.2.3.1")
    for k, z in enumerate([0.5, 1.5]):
        pydicom.dcmwrite(
            tmp_path / "ct" / f"other_{k}.dcm",
            make_ct_slice(z, series_uid="1.2.3.2"),
            enforce_file_format=True,
        )
    with pytest.raises(DicomSeriesError, match=r"2 series mixed.*1\.2\.3\.1.*1\.2\.3\.2"):
        load_dicom_series(tmp_path / "ct")


def test_duplicate_position_and_gap(tmp_path):
    write_series(tmp_path / "dup", [0.0, 1.0, 1.0])
    with pytest.raises(DicomSeriesError, match="same position"):
        load_dicom_series(tmp_path / "dup")
    write_series(tmp_path / "gap", [0.0, 1.0, 2.0, 5.0, 6.0])
    with pytest.raises(DicomSeriesError, match=r"slice_3\.dcm: gap of 3\.000 mm"):
        load_dicom_series(tmp_path / "gap")


def test_slice_size_mismatch_named(tmp_path):
    write_series(tmp_path / "ct", [0.0, 1.0])
    pydicom.dcmwrite(
        tmp_path / "ct" / "big.dcm",
        make_ct_slice(2.0, pixels=np.zeros((16, 16), np.uint16)),
        enforce_file_format=True,
    )
    with pytest.raises(DicomSeriesError, match=r"big\.dcm: slice is 16x16"):
        load_dicom_series(tmp_path / "ct")


def test_empty_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DicomSeriesError, match="no DICOM files"):
        load_case(tmp_path / "empty")
    with pytest.raises(CaseNotFoundError, match="nowhere"):
        load_case(tmp_path / "nowhere")
    assert issubclass(CaseNotFoundError, DataError)


def test_corrupt_zip_named(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="broken.zip"):
        load_case(bad)
