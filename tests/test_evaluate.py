"""Known-answer tests of the 3D metrics (evaluate.py)."""

from __future__ import annotations

import json
import math
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from liverseg_helpers.errors import DataError
from liverseg_helpers.evaluation import evaluate

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_cube(shape=(20, 24, 24), start=(5, 6, 6), side=10) -> np.ndarray:
    mask = np.zeros(shape, bool)
    z, y, x = start
    mask[z : z + side, y : y + side, x : x + side] = True
    return mask


def make_sphere(radius: float, shape=(40, 40, 40)) -> np.ndarray:
    zz, yy, xx = np.indices(shape) - (np.asarray(shape)[:, None, None, None] - 1) / 2
    return zz**2 + yy**2 + xx**2 <= radius**2


def brute_force_surface_distances(pred, gt, spacing_mm):
    """Independent reference: nearest-neighbour search between surface point clouds."""
    points_pred = np.argwhere(evaluate.extract_surface(pred)) * np.asarray(spacing_mm)
    points_gt = np.argwhere(evaluate.extract_surface(gt)) * np.asarray(spacing_mm)
    pred_to_gt = cKDTree(points_gt).query(points_pred)[0]
    gt_to_pred = cKDTree(points_pred).query(points_gt)[0]
    return pred_to_gt, gt_to_pred


def test_identical_cubes_are_perfect():
    cube = make_cube()
    m = evaluate.evaluate_masks(cube, cube, (2.5, 0.7, 0.7))
    assert m["dice"] == 1.0 and m["jaccard"] == 1.0
    assert m["voe"] == 0.0 and m["rvd"] == 0.0
    assert m["assd_mm"] == 0.0 and m["mssd_mm"] == 0.0 and m["hd95_mm"] == 0.0
    assert m["pred_volume_ml"] == pytest.approx(1000 * 2.5 * 0.7 * 0.7 / 1000)
    assert set(m) == set(evaluate.METRIC_NAMES)


@pytest.mark.parametrize("axis, shift", [(2, 1), (2, 3), (0, 2), (1, 2)])
def test_shifted_cube_known_answers(axis, shift):
    spacing_mm = (2.5, 0.7, 1.3)
    side = 10
    gt = make_cube(side=side)
    pred = np.roll(gt, shift, axis=axis)
    m = evaluate.evaluate_masks(pred, gt, spacing_mm)
    # Overlap of two side-10 cubes shifted by k along one axis: (10 - k) / 10.
    assert m["dice"] == pytest.approx((side - shift) / side)
    assert m["jaccard"] == pytest.approx((side - shift) / (side + shift))
    assert m["voe"] == pytest.approx(1 - (side - shift) / (side + shift))
    assert m["rvd"] == pytest.approx(0.0)
    # The far faces are k voxels apart along the shift axis and nothing is further apart;
    # a face is > 5 % of each surface, so HD95 equals the maximum too.
    assert m["mssd_mm"] == pytest.approx(shift * spacing_mm[axis])
    assert m["hd95_mm"] == pytest.approx(shift * spacing_mm[axis])
    pred_to_gt, gt_to_pred = brute_force_surface_distances(pred, gt, spacing_mm)
    assert m["assd_mm"] == pytest.approx(np.concatenate([pred_to_gt, gt_to_pred]).mean())
    assert 0 < m["assd_mm"] < m["mssd_mm"]


def test_distances_scale_with_spacing_of_shift_axis_only():
    gt = make_cube()
    pred = np.roll(gt, 2, axis=2)
    a = evaluate.evaluate_masks(pred, gt, (1.0, 1.0, 1.0))
    b = evaluate.evaluate_masks(pred, gt, (5.0, 5.0, 2.0))
    assert b["mssd_mm"] == pytest.approx(2 * a["mssd_mm"])
    assert b["dice"] == a["dice"]


def test_spheres_one_voxel_apart():
    gt = make_sphere(12)
    pred = make_sphere(13)
    m = evaluate.evaluate_masks(pred, gt, (1.0, 1.0, 1.0))
    assert m["assd_mm"] == pytest.approx(1.0, abs=0.3)
    assert m["hd95_mm"] == pytest.approx(1.0, abs=0.5)
    assert m["dice"] == pytest.approx(2 * 12**3 / (12**3 + 13**3), abs=0.02)
    assert m["rvd"] == pytest.approx(13**3 / 12**3 - 1, abs=0.05)


