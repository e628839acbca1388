"""One entry point for every format (:func:`load_case`) and for folders of patients."""

from __future__ import annotations

import zipfile
from pathlib import Path

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import Case
from liverseg_helpers.io.chaos import is_chaos_case, load_chaos_case
from liverseg_helpers.io.dicom import NON_DICOM_SUFFIXES, load_dicom_series
from liverseg_helpers.io.files import CaseNotFoundError, natural_key
from liverseg_helpers.io.hcc_tace import is_hcc_tace_case, load_hcc_tace_case
from liverseg_helpers.io.ircadb import PATIENT_DICOM, is_ircadb_patient, load_ircadb_patient
from liverseg_helpers.io.nifti import (
    is_label_file,
    is_nifti,
    load_nifti_case,
    strip_nifti_suffix,
)
from liverseg_helpers.io.png import is_png_folder, load_png_folder

MASK_SUFFIXES = (".nrrd", ".nhdr", ".seg.nrrd")
# Case folder layouts recognised by their content, in the order they are tried.
_FOLDER_FORMATS = (
    ("ircadb", is_ircadb_patient),
    ("chaos", is_chaos_case),
    ("hcc_tace", is_hcc_tace_case),
    ("png", is_png_folder),
)


def folder_format(folder: Path) -> str | None:
    """The layout of a case folder (``"ircadb"``, ``"chaos"``, ``"hcc_tace"``, ``"png"``), or
    None for any other folder."""
    return next((name for name, test in _FOLDER_FORMATS if test(folder)), None)


def is_cohort_folder(path: Path) -> bool:
    """True for a folder that is no case itself but holds case folders (e.g. ``hcc_tace_seg``)."""
    path = Path(path)
    return (
        path.is_dir()
        and folder_format(path) is None
        and any(folder_format(c) for c in path.iterdir() if c.is_dir())
    )


def detect_case_format(path: str | Path) -> str:
    """Name the reader for a path: ``"ircadb"``, ``"chaos"``, ``"hcc_tace"``, ``"png"``,
    ``"nifti"`` or ``"dicom"``.

    Raises:
        CaseNotFoundError: If the path does not exist.
        DataError: For a path that is a mask or label file, or an MSD task folder (a cohort).
    """
    path = Path(path)
    if not path.exists():
        raise CaseNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        layout = folder_format(path)
        if layout is not None:
            return layout
        if (path / "imagesTr").is_dir():
            raise DataError(
                f"{path}: an MSD task folder holds many cases; use load_cohort() or pass one "
                "imagesTr/<case>.nii.gz"
            )
        if is_cohort_folder(path):
            raise DataError(
                f"{path}: a folder of patients (a cohort); use load_cohort() or pass one patient"
            )
        return "dicom"
    name = path.name.lower()
    if is_nifti(path):
        if is_label_file(path):
            raise DataError(f"{path}: a label map, not a CT; pass the matching volume/image file")
        return "nifti"
    if name.endswith(MASK_SUFFIXES):
        raise DataError(f"{path}: a mask file, not a CT; attach it with io.attach_mask(case, ...)")
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as err:
            raise DataError(f"{path}: not a readable zip archive ({err})") from err
        if any(PATIENT_DICOM in n.split("/")[:-1] for n in names):
            raise DataError(
                f"{path}: a zipped 3D-IRCADb patient; unpack it and pass the patient folder "
                f"(its {PATIENT_DICOM}.zip and MASKS_DICOM.zip may stay zipped)"
            )
    return "dicom"


def load_case(path: str | Path, masks: bool = True) -> Case:
    """Read a case, whatever its format.

    Args:
        path: 3D-IRCADb patient folder (``PATIENT_DICOM`` + ``MASKS_DICOM``, folders or zips),
            DICOM series (folder, zip or single file), NIfTI CT (LiTS ``volume-N`` or MSD
            ``imagesTr/…``; the label file is found automatically), or a PNG folder
            (``Images/`` + ``Masks/``), CHAOS case (``DICOM_anon/`` + ``Ground/``) or
            HCC-TACE-Seg patient (``CT/`` + ``liver_seg.dcm``, ``tumour_seg.dcm``).
        masks: False: the CT alone, with empty ``masks`` and no ``lesions``, as prediction
            needs it. 3D-IRCADb's structures and a NIfTI label file are then not read at all
            (seconds for a 3D-IRCADb patient), the other formats' masks are dropped.

    Returns:
        The Case; see the format's reader for what ``masks`` holds.

    Raises:
        CaseNotFoundError: If the path does not exist.
        DataError: If the path is not a readable case (DicomSeriesError for bad DICOM).
    """
    path = Path(path)
    readers = {
        "ircadb": lambda p: load_ircadb_patient(p, read_masks=masks),
        "png": load_png_folder,
        "chaos": load_chaos_case,
        "hcc_tace": load_hcc_tace_case,
        "nifti": lambda p: load_nifti_case(p, find_labels=masks),
        "dicom": load_dicom_series,
    }
    case = readers[detect_case_format(path)](path)
    if not masks:
        case.masks, case.lesions = {}, None
    return case


def _holds_dicom(folder: Path) -> bool:
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() not in NON_DICOM_SUFFIXES:
            with p.open("rb") as f:
                return f.read(132)[128:] == b"DICM"
    return False


def list_case_paths(data_dir: str | Path) -> list[Path]:
    """The cases of a cohort folder, in natural name order.

    Recognised: 3D-IRCADb patient, CHAOS, HCC-TACE-Seg and PNG folders among the children
    (e.g. ``3Dircadb1.1``, ``chaos_ct_1``, ``0697`` or ``phantom_001``...), LiTS ``volume-N``
    files (also one folder down, as in the LiTS batches), MSD ``imagesTr/*.nii.gz`` (macOS
    ``._`` files skipped) and child folders holding DICOM files. ``data_dir`` itself may also
    be a single case.

    Raises:
        CaseNotFoundError: If ``data_dir`` does not exist.
        DataError: If no case is found.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CaseNotFoundError(f"{data_dir}: no such folder")
    if folder_format(data_dir):
        return [data_dir]
    if (data_dir / "imagesTr").is_dir():
        found = [
            p
            for p in (data_dir / "imagesTr").iterdir()
            if is_nifti(p) and not p.name.startswith(".")
        ]
    else:
        found = []
        for child in data_dir.iterdir():
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if folder_format(child) or _holds_dicom(child):
                    found.append(child)
                else:
                    found += [
                        p for p in child.iterdir() if is_nifti(p) and p.name.startswith("volume")
                    ]
            elif is_nifti(child) and not is_label_file(child):
                found.append(child)
    if not found:
        raise DataError(
            f"{data_dir}: no cases found (expected 3D-IRCADb, CHAOS or HCC-TACE-Seg patient "
            "folders, DICOM folders, "
            "LiTS volume-N.nii, MSD imagesTr/ or PNG folders)"
        )
    return sorted(found, key=lambda p: natural_key(p.as_posix()))


def case_id_of(path: str | Path) -> str:
    """The id a case of :func:`list_case_paths` gets: its folder name, or for a NIfTI file
    its name without the suffix (as :func:`load_case` sets ``Case.case_id``)."""
    path = Path(path)
    return strip_nifti_suffix(path.name) if is_nifti(path) else path.name


def load_cohort(data_dir: str | Path) -> list[Case]:
    """Read every case of :func:`list_case_paths` (all in memory: ~70 MB per real patient)."""
    return [load_case(p) for p in list_case_paths(data_dir)]
