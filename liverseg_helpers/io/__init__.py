"""Reading and writing CT and masks. Arrays are ``[slice, row, column]`` throughout."""

from liverseg_helpers.io.case import LIVER, TUMOUR, Case

__all__ = ["Case", "LIVER", "TUMOUR"]
