"""Reading a CHAOS CT case (the CHAOS challenge's layout)::

    chaos_ct_1/
        DICOM_anon/i0000,0000b.dcm ...     the CT series
        Ground/liver_GT_000.png ...        liver mask, one PNG per slice (0/255)

The k-th PNG (in name order) is the mask of the k-th CT slice counted from the head down by
position (``ImagePositionPatient``), whatever the file names; the volume itself runs feet to
head like every DICOM case, so the masks are reversed onto it. (Paired the other way, 10 % of
the liver mask of ``chaos_ct_1`` falls on air and lung, below -200 HU; paired this way none.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.dicom import load_dicom_series
from liverseg_helpers.io.files import CaseNotFoundError, natural_key
from liverseg_helpers.io.png import PNG_SUFFIXES, read_png_mask

CT_FOLDER = "DICOM_anon"
MASK_FOLDER = "Ground"


def is_chaos_case(folder: Path) -> bool:
    """True if ``folder`` holds ``DICOM_anon/`` and ``Ground/``."""
    folder = Path(folder)
    return (folder / CT_FOLDER).is_dir() and (folder / MASK_FOLDER).is_dir()


def load_chaos_case(folder: str | Path) -> Case:
    """Read one CHAOS CT case: CT and liver mask.

    Args:
        folder: Case folder with ``DICOM_anon/`` and ``Ground/``.

    Returns:
        Case with ``volume`` HU, ``format="chaos"``, ``masks["liver"]`` and an empty
        ``masks["tumour"]``: CHAOS patients are healthy liver donors, so a tumour stage can
        learn from them what a liver without lesions looks like.

    Raises:
        CaseNotFoundError: If the folder does not exist.
        DataError: Not the CHAOS layout, a PNG count that differs from the slice count, or a
            PNG of another size than the slices (the file is named); DicomSeriesError for a
            bad CT series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseNotFoundError(f"{folder}: no such folder")
    if not is_chaos_case(folder):
        raise DataError(f"{folder}: expected {CT_FOLDER}/ and {MASK_FOLDER}/ (CHAOS layout)")
    case = load_dicom_series(folder / CT_FOLDER)
    case.case_id, case.source, case.format = folder.name, str(folder), "chaos"
    mask_dir = folder / MASK_FOLDER
    mask_paths = sorted(
        (p for p in mask_dir.iterdir() if p.suffix.lower() in PNG_SUFFIXES),
        key=lambda p: natural_key(p.name),
    )
    if len(mask_paths) != case.shape[0]:
        raise DataError(
            f"{mask_dir}: {len(mask_paths)} PNG masks for {case.shape[0]} CT slices in "
            f"{folder / CT_FOLDER}; they must pair one to one"
        )
    masks = np.stack([read_png_mask(p, case.shape[1:]) for p in mask_paths])
    # CHAOS numbers its masks from the head down; the volume runs along direction[8] (z)
    if case.direction[8] > 0:
        masks = masks[::-1]
    case.masks[LIVER] = np.ascontiguousarray(masks)
    case.masks[TUMOUR] = np.zeros_like(case.masks[LIVER])  # healthy donors: no lesion
    return case
