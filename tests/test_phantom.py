"""Tests of the synthetic CT phantom: determinism, anatomy, masks, difficulty, cohorts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from liverseg_helpers.config import get_profile
from liverseg_helpers.data import phantom

# Small grids keep the suite fast; the default spacing keeps the body in millimetres the same.
N_SLICES, SIZE = 32, 96
MASSES = phantom.AnatomyOptions(extrahepatic_masses=True)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def cases() -> dict[int, phantom.Case]:
    return {seed: phantom.make_phantom_case(seed, N_SLICES, SIZE) for seed in range(8)}


def test_same_seed_gives_same_case():
    first = phantom.make_phantom_case(3, N_SLICES, SIZE)
    second = phantom.make_phantom_case(3, N_SLICES, SIZE)
    np.testing.assert_array_equal(first.volume, second.volume)
    np.testing.assert_array_equal(first.masks["liver"], second.masks["liver"])
    np.testing.assert_array_equal(first.lesions, second.lesions)


def test_different_seeds_give_different_livers(cases):
    volumes_ml = [case.mask_volume_ml("liver") for case in cases.values()]
    centres = [np.argwhere(case.masks["liver"]).mean(axis=0) for case in cases.values()]
    assert np.std(volumes_ml) > 50  # mL
    assert np.ptp(np.array(centres), axis=0).max() > 1.5  # voxels
    assert dice(cases[0].masks["liver"], cases[1].masks["liver"]) < 0.95


def test_case_format_and_geometry(cases):
    case = cases[0]
    assert case.case_id == "phantom_000" and case.format == "phantom"
    assert case.volume.dtype == np.int16 and case.shape == (N_SLICES, SIZE, SIZE)
    assert case.lesions.dtype == np.int32 and case.lesions.shape == case.shape
    assert set(case.masks) == {"liver", "tumour"}
    assert all(m.dtype == bool and m.shape == case.shape for m in case.masks.values())
    assert case.spacing_mm == pytest.approx(phantom.default_spacing_mm(N_SLICES, SIZE))
    body_width_mm = np.count_nonzero(case.volume[N_SLICES // 2, SIZE // 2] > -500)
    assert 280 < body_width_mm * case.spacing_mm[2] < 360


def test_tissue_hu_ranges(cases):
    for case in cases.values():
        volume, liver, tumour = case.volume, case.masks["liver"], case.masks["tumour"]
        assert np.median(volume[liver & ~tumour]) == pytest.approx(87, abs=35)  # 55-120 HU
        assert np.median(volume[:, :3, :3]) < -950  # air in the corner
        assert volume.max() > 400  # cortical bone
        soft = volume[(volume > -200) & (volume < -50)]
        assert soft.size > 0.02 * volume.size  # subcutaneous and visceral fat
        if tumour.any():
            assert np.median(volume[tumour]) < np.median(volume[liver & ~tumour]) - 10


def test_masks_are_consistent(cases):
    for case in cases.values():
        liver, tumour, labels = case.masks["liver"], case.masks["tumour"], case.lesions
        assert not (tumour & ~liver).any()  # liver mask contains its tumours
        np.testing.assert_array_equal(tumour, labels > 0)
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        slices = np.flatnonzero(liver.any(axis=(1, 2)))
        assert slices.size == slices[-1] - slices[0] + 1  # contiguous along z
        assert slices.size < N_SLICES  # some slices without liver
        areas = liver.sum(axis=(1, 2))[slices]
        assert areas.argmax() not in (0, slices.size - 1)  # biggest in the middle


def test_liver_volume_is_plausible(cases):
    for case in cases.values():
        assert 1000 < case.mask_volume_ml("liver") < 2500


def test_lesion_counts_vary(cases):
    counts = [int(case.lesions.max()) for case in cases.values()]
    assert min(counts) == 0 and max(counts) >= 3
    no_lesions = phantom.make_phantom_case(1, N_SLICES, SIZE, lesions=False)
    assert not no_lesions.masks["tumour"].any() and no_lesions.lesions.max() == 0


def test_threshold_is_not_enough(cases):
    """A liver HU window must not segment the liver (measured: Dice 0.18-0.47 for 0-100 HU)."""
    for case in cases.values():
        volume, liver = case.volume, case.masks["liver"]
        assert dice((volume >= 0) & (volume <= 100), liver) < 0.6
        # Even knowing this patient's liver HU does not solve it (measured at most ~0.67).
        oracle = np.abs(volume - np.median(volume[liver])) <= 40
        assert dice(oracle, liver) < 0.8


def plain_and_changed(cases: dict, anatomy, seeds=range(6)):
    """``(plain, with anatomy)`` phantom pairs drawn from the same seeds (plain: the fixture)."""
    for seed in seeds:
        yield cases[seed], phantom.make_phantom_case(seed, N_SLICES, SIZE, anatomy=anatomy)


def test_extrahepatic_masses_are_dark_and_never_liver(cases):
    """With extrahepatic masses some seeds lose liver to a hypodense mass; others are unchanged."""
    carved = []
    for plain, with_mass in plain_and_changed(cases, MASSES):
        liver = with_mass.masks["liver"]
        assert not (liver & ~plain.masks["liver"]).any()  # a mass only removes liver
        lost = plain.masks["liver"] & ~liver
        carved.append(lost.sum())
        if lost.sum() > 100:
            core = lost & (with_mass.volume < 400)  # not bone
            liver_hu = np.median(with_mass.volume[liver & ~with_mass.masks["tumour"]])
            assert np.median(with_mass.volume[core]) < liver_hu - 10  # darker than liver
    assert 0 < sum(c > 100 for c in carved) < len(carved)  # in some patients, not all


def test_long_left_lobes_reach_further_left(cases):
    """Column 0 is the patient's right, so a longer left lobe reaches a higher column."""
    lobe = phantom.AnatomyOptions(long_left_lobe=True)
    longer = 0
    for plain, with_tail in plain_and_changed(cases, lobe):
        reach_mm = [
            np.flatnonzero(c.masks["liver"].any(axis=(0, 1))).max() * phantom.FOV_MM / SIZE
            for c in (plain, with_tail)
        ]
        longer += reach_mm[1] > reach_mm[0] + 10
    assert longer >= 2


