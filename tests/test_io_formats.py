"""NIfTI, NRRD attach, PNG folders, format detection, cohorts and ``liverseg info``."""

from __future__ import annotations

import argparse
import json

import cv2
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from io_fixtures import make_sphere_case, write_series

from liverseg_helpers.errors import DataError, OutputExistsError
from liverseg_helpers.io import (
    attach_mask,
    case_id_of,
    describe_case,
    list_case_paths,
    load_case,
    load_cohort,
    load_dicom_series,
    load_nifti_case,
    read_nrrd_mask,
    write_ircadb_patient,
    write_mask_nifti,
)
from liverseg_helpers.io.info import run_info_cli


def _write_nifti(array, path, spacing_xyz=(0.8, 0.8, 2.5), origin=(-12.5, -30.25, 100.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def _labels(case):
    return (case.masks["liver"].astype(np.uint8) + case.masks["tumour"]).astype(np.uint8)


def test_lits_pair_found_and_labels_split(tmp_path):
    case = make_sphere_case()
    _write_nifti(case.volume, tmp_path / "volume-7.nii")
    _write_nifti(_labels(case), tmp_path / "segmentation-7.nii")
    back = load_case(tmp_path / "volume-7.nii")
    assert back.format == "nifti" and back.case_id == "volume-7"
    np.testing.assert_array_equal(back.volume, case.volume)
    assert back.spacing_mm == pytest.approx((2.5, 0.8, 0.8))
    assert back.origin_mm == pytest.approx((-12.5, -30.25, 100.0))
    np.testing.assert_array_equal(back.masks["liver"], case.masks["liver"] | case.masks["tumour"])
    np.testing.assert_array_equal(back.masks["tumour"], case.masks["tumour"])
    assert back.lesions.max() == 2  # two separate cubes
    with pytest.raises(DataError, match="label map"):
        load_case(tmp_path / "segmentation-7.nii")
    assert load_nifti_case(tmp_path / "volume-7.nii", find_labels=False).masks == {}
    ct = load_case(tmp_path / "volume-7.nii", masks=False)  # what prediction reads
    assert ct.masks == {} and ct.lesions is None
    np.testing.assert_array_equal(ct.volume, case.volume)
    explicit = load_nifti_case(tmp_path / "volume-7.nii", tmp_path / "segmentation-7.nii")
    np.testing.assert_array_equal(explicit.masks["tumour"], case.masks["tumour"])


def test_labels_found_through_a_link_to_a_lits_or_msd_image(tmp_path):
    """Cross-validation cohorts link their patients; the labels stay beside the originals."""
    case = make_sphere_case()
    for folder in ("lits", "msd/imagesTr", "msd/labelsTr", "cohort"):
        (tmp_path / folder).mkdir(parents=True)
    _write_nifti(case.volume, tmp_path / "lits" / "volume-4.nii")
    _write_nifti(_labels(case), tmp_path / "lits" / "segmentation-4.nii")
    _write_nifti(case.volume, tmp_path / "msd" / "imagesTr" / "liver_4.nii.gz")
    _write_nifti(_labels(case), tmp_path / "msd" / "labelsTr" / "liver_4.nii.gz")
    (tmp_path / "cohort" / "volume-4.nii").symlink_to(tmp_path / "lits" / "volume-4.nii")
    msd_link = tmp_path / "cohort" / "liver_4.nii.gz"
    msd_link.symlink_to(tmp_path / "msd" / "imagesTr" / "liver_4.nii.gz")
    cases = load_cohort(tmp_path / "cohort")
    assert [c.case_id for c in cases] == ["liver_4", "volume-4"]
    assert [case_id_of(p) for p in list_case_paths(tmp_path / "cohort")] == ["liver_4", "volume-4"]
    for back in cases:
        np.testing.assert_array_equal(back.masks["tumour"], case.masks["tumour"])


def test_msd_layout_and_cohort(tmp_path):
    case = make_sphere_case()
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for i in (10, 2):
        _write_nifti(case.volume, tmp_path / "imagesTr" / f"liver_{i}.nii.gz")
        _write_nifti(_labels(case), tmp_path / "labelsTr" / f"liver_{i}.nii.gz")
    (tmp_path / "imagesTr" / "._liver_2.nii.gz").write_bytes(b"macOS junk")
    paths = list_case_paths(tmp_path)
    assert [p.name for p in paths] == ["liver_2.nii.gz", "liver_10.nii.gz"]
    cases = load_cohort(tmp_path)
    assert [c.case_id for c in cases] == ["liver_2", "liver_10"]
    assert cases[0].masks["tumour"].sum() == case.masks["tumour"].sum()
    with pytest.raises(DataError, match="MSD task folder"):
        load_case(tmp_path)


def test_nifti_labels_of_other_shape(tmp_path):
    case = make_sphere_case()
    _write_nifti(case.volume, tmp_path / "volume-1.nii.gz")
    _write_nifti(_labels(case)[:-1], tmp_path / "segmentation-1.nii.gz")
    with pytest.raises(DataError, match=r"segmentation-1.nii.gz: mask shape .* differs"):
        load_case(tmp_path / "volume-1.nii.gz")


def test_nifti_labels_flipped_moved_or_not_0_1_2_are_refused(tmp_path):
    """Same size and spacing is not enough: a flipped or shifted mask lies on wrong voxels."""
    case = make_sphere_case()
    _write_nifti(case.volume, tmp_path / "volume-1.nii.gz")
    labels = tmp_path / "segmentation-1.nii.gz"
    flipped = sitk.GetImageFromArray(_labels(case))
    flipped.SetSpacing((0.8, 0.8, 2.5))
    flipped.SetOrigin((-12.5, -30.25, 100.0))
    flipped.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(flipped, str(labels))
    with pytest.raises(
        DataError, match=r"segmentation-1.nii.gz: not on the CT's grid: direction .*flipped"
    ):
        load_case(tmp_path / "volume-1.nii.gz")
    _write_nifti(_labels(case), labels, origin=(-12.5, -30.25, 105.0))  # two slices off
    with pytest.raises(
        DataError, match=r"segmentation-1.nii.gz: not on the CT's grid: origin .*shifted"
    ):
        load_case(tmp_path / "volume-1.nii.gz")
    _write_nifti(_labels(case) * 127, labels)  # 0/127/254 instead of 0/1/2
    with pytest.raises(DataError, match=r"segmentation-1.nii.gz: label values \[127, 254\]"):
        load_case(tmp_path / "volume-1.nii.gz")
    _write_nifti(_labels(case), labels, origin=(-12.5, -30.25, 100.01))  # float noise: fine
    assert load_case(tmp_path / "volume-1.nii.gz").masks["liver"].any()


def test_nifti_stored_flipped_reads_in_the_dicom_axis_order(tmp_path):
    """A volume stored with x and y reversed (many LiTS files) reaches the network the way
    an axial DICOM series does, with its labels, and keeps its place in the world."""
    case = make_sphere_case()
    case.volume[:, :2, :3] = 500  # a marker in one corner: a mirror image would not match
    _write_nifti(case.volume, tmp_path / "volume-3.nii")
    _write_nifti(_labels(case), tmp_path / "segmentation-3.nii")
    rows, cols = case.volume.shape[1:]
    far_corner = (-12.5 + (cols - 1) * 0.8, -30.25 + (rows - 1) * 0.8, 100.0)
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for array, name in ((case.volume, "volume-3.nii"), (_labels(case), "segmentation-3.nii")):
        image = sitk.GetImageFromArray(array[:, ::-1, ::-1].copy())
        image.SetSpacing((0.8, 0.8, 2.5))
        image.SetOrigin(far_corner)
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        sitk.WriteImage(image, str(flipped / name))
    plain, turned = load_case(tmp_path / "volume-3.nii"), load_case(flipped / "volume-3.nii")
    np.testing.assert_array_equal(turned.volume, plain.volume)
    np.testing.assert_array_equal(turned.masks["liver"], plain.masks["liver"])
    assert turned.direction == pytest.approx(plain.direction)
    assert turned.origin_mm == pytest.approx(plain.origin_mm)


def test_write_mask_nifti_geometry_and_overwrite(tmp_path):
    case = make_sphere_case()
    case.direction = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    path = write_mask_nifti(case.masks["liver"], case, tmp_path / "pred.nii.gz")
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), case.masks["liver"])
    assert image.GetSpacing() == pytest.approx(case.spacing_mm[::-1])
    assert image.GetOrigin() == pytest.approx(case.origin_mm)
    assert image.GetDirection() == pytest.approx(case.direction)
    with pytest.raises(OutputExistsError, match="pred.nii.gz"):
        write_mask_nifti(case.masks["liver"], case, path)
    write_mask_nifti(case.lesions, case, path, overwrite=True)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).max() == 2
    with pytest.raises(DataError, match="differs from CT shape"):
        write_mask_nifti(case.masks["liver"][1:], case, tmp_path / "bad.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.nii.gz"]


