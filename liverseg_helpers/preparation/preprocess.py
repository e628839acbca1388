"""Preprocessing of CT slices for a 2D UNet, one small step per function.

Each step works on a whole volume ``[slice, row, column]`` but is cheap enough to show on one
slice in a notebook. The steps, in the order :func:`preprocess_volume` applies them:

1. :func:`check_finite_hu` – refuse NaN or infinite Hounsfield units.
2. :func:`window_hu` – clip to a HU window (liver: W 400 / L 50) and scale to ``[0, 1]``.
3. :func:`apply_clahe` – optional contrast-limited histogram equalisation (as in the paper).
4. :func:`resample_inplane` + :func:`pad_or_crop_square` – optional common pixel spacing, or
   :func:`resize_slices` – straight to the network size (linear for images, area share for masks).
5. :func:`add_context_channels` – optional 2.5D input: neighbouring slices as channels.

:func:`preprocess_volume` is the ONE function that both the training cache and prediction
call, so the network always sees identical inputs. :func:`restore_slices` undoes the
geometry for predictions. The settings themselves live in
:mod:`liverseg_helpers.preparation.preprocess_settings`, the in-plane geometry steps in
:mod:`liverseg_helpers.preparation.slice_geometry`, patient-level splitting in
:mod:`liverseg_helpers.preparation.split`.

This module does not import TensorFlow or Keras.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

from liverseg_helpers.errors import DataError
from liverseg_helpers.preparation.preprocess_settings import (
    TUMOUR_CROP_MARGIN_PX,
    PreprocessSettings,
    settings_from_profile,
    tumour_settings,
)
from liverseg_helpers.preparation.slice_geometry import (
    centre_in_source_px,
    crop_inplane,
    find_crop_box,
    mask_coverage,
    pad_or_crop_square,
    resample_inplane,
    resampled_shape,
    resize_mask,
    resize_slices,
    undo_pad_or_crop_square,
)
from liverseg_helpers.preparation.split import (
    kfold_patients,
    slice_level_leak_report,
    split_patients,
)

__all__ = [
    "PreprocessSettings",
    "settings_from_profile",
    "tumour_settings",
    "TUMOUR_CROP_MARGIN_PX",
    "check_finite_hu",
    "check_binary_mask",
    "window_hu",
    "shift_to_liver_reference",
    "apply_clahe",
    "resize_slices",
    "resize_mask",
    "mask_coverage",
    "centre_in_source_px",
    "resample_inplane",
    "pad_or_crop_square",
    "add_context_channels",
    "preprocess_volume",
    "preprocess_mask",
    "restore_slices",
    "select_slices",
    "find_crop_box",
    "crop_inplane",
    "split_patients",
    "kfold_patients",
    "slice_level_leak_report",
]


def check_finite_hu(volume_hu: np.ndarray, source: str = "volume") -> None:
    """Raise if the CT holds NaN or infinite values (a broken conversion, not a real CT).

    Raises:
        DataError: Names ``source`` and the first bad slice.
    """
    finite = np.isfinite(volume_hu)
    if not finite.all():
        bad_slices = np.flatnonzero(~finite.reshape(len(volume_hu), -1).all(axis=1))
        raise DataError(
            f"{source}: {int((~finite).sum())} NaN/infinite HU values "
            f"(first in slice {int(bad_slices[0])}); fix the reader or the file"
        )


def check_binary_mask(mask: np.ndarray, source: str = "mask") -> None:
    """Raise unless the mask holds only 0/1 (or False/True).

    Raises:
        DataError: Names ``source`` and the values found (0/255 masks must be divided first).
    """
    if mask.dtype == bool:
        return
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise DataError(f"{source}: mask is not binary (values {shown}); expected 0/1")


def shift_to_liver_reference(
    volume_hu: np.ndarray,
    liver: np.ndarray | None,
    settings: PreprocessSettings,
    source: str = "volume",
) -> np.ndarray:
    """Shift a CT so its liver's median HU is ``settings.liver_reference_hu`` (if that is set).

    A lesion is seen by its contrast against its own liver: an arterial-phase liver at 60 HU
    and a portal-venous one at 120 HU then look alike to the network.

    Args:
        volume_hu: CT ``[z, y, x]`` in HU.
        liver: bool mask of the same shape (the true liver in training, the predicted one at
            prediction); unused when the setting is None.
        settings: The model's preprocessing.
        source: Name used in error messages.

    Returns:
        The volume unchanged when the setting is None, else a float32 shifted copy.

    Raises:
        DataError: The setting is on and the liver mask is missing, empty or of another shape.
    """
    if settings.liver_reference_hu is None:
        return volume_hu
    if liver is None or not np.any(liver):
        raise DataError(
            f"{source}: liver_reference_hu needs a liver mask, and it is missing or empty"
        )
    if liver.shape != volume_hu.shape:
        raise DataError(f"{source}: liver mask {liver.shape} != CT {volume_hu.shape}")
    shift = settings.liver_reference_hu - float(np.median(volume_hu[np.asarray(liver) != 0]))
    return volume_hu.astype(np.float32) + np.float32(shift)


def window_hu(volume_hu: np.ndarray, level_hu: float = 50.0, width_hu: float = 400.0) -> np.ndarray:
    """Clip HU to a window and scale it to ``[0, 1]``.

    The liver window W 400 / L 50 keeps -150..250 HU: fat, liver, vessels with contrast;
    air and bone saturate, which is what a radiologist looks at too.

    Args:
        volume_hu: CT in HU, any shape, int or float.
        level_hu: Window centre in HU.
        width_hu: Window width in HU.

    Returns:
        float32 array of the same shape, 0 at ``level - width/2`` and 1 at ``level + width/2``.
    """
    low_hu = level_hu - width_hu / 2.0
    scaled = (np.asarray(volume_hu, dtype=np.float32) - np.float32(low_hu)) / np.float32(width_hu)
    return np.clip(scaled, 0.0, 1.0)


def apply_clahe(images: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation per slice (OpenCV, on uint8).

    Args:
        images: float in ``[0, 1]``, shape ``(rows, cols)`` or ``(n, rows, cols)``.
        clip_limit: OpenCV ``clipLimit``.
        tile_grid: Tiles per side (OpenCV ``tileGridSize``).

    Returns:
        float32 in ``[0, 1]``, same shape.
    """
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    stack = images[None] if images.ndim == 2 else images
    out = np.empty(stack.shape, dtype=np.float32)
    for i, image in enumerate(stack):
        image_u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        out[i] = clahe.apply(image_u8).astype(np.float32) / 255.0
    return out[0] if images.ndim == 2 else out