def test_enhanced_livers_are_brighter_with_the_same_shapes(cases):
    """Only the liver's (and lesions') HU range changes: masks stay those of the plain seed."""
    enhanced = phantom.AnatomyOptions(enhanced_liver=True)
    medians = []
    for plain, bright in plain_and_changed(cases, enhanced):
        for name in ("liver", "tumour"):
            assert np.array_equal(plain.masks[name], bright.masks[name])
        tissue = plain.masks["liver"] & ~plain.masks["tumour"].astype(bool)
        pair = [np.median(c.volume[tissue]) for c in (plain, bright)]
        assert pair[1] >= pair[0] - 2  # the same draw, mapped onto a wider range
        medians.append(pair)
    assert max(b for _, b in medians) > 115 >= max(p for p, _ in medians) - 5


def test_large_lesions_grow_the_tumours_not_the_liver(cases):
    big = phantom.AnatomyOptions(large_lesions=True)
    volumes = []
    for plain, large in plain_and_changed(cases, big):
        assert np.array_equal(plain.masks["liver"], large.masks["liver"])
        assert not (large.masks["tumour"].astype(bool) & ~large.masks["liver"]).any()
        volumes.append([int(c.masks["tumour"].sum()) for c in (plain, large)])
    plain_total, large_total = np.sum(volumes, axis=0)
    assert large_total > 1.5 * plain_total
    assert all(b >= p for p, b in volumes)  # the same draws, each radius scaled up


