"""Slice a CT along another plane: axial (the default), coronal or sagittal 2D networks.

A 2D network sees one plane at a time. An axial network cannot see that its outline on one
slice jumps from the one below; a coronal network sees the liver's whole height in each of
its slices but never its axial cross-section. Networks trained on different planes therefore
make different mistakes, and averaging their probability maps on the CT's own grid (a
multi-view ensemble, ``benchmarks/multiview_ensemble.py``) can cancel some of them.

For a view other than axial the volume is turned so that the view's plane is the slice plane,
and the new slice axis is resampled to the settings' ``target_spacing_mm`` (a 512-row CT would
otherwise give 512 coronal slices 0.6 mm apart, five times the axial ones). The slice plane
itself is then resampled by :mod:`liverseg_helpers.preparation.preprocess` as for axial slices, so
the network sees the CT at one isotropic voxel size. Images are resampled linearly and masks by
the share of each new pixel they cover, with the functions of
:mod:`liverseg_helpers.preparation.slice_geometry`, so a mask stays on its image's grid.

Axis order of the turned volume (the volume is ``[z, y, x]``, z feet to head):

* ``axial``: ``[z, y, x]`` (unchanged);
* ``coronal``: ``[y, z, x]``, slices front to back, rows feet to head;
* ``sagittal``: ``[x, z, y]``, slices across the body, rows feet to head.
"""

from __future__ import annotations

import numpy as np

from liverseg_helpers.errors import DataError
from liverseg_helpers.preparation.slice_geometry import resample_inplane, resize_slices

VIEWS = ("axial", "coronal", "sagittal")
_AXES = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}

# A coronal or sagittal slice of a CT shorter than this (feet to head) shows only a strip of
# the liver, which is about 15 cm tall: nothing like the slices such a network learnt from
# (the 3D-IRCADb CTs and the phantoms span 21 to 24 cm).
MIN_TURNED_HEIGHT_MM = 100.0


def ct_height_mm(shape: tuple[int, ...], spacing_mm: tuple[float, float, float] | None) -> float:
    """How far a CT ``[z, y, x]`` reaches from feet to head, in mm (``inf`` without spacing)."""
    return float("inf") if spacing_mm is None else float(shape[0] * spacing_mm[0])


def fits_view(
    shape: tuple[int, ...], spacing_mm: tuple[float, float, float] | None, view: str
) -> bool:
    """Whether a CT is tall enough for ``view`` (always true for the axial view)."""
    return view == "axial" or ct_height_mm(shape, spacing_mm) >= MIN_TURNED_HEIGHT_MM


def check_fits_view(
    shape: tuple[int, ...],
    spacing_mm: tuple[float, float, float] | None,
    view: str,
    source: str = "volume",
) -> None:
    """Raise DataError when a CT is too short for ``view`` (:data:`MIN_TURNED_HEIGHT_MM`)."""
    if not fits_view(shape, spacing_mm, view):
        raise DataError(
            f"{source}: the CT spans {ct_height_mm(shape, spacing_mm):.0f} mm from feet to head; "
            f"a {view} network needs at least {MIN_TURNED_HEIGHT_MM:.0f} mm: use an axial model"
        )


def check_view(view: str, target_spacing_mm: float | None) -> None:
    """Raise ValueError for an unknown view, or a turned view without a target spacing."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if view != "axial" and target_spacing_mm is None:
        raise ValueError(
            f"view {view!r} needs target_spacing_mm (the voxel size its slices are resampled to)"
        )


def to_view(
    stack: np.ndarray,
    spacing_mm: tuple[float, float, float] | None,
    view: str,
    target_spacing_mm: float | None,
    is_mask: bool = False,
    source: str = "volume",
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Turn a volume ``[z, y, x]`` so that ``view``'s plane is the slice plane.

    Args:
        stack: CT in HU or a 0/1 mask, shape ``(z, y, x)``.
        spacing_mm: Voxel size ``(z, y, x)`` in mm (needed for a view other than axial).
        view: One of :data:`VIEWS`.
        target_spacing_mm: Distance between the turned volume's slices in mm.
        is_mask: ``stack`` is a binary mask (resampled by coverage, returned as uint8).
        source: Case id or file name used in error messages.

    Returns:
        ``(turned, turned_spacing_mm)``: the volume in the view's axis order (module docstring)
        with its slice axis resampled to ``target_spacing_mm``, and its voxel size. The axial
        view returns ``stack`` and ``spacing_mm`` unchanged.

    Raises:
        DataError: A view other than axial without ``spacing_mm``.
        ValueError: An unknown view, or one without ``target_spacing_mm``.
    """
    check_view(view, target_spacing_mm)
    if view == "axial":
        return stack, spacing_mm
    if spacing_mm is None:
        raise DataError(f"{source}: the {view} view needs the voxel spacing (spacing_mm)")
    order = _AXES[view]
    spacing = tuple(float(spacing_mm[i]) for i in order)
    # Rows become the stack and the slices a pixel axis, resampled by the in-plane resampler;
    # columns given the target spacing as theirs keep their number.
    across = np.swapaxes(np.transpose(stack, order), 0, 1)
    across = resample_inplane(across, (spacing[0], target_spacing_mm), target_spacing_mm, is_mask)
    turned = np.ascontiguousarray(np.swapaxes(across, 0, 1))
    return turned, (float(target_spacing_mm), spacing[1], spacing[2])


def from_view(probs: np.ndarray, view: str, native_shape: tuple[int, int, int]) -> np.ndarray:
    """Bring a probability volume of :func:`to_view`'s axis order back to ``[z, y, x]``.

    Args:
        probs: float, the turned volume's slices on their native in-plane grid (after
            ``preprocess.restore_slices``), shape ``(n_view_slices, rows, cols)``.
        view: The view the probabilities were made in.
        native_shape: ``(z, y, x)`` of the CT.

    Returns:
        float32 ``[z, y, x]`` of shape ``native_shape`` (the slice axis resampled linearly).
    """
    if view == "axial":
        return probs
    order = _AXES[view]
    turned_shape = tuple(native_shape[i] for i in order)
    if tuple(probs.shape[1:]) != turned_shape[1:]:
        raise DataError(
            f"{view} probabilities of shape {probs.shape} do not fit a CT of {native_shape}"
        )
    across = resize_slices(np.swapaxes(probs, 0, 1), (turned_shape[0], turned_shape[2]))
    return np.transpose(np.swapaxes(across, 0, 1), np.argsort(order))
