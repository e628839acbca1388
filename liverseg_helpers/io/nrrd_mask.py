"""Masks stored apart from their CT (NRRD, NIfTI), attached to a case by geometry.

A separate mask file has its own slice order: in the dcmqi example, NRRD index 0 is the CT file
``03.dcm`` (lowest z), not ``01.dcm``. :func:`attach_mask` therefore never pairs slices by index.
It puts each mask slice on the CT slice at the same position in patient coordinates, and
raises if a mask slice lies between CT slices or the in-plane grids differ. Nothing is
resampled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nrrd
import numpy as np
import SimpleITK as sitk

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.io.files import CaseNotFoundError
from liverseg_helpers.io.mask_values import check_mask_values


def read_nrrd_mask(path: str | Path, label: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a NRRD segmentation as a boolean ``[slice, row, column]`` mask.

    Args:
        path: ``.nrrd`` file whose axes are ``(x, y, z)`` in the NRRD header.
        label: Keep only voxels equal to this label (e.g. 1 = liver in ``liver_spine_seg``);
            None keeps every non-zero voxel.

    Returns:
        ``(mask, header)``: mask bool ``(n_slices, rows, cols)`` in the file's slice order, and
        the pynrrd header (``space``, ``space origin``, ``space directions`` in file axis
        order x, y, z).

    Raises:
        CaseNotFoundError: If the file does not exist.
        DataError: If it is not a readable 3D NRRD.
    """
    path = Path(path)
    if not path.exists():
        raise CaseNotFoundError(f"{path}: no such file")
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except Exception as err:  # pynrrd raises NRRDError, ValueError, OSError...
        raise DataError(f"{path}: cannot read as NRRD ({err})") from err
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D mask, got {data.ndim}D of shape {data.shape}")
    if label is None:
        check_mask_values(data, str(path))
    mask = data != 0 if label is None else data == label
    return mask, dict(header)


def read_mask_image(path: Path, label: int | None = None) -> tuple[np.ndarray, sitk.Image]:
    """Read a 3D mask or label file (NRRD, NIfTI, MHA) with SimpleITK.

    Returns:
        ``(mask, image)``: bool ``[z, y, x]`` (nonzero, or ``== label``) and the ITK image
        (spacing and geometry in ITK's x, y, z order).

    Raises:
        CaseNotFoundError: No such file.
        DataError: Unreadable, or not 3D.
    """
    if not path.exists():
        raise CaseNotFoundError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise DataError(f"{path}: cannot read mask ({str(err).strip().splitlines()[-1]})") from err
    if image.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3D mask, got {image.GetDimension()}D")
    data = sitk.GetArrayFromImage(image)
    if label is None:
        check_mask_values(data, str(path))
    return (data != 0 if label is None else data == label), image


def attach_mask(
    case: Case,
    mask_path: str | Path,
    name: str = "liver",
    label: int | None = None,
    tolerance_mm: float | None = None,
) -> Case:
    """Return a copy of ``case`` with a mask file placed on its slices by position.

    Works for any file SimpleITK reads with geometry (NRRD, NIfTI, MHA). Each mask slice goes
    to the CT slice whose position along the slice axis matches; CT slices not covered by the
    mask stay False.

    Args:
        case: Case read from DICOM (or any reader that keeps the geometry).
        mask_path: Mask file on the same in-plane grid as the CT.
        name: Key in ``masks`` (``"liver"``, ``"tumour"``, or any structure name).
        label: Keep only this label value; None keeps every non-zero voxel.
        tolerance_mm: Largest allowed distance between a mask slice and its CT slice, and
            between the in-plane origins; default 5% of the slice spacing (at least 0.01 mm).

    Returns:
        New Case sharing the volume, with ``masks[name]`` bool of the case's shape.

    Raises:
        DataError: In-plane size, spacing, orientation or origin differ, the slice axes are not
            parallel, or a mask slice lies between CT slices or outside the CT.
    """
    mask_path = Path(mask_path)
    mask, image = read_mask_image(mask_path, label)
    n_slices, rows, cols = case.shape
    if mask.shape[1:] != (rows, cols):
        raise DataError(
            f"{mask_path}: mask shape {mask.shape} differs from CT shape {case.shape} in-plane"
        )
    slice_mm, row_mm, col_mm = case.spacing_mm
    tol = tolerance_mm if tolerance_mm is not None else max(0.01, 0.05 * slice_mm)
    ct_dir = np.asarray(case.direction, dtype=float).reshape(3, 3)
    mask_dir = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    mask_spacing = image.GetSpacing()  # (x, y, z)
    if not np.allclose(mask_spacing[:2], (col_mm, row_mm), rtol=1e-3, atol=1e-4):
        raise DataError(
            f"{mask_path}: pixel spacing {mask_spacing[:2]} mm differs from CT {(col_mm, row_mm)}"
        )
    if not np.allclose(mask_dir[:, :2], ct_dir[:, :2], atol=1e-3):
        raise DataError(f"{mask_path}: in-plane orientation differs from the CT's")
    axis = ct_dir[:, 2]
    if abs(abs(float(mask_dir[:, 2] @ axis)) - 1.0) > 1e-3:
        raise DataError(f"{mask_path}: slice axis is not parallel to the CT's")
    offset = np.asarray(image.GetOrigin()) - np.asarray(case.origin_mm)
    in_plane = np.array([offset @ ct_dir[:, 0], offset @ ct_dir[:, 1]])
    if np.abs(in_plane).max() > tol:
        raise DataError(
            f"{mask_path}: in-plane origin is {in_plane.round(3).tolist()} mm away from the CT's"
        )
    step = mask_spacing[2] * float(mask_dir[:, 2] @ axis)
    positions = (offset @ axis + step * np.arange(mask.shape[0])) / slice_mm
    indices = np.rint(positions).astype(int)
    for k, (pos, idx) in enumerate(zip(positions, indices, strict=True)):
        if abs(pos - idx) * slice_mm > tol or not 0 <= idx < n_slices:
            raise DataError(
                f"{mask_path}: mask slice {k} lies at CT slice index {pos:.2f}, not on a CT slice "
                f"of 0..{n_slices - 1}"
            )
    full = np.zeros(case.shape, dtype=bool)
    full[indices] = mask
    return dataclasses.replace(case, masks={**case.masks, name: full})
