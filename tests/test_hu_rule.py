"""The liver-relative HU rule: the tumour baseline a trained stage two must beat."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg_helpers.data.phantom import make_phantom_case
from liverseg_helpers.errors import DataError
from liverseg_helpers.tumours import hu_rule, lesion_eval, tumour

# The phantom's liver is less even than a real one at its 2.8 mm pixels, so the rule needs a
# wider filter and a larger offset here than on real CT (benchmarks/tumour_hu_rule.py).
PHANTOM_RULE = dict(offset_hu=25.0, smooth_mm=8.0, erosion_px=1, min_lesion_ml=0.5)


@pytest.fixture(scope="module")
def phantom():
    """A small phantom with two lesions (phantom lesions are 25-80 HU darker than its liver)."""
    case = make_phantom_case(5, n_slices=24, size=128)
    assert case.masks["tumour"].sum() > 200
    return case


def rule_on(case, volume=None, **numbers):
    volume = case.volume if volume is None else volume
    numbers = {**PHANTOM_RULE, **numbers}
    return hu_rule.hu_rule_tumours(
        volume, case.masks["liver"], case.spacing_mm, hu_rule.HuRule(**numbers)
    )


def test_finds_the_dark_lesions_inside_the_liver(phantom):
    tumour = rule_on(phantom, min_lesion_ml=0.0)
    assert tumour.dtype == bool and tumour.shape == phantom.shape
    assert not (tumour & ~phantom.masks["liver"]).any()
    assert lesion_eval.tumour_dice(tumour, phantom.masks["tumour"]) > 0.5


def test_the_reference_is_the_patients_own_liver(phantom):
    """Shifting every HU (another calibration or contrast phase) does not move the answer."""
    brighter = phantom.volume.astype(np.int32) + 150
    assert np.array_equal(rule_on(phantom), rule_on(phantom, volume=brighter))


def test_bright_lesions_and_a_large_offset_find_nothing(phantom):
    assert not rule_on(phantom, offset_hu=1000.0).any()
    volume = phantom.volume.astype(np.int32)
    liver_median = np.median(volume[phantom.masks["liver"]])
    volume[phantom.masks["tumour"]] = liver_median + 60  # an enhancing lesion: out of reach
    found = rule_on(phantom, volume=volume)
    assert not (found & phantom.masks["tumour"]).any()


def test_small_components_are_dropped(phantom):
    kept_all = rule_on(phantom, min_lesion_ml=0.0)
    kept_large = rule_on(phantom, min_lesion_ml=2.0)
    assert kept_large.sum() < kept_all.sum()
    assert not (kept_large & ~kept_all).any()


def test_bad_inputs_are_refused_with_the_problem_named(phantom):
    empty = np.zeros(phantom.shape, bool)
    with pytest.raises(DataError, match="empty"):
        hu_rule.hu_rule_tumours(phantom.volume, empty, phantom.spacing_mm)
    with pytest.raises(DataError, match="!= CT"):
        hu_rule.hu_rule_tumours(phantom.volume[:-1], phantom.masks["liver"], phantom.spacing_mm)


def test_scores_inside_the_box_equal_scores_of_the_whole_ct(phantom):
    rule = hu_rule.HuRule(**PHANTOM_RULE)
    in_box = hu_rule.score_rules(phantom, [rule])[rule]
    labels = hu_rule.rule_labels(phantom, rule)
    whole = lesion_eval.evaluate_tumours(
        labels, tumour.labels_from_case(phantom), phantom.spacing_mm
    )
    assert whole["tumour_dice"] > 0.5
    assert in_box["tumour_dice"] == pytest.approx(whole["tumour_dice"])
    assert in_box["n_detected"] == whole["n_detected"]
    assert in_box["n_false_lesions"] == whole["n_false_lesions"]


def test_rule_labels_are_a_cascade_label_map(phantom):
    rule = hu_rule.HuRule(**PHANTOM_RULE)
    labels = hu_rule.rule_labels(phantom, rule)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert np.array_equal(labels >= 1, phantom.masks["liver"])
    assert np.array_equal(labels == 2, rule_on(phantom))


def test_the_rule_is_chosen_on_the_patients_given(phantom):
    blind = hu_rule.HuRule(offset_hu=1000.0)  # finds nothing
    good = hu_rule.HuRule(**PHANTOM_RULE)
    assert hu_rule.choose_rule([phantom], [blind, good]) == good
    assert hu_rule.choose_rule([phantom], [good, blind]) == good


def test_choosing_needs_a_patient_with_a_tumour(phantom):
    tumour_free = make_phantom_case(5, n_slices=24, size=128)
    tumour_free.masks["tumour"] = np.zeros(tumour_free.shape, bool)
    with pytest.raises(DataError, match="has a tumour"):
        hu_rule.choose_rule([tumour_free])
