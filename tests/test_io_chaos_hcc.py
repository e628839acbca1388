"""CHAOS and HCC-TACE-Seg readers, stray and gapped DICOM series, odd mask values.

Synthetic files (pydicom, OpenCV, pynrrd) cover the error paths; the real cases of
``../shared/data`` are checked against the volumes of its README (within 2 %) when present.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import cv2
import nrrd
import numpy as np
import pydicom
import pytest
from io_fixtures import DATA_DIR, make_ct_slice, make_sphere_case, write_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage, generate_uid

from liverseg_helpers.data import manifest
from liverseg_helpers.errors import DataError, DicomSeriesError
from liverseg_helpers.io import (
    describe_case,
    detect_case_format,
    list_case_paths,
    load_case,
    load_dicom_series,
    load_ircadb_patient,
    read_nrrd_mask,
    write_ircadb_patient,
)
from liverseg_helpers.io.info import run_info_cli
from liverseg_helpers.io.mask_values import odd_mask_values

CHAOS = DATA_DIR / "chaos_ct"
HCC = DATA_DIR / "hcc_tace_seg"


def write_seg(path: Path, frames: np.ndarray, z_positions: list[float]) -> None:
    """A minimal DICOM-SEG: one 8-bit binary frame per z, all naming one referenced UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SegmentationStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID = SegmentationStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SegmentationType = "SEG", "BINARY"
    ds.NumberOfFrames = len(z_positions)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    same_uid = generate_uid()  # the HCC-TACE-Seg trap: every frame names the same slice
    per_frame = []
    for z in z_positions:
        item, position, source = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [-10.0, -20.0, z]
        item.PlanePositionSequence = Sequence([position])
        source.ReferencedSOPInstanceUID = same_uid
        derivation = Dataset()
        derivation.SourceImageSequence = Sequence([source])
        item.DerivationImageSequence = Sequence([derivation])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.astype(np.uint8).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def make_hcc_patient(folder: Path, frame_z: list[float]) -> np.ndarray:
    """CT at z = 0, 2, 4, 6 (+ a stray slice at 30) and a liver SEG with frames at ``frame_z``."""
    write_series(folder / "CT", [0.0, 2.0, 4.0, 6.0, 30.0])
    frames = np.zeros((len(frame_z), 8, 8), np.uint8)
    for k in range(len(frame_z)):
        frames[k, 1 + k : 4 + k, 2:5] = 1
    write_seg(folder / "liver_seg.dcm", frames, frame_z)
    return frames


def test_stray_end_slice_dropped_with_warning(tmp_path):
    write_series(tmp_path / "ct", [30.0, 0.0, 2.0, 4.0, 6.0])
    with pytest.warns(UserWarning, match=r"slice_0\.dcm: slice lies 24\.0 mm .* dropped"):
        case = load_dicom_series(tmp_path / "ct")
    assert case.shape[0] == 4
    assert case.spacing_mm[0] == pytest.approx(2.0)
    assert case.origin_mm[2] == pytest.approx(0.0)


def test_gap_inside_series_refused(tmp_path):
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0, 30.0, 32.0, 34.0])
    with pytest.raises(DicomSeriesError, match=r"slice_3\.dcm: gap of 26\.000 mm after .*slice_2"):
        load_dicom_series(tmp_path / "ct")


def test_stray_slice_of_another_plane_does_not_set_the_order(tmp_path):
    # a coronal localizer read first must not decide the axis the axial slices sort along
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0, 6.0])
    localizer = make_ct_slice(40.0)
    localizer.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    pydicom.dcmwrite(tmp_path / "ct" / "a_localizer.dcm", localizer, enforce_file_format=True)
    with pytest.warns(UserWarning, match=r"a_localizer\.dcm: .*dropped"):
        case = load_dicom_series(tmp_path / "ct")
    assert case.shape[0] == 4 and case.direction[8] == pytest.approx(1.0)


def test_seg_frames_paired_by_position(tmp_path):
    frames = make_hcc_patient(tmp_path / "p", [6.0, 2.0])
    assert detect_case_format(tmp_path / "p") == "hcc_tace"
    with pytest.warns(UserWarning, match="stray slice"):
        case = load_case(tmp_path / "p")
    liver = case.masks["liver"]
    assert case.shape == (4, 8, 8) and "tumour" not in case.masks
    np.testing.assert_array_equal(liver[3], frames[0] > 0)  # z = 6 is slice 3
    np.testing.assert_array_equal(liver[1], frames[1] > 0)  # z = 2 is slice 1
    assert not liver[[0, 2]].any()


def test_seg_frame_matching_no_slice(tmp_path):
    make_hcc_patient(tmp_path / "p", [2.0, 5.0])
    with (
        pytest.warns(UserWarning, match="stray slice"),
        pytest.raises(DataError, match=r"liver_seg\.dcm: frame 2 at z = 5\.00 mm matches no CT"),
    ):
        load_case(tmp_path / "p")


def _make_chaos_case(folder: Path, n_masks: int, stray_value: int | None = None) -> None:
    write_series(folder / "DICOM_anon", [4.0, 2.0, 0.0])
    (folder / "Ground").mkdir()
    for k in range(n_masks):
        mask = np.zeros((8, 8), np.uint8)
        mask[k : k + 2, 1:3] = 255
        if stray_value is not None and k == 1:
            mask[7, 7] = stray_value
        cv2.imwrite(str(folder / "Ground" / f"liver_GT_{k:03d}.png"), mask)


