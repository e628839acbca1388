"""Mask files that hold more than background and one foreground value.

A binary mask file stores 0 and one foreground value (1, or 255 in 3D-IRCADb and CHAOS). Any
other value (a stray 7 in a 0/255 mask) means the file was edited, resampled or mislabelled;
the readers still take every non-zero voxel as foreground, but say so with a warning that names
the file, so that the odd values do not pass unseen.
"""

from __future__ import annotations

import warnings

import numpy as np


def odd_mask_values(pixels: np.ndarray, foreground: int) -> list[int]:
    """The values of a mask besides 0 and its foreground value.

    Args:
        pixels: Mask values of one file, any shape, integer dtype.
        foreground: The expected foreground value.

    Returns:
        The other values, ascending (empty for a clean mask).
    """
    odd = (pixels != 0) & (pixels != foreground)
    if not np.any(odd):
        return []  # the usual case, without the cost of np.unique on every mask slice
    return [int(v) for v in np.unique(pixels[odd])]


def warn_odd_mask_values(
    label: str, odd: list[int] | set[int], foreground: int, n_files: int = 1
) -> None:
    """Warn that mask file ``label`` (and ``n_files - 1`` more) holds the values ``odd``."""
    if not odd:
        return
    more = f" (and {n_files - 1} more files)" if n_files > 1 else ""
    warnings.warn(
        f"{label}{more}: mask values {sorted(odd)[:10]} besides 0 and {foreground}; "
        "every non-zero voxel is taken as foreground",
        stacklevel=3,
    )


def check_mask_values(pixels: np.ndarray, label: str) -> None:
    """Warn when a mask file holds values besides 0 and its most frequent non-zero value.

    Args:
        pixels: Mask values of the file ``label``, integer dtype.
        label: File name for the warning.
    """
    values, counts = np.unique(pixels, return_counts=True)
    nonzero = values != 0
    if np.count_nonzero(nonzero) > 1:
        foreground = int(values[nonzero][np.argmax(counts[nonzero])])
        warn_odd_mask_values(label, odd_mask_values(pixels, foreground), foreground)
