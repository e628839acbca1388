"""Writing a Case as a 3D-IRCADb-01 patient folder (used for phantom cohorts and exports).

Every slice file is the same DICOM header with a few per-slice values (position, instance
number, UID, pixels), so one template dataset is built per series and changed in place: writing
a 32-slice 128x128 patient takes a few hundredths of a second. UIDs are derived from the case
id and the voxel values, so writing the same case twice gives byte-identical files (stable
checksums for generated cohorts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cc3d
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from liverseg_helpers.atomic import atomic_folder, check_output_path
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.ircadb import LIVER_TUMOUR_PREFIX, MASKS_DICOM, PATIENT_DICOM


def _ds(value: float) -> DSfloat:
    # DS values hold at most 16 characters; auto_format picks the closest representation.
    return DSfloat(float(value), auto_format=True)


def _volume_as_int16(case: Case) -> np.ndarray:
    volume = np.asarray(case.volume)
    if volume.dtype == np.int16:
        return volume
    if not np.all(np.isfinite(volume)):
        raise DataError(f"{case.case_id}: volume has NaN or infinite values; cannot write DICOM")
    return np.clip(np.rint(volume), -32768, 32767).astype(np.int16)


def _make_template(case: Case, study_uid: str, frame_uid: str, bits: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.Modality = "CT"  # IRCAD's masks are CT objects too; kept for layout compatibility
    ds.Manufacturer = "liverseg_helpers"
    ds.PatientName = case.case_id
    ds.PatientID = case.case_id
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.SliceThickness = _ds(case.spacing_mm[0])
    ds.SpacingBetweenSlices = _ds(case.spacing_mm[0])
    direction = np.asarray(case.direction, dtype=float).reshape(3, 3)
    ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [_ds(case.spacing_mm[1]), _ds(case.spacing_mm[2])]
    ds.Rows, ds.Columns = case.shape[1], case.shape[2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if bits == 16 else 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "50"  # liver window: L 50 / W 400 HU
    ds.WindowWidth = "400"
    return ds


def _write_series(
    folder: Path,
    template: Dataset,
    pixels: np.ndarray,
    series_uid: str,
    description: str,
    case: Case,
) -> None:
    """Write ``pixels`` (n, rows, cols) as ``folder/image_0 ... image_{n-1}``."""
    folder.mkdir(parents=True)
    direction = np.asarray(case.direction, dtype=float).reshape(3, 3)
    origin = np.asarray(case.origin_mm, dtype=float)
    step = direction[:, 2] * case.spacing_mm[0]
    ds = template
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    for k in range(pixels.shape[0]):
        position = origin + k * step
        uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = k
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position @ direction[:, 2])
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        pydicom.dcmwrite(folder / f"image_{k}", ds, enforce_file_format=True)


def _lesion_masks(case: Case) -> list[np.ndarray]:
    if case.lesions is not None:
        ids = [int(i) for i in np.unique(case.lesions) if i != 0]
        return [case.lesions == i for i in ids]
    if TUMOUR in case.masks and np.any(case.masks[TUMOUR]):
        labels = cc3d.connected_components(case.masks[TUMOUR].astype(np.uint8), connectivity=26)
        return [labels == i for i in range(1, int(labels.max()) + 1)]
    return []


def write_ircadb_patient(case: Case, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a case as a 3D-IRCADb-01 patient folder, atomically.

    Writes ``out_dir/PATIENT_DICOM/image_N`` (CT Image Storage, int16 HU, RescaleSlope 1,
    RescaleIntercept 0, geometry tags) and ``out_dir/MASKS_DICOM/<structure>/image_N`` (uint8
    0/255): ``liver``, one ``livertumor01``, ``livertumor02``... per lesion id of
    ``case.lesions`` (or per connected component of ``masks["tumour"]`` when ``lesions`` is
    None), and every other mask under its own name. Everything is written to a hidden temporary
    folder next to ``out_dir`` and renamed at the end, so a patient folder is never half-written.

    Args:
        case: Case to write; float volumes are rounded to int16.
        out_dir: Patient folder to create, e.g. ``cohort/phantom_001``.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        ``out_dir``.

    Raises:
        OutputExistsError: If ``out_dir`` exists and ``overwrite`` is False.
        DataError: If the volume holds NaN/inf or a mask's shape differs from the volume's.
    """
    out_dir = Path(out_dir)
    check_output_path(out_dir, overwrite)
    volume = _volume_as_int16(case)
    for name, mask in case.masks.items():
        if mask.shape != volume.shape:
            raise DataError(
                f"{case.case_id}: mask {name!r} has shape {mask.shape}, volume {volume.shape}"
            )
    if case.lesions is not None and case.lesions.shape != volume.shape:
        raise DataError(f"{case.case_id}: lesions shape {case.lesions.shape} != {volume.shape}")
    digest = hashlib.sha1(volume.tobytes()).hexdigest()
    study_uid = generate_uid(entropy_srcs=[case.case_id, digest, "study"])
    frame_uid = generate_uid(entropy_srcs=[case.case_id, digest, "frame"])
    structures: list[tuple[str, np.ndarray]] = []
    if LIVER in case.masks:
        structures.append((LIVER, case.masks[LIVER]))
    for i, lesion in enumerate(_lesion_masks(case), start=1):
        structures.append((f"{LIVER_TUMOUR_PREFIX}{i:02d}", lesion))
    for name, mask in case.masks.items():
        if name not in (LIVER, TUMOUR) and not name.startswith(LIVER_TUMOUR_PREFIX):
            structures.append((name, mask))

    with atomic_folder(out_dir) as tmp_dir:
        template = _make_template(case, study_uid, frame_uid, bits=16)
        ct_uid = generate_uid(entropy_srcs=[study_uid, PATIENT_DICOM])
        _write_series(tmp_dir / PATIENT_DICOM, template, volume, ct_uid, "CT", case)
        mask_template = _make_template(case, study_uid, frame_uid, bits=8)
        for name, mask in structures:
            pixels = np.where(mask, np.uint8(255), np.uint8(0))
            uid = generate_uid(entropy_srcs=[study_uid, MASKS_DICOM, name])
            folder = tmp_dir / MASKS_DICOM / name
            _write_series(folder, mask_template, pixels, uid, f"mask {name}", case)
    return out_dir
