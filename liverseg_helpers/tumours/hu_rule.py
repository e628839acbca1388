"""A tumour baseline without learning: liver voxels clearly darker than the patient's own liver.

Most liver lesions in a portal-venous or equilibrium-phase CT take up less contrast than the
liver around them, so they are darker. :func:`hu_rule_tumours` turns that into a rule with
four numbers (:class:`HuRule`): smooth the CT in-plane (a median filter of ``smooth_mm``),
shave ``erosion_px`` pixels off the liver's border (where partial volume with fat makes every
liver darker), and call tumour every voxel darker than the liver's median HU by more than
``offset_hu``; then drop components below ``min_lesion_ml``. The liver's median sets the
reference, so the rule does not depend on the scanner's calibration or the contrast phase's
absolute HU, only on the lesion's contrast against its own liver.

A trained stage two (:mod:`liverseg_helpers.tumours.tumour`) should beat this rule.
:func:`choose_rule` picks the four numbers from :func:`rule_grid` on training patients (notebook
06 compares the rule so chosen with the network on its test patients); the research bench's
``benchmarks/tumour_hu_rule.py`` chooses them leave-one-patient-out on real CT. Lesions
brighter than the liver (an arterial-phase HCC) are out of its reach by design.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.tumours import lesion_eval
from liverseg_helpers.tumours.tumour import label_map, labels_from_case, remove_lesions_below_ml


@dataclass(frozen=True)
class HuRule:
    """The four numbers of the rule.

    Attributes:
        offset_hu: A voxel is tumour when its smoothed HU is below the liver's median by
            more than this.
        smooth_mm: Side of the in-plane median filter, in mm (rounded to an odd pixel count).
        erosion_px: Pixels shaved off the liver's border before looking (0 keeps it whole).
        min_lesion_ml: Components smaller than this (mL) are dropped.
    """

    offset_hu: float = 15.0
    smooth_mm: float = 4.0
    erosion_px: int = 2
    min_lesion_ml: float = 1.0


# The rules the research bench chooses from (benchmarks/tumour_hu_rule.py, research.tumour_oof).
GRID_OFFSETS_HU = (10, 15, 20, 25, 30, 35, 40)
GRID_SMOOTH_MM = (2.0, 4.0)
GRID_EROSION_PX = (0, 2)
GRID_MIN_LESION_ML = (0.2, 1.0)


def rule_grid() -> list[HuRule]:
    """Every rule of the research bench's grid, in a fixed order (ties go to the first)."""
    return [
        HuRule(offset, smooth, erosion, min_ml)
        for smooth, offset, erosion, min_ml in itertools.product(
            GRID_SMOOTH_MM, GRID_OFFSETS_HU, GRID_EROSION_PX, GRID_MIN_LESION_ML
        )
    ]


def liver_box(liver: np.ndarray) -> tuple[slice, slice, slice]:
    """The liver's 3D bounding box as slices (the rule never looks outside it).

    Raises:
        DataError: The liver mask is empty.
    """
    boxes = ndimage.find_objects(np.asarray(liver, dtype=np.uint8))
    if not boxes or boxes[0] is None:
        raise DataError("hu_rule: the liver mask is empty, there is no liver to look in")
    return boxes[0]


def smooth_inplane(volume_hu: np.ndarray, pixel_mm: float, smooth_mm: float) -> np.ndarray:
    """Median filter of about ``smooth_mm`` across each slice (not between slices)."""
    side = max(1, int(round(smooth_mm / pixel_mm))) | 1  # odd, so the filter is centred
    return ndimage.median_filter(np.asarray(volume_hu, dtype=np.float32), size=(1, side, side))


def threshold_smoothed(
    smoothed_hu: np.ndarray,
    liver: np.ndarray,
    spacing_mm: tuple[float, float, float],
    rule: HuRule,
) -> np.ndarray:
    """The rule on a CT already smoothed with ``rule.smooth_mm`` (so a grid of rules shares it).

    Args:
        smoothed_hu: :func:`smooth_inplane` of the CT (or of the liver's box of it).
        liver: bool mask of the same shape.
        spacing_mm: Voxel size ``(z, y, x)``.
        rule: The rule's numbers.

    Returns:
        bool tumour mask of the same shape, inside the liver.
    """
    liver = np.asarray(liver, dtype=bool)
    reference = float(np.median(smoothed_hu[liver]))
    inside = ndimage.binary_erosion(liver, iterations=rule.erosion_px) if rule.erosion_px else liver
    tumour = inside & (smoothed_hu < reference - rule.offset_hu)
    return remove_lesions_below_ml(tumour, rule.min_lesion_ml, float(np.prod(spacing_mm)) / 1000.0)


