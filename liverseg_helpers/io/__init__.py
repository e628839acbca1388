"""Reading and writing CT and masks. Arrays are ``[slice, row, column]`` throughout.

``load_case(path)`` reads any supported format; the format readers, writers and
``describe_case`` are re-exported here so notebooks write ``io.load_case(...)``.
"""

from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.chaos import load_chaos_case
from liverseg_helpers.io.cohort import (
    case_id_of,
    detect_case_format,
    list_case_paths,
    load_case,
    load_cohort,
)
from liverseg_helpers.io.dicom import load_dicom_series
from liverseg_helpers.io.dicom_seg import read_seg_mask
from liverseg_helpers.io.files import CaseNotFoundError
from liverseg_helpers.io.hcc_tace import load_hcc_tace_case
from liverseg_helpers.io.info import describe_case, format_description
from liverseg_helpers.io.ircadb import load_ircadb_patient
from liverseg_helpers.io.ircadb_writer import write_ircadb_patient
from liverseg_helpers.io.mask_output import write_prediction
from liverseg_helpers.io.nifti import find_nifti_labels, load_nifti_case, write_mask_nifti
from liverseg_helpers.io.nrrd_mask import attach_mask, read_nrrd_mask
from liverseg_helpers.io.png import load_png_folder

__all__ = [
    "Case",
    "CaseNotFoundError",
    "LIVER",
    "TUMOUR",
    "attach_mask",
    "case_id_of",
    "describe_case",
    "detect_case_format",
    "find_nifti_labels",
    "format_description",
    "list_case_paths",
    "load_case",
    "load_chaos_case",
    "load_cohort",
    "load_dicom_series",
    "load_hcc_tace_case",
    "load_ircadb_patient",
    "load_nifti_case",
    "load_png_folder",
    "read_nrrd_mask",
    "read_seg_mask",
    "write_ircadb_patient",
    "write_mask_nifti",
    "write_prediction",
]
