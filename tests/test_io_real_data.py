"""The io readers on the real CT files of ../shared/data (skipped when that folder is absent).

Expected values were read from the DICOM tags and measured once with these readers; volume
checks also require a plausible adult liver (1.0-2.5 L), so a reader bug cannot pass by
matching itself.
"""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pydicom
import pytest
from io_fixtures import DATA_DIR

from liverseg_helpers.io import (
    attach_mask,
    describe_case,
    load_case,
    load_dicom_series,
    load_ircadb_patient,
    read_nrrd_mask,
)

IRCADB = DATA_DIR / "3Dircadb1"
DCMQI = DATA_DIR / "dcmqi-ct-3slice"

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not IRCADB.is_dir(), reason=f"real data not found at {DATA_DIR}"),
]


def _tag_spacing(patient: str) -> tuple[float, float, float]:
    ds = pydicom.dcmread(IRCADB / patient / "PATIENT_DICOM" / "image_0", stop_before_pixels=True)
    return float(ds.SliceThickness), float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])


@pytest.fixture(scope="module")
def patient1():
    start = time.perf_counter()
    case = load_case(IRCADB / "3Dircadb1.1")
    return case, time.perf_counter() - start


@pytest.fixture(scope="module")
def patient7():
    return load_ircadb_patient(IRCADB / "3Dircadb1.7", extra_structures=("tumor",))


def test_patient1_grid_and_liver(patient1):
    case, seconds = patient1
    assert seconds < 15, f"loading patient 1 (CT + 8 mask structures) took {seconds:.1f} s"
    assert case.format == "ircadb" and case.shape == (129, 512, 512)
    assert case.volume.dtype == np.int16
    assert case.spacing_mm == pytest.approx(_tag_spacing("3Dircadb1.1"), rel=1e-6)
    assert case.spacing_mm == pytest.approx((1.6, 0.57, 0.57), abs=1e-6)
    liver = case.masks["liver"]
    assert int(liver.any(axis=(1, 2)).sum()) == 98
    liver_ml = case.mask_volume_ml("liver")
    assert 1000 < liver_ml < 2500
    assert liver_ml == pytest.approx(1489.4, rel=0.005)
    # air outside the body, soft tissue inside the liver
    assert case.volume.min() <= -1000
    assert 0 < np.median(case.volume[liver]) < 200


def test_patient1_seven_lesions_inside_liver(patient1):
    case, _ = patient1
    sizes = np.bincount(case.lesions.ravel(), minlength=8)[1:]
    assert len(sizes) == 7
    assert sizes.tolist() == [162337, 14464, 7192, 4859, 19426, 766, 5224]
    assert not np.any(case.masks["tumour"] & ~case.masks["liver"])
    np.testing.assert_array_equal(case.masks["tumour"], case.lesions > 0)
    info = describe_case(case)
    assert info["n_lesions"] == 7 and info["structures"]["liver"]["slices"] == 98


def test_patient7_has_no_liver_tumour(patient7):
    case = patient7
    assert case.shape == (151, 512, 512)
    assert case.spacing_mm == pytest.approx(_tag_spacing("3Dircadb1.7"), rel=1e-6)
    assert case.spacing_mm == pytest.approx((1.6, 0.782, 0.782), abs=1e-6)
    assert not case.masks["tumour"].any() and case.lesions.max() == 0
    assert int(case.masks["liver"].any(axis=(1, 2)).sum()) == 98
    liver_ml = case.mask_volume_ml("liver")
    assert 1000 < liver_ml < 2500
    assert liver_ml == pytest.approx(1430.4, rel=0.005)
    # the extrahepatic 'tumor' is loaded only on request, under its own name
    tumor = case.masks["tumor"]
    assert int(tumor.sum()) == 683556
    # measured: 683,326 voxels outside the liver (the data README says 683,528; 230 of the
    # 'tumor' voxels overlap the liver border on slices 83-100 when paired by file name)
    outside = int((tumor & ~case.masks["liver"]).sum())
    assert outside == 683326 and outside / tumor.sum() > 0.999


def test_zipped_ct_reads_fast_and_identical(patient1, tmp_path):
    # IRCAD ships the CT as PATIENT_DICOM.zip; here it is unpacked, so zip it again
    archive = tmp_path / "PATIENT_DICOM.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for p in (IRCADB / "3Dircadb1.1" / "PATIENT_DICOM").iterdir():
            zf.write(p, f"PATIENT_DICOM/{p.name}")
    start = time.perf_counter()
    case = load_dicom_series(archive)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"reading the zipped 129x512x512 CT took {seconds:.1f} s"
    np.testing.assert_array_equal(case.volume, patient1[0].volume)
    assert case.spacing_mm == pytest.approx(patient1[0].spacing_mm)


@pytest.mark.skipif(not DCMQI.is_dir(), reason=f"dcmqi example not found at {DCMQI}")
def test_dcmqi_hu_and_geometry_order():
    case = load_dicom_series(DCMQI / "ct-3slice")
    assert case.shape == (3, 512, 512)
    assert case.origin_mm[2] == pytest.approx(-128.69, abs=1e-4)  # lowest slice first
    assert case.spacing_mm == pytest.approx((1.0, 0.810547, 0.810547), abs=1e-5)
    for index, name in enumerate(["03.dcm", "02.dcm", "01.dcm"]):
        ds = pydicom.dcmread(DCMQI / "ct-3slice" / name)
        assert float(ds.RescaleIntercept) == -1024
        np.testing.assert_array_equal(case.volume[index], ds.pixel_array.astype(np.int32) - 1024)


@pytest.mark.skipif(not DCMQI.is_dir(), reason=f"dcmqi example not found at {DCMQI}")
def test_dcmqi_nrrd_attach_matches_dicom_seg():
    hd = pytest.importorskip("highdicom")
    case = load_dicom_series(DCMQI / "ct-3slice")
    mask, header = read_nrrd_mask(DCMQI / "liver_seg.nrrd")
    assert mask.shape == (3, 512, 512) and header["space origin"][2] == pytest.approx(-128.69)
    liver = attach_mask(case, DCMQI / "liver_seg.nrrd").masks["liver"]
    assert [int(s.sum()) for s in liver] == [36233, 35645, 35220]
    # the same liver as a DICOM-SEG, placed on the CT slices by its own geometry
    seg = hd.seg.segread(DCMQI / "liver.dcm").get_volume()
    affine = seg.affine
    seg_z = affine[2, 3] + affine[2, 0] * np.arange(seg.array.shape[0])
    indices = np.rint((seg_z - case.origin_mm[2]) / case.spacing_mm[0]).astype(int)
    from_seg = np.zeros(case.shape, bool)
    from_seg[indices] = seg.array[..., 0] > 0
    np.testing.assert_array_equal(liver, from_seg)
    spine = attach_mask(case, DCMQI / "liver_spine_seg.nrrd", name="spine", label=2)
    assert spine.masks["spine"].any() and not np.any(spine.masks["spine"] & liver)