def add_context_channels(images: np.ndarray, context_slices: int) -> np.ndarray:
    """Stack neighbouring slices as channels (2.5D); edge slices are replicated.

    Args:
        images: shape ``(n, rows, cols)``.
        context_slices: Neighbours on each side (0: a single channel).

    Returns:
        shape ``(n, rows, cols, 1 + 2 * context_slices)``; channel ``context_slices`` is the
        slice itself, lower channels are lower slice indices.
    """
    n = len(images)
    offsets = np.arange(-context_slices, context_slices + 1)
    neighbours = np.clip(np.arange(n)[:, None] + offsets[None, :], 0, n - 1)  # (n, C)
    return np.moveaxis(images[neighbours], 1, -1)


def _check_volume(volume: np.ndarray, source: str) -> None:
    if volume.ndim != 3 or min(volume.shape) == 0:
        raise DataError(f"{source}: expected a volume (slices, rows, cols), got {volume.shape}")


def _fit_geometry(
    stack: np.ndarray, settings: PreprocessSettings, spacing_mm, is_mask: bool, source: str
) -> np.ndarray:
    if settings.target_spacing_mm is None:
        resize = resize_mask if is_mask else resize_slices
        return resize(stack, settings.image_size)
    if spacing_mm is None:
        raise DataError(f"{source}: target_spacing_mm is set, so spacing_mm must be given")
    resampled = resample_inplane(stack, spacing_mm[1:], settings.target_spacing_mm, is_mask)
    square = pad_or_crop_square(resampled, settings.image_size)
    if is_mask and (lost := int(resampled.sum()) - int(square.sum())):
        warnings.warn(
            f"{source}: the {settings.image_size} px square at {settings.target_spacing_mm} mm "
            f"cuts {lost} mask pixels off the edges; raise image_size or target_spacing_mm",
            stacklevel=3,
        )
    return square


