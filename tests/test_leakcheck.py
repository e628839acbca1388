"""Copies of a test patient's scan among extra training data (leakcheck.py, crossval's
``train_extra``): LiTS and MSD Task03 hold the 3D-IRCADb scans under other names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from liverseg_helpers import io
from liverseg_helpers.data import phantom
from liverseg_helpers.errors import DataError
from liverseg_helpers.research import crossval, leakcheck

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = {"epochs": 1, "image_size": 32, "base_filters": 4, "depth": 2, "batch_size": 8}


def write_as_lits(case: io.Case, folder: Path, number: int) -> Path:
    """Save a case as LiTS does (``volume-N`` / ``segmentation-N`` NIfTI), flipped left-right
    and head-feet and with rows and columns swapped, as a re-saved copy may be."""
    folder.mkdir(parents=True, exist_ok=True)
    turned = (slice(None, None, -1), slice(None), slice(None, None, -1))
    spacing_xyz = (case.spacing_mm[1], case.spacing_mm[2], case.spacing_mm[0])
    labels = case.masks["liver"].astype(np.uint8)
    for array, name in ((case.volume, "volume"), (labels, "segmentation")):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[turned].transpose(0, 2, 1)))
        image.SetSpacing(spacing_xyz)
        sitk.WriteImage(image, str(folder / f"{name}-{number}.nii.gz"))
    return folder / f"volume-{number}.nii.gz"


def phantom_patients(folder: Path, names: list[str], seed: int = 7) -> list[Path]:
    paths = phantom.write_phantom_cohort(folder, len(names), seed=seed, n_slices=16, size=64)
    (folder / phantom.COHORT_FILE).unlink(missing_ok=True)
    renamed = [folder / name for name in names]
    for path, new in zip(paths, renamed, strict=True):
        os.rename(path, new)
    return renamed


def test_a_turned_nifti_copy_is_found_and_another_patient_is_not(tmp_path):
    pat_a, pat_b, other = phantom_patients(tmp_path / "real", ["pat_a", "pat_b", "other"])
    copy = write_as_lits(io.load_case(pat_a), tmp_path / "lits", 1)
    fresh = write_as_lits(io.load_case(other), tmp_path / "lits", 2)
    copies = leakcheck.find_copies([copy, fresh], [pat_a, pat_b])
    assert copies == {copy: pat_a}
    a, b = leakcheck.fingerprints([pat_a, pat_b])
    assert a.shape == b.shape and a.spacing_mm == b.spacing_mm  # so only the HU values differ
    assert leakcheck.histogram_distance(a, b) > 5 * leakcheck.HISTOGRAM_TOLERANCE


def test_same_scan_needs_the_same_shape_and_spacing():
    case = io.Case("a", np.arange(-500, 500, dtype=np.int16).reshape(10, 10, 10), (2.0, 1.0, 1.0))
    print_a = leakcheck.fingerprint(case)
    assert leakcheck.same_scan(print_a, print_a)
    shorter = io.Case("b", case.volume[:9], (2.0, 1.0, 1.0))
    assert not leakcheck.same_scan(leakcheck.fingerprint(shorter), print_a)
    finer = io.Case("c", case.volume, (2.0, 0.9, 0.9))
    assert not leakcheck.same_scan(leakcheck.fingerprint(finer), print_a)


def test_fingerprints_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    (pat_a,) = phantom_patients(tmp_path / "real", ["pat_a"])
    copy = write_as_lits(io.load_case(pat_a), tmp_path / "lits", 1)
    cache = tmp_path / "prints.json"
    first = leakcheck.fingerprints([copy], cache)
    read = []
    real_load = io.load_case
    monkeypatch.setattr(io, "load_case", lambda p: read.append(p) or real_load(p))
    assert leakcheck.fingerprints([copy], cache) == first and read == []
    os.utime(copy, ns=(1, 1))  # rewritten in place
    leakcheck.fingerprints([copy], cache)
    assert read == [copy]
    assert json.loads(cache.read_text())[str(copy.resolve())]["stamp"][2] == 1


def test_folds_add_extra_patients_to_training_only():
    folds = crossval.make_loo_folds(["p1", "p2"], ["phantom_001", "phantom_002"], 1, ["volume-5"])
    assert [f["test"] for f in folds] == [["p1"], ["p2"]]
    assert all("volume-5" in f["train"] and f["val"] == ["phantom_001"] for f in folds)
    with pytest.raises(DataError, match="p2"):
        crossval.make_loo_folds(["p1", "p2"], ["phantom_001"], 0, ["p2"])


@pytest.mark.slow
def test_leave_one_out_trains_on_extra_patients_but_never_on_a_copy(tmp_path):
    pat_a, pat_b, other = phantom_patients(tmp_path / "real", ["pat_a", "pat_b", "other"], 3)
    lits = tmp_path / "lits"
    write_as_lits(io.load_case(pat_b), lits, 1)  # a test patient under another name
    write_as_lits(io.load_case(other), lits, 2)
    os.rename(other, tmp_path / "other")  # keep only pat_a and pat_b as the real patients
    out = tmp_path / "cv"
    result = crossval.run_leave_one_out(
        tmp_path / "real", out, "smoke", variants=["baseline"], overrides=TINY, train_extra=[lits]
    )
    assert sorted(result.per_fold["case_id"]) == ["pat_a", "pat_b"]
    for test in ("pat_a", "pat_b"):
        split = json.loads((out / "baseline" / f"fold_{test}" / "split.json").read_text())
        assert "volume-2" in split["train"] and "volume-1" not in split["train"]
        assert split["test"] == [test]
    record = json.loads((out / "train_extra.json").read_text())
    assert record["left_out"] == {str(lits / "volume-1.nii.gz"): str(pat_b)}
    assert record["added"] == [str(lits / "volume-2.nii.gz")]


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (real CT)")
def test_a_3dircadb_patient_saved_as_lits_is_found(tmp_path):
    patients = [SHARED_DATA / "3Dircadb1" / f"3Dircadb1.{n}" for n in (1, 7)]
    copy = write_as_lits(io.load_case(patients[1]), tmp_path / "lits", 33)
    assert leakcheck.find_copies([copy], patients) == {copy: patients[1]}


def test_the_command_takes_train_extra_for_leave_one_out_only(tmp_path):
    from liverseg_helpers import cli
    from liverseg_helpers.research import commands

    args = cli.build_parser().parse_args(
        ["crossval", "--data", "d", "--out", "o", "--train-extra", "a", "--train-extra", "b"]
    )
    assert args.train_extra == ["a", "b"]
    args.reference = ["aligned_wide"]
    with pytest.raises(DataError, match="--train-extra"):
        commands.run_crossval_cli(args)
