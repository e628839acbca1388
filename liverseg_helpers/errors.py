"""Exceptions raised for bad input. Each message names the file and the problem."""


class LiverSegError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(LiverSegError, ValueError):
    """Input data that cannot be read or is inconsistent (shape, empty mask, NaN HU...)."""


class DicomSeriesError(DataError):
    """A DICOM file or series that is not a usable CT (wrong modality, no pixels, mixed series)."""


class ChecksumError(DataError):
    """A file whose checksum differs from the one its dataset card gives."""


class UnsafeArchiveError(DataError):
    """An archive member whose path would leave the extraction folder."""


class ModelFileError(LiverSegError, ValueError):
    """A model file that is missing, foreign, or does not fit the input."""


class OutputExistsError(LiverSegError, FileExistsError):
    """An output path that already exists while overwriting was not asked for."""