def _nrrd_for(case_dicom, mask_zyx, path, reverse=True):
    """Write mask_zyx (in the case's slice order) as NRRD, optionally with z reversed."""
    direction_z = 1.0
    origin = np.array(case_dicom.origin_mm, dtype=float)
    data = mask_zyx
    if reverse:  # index 0 = highest slice, z axis pointing down
        data = mask_zyx[::-1]
        direction_z = -1.0
        origin[2] += case_dicom.spacing_mm[0] * (case_dicom.shape[0] - 1)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag(
            [
                case_dicom.spacing_mm[2],
                case_dicom.spacing_mm[1],
                direction_z * case_dicom.spacing_mm[0],
            ]
        ),
        "space origin": origin,
    }
    nrrd.write(str(path), data.astype(np.uint8), header, index_order="C")


def test_attach_nrrd_by_position(tmp_path):
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0, 6.0])
    case = load_dicom_series(tmp_path / "ct")
    truth = np.zeros(case.shape, bool)
    truth[1, 2:4, 2:5] = True
    truth[3, 0, 0] = True
    _nrrd_for(case, truth, tmp_path / "mask.nrrd", reverse=True)
    mask, header = read_nrrd_mask(tmp_path / "mask.nrrd")
    np.testing.assert_array_equal(mask, truth[::-1])  # file order, not CT order
    assert header["space"] == "left-posterior-superior"
    attached = attach_mask(case, tmp_path / "mask.nrrd", name="liver")
    np.testing.assert_array_equal(attached.masks["liver"], truth)
    assert "liver" not in case.masks  # the input case is not modified


