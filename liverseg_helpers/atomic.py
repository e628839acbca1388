"""Writing outputs atomically: never a half-written file or folder under its final name.

Every writer of the package goes through here: it writes to a hidden temporary sibling of the
target (same folder, so the final rename is atomic on one file system), renames it onto the
target when the write succeeded, and removes it when the write failed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from liverseg_helpers.errors import DataError, OutputExistsError


def temp_sibling(target: str | os.PathLike, suffix: str = "") -> Path:
    """A unique hidden path beside ``target``, e.g. ``.best.keras.tmp-1a2b3c<suffix>``."""
    target = Path(target)
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}{suffix}"


def check_output_path(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is False."""
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(f"{path}: output already exists (pass --overwrite to replace it)")


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds.

    Args:
        path: Final file path; its folder is created.
        suffix: Suffix of the temporary name, for writers that insist on one (``.keras``,
            ``.nii.gz``); default: the target's own suffixes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, "".join(path.suffixes) if suffix is None else suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished folder ``new`` onto ``target``; an old ``target`` is moved aside first
    and deleted after, so ``target`` is never half-written."""
    new, target = Path(new), Path(target)
    old = temp_sibling(target, ".old") if target.exists() else None
    if old is not None:
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(data: Mapping, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically and return the path."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike, missing: str) -> dict:
    """Read a JSON file that a writer of this module wrote.

    Args:
        path: The file.
        missing: What the message says when the file is not there (what it is, what to do).

    Raises:
        DataError: The file is missing (``missing``) or not valid JSON, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path.parent}: {missing}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: unreadable ({err})") from err
