"""Reading CT DICOM series: one file per axial slice, in a folder or a zip.

Slices are ordered by geometry: each ``ImagePositionPatient`` is projected on the slice normal
(the cross product of the two ``ImageOrientationPatient`` vectors), so file names and
``InstanceNumber`` do not matter. Stored values become Hounsfield units with
``HU = stored * RescaleSlope + RescaleIntercept``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from liverseg_helpers.errors import DicomSeriesError
from liverseg_helpers.io.case import Case
from liverseg_helpers.io.files import Member, open_members

# Files with these suffixes are never taken for slices of a series.
NON_DICOM_SUFFIXES = {
    ".txt", ".md", ".json", ".csv", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg",
    ".nrrd", ".nhdr", ".nii", ".gz", ".zip", ".py", ".ipynb", ".vtk", ".mha", ".mhd",
}  # fmt: skip
# A lone end slice farther than this many median spacings from its neighbour is a stray (a
# scout or a slice of another acquisition kept in the folder), not part of the series.
STRAY_GAP_RATIO = 2.5
_UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
_SIGNED_DTYPES = {8: np.int8, 16: np.int16}
_UNSIGNED_DTYPES = {8: np.uint8, 16: np.uint16}


@dataclass
class DicomSlice:
    """One decoded DICOM image.

    Attributes:
        label: File location, for error messages.
        dataset: Header (pixel data included).
        pixels: Stored values, shape ``(rows, cols)``, before rescaling.
    """

    label: str
    dataset: pydicom.Dataset
    pixels: np.ndarray


@dataclass
class SliceGeometry:
    """Geometry of a stack of slices.

    Attributes:
        spacing_mm: ``(slice, row, col)`` voxel size in mm.
        origin_mm: Position ``(x, y, z)`` of the first voxel of the first slice, mm (LPS).
        direction: Row-major 3x3 direction cosines (ITK convention), 9 floats.
    """

    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...]


def _decode_pixels(ds: pydicom.Dataset, label: str) -> np.ndarray:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows == 0 or cols == 0:
        raise DicomSeriesError(f"{label}: Rows/Columns missing, not an image")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomSeriesError(f"{label}: multi-frame image, expected one slice per file")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomSeriesError(f"{label}: colour image, expected a greyscale CT slice")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    # Fast path for the usual uncompressed slices: a view on the bytes, ~100x cheaper than the
    # generic decoder, which matters for the ~1000 mask slices of one 3D-IRCADb patient.
    if syntax in _UNCOMPRESSED and bits in (8, 16) and int(ds.get("BitsStored", bits)) == bits:
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = (_SIGNED_DTYPES if signed else _UNSIGNED_DTYPES)[bits]
        data = getattr(ds, "PixelData", None) or b""
        expected = rows * cols * (bits // 8)
        if len(data) < expected:
            raise DicomSeriesError(
                f"{label}: pixel data truncated ({len(data)} bytes, expected {expected} for "
                f"{rows}x{cols}x{bits} bit); the file is incomplete"
            )
        return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    try:
        return ds.pixel_array
    except Exception as err:  # decoders raise many types; report them all the same way
        raise DicomSeriesError(f"{label}: cannot decode pixel data ({err})") from err


def read_dicom_slice(member: Member, expect_ct: bool = True) -> DicomSlice:
    """Read and check one DICOM image file.

    Args:
        member: The file (from :func:`liverseg_helpers.io.files.open_members`).
        expect_ct: Require ``Modality`` CT.

    Returns:
        The decoded slice.

    Raises:
        DicomSeriesError: If the file is not DICOM, is truncated, has no pixel data, is not CT
            (when ``expect_ct``), or its pixels cannot be decoded.
    """
    raw = member.read()
    try:
        ds = pydicom.dcmread(BytesIO(raw))
    except InvalidDicomError as err:
        raise DicomSeriesError(
            f"{member.label}: not a DICOM file (no 'DICM' header; empty, truncated or another "
            f"format): {err}"
        ) from err
    except Exception as err:  # truncated headers raise EOFError, struct.error, ValueError...
        raise DicomSeriesError(f"{member.label}: corrupt or truncated DICOM file ({err})") from err
    modality = str(ds.get("Modality", "")).strip()
    if getattr(ds, "PixelData", None) is None:
        raise DicomSeriesError(
            f"{member.label}: no pixel data (Modality {modality or '?'}); not an image, "
            "or the file is truncated"
        )
    if expect_ct and modality != "CT":
        raise DicomSeriesError(f"{member.label}: Modality is {modality or 'missing'}, expected CT")
    return DicomSlice(member.label, ds, _decode_pixels(ds, member.label))


def _float_list(ds: pydicom.Dataset, keyword: str, label: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DicomSeriesError(f"{label}: {keyword} is not numeric ({value!r})") from err
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(f"{label}: {keyword} must be {n} finite numbers, got {value!r}")
    return arr


def _orientation(first: DicomSlice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = _float_list(first.dataset, "ImageOrientationPatient", first.label, 6)
    if iop is None:
        iop = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 0.5:
        raise DicomSeriesError(f"{first.label}: ImageOrientationPatient {iop.tolist()} is invalid")
    return row_dir, col_dir, normal / np.linalg.norm(normal)


def _check_same_grid(slices: list[DicomSlice]) -> None:
    first = slices[0]
    iop0 = _float_list(first.dataset, "ImageOrientationPatient", first.label, 6)
    ps0 = _float_list(first.dataset, "PixelSpacing", first.label, 2)
    for sl in slices[1:]:
        if sl.pixels.shape != first.pixels.shape:
            raise DicomSeriesError(
                f"{sl.label}: slice is {sl.pixels.shape[0]}x{sl.pixels.shape[1]} but "
                f"{first.label} is {first.pixels.shape[0]}x{first.pixels.shape[1]}"
            )
        iop = _float_list(sl.dataset, "ImageOrientationPatient", sl.label, 6)
        if (iop is None) != (iop0 is None) or (iop is not None and np.abs(iop - iop0).max() > 1e-3):
            raise DicomSeriesError(
                f"{sl.label}: ImageOrientationPatient differs from {first.label}"
            )
        ps = _float_list(sl.dataset, "PixelSpacing", sl.label, 2)
        if (ps is None) != (ps0 is None) or (ps is not None and np.abs(ps - ps0).max() > 1e-3):
            raise DicomSeriesError(f"{sl.label}: PixelSpacing differs from {first.label}")


def _common_orientation_slice(slices: list[DicomSlice]) -> DicomSlice:
    """A slice of the orientation most slices share, so that one stray slice of another plane
    (a localizer) cannot set the normal the whole series is ordered along."""
    groups: dict[tuple, list[DicomSlice]] = {}
    for sl in slices:
        iop = sl.dataset.get("ImageOrientationPatient")
        key = tuple(round(float(v), 3) for v in iop) if iop else ()
        groups.setdefault(key, []).append(sl)
    return max(groups.values(), key=len)[0]


def slice_positions_mm(slices: list[DicomSlice]) -> np.ndarray | None:
    """Position of each slice along the slice normal (of the orientation most slices share),
    mm; None if a slice lacks the tag."""
    _, _, normal = _orientation(_common_orientation_slice(slices))
    positions = []
    for sl in slices:
        ipp = _float_list(sl.dataset, "ImagePositionPatient", sl.label, 3)
        if ipp is None:
            return None
        positions.append(float(ipp @ normal))
    return np.array(positions)


def sort_slices_by_position(slices: list[DicomSlice]) -> list[DicomSlice]:
    """Order slices along the slice normal (feet to head for axial CT).

    Raises:
        DicomSeriesError: If a slice has no ``ImagePositionPatient`` (and there are several).
    """
    if len(slices) == 1:
        return slices
    positions = slice_positions_mm(slices)
    if positions is None:
        missing = next(s for s in slices if "ImagePositionPatient" not in s.dataset)
        raise DicomSeriesError(
            f"{missing.label}: no ImagePositionPatient; cannot order the slices by geometry"
        )
    return [slices[i] for i in np.argsort(positions, kind="stable")]


def drop_stray_end_slices(slices: list[DicomSlice]) -> list[DicomSlice]:
    """Drop a lone slice far from the rest at either end of a sorted series, with a warning.

    Some exported series hold one slice of another acquisition 60-100 mm beyond the others
    (three of the HCC-TACE-Seg patients). Stacking it would stretch the volume with a false
    spacing, so it is dropped and named. A gap between two longer runs of slices is not a stray
    slice; :func:`compute_geometry` refuses it.

    Args:
        slices: Slices sorted by position (:func:`sort_slices_by_position`).

    Returns:
        The slices without stray end slices (the same list when there is none).
    """
    positions = slice_positions_mm(slices) if len(slices) >= 4 else None
    if positions is None:
        return slices
    steps = np.abs(np.diff(positions))
    typical_mm = float(np.median(steps))
    keep = list(range(len(slices)))
    for end, step in ((0, steps[0]), (len(slices) - 1, steps[-1])):
        if step > STRAY_GAP_RATIO * typical_mm:
            warnings.warn(
                f"{slices[end].label}: slice lies {step:.1f} mm from the next slice of the "
                f"series, whose spacing is {typical_mm:.2f} mm; dropped as a stray slice",
                stacklevel=2,
            )
            keep.remove(end)
    return [slices[i] for i in keep]


def compute_geometry(slices: list[DicomSlice]) -> SliceGeometry:
    """Spacing, origin and direction of slices that are already in volume order.

    The slice axis points from the first slice to the second, so the result is right both for
    slices sorted by position and for slices ordered by file name (3D-IRCADb).

    Raises:
        DicomSeriesError: If slices differ in size/orientation/pixel spacing, two share one
            position, positions are not monotonic, or the spacing is uneven (missing slices).
    """
    _check_same_grid(slices)
    first = slices[0]
    row_dir, col_dir, normal = _orientation(first)
    pixel_spacing = _float_list(first.dataset, "PixelSpacing", first.label, 2)
    row_mm, col_mm = (1.0, 1.0) if pixel_spacing is None else (pixel_spacing[0], pixel_spacing[1])
    positions = slice_positions_mm(slices) if len(slices) > 1 else None
    sign = 1.0
    if positions is None:
        thickness = first.dataset.get("SpacingBetweenSlices") or first.dataset.get("SliceThickness")
        slice_mm = float(thickness) if thickness else 1.0
    else:
        steps = np.diff(positions)
        for i, step in enumerate(steps):
            if abs(step) < 1e-3:
                raise DicomSeriesError(
                    f"{slices[i + 1].label}: same position as {slices[i].label} "
                    "(duplicate slice, or two series in one folder)"
                )
        if not (np.all(steps > 0) or np.all(steps < 0)):
            bad = int(np.argmax(np.sign(steps) != np.sign(steps[0]))) + 1
            raise DicomSeriesError(
                f"{slices[bad].label}: slice positions are not monotonic in this order"
            )
        sign = float(np.sign(steps[0]))
        # the typical step, so that one gap (a missing slice) stands out against it
        slice_mm = float(np.median(np.abs(steps)))
        uneven = np.abs(np.abs(steps) - slice_mm) > max(0.01, 0.05 * slice_mm)
        if np.any(uneven):
            i = int(np.argmax(uneven))
            raise DicomSeriesError(
                f"{slices[i + 1].label}: gap of {abs(steps[i]):.3f} mm after {slices[i].label}, "
                f"but the series spacing is {slice_mm:.3f} mm (missing slices?)"
            )
    ipp = _float_list(first.dataset, "ImagePositionPatient", first.label, 3)
    origin = np.zeros(3) if ipp is None else ipp
    direction = np.column_stack([row_dir, col_dir, sign * normal])
    return SliceGeometry(
        spacing_mm=(slice_mm, float(row_mm), float(col_mm)),
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )


def rescale_to_hu(sl: DicomSlice) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)`` of a CT slice: stored value to Hounsfield units.

    Both are mandatory in a CT image. Guessing 1 and 0 when they are missing would shift every
    value by the scanner's offset (often 1024 HU) without a word, so that is an error.

    Raises:
        DicomSeriesError: A tag is missing or empty, not a number, or the slope is 0.
    """
    values = []
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        raw = sl.dataset.get(keyword)
        if raw is None or str(raw).strip() == "":
            raise DicomSeriesError(
                f"{sl.label}: {keyword} is missing; without it the stored values cannot be "
                "converted to Hounsfield units"
            )
        try:
            values.append(float(raw))
        except (TypeError, ValueError) as err:
            raise DicomSeriesError(f"{sl.label}: {keyword} {raw!r} is not a number") from err
    if values[0] == 0:
        raise DicomSeriesError(f"{sl.label}: RescaleSlope is 0; every voxel would be one value")
    return values[0], values[1]