def test_varied_lesions_are_darker_or_brighter_and_keep_their_shapes(cases):
    varied = phantom.AnatomyOptions(varied_lesions=True)
    contrasts = []
    for plain, other in plain_and_changed(cases, varied, seeds=range(8)):
        assert np.array_equal(plain.lesions, other.lesions)  # the same draws, other HU
        assert np.array_equal(plain.masks["liver"], other.masks["liver"])
        tissue = other.masks["liver"] & ~other.masks["tumour"].astype(bool)
        for lesion_id in range(1, int(other.lesions.max()) + 1):
            inside = other.lesions == lesion_id
            contrasts.append(np.median(other.volume[inside]) - np.median(other.volume[tissue]))
    assert min(contrasts) < -20 and max(contrasts) > 5  # hypo- and hyperdense lesions


def test_anatomy_options_name_their_folders():
    assert phantom.AnatomyOptions().suffix == "" and phantom.AnatomyOptions().changed() == {}
    assert phantom.AnatomyOptions(large_lesions=True).suffix == "_big"
    both = phantom.AnatomyOptions(extrahepatic_masses=True, long_left_lobe=True)
    assert both.suffix == "_masses_lobe" and set(both.changed()) == {
        "extrahepatic_masses",
        "long_left_lobe",
    }


def test_masses_keep_the_plain_cohort_valid(tmp_path):
    profile = get_profile("smoke", phantom_patients=1, phantom_slices=12, phantom_size=48)
    phantom.ensure_phantom_cohort(tmp_path / "plain", profile)
    assert "extrahepatic_masses" not in json.loads((tmp_path / "plain/cohort.json").read_text())
    phantom.ensure_phantom_cohort(tmp_path / "plain", profile, MASSES)  # settings differ
    assert json.loads((tmp_path / "plain/cohort.json").read_text())["extrahepatic_masses"]


def test_small_grid_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        phantom.make_phantom_case(0, n_slices=4, size=64)


def test_cohort_round_trip(tmp_path):
    io = pytest.importorskip("liverseg_helpers.io")
    paths = phantom.write_phantom_cohort(tmp_path, 2, seed=5, n_slices=16, size=64)
    assert [p.name for p in paths] == ["phantom_001", "phantom_002"]
    settings = json.loads((tmp_path / "cohort.json").read_text())
    assert settings["patients"] == ["phantom_001", "phantom_002"] and settings["size"] == 64
    expected = phantom.make_phantom_case(5, 16, 64, case_id="phantom_001")
    case = io.load_case(paths[0])
    np.testing.assert_array_equal(case.volume, expected.volume)
    np.testing.assert_array_equal(case.masks["liver"], expected.masks["liver"])
    np.testing.assert_array_equal(case.masks["tumour"], expected.masks["tumour"])
    assert case.spacing_mm == pytest.approx(expected.spacing_mm, abs=1e-3)
    assert not io.load_case(paths[1]).masks.get("tumour", np.zeros(1, bool)).any()
    with pytest.raises(FileExistsError):
        phantom.write_phantom_cohort(tmp_path, 1, seed=5, n_slices=16, size=64)


def test_ensure_reuses_complete_and_rebuilds_incomplete(tmp_path):
    profile = get_profile("smoke", phantom_patients=2, phantom_slices=12, phantom_size=48)
    phantom.ensure_phantom_cohort(tmp_path, profile)
    marker = tmp_path / "phantom_001" / "kept.txt"
    marker.write_text("reused")
    phantom.ensure_phantom_cohort(tmp_path, profile)
    assert marker.exists()  # complete cohort: nothing regenerated
    (tmp_path / "cohort.json").unlink()  # as if interrupted before the end
    phantom.ensure_phantom_cohort(tmp_path, profile)
    assert not marker.exists() and (tmp_path / "cohort.json").exists()
    bigger = get_profile("smoke", phantom_patients=3, phantom_slices=12, phantom_size=48)
    phantom.ensure_phantom_cohort(tmp_path, bigger)
    assert json.loads((tmp_path / "cohort.json").read_text())["patients"][-1] == "phantom_003"


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    args = SimpleNamespace(
        out=str(tmp_path), patients=1, seed=1, slices=8, size=32, overwrite=False
    )
    assert phantom.run_phantom_cli(args) == 0
    out = capsys.readouterr().out
    assert "phantom_001" in out and " s" in out