def test_chaos_masks_pair_from_the_head_down(tmp_path):
    _make_chaos_case(tmp_path / "c", 3)
    assert detect_case_format(tmp_path / "c") == "chaos"
    case = load_case(tmp_path / "c")
    liver = case.masks["liver"]
    # mask 000 belongs to the highest slice (z = 4), the last of the feet-to-head volume
    assert case.origin_mm[2] == pytest.approx(0.0)
    assert liver[2, 0:2, 1:3].all() and liver[0, 2:4, 1:3].all()
    assert liver.sum() == 12


def test_chaos_png_count_mismatch(tmp_path):
    _make_chaos_case(tmp_path / "c", 2)
    with pytest.raises(DataError, match=r"Ground: 2 PNG masks for 3 CT slices"):
        load_case(tmp_path / "c")


def test_odd_values_in_png_mask_warn(tmp_path):
    _make_chaos_case(tmp_path / "c", 3, stray_value=7)
    with pytest.warns(UserWarning, match=r"liver_GT_001\.png: mask values \[7\] besides 0 and 255"):
        case = load_case(tmp_path / "c")
    assert case.masks["liver"].sum() == 13  # the stray voxel still counts as foreground


def test_odd_values_in_ircadb_mask_warn(tmp_path):
    out = write_ircadb_patient(make_sphere_case(), tmp_path / "p")
    path = out / "MASKS_DICOM" / "liver" / "image_6"
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[0, 0] = 7
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    with pytest.warns(UserWarning, match=r"liver/image_6: mask values \[7\] besides 0 and 255"):
        load_ircadb_patient(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean patient gives no warning
        load_ircadb_patient(write_ircadb_patient(make_sphere_case(), tmp_path / "q"))


def test_odd_values_in_nrrd_mask_warn(tmp_path):
    data = np.zeros((3, 4, 4), np.uint8)
    data[1, 1:3, 1:3] = 1
    data[2, 0, 0] = 3
    nrrd.write(str(tmp_path / "m.nrrd"), data, index_order="C")
    with pytest.warns(UserWarning, match=r"m\.nrrd: mask values \[3\] besides 0 and 1"):
        mask, _ = read_nrrd_mask(tmp_path / "m.nrrd")
    assert mask.sum() == 5
    assert odd_mask_values(data, foreground=1) == [3]
    assert odd_mask_values(data[:2], foreground=1) == []


# liver and tumour mL from ../shared/data/README.md
EXPECTED_ML = {
    "0697": (927.0, 2.4),
    "1720": (1561.0, 88.0),
    "2022": (1227.0, 1.0),
}


@pytest.mark.parametrize("patient", sorted(EXPECTED_ML))
@pytest.mark.real_data
@pytest.mark.skipif(not HCC.is_dir(), reason=f"real data not found at {DATA_DIR}")
def test_real_hcc_tace_patient(patient):
    with pytest.warns(UserWarning, match=r"dicom-00001\.dcm: slice lies .* dropped"):
        case = load_case(HCC / patient)
    liver_ml, tumour_ml = EXPECTED_ML[patient]
    assert case.format == "hcc_tace" and case.spacing_mm[0] == pytest.approx(5.0)
    assert case.mask_volume_ml("liver") == pytest.approx(liver_ml, rel=0.02)
    # 2 % of 1 mL is below one 5 mm slice's rounding in the README; allow 0.05 mL there
    assert case.mask_volume_ml("tumour") == pytest.approx(tumour_ml, rel=0.02, abs=0.05)
    liver = case.masks["liver"]
    assert not (case.masks["tumour"] & ~liver).any()
    # paired by position the mask lies on soft tissue; paired upside down, 4-5 % falls on air
    assert np.mean(case.volume[liver] < -200) < 0.005
    assert describe_case(case)["n_lesions"] >= 1


@pytest.mark.real_data
@pytest.mark.skipif(not CHAOS.is_dir(), reason=f"real data not found at {DATA_DIR}")
def test_real_chaos_case():
    case = load_case(CHAOS / "chaos_ct_1")
    assert case.shape == (78, 512, 512) and case.format == "chaos"
    assert case.spacing_mm[0] == pytest.approx(2.0)
    assert case.mask_volume_ml("liver") == pytest.approx(1417.0, rel=0.02)
    assert not case.masks["tumour"].any()  # healthy donor: an empty tumour mask, not none
    # the other pairing puts 10 % of the mask on air and lung
    assert np.mean(case.volume[case.masks["liver"]] < -200) < 0.005


@pytest.mark.real_data
@pytest.mark.skipif(not HCC.is_dir(), reason=f"real data not found at {DATA_DIR}")
def test_real_cohort_folders_listed():
    assert [p.name for p in list_case_paths(HCC)] == ["0697", "1720", "2022"]
    assert [p.name for p in list_case_paths(CHAOS)] == ["chaos_ct_1"]
    with pytest.raises(DataError, match="a folder of patients"):
        detect_case_format(HCC)


@pytest.mark.real_data
@pytest.mark.skipif(not HCC.is_dir(), reason=f"real data not found at {DATA_DIR}")
def test_real_info_of_a_cohort_folder(capsys):
    with pytest.warns(UserWarning, match="stray slice"):
        run_info_cli(argparse.Namespace(path=HCC, json=False))
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if "(hcc_tace)" in line] == [
        "0697",
        "1720",
        "2022",
    ]
    assert out.count("  tumour ") == 3


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("folder", "card", "n_hashed"), [("chaos_ct", "chaos", 78), ("hcc_tace_seg", "hcc_tace_seg", 6)]
)
@pytest.mark.skipif(not HCC.is_dir(), reason=f"real data not found at {DATA_DIR}")
def test_real_copies_verify_against_their_cards(folder, card, n_hashed):
    assert manifest.guess_dataset(DATA_DIR / folder) == card
    report = manifest.verify_dataset(DATA_DIR / folder)
    assert report.ok, report.errors
    assert report.files_hashed == n_hashed
