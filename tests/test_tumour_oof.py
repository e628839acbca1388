"""Out-of-fold tumour probabilities: thresholds, the gated HU rule, leave-one-out choices."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg_helpers.errors import DataError
from liverseg_helpers.research import tumour_oof
from liverseg_helpers.tumours import hu_rule, lesion_eval

SPACING = (2.0, 1.0, 1.0)


def ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip((zz, yy, xx), centre, strict=True)) <= radius**2


def make_patient(probs_in_lesion=0.9, probs_in_dark_spot=0.0) -> tumour_oof.FoldPatient:
    """A liver (110 HU) with one true dark lesion and one dark spot that is not a lesion."""
    shape = (20, 48, 48)
    liver = ball(shape, (10, 24, 24), 16)
    lesion = ball(shape, (10, 18, 18), 4)
    spot = ball(shape, (10, 32, 32), 3)  # as dark as the lesion: the HU rule calls it tumour
    volume = np.where(liver, 110.0, 200.0).astype(np.float32)
    volume[lesion | spot] = 40.0
    labels = liver.astype(np.uint8)
    labels[lesion] = 2
    probs = np.zeros(shape, np.float32)
    probs[lesion] = probs_in_lesion
    probs[spot] = probs_in_dark_spot
    return tumour_oof.FoldPatient("toy", volume, liver, labels, probs, SPACING)


def test_gate_keeps_only_the_lesions_the_network_vouches_for():
    patient = make_patient(probs_in_lesion=0.6, probs_in_dark_spot=0.03)
    candidates = (patient.volume_hu < 60) & patient.liver
    assert tumour_oof.gate_lesions(candidates, patient.probs, 0.0) is candidates
    kept = tumour_oof.gate_lesions(candidates, patient.probs, 0.5)
    assert np.array_equal(kept, patient.true_labels == 2)
    assert not tumour_oof.gate_lesions(candidates, patient.probs, 0.7).any()


def test_ungated_rule_equals_the_rule_alone_and_the_gate_drops_the_false_lesion():
    patient = make_patient(probs_in_lesion=0.6, probs_in_dark_spot=0.01)
    scores = tumour_oof.score_gated_rules(patient, gates=(0.0, 0.2))
    rule = hu_rule.HuRule(offset_hu=30.0, smooth_mm=2.0, erosion_px=0, min_lesion_ml=0.2)
    alone = hu_rule.hu_rule_tumours(patient.volume_hu, patient.liver, SPACING, rule)
    assert scores[(rule, 0.0)]["n_false_lesions"] == 1
    assert scores[(rule, 0.0)]["tumour_dice"] == pytest.approx(
        lesion_eval.tumour_dice(alone, patient.true_labels == 2)
    )
    assert scores[(rule, 0.2)]["n_false_lesions"] == 0
    assert scores[(rule, 0.2)]["n_detected"] == 1


def test_thresholds_score_the_probabilities():
    scores = tumour_oof.score_thresholds(make_patient(probs_in_lesion=0.25))
    assert scores[0.5]["tumour_dice"] == 0.0 and scores[0.5]["n_detected"] == 0
    assert scores[0.2]["tumour_dice"] == pytest.approx(1.0)
    assert scores[0.02]["n_false_lesions"] == 0


def test_each_patient_is_scored_with_the_choice_best_on_the_others():
    def dice(value):
        return {"tumour_dice": value}

    scores = {
        "a": {0.5: dice(0.9), 0.1: dice(0.0)},
        "b": {0.5: dice(0.1), 0.1: dice(0.2)},
        "c": {0.5: dice(0.1), 0.1: dice(0.3)},
    }
    chosen = lesion_eval.choose_leave_one_out(scores, ["a", "b", "c"])
    assert chosen == {"a": 0.1, "b": 0.5, "c": 0.5}  # a's own 0.9 never chooses for a
    with pytest.raises(DataError, match="two patients"):
        lesion_eval.choose_leave_one_out(scores, ["a"])


def test_choices_table_has_every_way_and_the_oracle():
    patients = {
        "p1": make_patient(probs_in_lesion=0.25, probs_in_dark_spot=0.01),
        "p2": make_patient(probs_in_lesion=0.35, probs_in_dark_spot=0.0),
    }
    scored = {
        "threshold": {k: tumour_oof.score_thresholds(p) for k, p in patients.items()},
        "gated rule": {k: tumour_oof.score_gated_rules(p, (0.0, 0.2)) for k, p in patients.items()},
    }
    table = tumour_oof.choose_and_score(scored)
    assert set(table["way"]) == {"threshold", "gated rule", "own best threshold"}
    thresholds = table[table["way"] == "threshold"].set_index("patient")["choice"]
    assert thresholds["p1"] == "p > 0.3"  # best on p2 (0.35 inside): too high for p1's 0.25
    assert table.set_index(["way", "patient"]).loc[("threshold", "p1"), "tumour_dice"] == 0.0
    summary = tumour_oof.summary(table)
    assert summary["own best threshold"]["mean_tumour_dice"] == pytest.approx(1.0)


def test_a_folder_without_finished_folds_is_refused(tmp_path):
    with pytest.raises(DataError, match="no finished fold"):
        tumour_oof.run_tumour_oof(tmp_path)