def preprocess_volume(
    volume_hu: np.ndarray,
    settings: PreprocessSettings,
    spacing_mm: tuple[float, float, float] | None = None,
    source: str = "volume",
    grey_levels: bool = False,
) -> np.ndarray:
    """Turn a CT into network input: window, CLAHE, resize or resample, 2.5D context.

    Training (through the slice cache) and prediction both call this function.

    Args:
        volume_hu: CT in HU, shape ``(n_slices, rows, cols)``.
        settings: The preprocessing settings.
        spacing_mm: Voxel size ``(slice, row, col)`` in mm; needed when
            ``settings.target_spacing_mm`` is set.
        source: Case id or file name used in error messages.
        grey_levels: ``volume_hu`` holds 0..255 grey levels of slices windowed before export
            (a PNG case, ``Case.format == "png"``), not HU: they are scaled to ``[0, 1]``
            instead of windowed again, so the export's own window stands in for the
            settings' window.

    Returns:
        float32 in ``[0, 1]``, shape ``(n_slices, S, S, C)`` with ``S = settings.image_size``
        and ``C = settings.n_channels``.

    Raises:
        DataError: Not 3D, NaN/infinite HU, or spacing missing for resampling.
    """
    _check_volume(volume_hu, source)
    check_finite_hu(volume_hu, source)
    if grey_levels:
        if settings.view != "axial":
            raise DataError(
                f"{source}: PNG slices carry no slice spacing, so they cannot be turned to the "
                f"{settings.view} view; use an axial model or the DICOM / NIfTI CT"
            )
        if volume_hu.min() < 0 or volume_hu.max() > 255:
            raise DataError(f"{source}: grey levels must lie in 0..255 (a PNG export)")
        images = volume_hu.astype(np.float32) / 255.0
    else:
        images = window_hu(volume_hu, settings.window_level_hu, settings.window_width_hu)
    if settings.clahe:
        images = apply_clahe(images, settings.clahe_clip_limit, settings.clahe_tile_grid)
    images = _fit_geometry(images, settings, spacing_mm, is_mask=False, source=source)
    return add_context_channels(images, settings.context_slices)


def preprocess_mask(
    mask: np.ndarray,
    settings: PreprocessSettings,
    spacing_mm: tuple[float, float, float] | None = None,
    source: str = "mask",
) -> np.ndarray:
    """Bring a mask onto the grid of :func:`preprocess_volume` (:func:`resize_mask`).

    Args:
        mask: 0/1 or bool, shape ``(n_slices, rows, cols)``.
        settings: The preprocessing settings.
        spacing_mm: Voxel size ``(slice, row, col)`` in mm (for resampling).
        source: Case id or file name used in error messages.

    Returns:
        uint8 0/1, shape ``(n_slices, S, S, 1)``.

    Raises:
        DataError: Not 3D or not binary.
    """
    _check_volume(mask, source)
    check_binary_mask(mask, source)
    return _fit_geometry(mask, settings, spacing_mm, is_mask=True, source=source)[..., None]


def restore_slices(
    probs: np.ndarray,
    native_shape: tuple[int, int],
    settings: PreprocessSettings,
    spacing_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Undo the in-plane geometry of :func:`preprocess_volume` for network outputs.

    Args:
        probs: float, shape ``(n, S, S)`` or ``(n, S, S, 1)``.
        native_shape: ``(rows, cols)`` of the original CT.
        settings: The settings used for the input.
        spacing_mm: Voxel size ``(slice, row, col)`` of the CT (for resampled settings).

    Returns:
        float32, shape ``(n, rows, cols)`` (linear interpolation; threshold afterwards).
    """
    probs = probs[..., 0] if probs.ndim == 4 else probs
    if settings.target_spacing_mm is None:
        return resize_slices(probs, tuple(native_shape))
    if spacing_mm is None:
        raise DataError("restore_slices: target_spacing_mm is set, so spacing_mm must be given")
    resampled_rc = resampled_shape(tuple(native_shape), spacing_mm[1:], settings.target_spacing_mm)
    resampled = undo_pad_or_crop_square(probs.astype(np.float32), resampled_rc)
    return resize_slices(resampled, tuple(native_shape))


def select_slices(
    mask: np.ndarray, non_liver_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick training slices: every slice with foreground plus a share of the others.

    Args:
        mask: shape ``(n_slices, rows, cols)``, nonzero = foreground (e.g. liver).
        non_liver_fraction: Background slices to add, as a share of foreground slices
            (0.25: one background slice for every four liver slices), drawn at random.
        rng: NumPy generator (``np.random.default_rng(seed)``).

    Returns:
        Sorted int64 slice indices; empty when the mask has no foreground.
    """
    has_fg = mask.reshape(len(mask), -1).any(axis=1)
    fg = np.flatnonzero(has_fg)
    bg = np.flatnonzero(~has_fg)
    n_bg = min(len(bg), int(math.ceil(non_liver_fraction * len(fg)))) if len(fg) else 0
    chosen_bg = rng.choice(bg, size=n_bg, replace=False) if n_bg else bg[:0]
    return np.sort(np.concatenate([fg, chosen_bg])).astype(np.int64)
