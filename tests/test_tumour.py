"""Cascade inference, lesion table and lesion-level scores on shapes with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import preprocess
from liverseg_helpers.tumours import lesion_eval, tumour

SPACING = (2.0, 1.0, 1.0)  # mm: one voxel = 0.002 mL


def ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    z, y, x = centre
    return (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def make_case(with_lesions=True) -> Case:
    """A sphere liver (110 HU) with two dark lesions (30 HU) and a dark blob outside it."""
    shape = (24, 48, 48)
    liver = ball(shape, (12, 24, 24), 14)
    lesions = np.zeros(shape, np.int32)
    if with_lesions:
        lesions[ball(shape, (12, 20, 20), 4)] = 1
        lesions[ball(shape, (8, 30, 30), 2)] = 2
    volume = np.full(shape, 200, np.int16)  # bright surroundings: no dark rim at the liver edge
    volume[liver] = 110
    volume[lesions > 0] = 30
    volume[ball(shape, (12, 4, 4), 3)] = 20  # a dark cyst outside the liver: never a lesion
    return Case(
        case_id="toy",
        volume=volume,
        spacing_mm=SPACING,
        origin_mm=(0.0, 0.0, 0.0),
        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
        masks={"liver": liver, "tumour": lesions > 0},
        lesions=lesions,
        source="toy",
        format="phantom",
    )


def threshold_model(size, weight, bias):
    """A 1x1-convolution 'UNet': sigmoid(weight * windowed + bias), a known answer."""
    import keras

    inputs = keras.Input((size, size, 1))
    layer = keras.layers.Conv2D(1, 1, activation="sigmoid", name="probs")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.full((1, 1, 1, 1), weight, np.float32), np.array([bias], np.float32)])
    return model


# ---- lesion table, burden --------------------------------------------------------------------


def test_lesion_table_volumes_and_centroids():
    case = make_case()
    table = tumour.lesion_table(case.lesions, SPACING)
    assert list(table.index) == [1, 2] and list(table["source_id"]) == [1, 2]
    assert table.loc[1, "voxels"] == ball(case.shape, (12, 20, 20), 4).sum()
    assert table.loc[1, "volume_ml"] == pytest.approx(table.loc[1, "voxels"] * 0.002)
    assert (table.loc[1, ["centroid_z", "centroid_y", "centroid_x"]] == [12, 20, 20]).all()
    assert table.loc[2, "slices"] == 5  # radius 2: slices 6..10


def test_lesion_table_empty_and_refuses_bool():
    table = tumour.lesion_table(np.zeros((4, 5, 5), np.int32), SPACING)
    assert len(table) == 0 and "volume_ml" in table.columns
    with pytest.raises(DataError):
        tumour.lesion_table(np.zeros((4, 5, 5), bool), SPACING)


def test_label_lesions_and_burden():
    labels = tumour.labels_from_case(make_case())
    assert set(np.unique(labels)) == {0, 1, 2}
    assert tumour.label_lesions(labels == 2).max() == 2
    liver = np.count_nonzero(labels >= 1)
    assert tumour.tumour_burden(labels) == pytest.approx(np.count_nonzero(labels == 2) / liver)
    assert tumour.tumour_burden(np.zeros((2, 2, 2), np.uint8)) == 0.0


# ---- scores ------------------------------------------------------------------------------------


def test_tumour_dice_known_answers_and_empty_conventions():
    a = np.zeros((1, 4, 4), bool)
    b = a.copy()
    assert lesion_eval.tumour_dice(a, b) == 1.0  # both empty
    b[0, 0, :2] = True
    assert lesion_eval.tumour_dice(a, b) == 0.0  # missed everything
    a[0, 0, 0] = True
    assert lesion_eval.tumour_dice(a, b) == pytest.approx(2 * 1 / 3)
    with pytest.raises(DataError):
        lesion_eval.tumour_dice(a, b[:, :2])


def test_global_dice_pools_voxels():
    big_t = np.ones((1, 10, 10), bool)
    small_t = np.zeros((1, 10, 10), bool)
    small_t[0, 0, 0] = True
    pairs = {"big": (big_t, big_t), "small": (np.zeros_like(small_t), small_t)}
    assert lesion_eval.global_dice(pairs) == pytest.approx(200 / 201)  # per case: 1.0 and 0.0
    assert lesion_eval.global_dice([(small_t & False, small_t & False)]) == 1.0


def test_match_lesions_hits_misses_and_false_alarms():
    case = make_case()
    pred = np.zeros(case.shape, bool)
    pred[ball(case.shape, (12, 21, 21), 2)] = True  # touches lesion 1
    pred[ball(case.shape, (18, 24, 24), 1)] = True  # in the liver, no lesion: false
    scores = lesion_eval.match_lesions(tumour.label_lesions(pred), case.lesions, SPACING)
    assert scores["n_true_lesions"] == 2 and scores["n_pred_lesions"] == 2
    assert scores["detected_ids"] == [1] and scores["missed_ids"] == [2]
    assert scores["lesion_recall"] == 0.5 and scores["lesion_precision"] == 0.5
    assert scores["missed_ml"] == [pytest.approx(ball(case.shape, (8, 30, 30), 2).sum() * 0.002)]


def test_tumour_free_patient_gives_defined_values():
    case = make_case(with_lesions=False)
    truth = tumour.labels_from_case(case)
    scores = lesion_eval.evaluate_tumours(truth, truth, SPACING, case.lesions)
    assert scores["tumour_dice"] == 1.0 and scores["lesion_recall"] == 1.0
    assert scores["lesion_precision"] == 1.0 and scores["burden_error"] == 0.0
    false_alarm = truth.copy()
    false_alarm[ball(case.shape, (12, 24, 24), 2)] = 2
    scores = lesion_eval.evaluate_tumours(false_alarm, truth, SPACING, case.lesions)
    assert scores["tumour_dice"] == 0.0 and scores["lesion_recall"] == 1.0
    assert scores["lesion_precision"] == 0.0 and scores["n_false_lesions"] == 1
    assert scores["burden_error"] > 0


def test_cohort_table_has_no_nan_and_pools_counts():
    with_t, without = make_case(), make_case(with_lesions=False)
    results = {
        "with": (
            tumour.labels_from_case(without),
            tumour.labels_from_case(with_t),
            SPACING,
            with_t.lesions,
        ),  # predicted no tumour: both lesions missed
        "without": (
            tumour.labels_from_case(without),
            tumour.labels_from_case(without),
            SPACING,
            None,
        ),
    }
    table = lesion_eval.evaluate_tumour_cohort(results)
    cohort = table.loc["cohort"]
    assert cohort["tumour_dice"] == pytest.approx(0.5)  # 0 and 1 (both empty)
    assert cohort["global_dice"] == 0.0 and cohort["lesion_recall"] == 0.0
    assert cohort["n_true_lesions"] == 2 and len(cohort["missed_ml"]) == 2
    numeric = table.drop(columns=["missed_ml", "global_dice"]).astype(float)
    assert not numeric.isna().any().any()


# ---- cascade -----------------------------------------------------------------------------------


def test_tumour_settings_are_one_place():
    from liverseg_helpers import config

    settings = preprocess.tumour_settings(config.get_profile("smoke"))
    assert settings.window_width_hu < preprocess.PreprocessSettings().window_width_hu
    assert settings.image_size == config.get_profile("smoke").image_size


def test_predict_tumours_finds_dark_lesions_inside_the_liver_only():
    case = make_case()
    # window L70/W200: lesion 30 HU -> 0.3, liver 110 HU -> 0.7; tumour where windowed < 0.5
    model = threshold_model(32, -40.0, 20.0)
    labels = tumour.predict_tumours(
        None, model, case, liver_mask=case.masks["liver"], min_lesion_ml=0.0
    )
    assert labels.dtype == np.uint8 and labels.shape == case.shape
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert not ((labels == 2) & ~case.masks["liver"]).any()  # the outside cyst is ignored
    scores = lesion_eval.evaluate_tumours(
        labels, tumour.labels_from_case(case), SPACING, case.lesions
    )
    assert scores["tumour_dice"] > 0.7 and scores["lesion_recall"] == 1.0


def test_predict_tumours_runs_stage_one_and_drops_small_lesions():
    case = make_case()
    liver_model = threshold_model(32, -40.0, 30.0)  # liver window: liver+lesions < 0.75 < rest
    tumour_model = threshold_model(32, -40.0, 20.0)
    labels = tumour.predict_tumours(liver_model, tumour_model, case, min_lesion_ml=0.1)
    table = tumour.lesion_table(tumour.label_lesions(labels == 2), SPACING)
    assert len(table) == 1 and table["volume_ml"].min() >= 0.1  # the 2-voxel-radius one is gone
    assert np.count_nonzero(labels >= 1) > 0.8 * case.masks["liver"].sum()


def test_predict_tumours_without_liver_and_bad_inputs(tmp_path):
    case = make_case()
    model = threshold_model(32, -40.0, 20.0)
    empty = tumour.predict_tumours(None, model, case, liver_mask=np.zeros(case.shape, bool))
    assert not empty.any()
    with pytest.raises(DataError):
        tumour.predict_tumours(None, model, case, threshold=1.5, liver_mask=case.masks["liver"])
    from liverseg_helpers.training import model_files

    path = model_files.save_model(model, tmp_path / "liver.keras", {"image_size": 32}, "liver")
    with pytest.raises(ModelFileError, match="liver.keras: its sidecar says it segments the liver"):
        tumour.predict_tumours(None, path, case, liver_mask=case.masks["liver"])


def test_repeat_foreground_slices():
    from liverseg_helpers.training import train

    x = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    y = np.array([0, 1, 0], np.uint8).reshape(3, 1, 1, 1)
    x2, y2 = train.repeat_foreground_slices(x, y, 3)
    assert x2.ravel().tolist() == [0, 1, 1, 1, 2] and y2.sum() == 3
    with pytest.raises(ValueError):
        train.repeat_foreground_slices(x, y, 0)


# ---- liverseg predict --tumours ----------------------------------------------------------------


def write_toy_models_and_ct(tmp_path):
    from liverseg_helpers import io
    from liverseg_helpers.training import model_files

    case = make_case()
    ct_path = io.write_mask_nifti(case.volume, case, tmp_path / "volume-0.nii.gz")
    liver_path = model_files.save_model(
        threshold_model(32, -40.0, 30.0), tmp_path / "liver.keras", {"image_size": 32}, "liver"
    )
    tumour_settings = {"image_size": 32, "window_level_hu": 70.0, "window_width_hu": 200.0}
    tumour_path = model_files.save_model(
        threshold_model(32, -40.0, 20.0), tmp_path / "tumour.keras", tumour_settings, "tumour"
    )
    return case, ct_path, liver_path, tumour_path


def test_predict_cli_writes_a_label_map_and_reports_lesions(tmp_path, capsys):
    import nibabel as nib

    from liverseg_helpers import cli

    case, ct_path, liver_path, tumour_path = write_toy_models_and_ct(tmp_path)
    out = tmp_path / "labels.nii.gz"
    argv = ["predict", str(ct_path), "--model", str(liver_path), "--tumours"]
    assert cli.main([*argv, "--tumour-model", str(tumour_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tumours: 1" in printed and "tumour burden:" in printed and "liver volume:" in printed
    labels = np.asarray(nib.load(out).dataobj)
    assert labels.shape == case.shape[::-1] and set(np.unique(labels)) <= {0, 1, 2}
    assert (labels == 2).sum() > 0.5 * ball(case.shape, (12, 20, 20), 4).sum()
    fast_out = tmp_path / "fast.nii.gz"  # one liver network: the same one here, the same map
    assert cli.main([*argv, "--tumour-model", str(tumour_path), "-o", str(fast_out), "--fast"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(fast_out).dataobj), labels)
    png_out = str(tmp_path / "labels_png") + "/"
    args = [*argv, "--tumour-model", str(tumour_path), "-o", png_out]
    assert cli.main(args) == 2  # a 0/1/2 label map needs NIfTI: error, exit code 2


def test_longest_axial_diameter_is_recist_not_the_equivalent_sphere():
    # A flat, elongated lesion: 31 px long (x), 5 px wide (y), 2 slices thick, 0.8 mm pixels.
    lesions = np.zeros((6, 40, 40), np.int32)
    lesions[2:4, 18:23, 4:35] = 1
    lesions[1, 19:22, 10:20] = 1  # a smaller cut above: the longest is in slices 2-3
    spacing = (5.0, 0.8, 0.8)
    table = tumour.lesion_table(lesions, spacing)
    axial = table.loc[1, "axial_diameter_mm"]
    # between the centre-to-centre length (30 px) and the corner-to-corner one (31 x 5 px)
    assert 30 * 0.8 <= axial <= np.hypot(31, 5) * 0.8
    # the sphere of the same volume is far smaller than the long axis a radiologist measures
    assert table.loc[1, "sphere_diameter_mm"] < 0.6 * axial
    # anisotropic pixels: 2 mm along x doubles the length along x
    wide = tumour.longest_axial_diameters_mm(lesions, (5.0, 0.8, 1.6))[1]
    assert wide == pytest.approx(2 * axial, rel=0.02)
    assert tumour.longest_axial_diameters_mm(np.zeros((2, 4, 4), np.int32), spacing) == {}


# ---- the tumour split ------------------------------------------------------------------------


def test_tumour_split_puts_lesion_patients_in_validation_and_keeps_the_liver_test():
    from liverseg_helpers.preparation import split as split_mod

    ids = [f"p{i:02d}" for i in range(10)]
    with_lesions = ["p01", "p03", "p04", "p07", "p08"]
    for seed in range(6):
        liver = split_mod.split_patients(ids, 2, 2, seed)
        tumour_split = split_mod.split_patients_with_lesions(ids, with_lesions, 2, 2, seed)
        assert tumour_split["test"] == liver["test"]  # unseen by both stages
        assert len(tumour_split["val"]) == 2
        assert set(tumour_split["val"]) <= set(with_lesions)
        assert set(tumour_split["train"]) & set(with_lesions)  # lesions left to learn from
        assert sorted(sum(tumour_split.values(), [])) == ids
    # Only two lesion patients outside the test set: one validates, one trains.
    few = split_mod.split_patients_with_lesions(ids, ["p01", "p02"], 3, 0, 0)
    assert len(few["val"]) == 1 and set(few["val"]) < {"p01", "p02"}
    with pytest.raises(DataError, match="need two"):
        split_mod.split_patients_with_lesions(ids, ["p01"], 2, 0, 0)
    with pytest.raises(DataError, match="not in the cohort"):
        split_mod.split_patients_with_lesions(ids, ["p01", "x"], 2, 0, 0)


def test_tumour_stage_applies_the_liver_reference_of_its_settings():
    """With ``liver_reference_hu`` the stage sees the CT shifted to its liver's median."""
    import dataclasses

    case = make_case()
    liver = case.masks["liver"]
    model = threshold_model(32, -40.0, 20.0)
    absolute = preprocess.tumour_settings(
        dataclasses.make_dataclass("Size", ["image_size", "context_slices", "non_liver_fraction"])(
            32, 0, 0.25
        )
    )
    relative = dataclasses.replace(absolute, liver_reference_hu=150.0)
    probs = tumour.predict_tumour_probs(model, relative, case.volume, liver, SPACING)
    shifted = case.volume.astype(np.float32) + (150.0 - np.median(case.volume[liver]))
    assert np.array_equal(
        probs, tumour.predict_tumour_probs(model, absolute, shifted, liver, SPACING)
    )
    unshifted = tumour.predict_tumour_probs(model, absolute, case.volume, liver, SPACING)
    assert np.abs(probs - unshifted).max() > 0.5
