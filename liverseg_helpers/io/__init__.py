"""Reading and writing CT and masks. Arrays are ``[slice, row, column]`` throughout.

``load_case(path)`` reads any supported format; the format readers, writers and
``describe_case`` are re-exported here so notebooks write ``io.load_case(...)``.

The readers are imported on first use (``io.load_case`` imports :mod:`.cohort` then), so a
module that needs only :class:`Case` (the slice cache, on a training machine without pydicom or
SimpleITK) does not pull in every format's library.
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> the submodule that defines it.
_EXPORTS = {
    "Case": "case",
    "LIVER": "case",
    "TUMOUR": "case",
    "CaseNotFoundError": "files",
    "attach_mask": "nrrd_mask",
    "case_id_of": "cohort",
    "describe_case": "info",
    "detect_case_format": "cohort",
    "find_nifti_labels": "nifti",
    "format_description": "info",
    "list_case_paths": "cohort",
    "load_case": "cohort",
    "load_chaos_case": "chaos",
    "load_cohort": "cohort",
    "load_dicom_series": "dicom",
    "load_hcc_tace_case": "hcc_tace",
    "load_ircadb_patient": "ircadb",
    "load_nifti_case": "nifti",
    "load_png_folder": "png",
    "read_nrrd_mask": "nrrd_mask",
    "read_seg_mask": "dicom_seg",
    "write_ircadb_patient": "ircadb_writer",
    "write_mask_nifti": "nifti",
    "write_prediction": "mask_output",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
