"""Downloading with resume and checksums, and archive extraction that cannot escape its folder.

Used by :mod:`liverseg_helpers.data.manifest` (``liverseg data fetch``); the public names are
re-exported there. Only the standard library and tqdm: no extra dependency for a download.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm.auto import tqdm

from liverseg_helpers.errors import ChecksumError, DataError, OutputExistsError, UnsafeArchiveError

CHUNK_BYTES = 1 << 20  # 1 MiB: large enough for speed, small enough for a smooth progress bar
PROGRESS_MIN_BYTES = 64 << 20  # hashing files smaller than this shows no progress bar


def hash_file(
    path: str | os.PathLike, algorithm: str = "sha256", progress: bool | None = None
) -> str:
    """Hex digest of a file, read in chunks (never the whole file in memory).

    Args:
        path: File to hash.
        algorithm: Any :func:`hashlib.new` name, e.g. ``"sha256"`` or ``"md5"``.
        progress: Show a tqdm bar; ``None`` shows one for files over 64 MiB.

    Returns:
        Lower-case hexadecimal digest.

    Raises:
        DataError: The file does not exist or is not a regular file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not a file, cannot compute its {algorithm}")
    size_bytes = path.stat().st_size
    show = size_bytes >= PROGRESS_MIN_BYTES if progress is None else progress
    digest = hashlib.new(algorithm)
    with (
        path.open("rb") as stream,
        tqdm(
            total=size_bytes,
            unit="B",
            unit_scale=True,
            desc=f"{algorithm} {path.name}",
            disable=not show,
            file=sys.stderr,
        ) as bar,
    ):
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file as 64 lower-case hex digits (streamed; progress bar for big files)."""
    return hash_file(path, "sha256")


def check_file_hashes(path: Path, sha256: str | None = None, md5: str | None = None) -> None:
    """Compare a file with the checksums given (``None`` = unknown, not checked).

    Raises:
        ChecksumError: Naming the file, the algorithm, the expected and the actual digest.
    """
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = hash_file(path, algorithm)
            if actual != expected.lower():
                raise ChecksumError(
                    f"{path}: {algorithm} mismatch: expected {expected.lower()}, got {actual}"
                )


def _open_url(url: str, offset_bytes: int, timeout_s: float) -> tuple[BinaryIO, int | None, bool]:
    """Open ``url`` from byte ``offset_bytes``: (stream, total size or None, resumed?).

    ``file://`` URLs are opened directly so that they can resume too (urllib ignores Range there).
    """
    parts = urllib.parse.urlparse(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        if not path.is_file():
            raise DataError(f"{url}: no such file")
        size_bytes = path.stat().st_size
        resumed = 0 < offset_bytes <= size_bytes  # a .part longer than the source restarts
        stream = path.open("rb")
        stream.seek(offset_bytes if resumed else 0)
        return stream, size_bytes, resumed
    request = urllib.request.Request(url, headers={"User-Agent": "liverseg-helpers"})
    if offset_bytes:
        request.add_header("Range", f"bytes={offset_bytes}-")
    response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (http/https/file only)
    resumed = offset_bytes > 0 and response.status == 206
    length = response.headers.get("Content-Length")
    total = int(length) + (offset_bytes if resumed else 0) if length is not None else None
    return response, total, resumed


def download_file(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    resume: bool = True,
    *,
    md5: str | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial download.

    The data goes to ``<dest>.part``; a later call resumes it with an HTTP Range request.
    Only a complete file whose checksums match is renamed (atomically) to ``dest``, so a file
    under the final name is always a verified one. An existing ``dest`` that matches is reused.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: Final file path; its folder is created.
        sha256: Expected SHA-256 (hex), or None when unknown.
        resume: Continue an existing ``.part`` file instead of starting again.
        md5: Expected MD5 (hex), for sources that publish only MD5.
        timeout_s: Socket timeout in seconds.

    Returns:
        ``dest`` as a Path.

    Raises:
        ChecksumError: The downloaded file does not match (the ``.part`` is deleted, since
            resuming a wrong file cannot fix it).
        DataError: The download failed or stopped early (the ``.part`` is kept for resuming).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        try:
            check_file_hashes(dest, sha256, md5)
            return dest  # already there and verified (or nothing to verify)
        except ChecksumError:
            dest.unlink()  # never keep a wrong file under the final name; fetch it again
    offset_bytes = part.stat().st_size if resume and part.is_file() else 0
    try:
        stream, total_bytes, resumed = _open_url(url, offset_bytes, timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset_bytes:  # Range not satisfiable: the .part may be complete
            if sha256 or md5:
                return _finish_part(part, dest, url, sha256, md5)
            part.unlink()  # nothing to check it against: start again
            return download_file(url, dest, resume=False, timeout_s=timeout_s)
        raise DataError(
            f"{url}: download of {dest.name} failed: HTTP {err.code} {err.reason}"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"{url}: download of {dest.name} failed: {err}") from err
    if not resumed:
        offset_bytes = 0
    received_bytes = offset_bytes
    try:
        with (
            stream,
            part.open("ab" if resumed else "wb") as out,
            tqdm(
                total=total_bytes,
                initial=offset_bytes,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                file=sys.stderr,
            ) as bar,
        ):
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                received_bytes += len(chunk)
                bar.update(len(chunk))
    except OSError as err:  # includes socket timeouts and http.client.IncompleteRead
        raise DataError(
            f"{url}: download of {dest.name} interrupted after {received_bytes} bytes "
            f"({err}); {part.name} is kept, run again to resume"
        ) from err
    if total_bytes is not None and received_bytes < total_bytes:
        raise DataError(
            f"{url}: download of {dest.name} stopped at {received_bytes} of {total_bytes} bytes; "
            f"{part.name} is kept, run again to resume"
        )
    return _finish_part(part, dest, url, sha256, md5)


def _finish_part(part: Path, dest: Path, url: str, sha256: str | None, md5: str | None) -> Path:
    """Verify a complete ``.part`` file and rename it to ``dest``; delete it if it is wrong."""
    try:
        check_file_hashes(part, sha256, md5)
    except ChecksumError as err:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{dest.name} (from {url}): {err}; the partial file was deleted"
        ) from err
    os.replace(part, dest)
    return dest


def _unsafe_reason(name: str) -> str | None:
    """Why an archive member name would leave the extraction folder, or None if it stays in."""
    posix = name.replace("\\", "/")
    if (
        posix.startswith("/")
        or PurePosixPath(posix).is_absolute()
        or (
            len(posix) > 1 and posix[1] == ":"  # Windows drive letter, e.g. C:/...
        )
    ):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "path with '..'"
    return None


def _through_symlink(path: str, symlinks: set[str]) -> str | None:
    """The first symbolic link member that ``path`` walks through, ``".."`` if it leaves the
    archive's folder first, or None.

    Up to the first symbolic link, ``..`` can be resolved by text; after it only the file
    system knows where the path goes, so such a path is refused rather than guessed.
    """
    walked: list[str] = []
    parts = path.replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            if not walked:
                return ".."
            walked.pop()
        else:
            walked.append(part)
        if i < len(parts) - 1 and "/".join(walked) in symlinks:
            return "/".join(walked)
    return None


def _check_link_target(member: tarfile.TarInfo, symlinks: set[str]) -> str | None:
    """Why a tar link member points outside the folder (or through another link), or None."""
    target = member.linkname.replace("\\", "/")
    if target.startswith("/"):
        return f"link to absolute path {member.linkname}"
    # A symlink resolves from its own folder, a hard link from the archive root.
    base = posixpath.dirname(member.name) if member.issym() else ""
    joined = posixpath.join(base, target)
    resolved = posixpath.normpath(joined)
    through = _through_symlink(joined + "/", symlinks)
    if through == ".." or resolved == ".." or resolved.startswith(("../", "/")):
        return f"link pointing outside the folder ({member.linkname})"
    if through:
        return f"link through the symbolic link {through!r} ({member.linkname})"
    return None


def _is_zip(archive: Path) -> bool:
    """A zip archive, and not a tar archive that holds a zip file: ``zipfile.is_zipfile`` also
    finds the zip directory of a ``.keras`` model near the end of a tar that holds one."""
    return zipfile.is_zipfile(archive) and not (archive.is_file() and tarfile.is_tarfile(archive))


def list_archive_members(archive: str | os.PathLike) -> list[str]:
    """Member names of a zip or tar archive, after checking every one is safe to extract.

    Raises:
        UnsafeArchiveError: Naming the archive and the first unsafe member.
        DataError: The file is neither a zip nor a tar archive.
    """
    archive = Path(archive)
    if _is_zip(archive):
        with zipfile.ZipFile(archive) as zf:
            names = []
            for info in zf.infolist():
                reason = _unsafe_reason(info.filename)
                if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                    reason = "symbolic link"  # zipfile would write it as a file; refuse instead
                if reason:
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r}: {reason}")
                names.append(info.filename)
            return names
    if archive.is_file() and tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            names = []
            members = tf.getmembers()
            symlinks = {posixpath.normpath(m.name.replace("\\", "/")) for m in members if m.issym()}
            for member in members:
                reason = _unsafe_reason(member.name)
                through = _through_symlink(member.name, symlinks)
                if reason is None and through:
                    reason = f"inside the symbolic link {through!r}"
                if reason is None and (member.issym() or member.islnk()):
                    reason = _check_link_target(member, symlinks)
                if reason is None and not (
                    member.isfile() or member.isdir() or member.issym() or member.islnk()
                ):
                    reason = "device, fifo or other special file"
                if reason:
                    raise UnsafeArchiveError(f"{archive.name}: member {member.name!r}: {reason}")
                names.append(member.name)
            return names
    raise DataError(f"{archive}: not a zip or tar archive")


def archive_top_level(archive: str | os.PathLike) -> list[str]:
    """Sorted first path components of the members of an archive (what extraction creates)."""
    tops = {PurePosixPath(n.replace("\\", "/")).parts[0] for n in list_archive_members(archive)}
    return sorted(t for t in tops if t not in (".", ""))


def safe_extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract a zip or tar archive into ``dest_dir``, refusing any member that would escape it.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links that point outside, and special files are refused. The archive is unpacked into a
    temporary folder next to ``dest_dir`` and its top-level entries are then renamed into
    ``dest_dir``, so an interrupted extraction leaves no half-written entries there.

    Args:
        archive: ``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``... file.
        dest_dir: Folder to extract into (created if missing).

    Returns:
        ``dest_dir`` as a Path.

    Raises:
        UnsafeArchiveError: Naming the archive and the member; nothing is extracted.
        OutputExistsError: A top-level entry of the archive already exists in ``dest_dir``.
        DataError: The file is not an archive.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    list_archive_members(archive)  # raises before anything is written
    tops = archive_top_level(archive)
    clashes = [t for t in tops if (dest_dir / t).exists()]
    if clashes:
        raise OutputExistsError(f"{archive.name}: {dest_dir / clashes[0]} already exists")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=dest_dir))
    try:
        if _is_zip(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp_dir)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.12 and security backports
                    try:
                        tf.extractall(tmp_dir, filter="data")
                    except tarfile.FilterError as err:
                        raise UnsafeArchiveError(f"{archive.name}: {err}") from err
                else:  # members were checked above
                    tf.extractall(tmp_dir)  # noqa: S202
        for top in tops:
            os.replace(tmp_dir / top, dest_dir / top)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dest_dir
