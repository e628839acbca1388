"""Real lesions pasted into other livers (research/lesion_paste.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from liverseg_helpers import io
from liverseg_helpers.data import phantom
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.research import lesion_paste


def cube_case(case_id: str, liver_hu: float, lesion_hu: float | None) -> Case:
    """A 24-slice CT with a box-shaped liver and, optionally, one cubic lesion."""
    volume = np.full((24, 48, 48), -100.0, np.float32)
    liver = np.zeros(volume.shape, bool)
    liver[2:22, 6:42, 6:42] = True
    volume[liver] = liver_hu
    tumour = np.zeros(volume.shape, bool)
    if lesion_hu is not None:
        tumour[8:14, 16:24, 16:24] = True
        volume[tumour] = lesion_hu
    return Case(case_id, volume, (2.0, 1.0, 1.0), masks={LIVER: liver, TUMOUR: tumour})


def test_a_lesion_is_cut_out_relative_to_its_liver():
    donor = cube_case("donor", liver_hu=120.0, lesion_hu=80.0)
    (patch,) = lesion_paste.lesion_patches(donor)
    assert patch.source == "donor lesion 1" and patch.mask.sum() == 6 * 8 * 8
    assert patch.mask.shape == (8, 10, 10)  # the box and a one-voxel rim
    assert np.all(patch.relative_hu[patch.mask] == -40.0)
    assert np.all(patch.relative_hu[~patch.mask] == 0.0)  # the rim is the donor's liver
    assert lesion_paste.lesion_patches(donor, min_ml=1.0) == []  # 0.77 mL: below


def test_a_pasted_lesion_keeps_its_contrast_against_the_host_liver():
    donor = cube_case("donor", liver_hu=120.0, lesion_hu=80.0)
    host = cube_case("host", liver_hu=60.0, lesion_hu=None)
    patches = lesion_paste.lesion_patches(donor)
    case, pasted = lesion_paste.pasted_case(host, patches, 2, np.random.default_rng(0), "new")
    assert pasted and set(pasted) == {"donor lesion 1"}
    tumour = case.masks[TUMOUR]
    assert tumour.any() and not (tumour & ~case.masks[LIVER]).any()
    assert case.lesions.max() == len(pasted)
    # the lesion's core at 60 - 40 HU; its resampled edge between that and the liver
    assert case.volume[tumour].min() == pytest.approx(20.0, abs=1)
    assert np.median(case.volume[tumour]) < 40
    assert np.median(case.volume[case.masks[LIVER] & ~tumour]) == 60  # the host elsewhere
    assert case.shape[0] <= host.shape[0]  # cut to the liver's slices and a margin
    again, _ = lesion_paste.pasted_case(host, patches, 2, np.random.default_rng(0), "new")
    assert np.array_equal(again.volume, case.volume)  # the same draws, the same patient
    with pytest.raises(DataError, match="no donor lesion"):
        lesion_paste.pasted_case(host, [], 1, np.random.default_rng(0), "new")


def test_a_lesion_too_big_for_the_liver_is_refused():
    donor = cube_case("donor", liver_hu=120.0, lesion_hu=80.0)
    host = cube_case("host", liver_hu=60.0, lesion_hu=None)
    host.masks[LIVER][:] = False
    host.masks[LIVER][10:12, 20:24, 20:24] = True
    patches = lesion_paste.lesion_patches(donor)
    with pytest.raises(DataError, match="no lesion fitted in the liver of host"):
        lesion_paste.pasted_case(host, patches, 3, np.random.default_rng(0), "new")
    host.masks[LIVER][:] = False
    with pytest.raises(DataError, match="host: no liver voxel"):
        lesion_paste.pasted_case(host, patches, 3, np.random.default_rng(0), "new")


def test_pasted_patients_are_written_readable_and_never_hold_the_test_patient(tmp_path):
    donors = phantom.write_phantom_cohort(tmp_path / "real", 3, seed=3, n_slices=16, size=64)
    with_lesions = [p for p in donors[:2] if io.load_case(p).masks[TUMOUR].any()]
    assert with_lesions  # phantom_001 has lesions, phantom_002 none
    out = tmp_path / "pasted"
    paths = lesion_paste.write_pasted_patients(out, donors[:2], with_lesions, 2, 3, seed=7)
    assert [p.name for p in paths] == [
        f"pasted_{donors[0].name}_1",
        f"pasted_{donors[0].name}_2",
        f"pasted_{donors[1].name}_1",
        f"pasted_{donors[1].name}_2",
    ]
    record = json.loads((out / lesion_paste.PASTED_FILE).read_text())
    for path in paths:
        case = io.load_case(path)
        assert case.masks[TUMOUR].any() and not (case.masks[TUMOUR] & ~case.masks[LIVER]).any()
        assert record["cases"][path.name]["lesions"]
    # the same call again keeps the finished patients as they are, without reading a CT
    mtime = paths[0].stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io, "load_case", lambda path: pytest.fail(f"{path} read again"))
        again = lesion_paste.write_pasted_patients(out, donors[:2], with_lesions, 2, 3, seed=7)
    assert again == paths and paths[0].stat().st_mtime_ns == mtime
    assert json.loads((out / lesion_paste.PASTED_FILE).read_text()) == record
    with pytest.raises(DataError, match="use another folder"):
        lesion_paste.write_pasted_patients(out, donors[:2], with_lesions, 1, 3, seed=7)
    lesion_paste.check_pasted_for_fold(out, donors[2].name)
    for leaked in (donors[0].name, with_lesions[0].name):
        with pytest.raises(DataError, match="is a host or a donor"):
            lesion_paste.check_pasted_for_fold(out, leaked)


def test_a_lesion_on_non_square_pixels_is_never_turned_a_quarter():
    donor = cube_case("donor", liver_hu=120.0, lesion_hu=80.0)
    donor.masks[TUMOUR][:] = False
    donor.masks[TUMOUR][8:14, 16:20, 10:30] = True  # 4 rows by 20 columns
    (patch,) = lesion_paste.lesion_patches(donor)
    rng = np.random.default_rng(1)
    square = {lesion_paste.fit_to_host(patch, (2.0, 1.0, 1.0), rng)[1].shape[1] for _ in range(20)}
    assert max(square) > 15  # quarter turns happen on square pixels...
    for _ in range(20):  # ...but not on 1 x 0.5 mm ones, whose columns are half as wide
        _, mask = lesion_paste.fit_to_host(patch, (2.0, 1.0, 0.5), rng)
        rows, cols = mask.any(axis=(0, 2)).sum(), mask.any(axis=(0, 1)).sum()
        assert cols > 4 * rows
