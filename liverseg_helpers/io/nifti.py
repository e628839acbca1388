"""NIfTI volumes and label maps: LiTS and the Medical Segmentation Decathlon (Task03 Liver).

Layouts::

    LiTS:  volume-N.nii(.gz) + segmentation-N.nii(.gz)        (same folder or sibling folders)
    MSD:   imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz

Labels: 0 background, 1 liver, 2 tumour. The liver mask is ``label >= 1`` (the liver includes
its tumours, as in 3D-IRCADb) and the tumour mask ``label == 2``. SimpleITK reads the files, so
the NIfTI (RAS) header is converted to the ITK/DICOM (LPS) geometry of :class:`Case`, and
``GetArrayFromImage`` already gives ``[slice, row, column]``.

NIfTI files store their voxels in any axis order and direction (many LiTS volumes are flipped
against the others). The volume and its labels are therefore turned to the axial layout of a
CT DICOM series (:data:`CANONICAL`: columns to the patient's left, rows to the back, slices
upwards), so the network always sees slices the way it was trained; ``Case`` keeps the
geometry, so masks written back lie on the same anatomy.
"""

from __future__ import annotations

import re
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

from liverseg_helpers.atomic import atomic_file, check_output_path
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.files import CaseNotFoundError
from liverseg_helpers.io.grid import grid_difference

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: Path) -> bool:
    """True if the file name ends in ``.nii`` or ``.nii.gz``."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"volume-3.nii.gz"`` -> ``"volume-3"``."""
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_label_file(path: Path) -> bool:
    """True for a LiTS ``segmentation-N`` file or a file inside an MSD ``labelsTr`` folder."""
    path = Path(path)
    return path.name.lower().startswith("segmentation") or path.parent.name == "labelsTr"


def find_nifti_labels(image_path: str | Path) -> Path | None:
    """The label file that belongs to a LiTS or MSD image, or None.

    Looks for ``segmentation-N`` next to ``volume-N`` (also in sibling folders, as in the LiTS
    batches), and for ``../labelsTr/<same name>`` next to ``imagesTr``; for a symbolic link
    (a cross-validation cohort links its patients), also beside the file it points to.
    """
    image_path = Path(image_path)
    candidates: list[Path] = []
    places = [image_path] + ([image_path.resolve()] if image_path.is_symlink() else [])
    for place in places:
        stem = strip_nifti_suffix(place.name)
        match = re.fullmatch(r"volume-(\d+)", stem, flags=re.IGNORECASE)
        if match:
            names = [f"segmentation-{match.group(1)}{s}" for s in NIFTI_SUFFIXES]
            folders = [place.parent]
            if place.parent.parent.is_dir():
                folders += sorted(p for p in place.parent.parent.iterdir() if p.is_dir())
            candidates += [folder / name for folder in folders for name in names]
        if place.parent.name == "imagesTr":
            candidates += [place.parent.parent / "labelsTr" / place.name]
    return next((c for c in candidates if c.is_file()), None)


CANONICAL = "LPS"  # the axes of a CT DICOM series read by io.dicom (identity direction)


def to_canonical(image: sitk.Image) -> sitk.Image:
    """The same image with its voxels reordered to :data:`CANONICAL` (no resampling)."""
    return sitk.DICOMOrient(image, CANONICAL)


