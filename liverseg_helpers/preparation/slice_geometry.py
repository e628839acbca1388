"""In-plane geometry of slice stacks: resize, resample, pad, crop.

Every function takes a stack ``(n_slices, rows, cols)`` and treats each slice alike. Images
are resized linearly; masks by the share of each new pixel they cover, so that a mask and its
image stay on the same pixel grid. :mod:`liverseg_helpers.preparation.preprocess` chains these steps
and re-exports them (``preprocess.resize_mask`` ...).
"""

from __future__ import annotations

import cv2
import numpy as np

from liverseg_helpers.errors import DataError


def _resize_stack(stack: np.ndarray, rows: int, cols: int, interpolation: int) -> np.ndarray:
    out = np.empty((len(stack), rows, cols), dtype=stack.dtype)
    for i, image in enumerate(stack):
        out[i] = cv2.resize(image, (cols, rows), interpolation=interpolation)  # cv2: (w, h)
    return out


def resize_slices(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize every slice with linear interpolation (for images and probabilities).

    Args:
        images: float, shape ``(n, rows, cols)``.
        size: Output side, or ``(rows, cols)``.

    Returns:
        float32, shape ``(n, size, size)`` or ``(n, rows, cols)``.
    """
    rows, cols = (size, size) if isinstance(size, int) else size
    return _resize_stack(images.astype(np.float32, copy=False), rows, cols, cv2.INTER_LINEAR)


def mask_coverage(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Share of each new pixel that the mask covers, on the pixel grid of :func:`resize_slices`.

    OpenCV's area average when shrinking, linear when growing: a soft mask, e.g. the best
    probability map a network with this input size could output.

    Args:
        mask: shape ``(n, rows, cols)``; nonzero is foreground.
        size: Output side, or ``(rows, cols)``.

    Returns:
        float32 in ``[0, 1]``, shape ``(n, size, size)`` or ``(n, rows, cols)``.
    """
    rows, cols = (size, size) if isinstance(size, int) else size
    shrinking = rows <= mask.shape[1] and cols <= mask.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return _resize_stack((mask != 0).astype(np.float32), rows, cols, interpolation)


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize binary mask slices on the same pixel grid as :func:`resize_slices`.

    A new pixel is foreground when at least half of the area it covers is
    (:func:`mask_coverage` ``>= 0.5``). OpenCV's nearest neighbour is NOT used: it samples the
    top-left source pixel of each block, so at 512 -> 128 px the mask would sit 1.5 source
    pixels up and left of the image, and a model trained on such pairs learns to draw every
    outline shifted by about 1 mm.

    Args:
        mask: shape ``(n, rows, cols)``; nonzero is foreground.
        size: Output side, or ``(rows, cols)``.

    Returns:
        uint8 0/1, shape ``(n, size, size)`` or ``(n, rows, cols)``.
    """
    return (mask_coverage(mask, size) >= 0.5).astype(np.uint8)


def centre_in_source_px(mask: np.ndarray, scale: float) -> np.ndarray:
    """Centre of mass ``(row, col)`` of a resized 2D mask, in the pixels of its source.

    Pixel ``i`` of a slice resized by ``1 / scale`` covers source pixels around
    ``(i + 0.5) * scale - 0.5`` (the grid of :func:`resize_slices`); ``scale=1`` gives the
    plain centre of mass. Comparing the two shows whether a resize moved the mask.
    """
    return (np.argwhere(mask).mean(axis=0) + 0.5) * scale - 0.5


def resample_inplane(
    stack: np.ndarray,
    spacing_rc_mm: tuple[float, float],
    target_spacing_mm: float,
    is_mask: bool = False,
) -> np.ndarray:
    """Resample slices to a square pixel of ``target_spacing_mm`` (slices are left alone).

    Args:
        stack: shape ``(n, rows, cols)``.
        spacing_rc_mm: Pixel size ``(row, col)`` in mm.
        target_spacing_mm: New pixel size in mm.
        is_mask: A binary mask (:func:`resize_mask`) instead of an image.

    Returns:
        shape ``(n, rows * row_mm / target, cols * col_mm / target)`` (rounded).
    """
    resize = resize_mask if is_mask else resize_slices
    return resize(stack, resampled_shape(stack.shape[1:], spacing_rc_mm, target_spacing_mm))


def resampled_shape(
    shape_rc: tuple[int, int], spacing_rc_mm: tuple[float, float], target_spacing_mm: float
) -> tuple[int, int]:
    """``(rows, cols)`` of a slice resampled to ``target_spacing_mm`` (:func:`resample_inplane`)."""
    return tuple(  # type: ignore[return-value]
        max(1, round(n * mm / target_spacing_mm))
        for n, mm in zip(shape_rc, spacing_rc_mm, strict=True)
    )


def _square_slices(length: int, size: int) -> tuple[slice, slice]:
    """Where one axis of ``length`` pixels goes in a centred ``size`` square: (source, dest)."""
    if length >= size:
        start = (length - size) // 2
        return slice(start, start + size), slice(0, size)
    start = (size - length) // 2
    return slice(0, length), slice(start, start + length)


def pad_or_crop_square(stack: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad slices to ``size x size`` (the field of view stays centred).

    Args:
        stack: shape ``(n, rows, cols)``; 0 is the pad value (below the window: black).
        size: Output side in pixels.
    """
    out = np.zeros((len(stack), size, size), dtype=stack.dtype)
    (src_r, dst_r), (src_c, dst_c) = (_square_slices(n, size) for n in stack.shape[1:])
    out[:, dst_r, dst_c] = stack[:, src_r, src_c]
    return out


def undo_pad_or_crop_square(squares: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`pad_or_crop_square` for slices that were ``shape`` before it.

    What the crop cut away comes back as 0.

    Args:
        squares: shape ``(n, size, size)``.
        shape: ``(rows, cols)`` of the slices before squaring.
    """
    size = squares.shape[1]
    out = np.zeros((len(squares), *shape), dtype=squares.dtype)
    (src_r, dst_r), (src_c, dst_c) = (_square_slices(n, size) for n in shape)
    out[:, src_r, src_c] = squares[:, dst_r, dst_c]
    return out


def find_crop_box(mask: np.ndarray, margin_px: int = 16) -> tuple[int, int, int, int]:
    """Square in-plane bounding box of a mask over all slices, with a margin.

    Used by a cascaded tumour stage: crop each slice to the liver, then segment tumours.

    Args:
        mask: shape ``(n_slices, rows, cols)``, nonzero = inside.
        margin_px: Pixels added on each side before squaring.

    Returns:
        ``(row_start, row_stop, col_start, col_stop)``, clipped to the image.

    Raises:
        DataError: The mask is empty.
    """
    rows_any = np.flatnonzero(mask.any(axis=(0, 2)))
    cols_any = np.flatnonzero(mask.any(axis=(0, 1)))
    if len(rows_any) == 0:
        raise DataError("find_crop_box: mask is empty, nothing to crop to")
    n_rows, n_cols = mask.shape[1:]
    r0, r1 = rows_any[0] - margin_px, rows_any[-1] + 1 + margin_px
    c0, c1 = cols_any[0] - margin_px, cols_any[-1] + 1 + margin_px
    side = min(max(r1 - r0, c1 - c0), n_rows, n_cols)  # square keeps the aspect ratio
    r_mid, c_mid = (r0 + r1) // 2, (c0 + c1) // 2
    r0 = int(np.clip(r_mid - side // 2, 0, n_rows - side))
    c0 = int(np.clip(c_mid - side // 2, 0, n_cols - side))
    return r0, r0 + side, c0, c0 + side


def crop_inplane(stack: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop every slice to ``box = (row_start, row_stop, col_start, col_stop)``."""
    r0, r1, c0, c1 = box
    return stack[:, r0:r1, c0:c1]
