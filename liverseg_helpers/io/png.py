"""PNG slice folders, the layout of the paper's Kaggle-style export::

    folder/Images/<name>.png     windowed CT slice, 8-bit grey
    folder/Masks/<name>.png      liver mask of the same slice (any non-zero value = liver)

A PNG holds a CT slice that was already windowed and scaled to 0..255, so the Hounsfield units
cannot be recovered: the volume of a PNG case is float32 grey levels in 0..255 (not HU) and its
``format`` is ``"png"``. Do not window it again. The files carry no geometry either, so the
spacing is set to 1 mm.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, Case
from liverseg_helpers.io.files import CaseNotFoundError, natural_key
from liverseg_helpers.io.mask_values import check_mask_values

IMAGES = "Images"
MASKS = "Masks"
PNG_SUFFIXES = (".png",)


def is_png_folder(folder: Path) -> bool:
    """True if ``folder`` has an ``Images`` subfolder."""
    return (Path(folder) / IMAGES).is_dir()


def _read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot read as PNG (corrupt or not an image)")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def load_png_folder(folder: str | Path) -> Case:
    """Read a folder of PNG slices (``Images/``) and optional liver masks (``Masks/``).

    Slices are ordered by the numbers in their names (``slice_2`` before ``slice_10``); a mask
    pairs with the image of the same file name.

    Args:
        folder: Folder holding ``Images/`` and, optionally, ``Masks/``.

    Returns:
        Case with ``volume`` float32 grey levels 0..255 ``(n_slices, rows, cols)`` (HU are not
        recoverable from a PNG), ``spacing_mm`` (1, 1, 1), ``format="png"``, and
        ``masks["liver"]`` when ``Masks/`` exists.

    Raises:
        CaseNotFoundError: If the folder does not exist.
        DataError: No PNG in ``Images/``, an unreadable PNG, slices of different sizes, an
            image without its mask, or a mask whose shape differs from its image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseNotFoundError(f"{folder}: no such folder")
    images_dir = folder / IMAGES
    if not images_dir.is_dir():
        raise DataError(f"{folder}: no {IMAGES}/ folder")
    image_paths = sorted(
        (p for p in images_dir.iterdir() if p.suffix.lower() in PNG_SUFFIXES),
        key=lambda p: natural_key(p.name),
    )
    if not image_paths:
        raise DataError(f"{images_dir}: no PNG images")
    slices = [_read_grey(p) for p in image_paths]
    for path, image in zip(image_paths, slices, strict=True):
        if image.shape != slices[0].shape:
            raise DataError(
                f"{path}: image shape {image.shape} differs from {image_paths[0].name} "
                f"{slices[0].shape}"
            )
    case = Case(
        case_id=folder.name,
        volume=np.stack(slices).astype(np.float32),
        spacing_mm=(1.0, 1.0, 1.0),
        source=str(folder),
        format="png",
    )
    masks_dir = folder / MASKS
    if masks_dir.is_dir():
        masks = []
        for path in image_paths:
            mask_path = masks_dir / path.name
            if not mask_path.is_file():
                raise DataError(f"{mask_path}: missing mask for image {path.name}")
            masks.append(read_png_mask(mask_path, slices[0].shape))
        case.masks[LIVER] = np.stack(masks)
    return case


def read_png_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read one PNG mask slice as bool (any non-zero value is foreground).

    Args:
        path: PNG file.
        shape: ``(rows, cols)`` it must have (its CT slice's).

    Returns:
        Bool mask ``(rows, cols)``. Values besides 0 and the most frequent non-zero value
        are warned about (:mod:`liverseg_helpers.io.mask_values`).

    Raises:
        DataError: If the file is unreadable or its shape differs from ``shape``.
    """
    mask = _read_grey(path)
    if mask.shape != tuple(shape):
        raise DataError(f"{path}: mask shape {mask.shape} differs from image shape {tuple(shape)}")
    check_mask_values(mask, str(path))
    return mask > 0