def test_hd95_matches_brute_force_on_irregular_shapes():
    rng = np.random.default_rng(0)
    gt = make_sphere(10, shape=(30, 30, 30))
    pred = gt ^ (rng.random(gt.shape) < 0.01)  # speckle: far-away islands
    spacing_mm = (1.5, 0.8, 0.8)
    m = evaluate.evaluate_masks(pred, gt, spacing_mm)
    pred_to_gt, gt_to_pred = brute_force_surface_distances(pred, gt, spacing_mm)
    want = max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95))
    assert m["hd95_mm"] == pytest.approx(want)
    assert m["mssd_mm"] == pytest.approx(max(pred_to_gt.max(), gt_to_pred.max()))


def test_empty_prediction_and_empty_truth():
    gt = make_cube()
    empty = np.zeros_like(gt)
    m = evaluate.evaluate_masks(empty, gt, (1, 1, 1))
    assert m["dice"] == 0.0 and m["voe"] == 1.0 and m["rvd"] == -1.0
    assert math.isnan(m["assd_mm"]) and math.isnan(m["hd95_mm"]) and math.isnan(m["mssd_mm"])
    m = evaluate.evaluate_masks(gt, empty, (1, 1, 1))
    assert m["dice"] == 0.0 and math.isnan(m["rvd"]) and math.isnan(m["assd_mm"])
    m = evaluate.evaluate_masks(empty, empty, (1, 1, 1))
    assert m["dice"] == 1.0 and m["assd_mm"] == 0.0 and m["true_volume_ml"] == 0.0


def test_mask_touching_the_array_border():
    gt = np.zeros((6, 8, 8), bool)
    gt[:, :4] = True
    m = evaluate.evaluate_masks(gt, gt, (1, 1, 1))
    assert m["dice"] == 1.0 and m["hd95_mm"] == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(DataError, match="shape"):
        evaluate.evaluate_masks(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)), (1, 1, 1))
    with pytest.raises(DataError, match="spacing"):
        evaluate.evaluate_masks(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), (1, 1))


def test_cohort_table_summary_skips_nan(tmp_path):
    gt = make_cube()
    cases = {
        "a": (gt, gt, (1, 1, 1)),
        "b": (np.roll(gt, 2, axis=2), gt, (1, 1, 1)),
        "c": (np.zeros_like(gt), gt, (1, 1, 1)),
    }
    df = evaluate.evaluate_cohort(cases)
    assert list(df.index) == ["a", "b", "c", "mean", "std", "n_valid"]
    assert df.loc["mean", "dice"] == pytest.approx((1.0 + 0.8 + 0.0) / 3)
    assert df.loc["mean", "mssd_mm"] == pytest.approx(1.0)  # nan of "c" skipped
    assert df.loc["n_valid", "mssd_mm"] == 2 and df.loc["n_valid", "dice"] == 3
    assert "dice" in evaluate.format_summary(df)
    path = evaluate.save_metrics_csv(df, tmp_path / "out" / "metrics.csv")
    back = pd.read_csv(path, index_col="case_id")
    assert back.loc["b", "dice"] == pytest.approx(0.8)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temp left


def test_cohort_accepts_tuples_and_metric_rows():
    gt = make_cube()
    row = {"case_id": "x", **evaluate.evaluate_masks(gt, gt, (1, 1, 1))}
    df = evaluate.evaluate_cohort([("y", gt, gt, (1, 1, 1)), row], summary=False)
    assert list(df.index) == ["y", "x"]
    with pytest.raises(DataError):
        evaluate.evaluate_cohort([])


def test_full_size_ct_evaluates_fast():
    z, y, x = np.ogrid[:150, :512, :512]
    gt = ((z - 75) / 45) ** 2 + ((y - 250) / 110) ** 2 + ((x - 200) / 120) ** 2 < 1
    pred = ((z - 76) / 45) ** 2 + ((y - 253) / 108) ** 2 + ((x - 202) / 120) ** 2 < 1
    start = time.perf_counter()
    m = evaluate.evaluate_masks(pred, gt, (1.6, 0.7, 0.7))
    assert time.perf_counter() - start < 6.0  # ~1 s alone; the machine is shared
    assert 0.9 < m["dice"] < 1.0


