"""The one data model of the course: a CT volume with its geometry and named masks.

Axis order, stated once for the whole package: arrays are indexed ``[slice, row, column]``
(``z, y, x``). ``spacing_mm`` follows the same order. ``origin_mm`` and ``direction`` follow
ITK / DICOM patient coordinates (x, y, z; LPS) so results can be written back with the CT's
geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LIVER = "liver"
TUMOUR = "tumour"


@dataclass
class Case:
    """A CT scan of one patient.

    Attributes:
        case_id: Patient or case name, unique within a cohort (e.g. ``"3Dircadb1.1"``).
        volume: CT in Hounsfield units, shape ``(n_slices, rows, cols)``, int16 or float32.
        spacing_mm: Voxel size ``(slice, row, col)`` in millimetres.
        origin_mm: Position of the first voxel in patient coordinates ``(x, y, z)`` in mm.
        direction: Row-major 3x3 direction cosines (ITK convention), 9 floats.
        masks: Named boolean masks with the volume's shape: ``"liver"`` and, when present,
            ``"tumour"`` (the union of all liver lesions).
        lesions: Optional int32 label map with the volume's shape, one id per liver lesion
            (0 = none), for lesion-level scoring.
        source: Path the case was read from.
        format: Reader that produced it (``"ircadb"``, ``"chaos"``, ``"hcc_tace"``,
            ``"dicom"``, ``"nifti"``, ``"png"``, ``"phantom"``).
    """

    case_id: str
    volume: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    lesions: np.ndarray | None = None
    source: str = ""
    format: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape ``(n_slices, rows, cols)``."""
        return tuple(int(n) for n in self.volume.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    def mask_volume_ml(self, name: str) -> float:
        """Volume of mask ``name`` in millilitres."""
        return float(np.count_nonzero(self.masks[name])) * self.voxel_volume_ml
