"""Reading an HCC-TACE-Seg patient (TCIA) as exported for teaching::

    0697/
        CT/dicom-00001.dcm ...     one axial CT series (may hold one stray slice; dropped)
        liver_seg.dcm              DICOM-SEG of the liver
        tumour_seg.dcm             DICOM-SEG of the liver tumours (optional)

Masks are placed on the CT by each frame's position (:mod:`liverseg_helpers.io.dicom_seg`).
"""

from __future__ import annotations

from pathlib import Path

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.dicom import load_dicom_series
from liverseg_helpers.io.dicom_seg import read_seg_mask
from liverseg_helpers.io.files import CaseNotFoundError
from liverseg_helpers.io.nifti import label_lesions

CT_FOLDER = "CT"
LIVER_SEG = "liver_seg.dcm"
TUMOUR_SEG = "tumour_seg.dcm"


def is_hcc_tace_case(folder: Path) -> bool:
    """True if ``folder`` holds a ``CT/`` folder and ``liver_seg.dcm``."""
    folder = Path(folder)
    return (folder / CT_FOLDER).is_dir() and (folder / LIVER_SEG).is_file()


def load_hcc_tace_case(folder: str | Path) -> Case:
    """Read one HCC-TACE-Seg patient: CT, liver and tumour masks.

    Args:
        folder: Patient folder with ``CT/``, ``liver_seg.dcm`` and optionally
            ``tumour_seg.dcm``.

    Returns:
        Case with ``volume`` HU, ``format="hcc_tace"``, ``masks["liver"]`` (the liver
        segmentation joined with the tumours, so that the liver includes its tumours as in
        3D-IRCADb and LiTS), ``masks["tumour"]`` and ``lesions`` (one id per connected tumour)
        when ``tumour_seg.dcm`` exists.

    Raises:
        CaseNotFoundError: If the folder does not exist.
        DataError: No ``CT/`` or ``liver_seg.dcm``, or a mask that does not fit the CT
            (:func:`read_seg_mask`); DicomSeriesError for a bad CT series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseNotFoundError(f"{folder}: no such folder")
    if not is_hcc_tace_case(folder):
        raise DataError(f"{folder}: expected {CT_FOLDER}/ and {LIVER_SEG} (HCC-TACE-Seg layout)")
    case = load_dicom_series(folder / CT_FOLDER)
    case.case_id, case.source, case.format = folder.name, str(folder), "hcc_tace"
    liver = read_seg_mask(folder / LIVER_SEG, case)
    if (folder / TUMOUR_SEG).is_file():
        tumour = read_seg_mask(folder / TUMOUR_SEG, case)
        case.masks[TUMOUR] = tumour
        case.lesions = label_lesions(tumour)
        liver = liver | tumour
    case.masks = {LIVER: liver, **case.masks}
    return case
