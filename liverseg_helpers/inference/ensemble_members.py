"""Which members of an ensemble predict a given CT, and with which settings.

An ensemble may hold networks that see the CT from different sides (axial, coronal,
sagittal). A coronal or sagittal network needs a CT tall enough to show it the slices it learnt
from (:func:`members_that_fit`) and fails where the scan stops inside the liver
(:func:`turned_members_to_run`); an axial network that shrinks whole slices sees the liver at the
size it learnt only within a range of fields of view (:func:`settings_for_field_of_view`).
``predict.predict_case`` asks these questions for every CT.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from liverseg_helpers.inference import postprocess, region
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import views
from liverseg_helpers.preparation.preprocess import PreprocessSettings


def members_that_fit(
    loaded: list[tuple[Any, PreprocessSettings]], members: list[Any], case: Case
) -> list[tuple[Any, PreprocessSettings]]:
    """The ensemble members whose view suits the case; the others are left out with a warning.

    A coronal or sagittal member needs a CT that reaches at least
    :data:`views.MIN_TURNED_HEIGHT_MM` from feet to head; on a thinner one (a few slices) it
    would see slices unlike any it learnt from, so the axial members decide alone.

    Raises:
        DataError: No member suits the case.
    """
    fits = [views.fits_view(case.shape, case.spacing_mm, settings.view) for _, settings in loaded]
    if not any(fits):
        views.check_fits_view(case.shape, case.spacing_mm, loaded[0][1].view, case.case_id)
    height = views.ct_height_mm(case.shape, case.spacing_mm)
    for (_, settings), member, fit in zip(loaded, members, fits, strict=True):
        if not fit:
            warnings.warn(
                f"{case.case_id}: the CT spans {height:.0f} mm from feet to head, too short for "
                f"the {settings.view} model {getattr(member, 'name', member)} (it needs "
                f"{views.MIN_TURNED_HEIGHT_MM:.0f} mm); predicting without it",
                stacklevel=3,
            )
    return [pair for pair, fit in zip(loaded, fits, strict=True) if fit]


def field_of_view_mm(shape: tuple[int, ...], spacing_mm: tuple[float, float, float]) -> float:
    """The wider in-plane side of a CT ``[z, y, x]`` in mm."""
    return max(shape[1] * float(spacing_mm[1]), shape[2] * float(spacing_mm[2]))


def settings_for_field_of_view(
    settings: PreprocessSettings,
    shape: tuple[int, ...],
    spacing_mm: tuple[float, float, float] | None,
) -> PreprocessSettings:
    """An axial network's settings for one CT, so that the liver has the size it learnt.

    An axial network that shrinks each whole slice to its input (``target_spacing_mm`` None)
    sees a liver whose size depends on the scanner's field of view. When the CT's field of
    view (:func:`field_of_view_mm`) lies outside the ``fov_range_mm`` the network learnt from
    (its sidecar's; the shipped axial model: 263-440 mm), its slices are resampled to the
    nearest bound's pixel (bound / input size) and centre-cropped or padded instead. Settings
    without ``fov_range_mm`` or with ``target_spacing_mm``, other views, CTs inside the range
    and CTs without spacing are returned unchanged.
    """
    if (
        settings.fov_range_mm is None
        or settings.view != "axial"
        or settings.target_spacing_mm is not None
        or spacing_mm is None
    ):
        return settings
    fov = field_of_view_mm(shape, spacing_mm)
    bound = min(max(fov, settings.fov_range_mm[0]), settings.fov_range_mm[1])
    if bound == fov:
        return settings
    return replace(settings, target_spacing_mm=bound / settings.image_size)


EDGE_MIN_AREA_MM2 = 100.0  # 1 cm2 of liver on the scan's first or last slice


def liver_reaches_scan_edge(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    min_area_mm2: float = EDGE_MIN_AREA_MM2,
) -> bool:
    """Whether a liver mask ``[z, y, x]`` covers at least ``min_area_mm2`` of the scan's first
    or last slice: the scan stops inside the liver."""
    pixel_mm2 = float(spacing_mm[1]) * float(spacing_mm[2])
    end_pixels = max(np.count_nonzero(mask[0]), np.count_nonzero(mask[-1]))
    return end_pixels * pixel_mm2 >= min_area_mm2


def end_slices_show_liver(
    axial_probs: np.ndarray, spacing_mm: tuple[float, float, float], threshold: float
) -> bool:
    """Whether the axial probabilities' first or last slice, thresholded and filled, holds
    :data:`EDGE_MIN_AREA_MM2` of liver: the quick first half of :func:`turned_members_to_run`.

    Those pixels hold at least the final mask's pixels there (the largest component is kept
    only afterwards), so a scan without them is decided without post-processing.
    """
    ends = [ndimage.binary_fill_holes(end > threshold) for end in axial_probs[[0, -1]]]
    return liver_reaches_scan_edge(np.stack(ends), spacing_mm)


def turned_members_to_run(
    loaded: list[tuple[Any, PreprocessSettings]],
    axial_probs: np.ndarray | None,
    case: Case,
    threshold: float,
) -> list[tuple[Any, PreprocessSettings]]:
    """The coronal or sagittal members to add to the axial ones, or none where the liver
    reaches the scan's edge.

    A turned network sees a liver that the scan cuts off as a shape with a straight edge,
    unlike any it learnt from, and fails there; the axial network sees ordinary slices. So when
    the axial members' mask (``threshold``, the course's post-processing) covers at least
    :data:`EDGE_MIN_AREA_MM2` of the first or last slice (:func:`liver_reaches_scan_edge`),
    the axial members decide alone, with a warning. Without axial members the turned ones
    always run.
    """
    turned = [member for member in loaded if member[1].view != "axial"]
    if not turned or axial_probs is None:
        return turned
    if not end_slices_show_liver(axial_probs, case.spacing_mm, threshold):
        return turned
    axial_mask = postprocess.mask_from_probs(axial_probs, case.spacing_mm[0], threshold)
    if not liver_reaches_scan_edge(axial_mask, case.spacing_mm):
        return turned
    warnings.warn(
        f"{case.case_id}: the liver reaches the scan's first or last slice, which a "
        f"{turned[0][1].view} network sees as a shape it never learnt; the axial model(s) "
        "decide alone",
        stacklevel=3,
    )
    return []


def ensemble_probs(
    loaded: list[tuple[Any, PreprocessSettings]],
    case: Case,
    summed_probs: Callable[..., np.ndarray],
    threshold: float,
    batch_size: int,
    skip_slices: bool = True,
) -> np.ndarray:
    """The mean probabilities of an ensemble's members on a CT, each run where it is needed.

    Axial and turned members together: the axial networks first answer for one batch holding
    the scan's end slices (``region.first_batch``), which tell whether the scan stops inside
    the liver. Where it may, the axial networks see every slice and
    :func:`turned_members_to_run` decides whether the turned ones are averaged in. Where it
    does not, the turned networks (cheaper: 3 mm slices) run and tell the axial ones which
    other slices hold the liver (``region.liver_slab``). Members of one kind: all of them on
    every slice.

    Args:
        loaded: ``(model, settings)`` of each member.
        case: The CT.
        summed_probs: ``summed_probs(members, slices=None)``: the sum of those members'
            probabilities on the CT's grid, the axial ones on the chosen ``slices`` only.
        threshold: Probability above which a voxel is liver (for the scan's ends).
        batch_size: Slices per model call (the size of the first batch).
        skip_slices: False: every axial slice first, then the turned members where the scan's
            ends allow (slower; for comparing).

    Returns:
        float32 ``[z, y, x]``.
    """
    axial = [member for member in loaded if member[1].view == "axial"]
    turned = [member for member in loaded if member[1].view != "axial"]
    if not axial or not turned:
        return summed_probs(loaded) / len(loaded)
    first = region.first_batch(case.shape[0], batch_size) if skip_slices else None
    axial_probs = summed_probs(axial, first) / len(axial)
    if first is not None and end_slices_show_liver(axial_probs, case.spacing_mm, threshold):
        axial_probs += summed_probs(axial, ~first) / len(axial)  # maybe cut: every slice
        first = None
    if first is None and not turned_members_to_run(loaded, axial_probs, case, threshold):
        return axial_probs
    turned_probs = summed_probs(turned) / len(turned)
    if first is not None:
        slab = region.liver_slab(turned_probs, case.spacing_mm)
        rest = ~first if slab is None else slab & ~first
        axial_probs += summed_probs(axial, rest) / len(axial)
    return (axial_probs * len(axial) + turned_probs * len(turned)) / len(loaded)