def stack_hu(slices: list[DicomSlice]) -> np.ndarray:
    """Stack slices and convert stored values to Hounsfield units.

    Returns:
        ``(n_slices, rows, cols)`` int16 when the rescaled values are whole numbers within the
        int16 range (the usual CT case), float32 otherwise.

    Raises:
        DicomSeriesError: A slice lacks its rescale tags (:func:`rescale_to_hu`).
    """
    rescale = [rescale_to_hu(sl) for sl in slices]
    stored = np.stack([sl.pixels for sl in slices])
    if all(r == (1.0, 0.0) for r in rescale) and stored.dtype == np.int16:
        return stored
    slopes = np.array([r[0] for r in rescale])[:, None, None]
    intercepts = np.array([r[1] for r in rescale])[:, None, None]
    hu = stored.astype(np.float64) * slopes + intercepts
    whole = np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))
    if whole and hu.size and hu.min() >= -32768 and hu.max() <= 32767:
        return hu.astype(np.int16)
    return hu.astype(np.float32)


def _check_one_series(slices: list[DicomSlice], path: Path) -> None:
    groups: dict[str, list[str]] = {}
    for sl in slices:
        groups.setdefault(str(sl.dataset.get("SeriesInstanceUID", "?")), []).append(sl.label)
    if len(groups) > 1:
        parts = [f"{uid} ({len(labels)} files, e.g. {labels[0]})" for uid, labels in groups.items()]
        raise DicomSeriesError(
            f"{path}: {len(groups)} series mixed in one folder: {'; '.join(parts)}. "
            "Put each series in its own folder."
        )


