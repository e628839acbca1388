"""Small synthetic cases and DICOM files for the io tests (built with pydicom, no real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from liverseg_helpers.io.case import Case

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_sphere_case(
    case_id: str = "synthetic_001",
    shape: tuple[int, int, int] = (12, 32, 32),
    spacing_mm: tuple[float, float, float] = (2.5, 0.8, 0.8),
) -> Case:
    """A 'liver' sphere with two cube lesions inside it, HU values -1000..1000, int16."""
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, size=shape).astype(np.int16)
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    liver = ((z - centre[0]) / (shape[0] / 2.5)) ** 2 + ((y - centre[1]) / 10) ** 2 + (
        (x - centre[2]) / 10
    ) ** 2 <= 1
    lesions = np.zeros(shape, dtype=np.int32)
    lesions[5:7, 14:17, 14:17] = 1
    lesions[6:7, 18:20, 12:14] = 2
    return Case(
        case_id=case_id,
        volume=volume,
        spacing_mm=spacing_mm,
        origin_mm=(-12.5, -30.25, 100.0),
        masks={"liver": liver, "tumour": lesions > 0},
        lesions=lesions,
        format="phantom",
    )


def make_ct_slice(
    z_mm: float,
    pixels: np.ndarray | None = None,
    series_uid: str = "1.2.3.4",
    modality: str = "CT",
    intercept: float = -1024.0,
    instance: int = 1,
) -> Dataset:
    """One CT slice dataset (unsigned stored values, rescale intercept), 8x8 by default."""
    if pixels is None:
        pixels = np.full((8, 8), int(z_mm * 10) % 1000 + 1024, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = uid
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-10.0, -20.0, z_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = 1
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write_series(folder: Path, z_positions: list[float], **kwargs) -> list[Path]:
    """Write one slice file per position, named ``slice_<k>.dcm`` in the given order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, z in enumerate(z_positions):
        path = folder / f"slice_{k}.dcm"
        pydicom.dcmwrite(path, make_ct_slice(z, instance=k + 1, **kwargs), enforce_file_format=True)
        paths.append(path)
    return paths