def test_module_does_not_import_tensorflow():
    import subprocess

    code = "import liverseg_helpers.evaluation.evaluate, liverseg_helpers.figures.viz, sys; "
    code += "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def write_nifti(mask, path, spacing_xyz=(0.7, 0.7, 1.6), origin=None, direction=None):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def test_cli_on_nifti_files(tmp_path, capsys):
    gt = make_cube()
    pred_path = write_nifti(np.roll(gt, 2, axis=2), tmp_path / "pred.nii.gz")
    gt_path = write_nifti(gt, tmp_path / "gt.nii.gz")
    assert evaluate.run_evaluate_cli(Namespace(pred=pred_path, gt=gt_path, json=True)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dice"] == pytest.approx(0.8)
    assert result["mssd_mm"] == pytest.approx(2 * 0.7)  # x spacing
    assert evaluate.run_evaluate_cli(Namespace(pred=pred_path, gt=gt_path, json=False)) == 0
    assert "hd95_mm" in capsys.readouterr().out


def test_cli_shape_mismatch_names_both_files(tmp_path):
    pred_path = write_nifti(make_cube(), tmp_path / "pred.nii.gz")
    gt_path = write_nifti(make_cube(shape=(20, 24, 30)), tmp_path / "truth.nii.gz")
    with pytest.raises(DataError, match="pred.nii.gz.*truth.nii.gz"):
        evaluate.run_evaluate_cli(Namespace(pred=pred_path, gt=gt_path, json=False))
    with pytest.raises(DataError, match="no such file"):
        evaluate.run_evaluate_cli(Namespace(pred=tmp_path / "x.nii", gt=gt_path, json=False))


@pytest.mark.parametrize(
    ("other", "problem"),
    [
        ({"spacing_xyz": (0.7, 0.7, 3.2)}, "spacing"),
        # Same array, flipped axes: after reordering to one voxel order it lies elsewhere.
        ({"direction": (-1, 0, 0, 0, -1, 0, 0, 0, 1)}, "origin .*shifted"),
        ({"origin": (0.0, 0.0, 8.0)}, "origin .*shifted"),
    ],
    ids=["spacing", "flipped", "shifted"],
)
def test_cli_refuses_masks_on_other_grids(tmp_path, other, problem):
    """Same shape is not enough: the metrics would compare the wrong voxels."""
    gt_path = write_nifti(make_cube(), tmp_path / "truth.nii.gz")
    pred_path = write_nifti(make_cube(), tmp_path / "pred.nii.gz", **other)
    with pytest.raises(
        DataError, match=f"pred.nii.gz and .*truth.nii.gz are not on the same grid: {problem}"
    ):
        evaluate.run_evaluate_cli(Namespace(pred=pred_path, gt=gt_path, json=False))


def test_cli_compares_a_mask_stored_flipped_on_the_same_anatomy(tmp_path, capsys):
    """NIfTI files may store x and y reversed (as many LiTS volumes do): same voxels in the
    world, so Dice 1, not a mismatch and not a silent comparison of mirrored arrays."""
    truth = make_cube(shape=(10, 12, 14))
    truth[:, :3, :4] = True  # not symmetric, so a mirror would not match
    gt_path = write_nifti(truth, tmp_path / "truth.nii.gz")
    nx, ny = truth.shape[2], truth.shape[1]
    far_corner = ((nx - 1) * 0.7, (ny - 1) * 0.7, 0.0)
    flipped = write_nifti(
        truth[:, ::-1, ::-1],
        tmp_path / "pred.nii.gz",
        origin=far_corner,
        direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1),
    )
    assert evaluate.run_evaluate_cli(Namespace(pred=flipped, gt=gt_path, json=True)) == 0
    assert json.loads(capsys.readouterr().out)["dice"] == 1.0


@pytest.mark.real_data
def test_cli_on_real_nrrd_masks(capsys):
    folder = SHARED_DATA / "dcmqi-ct-3slice"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder}")
    liver = folder / "liver_seg.nrrd"
    both = folder / "liver_spine_seg.nrrd"
    args = Namespace(pred=both, gt=liver, json=True)
    assert evaluate.run_evaluate_cli(args) == 0
    result = json.loads(capsys.readouterr().out)
    # Any nonzero label is foreground, so the spine (label 2) counts as false positive.
    assert 0.0 < result["dice"] < 1.0 and result["rvd"] > 0
    assert evaluate.run_evaluate_cli(Namespace(pred=liver, gt=liver, json=True)) == 0
    assert json.loads(capsys.readouterr().out)["dice"] == 1.0


def test_cli_on_case_folder(tmp_path, capsys):
    io = pytest.importorskip("liverseg_helpers.io")
    if not hasattr(io, "write_ircadb_patient") or not hasattr(io, "load_case"):
        pytest.skip("io writers/readers not available yet")
    from liverseg_helpers.io.case import Case

    gt = make_cube()
    volume = np.where(gt, 60, -100).astype(np.int16)
    case = Case("cube", volume, (2.0, 0.5, 0.5), masks={"liver": gt})
    patient = io.write_ircadb_patient(case, tmp_path / "patient")
    pred_path = write_nifti(np.roll(gt, 1, axis=0), tmp_path / "pred.nii.gz", (0.5, 0.5, 2.0))
    assert evaluate.run_evaluate_cli(Namespace(pred=pred_path, gt=patient, json=True)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dice"] == pytest.approx(0.9)
    assert result["mssd_mm"] == pytest.approx(2.0)  # one slice of 2 mm