def read_series_slices(path: Path) -> list[DicomSlice]:
    """Read every DICOM file of a folder (recursively), a zip, or a single file.

    Raises:
        DicomSeriesError: If there is no DICOM file, or any file is not a readable CT image.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() != ".zip":
        member = Member(path.name, str(path), path.read_bytes)
        return [read_dicom_slice(member)]
    with open_members(path) as members:
        candidates = [m for m in members if Path(m.name).suffix.lower() not in NON_DICOM_SUFFIXES]
        if not candidates:
            raise DicomSeriesError(f"{path}: no DICOM files found")
        return [read_dicom_slice(m) for m in candidates]


def load_dicom_series(path: str | Path) -> Case:
    """Read one CT series (a folder, a zip, or a single file) into a Case without masks.

    Args:
        path: Folder of DICOM files (searched recursively), ``.zip`` of them, or one file.

    Returns:
        Case with ``volume`` in HU ``(n_slices, rows, cols)``, slices sorted by position along
        the slice normal, ``format="dicom"``.

    Raises:
        CaseNotFoundError: If ``path`` does not exist.
        DicomSeriesError: Non-CT modality, no pixel data, corrupt file, several series, slices
            of different sizes, duplicate or missing positions, a gap inside the series, no
            DICOM file at all. A lone stray slice at either end is dropped with a warning
            (:func:`drop_stray_end_slices`).
        UnsafeArchiveError: If a zip member name leaves the archive.
    """
    path = Path(path)
    slices = sort_slices_by_position(read_series_slices(path))
    _check_one_series(slices, path)
    slices = drop_stray_end_slices(slices)
    geometry = compute_geometry(slices)
    case_id = path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.name
    return Case(
        case_id=case_id,
        volume=stack_hu(slices),
        spacing_mm=geometry.spacing_mm,
        origin_mm=geometry.origin_mm,
        direction=geometry.direction,
        source=str(path),
        format="dicom",
    )
