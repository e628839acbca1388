"""Write a predicted mask (NIfTI, PNG folder, DICOM-SEG) in the format its output path asks for.

Output formats, chosen by the output path:

* ``*.nii.gz`` / ``*.nii`` – NIfTI with the CT's geometry (``io.write_mask_nifti``);
* ``*.dcm`` – a DICOM Segmentation object (highdicom) that references the source CT series;
  only when the input is DICOM (a series folder, zip, or a 3D-IRCADb patient);
* a path ending with ``/`` or without suffix – a folder of 8-bit PNG slices ``image_N.png``
  with 0/255 values, N the slice index (the paper's format).

Every writer refuses an existing output unless asked to overwrite (``OutputExistsError``) and
never leaves a partial file: it writes a temporary file or folder beside the target, then
renames it.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np

from liverseg_helpers.atomic import atomic_file, atomic_folder, check_output_path
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.io.nifti import write_mask_nifti


def output_kind(path: str | os.PathLike) -> str:
    """``"nifti"``, ``"dicom_seg"`` or ``"png"`` from the output path (see the module doc)."""
    text = str(path)
    name = Path(text).name.lower()
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    if name.endswith(".dcm"):
        return "dicom_seg"
    if text.endswith(("/", os.sep)) or not Path(text).suffix:
        return "png"
    raise DataError(f"{path}: unknown output type; use .nii.gz, .dcm, or a folder path ending in /")


def write_png_folder(mask: np.ndarray, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a mask as ``image_N.png`` slices with 0/255 values, atomically.

    Args:
        mask: bool ``[z, y, x]``.
        out_dir: Folder to create.
        overwrite: Replace an existing folder.

    Returns:
        The folder.

    Raises:
        OutputExistsError: The folder exists and ``overwrite`` is False.
    """
    import cv2

    out_dir = Path(out_dir)
    check_output_path(out_dir, overwrite)
    with atomic_folder(out_dir) as tmp:
        for index, slice_mask in enumerate(np.asarray(mask) != 0):
            cv2.imwrite(str(tmp / f"image_{index}.png"), slice_mask.astype(np.uint8) * 255)
    return out_dir


def read_source_datasets(source: str | os.PathLike) -> list:
    """The CT DICOM datasets of an input, for DICOM-SEG references.

    Args:
        source: DICOM series folder, ``.zip`` of one, a single DICOM file, or 3D-IRCADb
            patient folder (its ``PATIENT_DICOM`` folder or zip).

    Returns:
        pydicom datasets with pixel data (files without it are skipped).

    Raises:
        DataError: No DICOM image found (e.g. a NIfTI input).
    """
    import pydicom

    source = Path(source)
    if source.is_dir():
        for sub in ("PATIENT_DICOM", "PATIENT_DICOM.zip"):
            if (source / sub).exists():
                source = source / sub
                break
    blobs: list = []
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            blobs = [BytesIO(archive.read(i)) for i in archive.infolist() if not i.is_dir()]
    elif source.is_dir():
        blobs = sorted(p for p in source.rglob("*") if p.is_file())
    elif source.is_file():
        blobs = [source]  # a one-slice series given as its file (io.load_case reads it so)
    datasets = []
    for blob in blobs:
        try:
            ds = pydicom.dcmread(blob)
        except pydicom.errors.InvalidDicomError:
            continue
        if "PixelData" in ds:
            # An empty SpecificCharacterSet means the default repertoire (ISO_IR 6), but
            # highdicom rejects the empty value: drop it (our in-memory copy only).
            if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
                del ds.SpecificCharacterSet
            datasets.append(ds)
    if not datasets:
        raise DataError(
            f"{source}: DICOM-SEG output needs a DICOM input (series folder, zip or 3D-IRCADb "
            "patient); write .nii.gz for other inputs"
        )
    return datasets


def order_datasets_like_case(datasets: list, case: Case) -> list:
    """Sort source datasets so dataset ``k`` is slice ``k`` of ``case.volume``.

    Slices are matched by position along the slice normal, so the order the reader chose
    (head first or feet first) does not matter.

    Raises:
        DataError: The number of slices or their positions do not match the case.
    """
    if len(datasets) != case.shape[0]:
        raise DataError(
            f"{case.source}: {len(datasets)} DICOM images but the CT has {case.shape[0]} slices"
        )
    direction = np.asarray(case.direction, dtype=float).reshape(3, 3)
    normal = direction[:, 2]  # ITK: column k is the direction of array axis x, y, z
    origin_along = float(np.dot(np.asarray(case.origin_mm, float), normal))
    positions = [
        float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)) for ds in datasets
    ]
    index = np.rint((np.asarray(positions) - origin_along) / case.spacing_mm[0]).astype(int)
    if sorted(index.tolist()) != list(range(case.shape[0])):
        # Positions do not fit the case geometry (e.g. a reader that reset the origin):
        # fall back to ordering by position, which is how every reader stacks a series.
        index = np.argsort(np.argsort(positions))
    ordered = [None] * len(datasets)
    for ds, k in zip(datasets, index, strict=True):
        ordered[k] = ds
    return ordered


def write_dicom_seg(
    mask: np.ndarray, case: Case, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write a binary DICOM Segmentation (highdicom) referencing the case's source CT.

    Args:
        mask: bool ``[z, y, x]`` on the case's grid.
        case: The CT; ``case.source`` must be a DICOM series or 3D-IRCADb patient.
        path: Output ``.dcm``.
        overwrite: Replace an existing file.

    Returns:
        The written path.

    Raises:
        OutputExistsError: The file exists and ``overwrite`` is False.
        DataError: The input is not DICOM, or highdicom refuses the source images.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    check_output_path(path, overwrite)
    sources = order_datasets_like_case(read_source_datasets(case.source), case)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="liver",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="LiverSeg 2D UNet", version="0.1", family=codes.DCM.ArtificialIntelligence
        ),
    )
    try:
        with warnings.catch_warnings():
            # the source's PatientName is copied as is; highdicom's style hint is noise here
            warnings.filterwarnings("ignore", ".*intended person name", UserWarning)
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=(np.asarray(mask) != 0).astype(np.uint8),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[description],
                series_instance_uid=hd.UID(),
                series_number=900,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="LiverSeg course",
                manufacturer_model_name="liverseg-helpers",
                software_versions="0.1.0",
                device_serial_number="0",
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        # e.g. 3D-IRCADb files have no FrameOfReferenceUID, which a SEG must reference.
        message = f"{case.source}: cannot build a DICOM-SEG from this series: {err}"
        raise DataError(f"{message}; write .nii.gz instead") from err
    with atomic_file(path) as tmp:
        seg.save_as(tmp)
    return path


def write_prediction(
    mask: np.ndarray, case: Case, out: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write a mask in the format the output path asks for (see the module docstring).

    Raises:
        OutputExistsError: The output exists and ``overwrite`` is False.
        DataError: Unknown output type, or DICOM-SEG from a non-DICOM input.
    """
    kind = output_kind(out)
    path = Path(out)
    if kind == "png":
        return write_png_folder(mask, path, overwrite)
    if kind == "dicom_seg":
        return write_dicom_seg(mask, case, path, overwrite)
    check_output_path(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(write_mask_nifti(np.asarray(mask, dtype=np.uint8), case, path, overwrite))