def test_attach_mask_mismatch_raises(tmp_path):
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0])
    case = load_dicom_series(tmp_path / "ct")
    shifted = case.__class__(**{**case.__dict__, "origin_mm": (-10.0, -20.0, 1.0)})
    _nrrd_for(shifted, np.ones(case.shape, bool), tmp_path / "half.nrrd", reverse=False)
    with pytest.raises(DataError, match=r"half.nrrd: mask slice 0 lies at CT slice index 0.50"):
        attach_mask(case, tmp_path / "half.nrrd")
    header = {"space directions": np.diag([0.7, 0.7, 2.0]), "space origin": [-10, -20, 0]}
    header["space"] = "left-posterior-superior"
    nrrd.write(str(tmp_path / "small.nrrd"), np.ones((3, 4, 4), np.uint8), header, index_order="C")
    with pytest.raises(DataError, match=r"small.nrrd: mask shape \(3, 4, 4\) differs"):
        attach_mask(case, tmp_path / "small.nrrd")


def test_png_folder(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Masks").mkdir()
    for k in (0, 2, 10):
        image = np.full((6, 5), k * 20, np.uint8)
        mask = np.zeros((6, 5), np.uint8)
        mask[1:3, 1:3] = 255
        cv2.imwrite(str(tmp_path / "Images" / f"slice_{k}.png"), image)
        cv2.imwrite(str(tmp_path / "Masks" / f"slice_{k}.png"), mask)
    case = load_case(tmp_path)
    assert case.format == "png" and case.volume.dtype == np.float32
    np.testing.assert_array_equal(case.volume[:, 0, 0], [0, 40, 200])  # 10 after 2
    assert case.masks["liver"].sum() == 3 * 4
    info = describe_case(case)
    assert info["hu_min"] is None and info["grey_max"] == 200.0
    (tmp_path / "Masks" / "slice_2.png").unlink()
    with pytest.raises(DataError, match=r"slice_2.png: missing mask"):
        load_case(tmp_path)


def test_cohort_of_ircadb_patients_and_info(tmp_path, capsys):
    for name in ("phantom_010", "phantom_002"):
        write_ircadb_patient(make_sphere_case(name), tmp_path / name)
    paths = list_case_paths(tmp_path)
    assert [p.name for p in paths] == ["phantom_002", "phantom_010"]
    with pytest.raises(DataError, match="a folder of patients"):
        load_case(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no cases found"):
        list_case_paths(tmp_path / "empty")
    case = load_case(paths[0])
    info = describe_case(case)
    liver_voxels = int(case.masks["liver"].sum())
    assert info["structures"]["liver"]["voxels"] == liver_voxels
    assert info["structures"]["liver"]["volume_ml"] == pytest.approx(
        liver_voxels * 2.5 * 0.8 * 0.8 / 1000, abs=1e-3
    )
    assert info["n_lesions"] == 2 and info["shape"] == [12, 32, 32]
    assert run_info_cli(argparse.Namespace(path=str(paths[0]), json=True)) == 0
    assert json.loads(capsys.readouterr().out)["n_slices"] == 12
    assert run_info_cli(argparse.Namespace(path=str(paths[0]), json=False)) == 0
    assert "liver" in capsys.readouterr().out


def test_mask_file_is_not_a_case(tmp_path):
    (tmp_path / "liver.nrrd").write_bytes(b"NRRD0004\n")
    with pytest.raises(DataError, match="attach_mask"):
        load_case(tmp_path / "liver.nrrd")