def hu_rule_tumours(
    volume_hu: np.ndarray,
    liver: np.ndarray,
    spacing_mm: tuple[float, float, float],
    rule: HuRule = HuRule(),
) -> np.ndarray:
    """Liver tumours by the rule: smoothed voxels darker than the liver's median by ``offset_hu``.

    Args:
        volume_hu: CT ``[z, y, x]`` in HU.
        liver: bool ``[z, y, x]``, the (predicted or true) liver, tumours included.
        spacing_mm: Voxel size ``(z, y, x)`` in mm.
        rule: The rule's numbers (:class:`HuRule`).

    Returns:
        bool ``[z, y, x]`` tumour mask, inside the liver.

    Raises:
        DataError: Shapes differ, or the liver mask is empty.
    """
    volume_hu, liver = np.asarray(volume_hu), np.asarray(liver) != 0
    if volume_hu.shape != liver.shape:
        raise DataError(f"hu_rule: liver mask {liver.shape} != CT {volume_hu.shape}")
    box = liver_box(liver)
    smoothed = smooth_inplane(volume_hu[box], spacing_mm[1], rule.smooth_mm)
    tumour = np.zeros(liver.shape, dtype=bool)
    tumour[box] = threshold_smoothed(smoothed, liver[box], spacing_mm, rule)
    return tumour


def rule_masks(
    volume_hu: np.ndarray,
    liver: np.ndarray,
    spacing_mm: tuple[float, float, float],
    rules: list[HuRule],
) -> Iterator[tuple[HuRule, np.ndarray]]:
    """Each rule's tumour mask on one CT, smoothing once per ``smooth_mm`` (for a grid).

    Args:
        volume_hu: CT (or the liver's box of it, :func:`liver_box`) in HU.
        liver: bool mask of the same shape.
        spacing_mm: Voxel size ``(z, y, x)``.
        rules: The rules, e.g. :func:`rule_grid`.

    Yields:
        ``(rule, bool tumour mask)`` in the order of ``rules``.
    """
    smoothed: dict[float, np.ndarray] = {}
    for rule in rules:
        if rule.smooth_mm not in smoothed:
            smoothed[rule.smooth_mm] = smooth_inplane(volume_hu, spacing_mm[1], rule.smooth_mm)
        yield rule, threshold_smoothed(smoothed[rule.smooth_mm], liver, spacing_mm, rule)


def score_rules(case: Case, rules: list[HuRule]) -> dict[HuRule, dict]:
    """``lesion_eval.evaluate_tumours`` of every rule on one case with its true liver.

    Scored inside the liver's box (outside it the rule finds nothing and the truth has no
    tumour, so the scores are those of the whole CT).

    Raises:
        DataError: The case has no liver mask (``tumour.labels_from_case``), or an empty one.
    """
    true_labels = labels_from_case(case)
    liver = case.masks["liver"]
    box = liver_box(liver)
    scores = {}
    for rule, tumour in rule_masks(case.volume[box], liver[box], case.spacing_mm, rules):
        scores[rule] = lesion_eval.evaluate_tumours(
            label_map(liver[box], tumour), true_labels[box], case.spacing_mm
        )
    return scores


def choose_rule(cases: list[Case], rules: list[HuRule] | None = None) -> HuRule:
    """The rule with the best mean tumour Dice over the cases that have a tumour.

    Choose on training patients and score the rule, unchanged, on test patients.

    Args:
        cases: Patients with liver and tumour masks (tumour-free ones are skipped).
        rules: The candidates; default :func:`rule_grid` (ties go to the first).

    Raises:
        DataError: No case has a tumour.
    """
    rules = rule_grid() if rules is None else rules
    with_tumour = [
        c for c in cases if c.masks.get("tumour") is not None and c.masks["tumour"].any()
    ]
    if not with_tumour:
        raise DataError(
            f"choose_rule: none of {[c.case_id for c in cases]} has a tumour to choose a rule on"
        )
    scores = {case.case_id: score_rules(case, rules) for case in with_tumour}
    return lesion_eval.best_choice(scores, list(scores))


def rule_labels(case: Case, rule: HuRule, liver: np.ndarray | None = None) -> np.ndarray:
    """The rule as a cascade's label map: 0 background, 1 liver, 2 tumour.

    Args:
        case: The CT (in HU).
        rule: The rule's numbers.
        liver: bool liver mask; default the case's own (true) liver.
    """
    liver = case.masks["liver"] if liver is None else np.asarray(liver) != 0
    return label_map(liver, hu_rule_tumours(case.volume, liver, case.spacing_mm, rule))
