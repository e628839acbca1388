"""Reading a 3D-IRCADb-01 patient folder.

Layout (IRCAD's, after the outer archive is unpacked)::

    3Dircadb1.1/
        PATIENT_DICOM/image_0 ... image_128        (or PATIENT_DICOM.zip)
        MASKS_DICOM/<structure>/image_0 ...        (or MASKS_DICOM.zip)

Slices are ordered by the number ``N`` in ``image_N`` (as text, ``image_10`` would wrongly come
before ``image_9``); a mask slice belongs to the CT slice with the same file name; masks are
stored as 0/255. Only the structures named ``livertumor*`` are liver tumours: patient 7's
``tumor`` is an extrahepatic mass and must not be counted. IRCAD's ``liver`` mask already
contains the liver tumours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, TUMOUR, Case
from liverseg_helpers.io.dicom import (
    DicomSlice,
    compute_geometry,
    read_dicom_slice,
    stack_hu,
)
from liverseg_helpers.io.files import Member, natural_key, open_members, slice_number
from liverseg_helpers.io.mask_values import odd_mask_values, warn_odd_mask_values

PATIENT_DICOM = "PATIENT_DICOM"
MASKS_DICOM = "MASKS_DICOM"
LIVER_TUMOUR_PREFIX = "livertumor"
MASK_FOREGROUND = 255  # IRCAD stores its masks as 0/255


def find_ircadb_part(folder: Path, part: str) -> Path | None:
    """``folder/part`` as a folder, else ``folder/part.zip``, else None."""
    for candidate in (folder / part, folder / f"{part}.zip"):
        if candidate.exists():
            return candidate
    return None


def is_ircadb_patient(folder: Path) -> bool:
    """True if ``folder`` holds ``PATIENT_DICOM`` (folder or zip)."""
    return Path(folder).is_dir() and find_ircadb_part(Path(folder), PATIENT_DICOM) is not None


def _read_ct_slices(ct_path: Path) -> tuple[list[DicomSlice], list[str]]:
    with open_members(ct_path) as members:
        if not members:
            raise DataError(f"{ct_path}: no image files (expected image_0 ... image_N)")
        numbered: dict[int, Member] = {}
        for m in members:
            n = slice_number(m)
            if n in numbered:
                raise DataError(f"{m.label}: slice number {n} also used by {numbered[n].label}")
            numbered[n] = m
        ordered = [numbered[n] for n in sorted(numbered)]
        return [read_dicom_slice(m) for m in ordered], [m.file_name for m in ordered]


def _read_structures(
    masks_path: Path,
    wanted: Sequence[str],
    slice_index: dict[str, int],
    shape: tuple[int, int, int],
) -> dict[str, np.ndarray]:
    """Read the structures whose names are in ``wanted`` or start with ``livertumor``."""
    structures: dict[str, np.ndarray] = {}
    filled: dict[str, set[str]] = {}
    odd: dict[str, tuple[list[str], set[int]]] = {}  # structure -> (files, odd values)
    with open_members(masks_path) as members:
        for m in members:
            name = m.parent_name
            if not (name in wanted or name.startswith(LIVER_TUMOUR_PREFIX)):
                continue
            if m.file_name not in slice_index:
                raise DataError(
                    f"{m.label}: mask slice has no CT slice named {m.file_name!r} in "
                    f"{PATIENT_DICOM}"
                )
            sl = read_dicom_slice(m, expect_ct=False)
            if sl.pixels.shape != shape[1:]:
                raise DataError(
                    f"{m.label}: mask shape {sl.pixels.shape} differs from CT slice shape "
                    f"{shape[1:]}"
                )
            if name not in structures:
                structures[name] = np.zeros(shape, dtype=bool)
                filled[name] = set()
            structures[name][slice_index[m.file_name]] = sl.pixels > 0
            odd_values = odd_mask_values(sl.pixels, MASK_FOREGROUND)
            if odd_values:
                files, values = odd.setdefault(name, ([], set()))
                files.append(m.label)
                values.update(odd_values)
            filled[name].add(m.file_name)
    for files, values in odd.values():
        warn_odd_mask_values(files[0], values, MASK_FOREGROUND, n_files=len(files))
    for name, got in filled.items():
        # IRCAD stores every structure on every CT slice; a gap is a lost file, which would
        # otherwise read as "no organ on this slice".
        missing = sorted(set(slice_index) - got, key=slice_index.__getitem__)
        if missing:
            raise DataError(
                f"{masks_path}: structure {name!r} lacks {len(missing)} of {len(slice_index)} "
                f"slices (first: {missing[0]!r}); the mask files are incomplete"
            )
    return structures


def load_ircadb_patient(
    folder: str | Path, extra_structures: Sequence[str] = (), read_masks: bool = True
) -> Case:
    """Read one 3D-IRCADb-01 patient: CT, liver, liver tumours.

    Args:
        folder: Patient folder holding ``PATIENT_DICOM`` and ``MASKS_DICOM`` (each a folder or
            a ``.zip``); ``MASKS_DICOM`` may be absent (CT only).
        extra_structures: Other structures to load into ``masks`` under their own names, e.g.
            ``("portalvein", "tumor")``. They never count as liver tumour.
        read_masks: False: the CT alone, ``MASKS_DICOM`` left unread (prediction needs no
            masks, and reading a patient's structures takes seconds).

    Returns:
        Case with ``volume`` int16 HU ``(n_slices, 512, 512)``, ``format="ircadb"``. When the
        patient has a ``liver`` mask: ``masks["liver"]``, ``masks["tumour"]`` (union of the
        ``livertumor*`` structures; all False when there is none, since IRCAD delineates every
        liver tumour) and ``lesions`` (int32, id k for the k-th ``livertumor*`` in natural name
        order). Without masks, ``masks`` is empty and ``lesions`` None.

    Raises:
        CaseNotFoundError: If the folder does not exist.
        DataError: No ``PATIENT_DICOM``, no images, a slice name without number, a mask slice
            without a CT slice or of another shape, a structure missing some slices.
        DicomSeriesError: A CT slice that is not CT, has no pixels, or is corrupt.
        UnsafeArchiveError: A zip member name that leaves the archive.
    """
    folder = Path(folder)
    ct_path = find_ircadb_part(folder, PATIENT_DICOM)
    if ct_path is None:
        raise DataError(f"{folder}: no {PATIENT_DICOM} folder or {PATIENT_DICOM}.zip")
    slices, names = _read_ct_slices(ct_path)
    geometry = compute_geometry(slices)
    volume = stack_hu(slices)
    case = Case(
        case_id=folder.name,
        volume=volume,
        spacing_mm=geometry.spacing_mm,
        origin_mm=geometry.origin_mm,
        direction=geometry.direction,
        source=str(folder),
        format="ircadb",
    )
    masks_path = find_ircadb_part(folder, MASKS_DICOM) if read_masks else None
    if masks_path is None:
        return case
    slice_index = {name: i for i, name in enumerate(names)}
    wanted = [LIVER, *extra_structures]
    structures = _read_structures(masks_path, wanted, slice_index, case.shape)
    tumour_names = sorted(
        (s for s in structures if s.startswith(LIVER_TUMOUR_PREFIX)), key=natural_key
    )
    if LIVER in structures:
        case.masks[LIVER] = structures[LIVER]
    if LIVER in structures or tumour_names:
        lesions = np.zeros(case.shape, dtype=np.int32)
        for lesion_id, name in enumerate(tumour_names, start=1):
            lesions[structures[name]] = lesion_id
        case.lesions = lesions
        case.masks[TUMOUR] = lesions > 0
    for name in extra_structures:
        if name in structures and not name.startswith(LIVER_TUMOUR_PREFIX):
            case.masks[name] = structures[name]
    return case
