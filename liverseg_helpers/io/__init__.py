"""Reading and writing CT and masks. Arrays are ``[slice, row, column]`` throughout."""

from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.dicom import load_dicom_series
from liverseg_helpers.io.ircadb import load_ircadb_patient
from liverseg_helpers.io.ircadb_writer import write_ircadb_patient

__all__ = [
    "Case",
    "LIVER",
    "TUMOUR",
    "load_dicom_series",
    "load_ircadb_patient",
    "write_ircadb_patient",
]
