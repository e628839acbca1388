"""Files of a case, whether they sit in a folder or in a zip archive, and atomic writing.

A reader asks :func:`open_members` for the files below a folder or inside a zip and gets the
same :class:`Member` objects either way, so the DICOM readers never care where bytes come from.
Zips are read in memory (nothing is extracted), and every member name is checked first: a name
that is absolute or climbs out with ``..`` raises :class:`UnsafeArchiveError`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liverseg_helpers.errors import DataError, UnsafeArchiveError

# Names that are never slices: macOS resource forks, DICOMDIR indexes, licences and notes.
_SKIPPED_NAMES = {"DICOMDIR", "LICENSE", "LICENSE.txt", "README", "README.md", "Thumbs.db"}


class CaseNotFoundError(DataError, FileNotFoundError):
    """A case path that does not exist (a DataError, so the CLI reports it cleanly)."""


@dataclass(frozen=True)
class Member:
    """One file of a folder or zip archive.

    Attributes:
        name: Path relative to the folder or archive root, ``/``-separated.
        label: Human-readable location used in error messages (``"MASKS_DICOM.zip:liver/image_3"``).
        read: Returns the file's bytes.
    """

    name: str
    label: str
    read: Callable[[], bytes]

    @property
    def file_name(self) -> str:
        """Last path component, e.g. ``"image_3"``."""
        return PurePosixPath(self.name).name

    @property
    def parent_name(self) -> str:
        """Name of the folder holding the file (``""`` at the root)."""
        parts = PurePosixPath(self.name).parts
        return parts[-2] if len(parts) > 1 else ""


def check_member_name(name: str, archive: Path) -> None:
    """Reject archive member names that would point outside the archive's folder.

    Args:
        name: Member name as stored in the archive.
        archive: Archive path, for the message.

    Raises:
        UnsafeArchiveError: If the name is absolute, has a drive letter, or contains ``..``.
    """
    normalized = name.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized) or ".." in parts:
        raise UnsafeArchiveError(
            f"{archive.name}: unsafe member name {name!r} (absolute path or '..'); refusing to read"
        )


def _is_skipped(name: str) -> bool:
    parts = PurePosixPath(name).parts
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return True
    return parts[-1] in _SKIPPED_NAMES


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{label}: corrupt zip member ({err})") from err


@contextmanager
def open_members(path: Path) -> Iterator[list[Member]]:
    """Yield the files below a folder or inside a zip archive, sorted by name.

    Hidden files, ``__MACOSX`` folders, ``DICOMDIR`` and licence/readme files are left out.

    Args:
        path: Folder or ``.zip`` file.

    Yields:
        Members; for a zip they can be read only inside the ``with`` block.

    Raises:
        CaseNotFoundError: If ``path`` does not exist.
        UnsafeArchiveError: If a zip member name is absolute or contains ``..``.
        DataError: If ``path`` is a file that is not a readable zip archive.
    """
    path = Path(path)
    if not path.exists():
        raise CaseNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        members = []
        for p in files:
            rel = p.relative_to(path).as_posix()
            if not _is_skipped(rel):
                members.append(Member(rel, str(p), p.read_bytes))
        yield members
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{path}: not a readable zip archive ({err})") from err
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for info in infos:
            check_member_name(info.filename, path)
        members = []
        for info in sorted(infos, key=lambda i: i.filename):
            if _is_skipped(info.filename):
                continue
            label = f"{path.name}:{info.filename}"
            members.append(
                Member(
                    info.filename,
                    label,
                    lambda info=info, label=label: _read_zip_member(zf, info, label),
                )
            )
        yield members


def natural_key(name: str) -> tuple:
    """Sort key that orders numbers numerically: ``image_2`` < ``image_10``, ``p_9`` < ``p_10``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def slice_number(member: Member) -> int:
    """The ``N`` of a 3D-IRCADb slice file name ``image_N``.

    Raises:
        DataError: If the file name holds no number.
    """
    match = re.fullmatch(r"\D*?(\d+)(\.dcm)?", member.file_name, flags=re.IGNORECASE)
    if match is None:
        raise DataError(
            f"{member.label}: slice file name {member.file_name!r} has no number; "
            "3D-IRCADb slices are named image_N"
        )
    return int(match.group(1))
