"""Whether two images lie on the same voxels: spacing, direction and origin.

Two arrays of the same shape can still be flipped or shifted against each other, and a mask
compared or attached voxel by voxel would then sit on the wrong voxels without any error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grid_difference(
    spacing: tuple[Sequence[float], Sequence[float]],
    direction: tuple[Sequence[float] | None, Sequence[float] | None] = (None, None),
    origin: tuple[Sequence[float] | None, Sequence[float] | None] = (None, None),
) -> str | None:
    """What differs between grid A and grid B (each argument is the pair ``(A, B)``), or None.

    Spacing is compared to 0.1 %, direction cosines to 1e-3, origins to a tenth of the
    smallest voxel side (float noise in headers is far smaller). A None direction or origin
    (a format without geometry) is not compared.
    """
    if not np.allclose(spacing[0], spacing[1], rtol=1e-3, atol=1e-3):
        return f"spacing {tuple(spacing[0])} against {tuple(spacing[1])} mm"
    if None not in direction and not np.allclose(direction[0], direction[1], atol=1e-3):
        return f"direction {tuple(direction[0])} against {tuple(direction[1])} (flipped or turned)"
    tolerance_mm = 0.1 * min(spacing[1])
    if None not in origin and not np.allclose(origin[0], origin[1], rtol=0, atol=tolerance_mm):
        return f"origin {tuple(origin[0])} against {tuple(origin[1])} mm (shifted)"
    return None