def case_image(array: np.ndarray, case: Case) -> sitk.Image:
    """An ITK image of ``array`` ``[z, y, x]`` placed with the case's spacing, origin, direction."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(v) for v in case.spacing_mm[::-1]))
    image.SetOrigin(tuple(float(v) for v in case.origin_mm))
    image.SetDirection(tuple(float(v) for v in case.direction))
    return image


def _read_image(path: Path) -> sitk.Image:
    if not path.exists():
        raise CaseNotFoundError(f"{path}: no such file")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise DataError(
            f"{path}: cannot read as NIfTI ({str(err).strip().splitlines()[-1]})"
        ) from err


def _check_3d_grey(image: sitk.Image, path: Path) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a 3D greyscale volume, got {image.GetDimension()}D")


def _hu_array(image: sitk.Image, path: Path) -> np.ndarray:
    volume = sitk.GetArrayFromImage(image)
    if not np.all(np.isfinite(volume)):
        raise DataError(f"{path}: volume holds NaN or infinite values")
    if volume.size and volume.min() >= -32768 and volume.max() <= 32767:
        if np.issubdtype(volume.dtype, np.integer) or np.all(volume == np.round(volume)):
            return volume.astype(np.int16)
    return volume.astype(np.float32)


def _check_same_grid(image: sitk.Image, labels: sitk.Image, labels_path: Path) -> None:
    if image.GetSize() != labels.GetSize():
        raise DataError(
            f"{labels_path}: mask shape {labels.GetSize()[::-1]} differs from CT shape "
            f"{image.GetSize()[::-1]}"
        )
    differs = grid_difference(
        (labels.GetSpacing(), image.GetSpacing()),
        (labels.GetDirection(), image.GetDirection()),
        (labels.GetOrigin(), image.GetOrigin()),
    )
    if differs:  # same size, but the mask would lie on the wrong voxels
        raise DataError(f"{labels_path}: not on the CT's grid: {differs}")


def _check_label_values(label_map: np.ndarray, labels_path: Path) -> None:
    """A LiTS / MSD label map holds 0 (background), 1 (liver) and 2 (tumour) only."""
    unexpected = np.setdiff1d(np.unique(label_map), [0, 1, 2])
    if unexpected.size:
        raise DataError(
            f"{labels_path}: label values {unexpected[:5].tolist()} besides 0 (background), "
            "1 (liver) and 2 (tumour); not a LiTS / MSD label map"
        )


def label_lesions(tumour: np.ndarray) -> np.ndarray:
    """One id per 3D connected component (26-connectivity) of a tumour mask, int32."""
    return cc3d.connected_components(tumour.astype(np.uint8), connectivity=26).astype(np.int32)


def load_nifti_case(
    image: str | Path, labels: str | Path | None = None, find_labels: bool = True
) -> Case:
    """Read a NIfTI CT and, optionally, its 0/1/2 label map.

    Args:
        image: CT volume ``.nii``/``.nii.gz`` (HU).
        labels: Label map (0 background, 1 liver, 2 tumour) on the same grid. If None and
            ``find_labels``, the LiTS/MSD partner file is looked up with
            :func:`find_nifti_labels`.
        find_labels: Look for the label file when ``labels`` is None.

    Returns:
        Case with ``volume`` ``(n_slices, rows, cols)`` (int16 if the values are whole numbers,
        else float32), geometry from the header, ``format="nifti"``; with labels,
        ``masks["liver"] = label >= 1``, ``masks["tumour"] = label == 2`` and ``lesions`` (one
        id per connected tumour component).

    Raises:
        CaseNotFoundError: If a file does not exist.
        DataError: Unreadable file, not 3D, NaN values, label map on another grid (size,
            spacing, direction or origin) or with values other than 0, 1 and 2.
    """
    image_path = Path(image)
    stored_image = _read_image(image_path)
    _check_3d_grey(stored_image, image_path)
    itk_image = to_canonical(stored_image)
    volume = _hu_array(itk_image, image_path)
    spacing_xyz = itk_image.GetSpacing()
    case = Case(
        case_id=strip_nifti_suffix(image_path.name),
        volume=volume,
        spacing_mm=(float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])),
        origin_mm=tuple(float(v) for v in itk_image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in itk_image.GetDirection()),
        source=str(image_path),
        format="nifti",
    )
    labels_path = Path(labels) if labels is not None else None
    if labels_path is None and find_labels:
        labels_path = find_nifti_labels(image_path)
    if labels_path is None:
        return case
    itk_labels = _read_image(labels_path)
    _check_same_grid(stored_image, itk_labels, labels_path)
    label_map = sitk.GetArrayFromImage(to_canonical(itk_labels))
    _check_label_values(label_map, labels_path)
    case.masks[LIVER] = label_map >= 1
    case.masks[TUMOUR] = label_map == 2
    case.lesions = label_lesions(case.masks[TUMOUR])
    return case


def write_mask_nifti(
    mask_or_labels: np.ndarray, case: Case, path: str | Path, overwrite: bool = False
) -> Path:
    """Write a mask or label map with the case's geometry as NIfTI, atomically.

    Args:
        mask_or_labels: ``(n_slices, rows, cols)`` bool mask (written 0/1) or integer labels.
        case: Case giving spacing, origin and direction.
        path: Output ``.nii.gz`` (or ``.nii``).
        overwrite: Replace an existing file.

    Returns:
        ``path``.

    Raises:
        OutputExistsError: If ``path`` exists and ``overwrite`` is False.
        DataError: If the array's shape differs from the case's or it is not integer/bool.
    """
    path = Path(path)
    array = np.asarray(mask_or_labels)
    if array.shape != case.shape:
        raise DataError(f"{path.name}: mask shape {array.shape} differs from CT shape {case.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path.name}: mask dtype {array.dtype} is not bool or integer")
    elif array.min() >= 0 and array.max() <= 255:
        array = array.astype(np.uint8)
    check_output_path(path, overwrite)
    if not is_nifti(path):
        raise DataError(f"{path.name}: output must end in .nii.gz or .nii")
    image = case_image(array, case)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_file(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path
