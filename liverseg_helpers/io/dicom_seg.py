"""DICOM-SEG masks (one multi-frame object per structure), placed on a CT by position.

A SEG frame says which CT slice it belongs to twice: by ``ReferencedSOPInstanceUID`` in its
derivation sequence, and by the ``ImagePositionPatient`` of its plane position. Exporters
get the first wrong (in HCC-TACE-Seg every frame names the same slice), so frames are paired
with CT slices by position only: the frame's z must match one slice's z within a tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.io.files import CaseNotFoundError

# A frame belongs to a CT slice whose z is within this fraction of the slice spacing.
POSITION_TOLERANCE = 0.25


def _frame_position(frame: pydicom.Dataset, k: int, path: Path) -> np.ndarray:
    try:
        return np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    except (AttributeError, IndexError) as err:
        raise DataError(f"{path}: frame {k + 1} has no PlanePositionSequence position") from err


def _frames_foreground(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    try:
        frames = ds.pixel_array
    except Exception as err:  # decoders raise many types; report them all the same way
        raise DataError(f"{path}: cannot decode the segmentation frames ({err})") from err
    frames = frames.reshape(-1, int(ds.Rows), int(ds.Columns))
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        return frames > int(ds.get("MaximumFractionalValue", 255)) / 2
    return frames > 0


def read_seg_mask(path: str | Path, case: Case) -> np.ndarray:
    """Read a DICOM-SEG object as a boolean mask on the grid of ``case``.

    All segments of the object are joined (one SEG file = one structure here).

    Args:
        path: ``.dcm`` DICOM-SEG file.
        case: The CT it was drawn on, axial, read with :func:`load_dicom_series`
            (``origin_mm`` is the first slice's position, slices ascending along z).

    Returns:
        Bool mask with the case's shape ``(n_slices, rows, cols)``.

    Raises:
        CaseNotFoundError: If the file does not exist.
        DataError: Not a DICOM-SEG, frames of another size than the CT slices, a frame
            without position, or a frame whose position matches no CT slice (in z, or shifted
            in-plane).
    """
    path = Path(path)
    if not path.is_file():
        raise CaseNotFoundError(f"{path}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # InvalidDicomError, EOFError, struct.error...
        raise DataError(f"{path}: not a readable DICOM file ({err})") from err
    if str(ds.get("Modality", "")) != "SEG" or "PerFrameFunctionalGroupsSequence" not in ds:
        raise DataError(f"{path}: not a DICOM-SEG object (Modality {ds.get('Modality', '?')})")
    rows, cols = case.shape[1:]
    if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
        raise DataError(
            f"{path}: frames are {ds.Rows}x{ds.Columns} but the CT slices are {rows}x{cols}"
        )
    frames = _frames_foreground(ds, path)
    slice_mm = case.spacing_mm[0]
    z_slices = case.origin_mm[2] + slice_mm * np.arange(case.shape[0]) * case.direction[8]
    in_plane_tol_mm = 0.5 * min(case.spacing_mm[1:])
    mask = np.zeros(case.shape, dtype=bool)
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = _frame_position(frame, k, path)
        index = int(np.argmin(np.abs(z_slices - position[2])))
        if abs(z_slices[index] - position[2]) > POSITION_TOLERANCE * slice_mm:
            raise DataError(
                f"{path}: frame {k + 1} at z = {position[2]:.2f} mm matches no CT slice "
                f"(nearest {z_slices[index]:.2f} mm, CT spans {z_slices.min():.2f} to "
                f"{z_slices.max():.2f} mm)"
            )
        if np.abs(position[:2] - np.asarray(case.origin_mm[:2])).max() > in_plane_tol_mm:
            raise DataError(
                f"{path}: frame {k + 1} starts at x, y = {position[0]:.2f}, {position[1]:.2f} mm "
                f"but the CT at {case.origin_mm[0]:.2f}, {case.origin_mm[1]:.2f} mm (shifted)"
            )
        mask[index] |= frames[k]
    return mask
