"""3D-IRCADb layout: writer/reader roundtrip, name order, zips, tumour naming, bad input."""

from __future__ import annotations

import shutil
import time
import zipfile

import numpy as np
import pydicom
import pytest
from io_fixtures import make_sphere_case

from liverseg_helpers.errors import DataError, OutputExistsError
from liverseg_helpers.io import load_case, load_ircadb_patient, write_ircadb_patient


def _zip_folder(folder, archive):
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder.parent).as_posix())


def test_roundtrip_identical(tmp_path):
    case = make_sphere_case()
    out = write_ircadb_patient(case, tmp_path / "phantom_001")
    back = load_case(out)
    assert back.format == "ircadb" and back.case_id == "phantom_001"
    np.testing.assert_array_equal(back.volume, case.volume)
    assert back.volume.dtype == np.int16
    assert back.spacing_mm == pytest.approx(case.spacing_mm, rel=1e-9)
    assert back.origin_mm == pytest.approx(case.origin_mm, abs=1e-9)
    assert back.direction == pytest.approx(case.direction)
    np.testing.assert_array_equal(back.masks["liver"], case.masks["liver"])
    np.testing.assert_array_equal(back.masks["tumour"], case.masks["tumour"])
    np.testing.assert_array_equal(back.lesions, case.lesions)
    # no temporary folder left behind
    assert [p.name for p in tmp_path.iterdir()] == ["phantom_001"]


def test_written_dicom_tags(tmp_path):
    case = make_sphere_case()
    out = write_ircadb_patient(case, tmp_path / "p")
    ds = pydicom.dcmread(out / "PATIENT_DICOM" / "image_3")
    assert ds.Modality == "CT"
    assert ds.pixel_array.dtype == np.int16
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
    assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.8]
    assert float(ds.SliceThickness) == 2.5
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-12.5, -30.25, 107.5])
    assert int(ds.InstanceNumber) == 3
    mask = pydicom.dcmread(out / "MASKS_DICOM" / "livertumor02" / "image_6")
    assert mask.pixel_array.dtype == np.uint8 and set(np.unique(mask.pixel_array)) <= {0, 255}
    structures = sorted(p.name for p in (out / "MASKS_DICOM").iterdir())
    assert structures == ["liver", "livertumor01", "livertumor02"]
    # deterministic UIDs: writing again gives byte-identical files
    again = write_ircadb_patient(case, tmp_path / "q")
    assert (again / "PATIENT_DICOM" / "image_3").read_bytes() == (
        out / "PATIENT_DICOM" / "image_3"
    ).read_bytes()


def test_overwrite_rules(tmp_path):
    case = make_sphere_case()
    out = write_ircadb_patient(case, tmp_path / "p")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_ircadb_patient(case, out)
    case.volume = case.volume + 1
    write_ircadb_patient(case, out, overwrite=True)
    np.testing.assert_array_equal(load_case(out).volume, case.volume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_writer_is_fast(tmp_path):
    cases = [make_sphere_case(f"phantom_{i:03d}", shape=(32, 128, 128)) for i in range(5)]
    start = time.perf_counter()
    for case in cases:
        write_ircadb_patient(case, tmp_path / case.case_id)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"writing 5 patients of 32x128x128 took {elapsed:.1f} s"


def test_numeric_slice_order_and_zips(tmp_path):
    case = make_sphere_case(shape=(12, 16, 16))
    out = write_ircadb_patient(case, tmp_path / "p")
    # zipped PATIENT_DICOM and MASKS_DICOM, as IRCAD ships them
    _zip_folder(out / "PATIENT_DICOM", out / "PATIENT_DICOM.zip")
    _zip_folder(out / "MASKS_DICOM", out / "MASKS_DICOM.zip")
    shutil.rmtree(out / "PATIENT_DICOM")
    shutil.rmtree(out / "MASKS_DICOM")
    back = load_ircadb_patient(out)
    # image_10 and image_11 must come after image_9, not after image_1
    np.testing.assert_array_equal(back.volume, case.volume)
    np.testing.assert_array_equal(back.lesions, case.lesions)


def test_only_livertumor_counts(tmp_path):
    case = make_sphere_case()
    extra = np.zeros(case.shape, bool)
    extra[0:2, 0:4, 0:4] = True  # outside the liver, like patient 7's "tumor"
    case.masks["tumor"] = extra
    case.lesions = None
    del case.masks["tumour"]
    out = write_ircadb_patient(case, tmp_path / "p")
    back = load_ircadb_patient(out)
    assert not back.masks["tumour"].any()
    assert back.lesions is not None and back.lesions.max() == 0
    assert "tumor" not in back.masks
    with_extra = load_ircadb_patient(out, extra_structures=("tumor",))
    np.testing.assert_array_equal(with_extra.masks["tumor"], extra)
    assert not with_extra.masks["tumour"].any()


def test_the_ct_alone_leaves_the_masks_unread(tmp_path):
    """What prediction reads: the CT, without the structures (seconds for a real patient)."""
    case = make_sphere_case()
    out = write_ircadb_patient(case, tmp_path / "p")
    (out / "MASKS_DICOM" / "liver" / "image_4").unlink()  # a broken mask folder
    with pytest.raises(DataError, match="structure 'liver' lacks"):
        load_case(out)
    ct = load_case(out, masks=False)
    np.testing.assert_array_equal(ct.volume, case.volume)
    assert ct.masks == {} and ct.lesions is None
    assert ct.spacing_mm == pytest.approx(case.spacing_mm, rel=1e-9)


def test_non_numeric_slice_name(tmp_path):
    out = write_ircadb_patient(make_sphere_case(), tmp_path / "p")
    (out / "PATIENT_DICOM" / "image_3").rename(out / "PATIENT_DICOM" / "image_three")
    with pytest.raises(DataError, match=r"image_three.*has no number"):
        load_ircadb_patient(out)


def test_mask_shape_differs(tmp_path):
    out = write_ircadb_patient(make_sphere_case(), tmp_path / "p")
    small = write_ircadb_patient(make_sphere_case(shape=(12, 16, 16)), tmp_path / "small")
    target = out / "MASKS_DICOM" / "liver" / "image_4"
    shutil.copy(small / "MASKS_DICOM" / "liver" / "image_4", target)
    with pytest.raises(DataError, match=r"liver/image_4: mask shape \(16, 16\) differs"):
        load_ircadb_patient(out)


def test_mask_without_ct_slice(tmp_path):
    out = write_ircadb_patient(make_sphere_case(), tmp_path / "p")
    shutil.copy(
        out / "MASKS_DICOM" / "liver" / "image_4", out / "MASKS_DICOM" / "liver" / "image_99"
    )
    with pytest.raises(DataError, match=r"image_99: mask slice has no CT slice"):
        load_ircadb_patient(out)


def test_mask_with_a_lost_slice_file(tmp_path):
    """A lost mask file must not read as "no liver on that slice"."""
    out = write_ircadb_patient(make_sphere_case(), tmp_path / "p")
    (out / "MASKS_DICOM" / "liver" / "image_4").unlink()
    with pytest.raises(DataError, match=r"structure 'liver' lacks 1 of \d+ slices .*'image_4'"):
        load_ircadb_patient(out)


def test_empty_patient_folder(tmp_path):
    (tmp_path / "p" / "PATIENT_DICOM").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        load_case(tmp_path / "p")
