"""Dataset cards: what each CT dataset is, where it comes from, and checking a local copy.

Each dataset has a card in ``data_manifest/`` at the repository root: ``<name>.md`` for people
and ``<name>.json`` for this module (layout patterns, expected counts, sha256 per known file,
download URLs). Cards: ``ircadb`` (3D-IRCADb-01), ``lits``, ``msd_task03_liver`` and
``phantom`` (the synthetic cohort of ``liverseg phantom``).

``verify_dataset`` checks a folder against its card; ``liverseg data verify`` and
``liverseg data fetch`` are the command-line faces of this module. Downloading and
extraction live in :mod:`liverseg_helpers.data.download` and are re-exported here.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from liverseg_helpers.data.download import (
    archive_top_level,
    download_file,
    safe_extract,
    sha256_file,
)
from liverseg_helpers.data.download import hash_file as hash_file  # re-exported
from liverseg_helpers.errors import DataError

ENV_MANIFEST_DIR = "LIVERSEG_MANIFEST_DIR"  # folder of *.json cards, overrides the defaults
CARD_KEYS = ("name", "title", "licence", "citation", "downloads", "layout", "files")


def find_cards_dir() -> Path:
    """Folder that holds the JSON cards.

    Looked up in order: ``$LIVERSEG_MANIFEST_DIR``; ``data_manifest/`` next to the package
    folder (a repository checkout, which is what an editable install points at);
    ``liverseg_helpers/data_manifest/`` (a copy shipped as package data, if a build adds one).

    Raises:
        DataError: None of these folders holds a ``*.json`` card; the message lists them.
    """
    package_dir = Path(__file__).resolve().parents[1]
    candidates = [package_dir.parent / "data_manifest", package_dir / "data_manifest"]
    if os.environ.get(ENV_MANIFEST_DIR):
        candidates.insert(0, Path(os.environ[ENV_MANIFEST_DIR]))
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"no dataset cards (*.json) found; looked in {tried} (set {ENV_MANIFEST_DIR})")


def list_cards() -> list[str]:
    """Names of the available dataset cards, sorted (e.g. ``["ircadb", "lits", ...]``)."""
    return sorted(p.stem for p in find_cards_dir().glob("*.json"))


def load_card(name: str) -> dict:
    """The JSON card of a dataset, by name or alias (case and ``-``/``_`` do not matter).

    Args:
        name: Card name (``ircadb``, ``lits``, ``msd_task03_liver``, ``phantom``) or an alias
            listed in a card (``3dircadb``, ``msd``, ``task03_liver``...).

    Returns:
        The card as a dict (see ``data_manifest/README.md`` for the fields).

    Raises:
        DataError: Unknown name (the message lists the cards), or a card file that is not
            valid JSON or lacks a required field.
    """
    folder = find_cards_dir()
    wanted = name.strip().lower().replace("-", "_")
    for path in sorted(folder.glob("*.json")):
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: unreadable dataset card: {err}") from err
        names = [path.stem, card.get("name", "")] + list(card.get("aliases", []))
        if wanted in {n.lower().replace("-", "_") for n in names}:
            missing = [k for k in CARD_KEYS if k not in card]
            if missing:
                raise DataError(f"{path}: dataset card lacks {', '.join(missing)}")
            return card
    raise DataError(f"unknown dataset {name!r}; cards in {folder}: {', '.join(list_cards())}")


@dataclass
class VerifyReport:
    """Outcome of checking a local copy against its card.

    Attributes:
        dataset: Card name.
        root: Folder that was checked (after descending into a ``root_names`` subfolder).
        errors: Problems that make the copy unusable or wrong, each naming the file.
        notes: Facts worth knowing that are not failures (e.g. patients missing from a partial
            copy, checksums that could not be checked).
        items_found: Items (patients, volumes) found per layout group.
        items_expected: Items the full dataset has per group (None when it varies).
        files_hashed: Number of files whose checksum was compared.
    """

    dataset: str
    root: Path
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    items_found: dict[str, int] = field(default_factory=dict)
    items_expected: dict[str, int | None] = field(default_factory=dict)
    files_hashed: int = 0

    @property
    def ok(self) -> bool:
        """True when no error was found (notes do not count)."""
        return not self.errors

    def to_dict(self) -> dict:
        """JSON-ready dict (``root`` as a string, plus ``ok``)."""
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "ok": self.ok,
            "errors": list(self.errors),
            "notes": list(self.notes),
            "items_found": dict(self.items_found),
            "items_expected": dict(self.items_expected),
            "files_hashed": self.files_hashed,
        }

    def format_text(self) -> str:
        """Human-readable multi-line summary, one problem per line."""
        lines = [f"dataset {self.dataset} at {self.root}"]
        for group, found in self.items_found.items():
            expected = self.items_expected.get(group)
            lines.append(
                f"  {group}: {found}" + (f" of {expected}" if expected else "") + " present"
            )
        lines.append(f"  files hashed: {self.files_hashed}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  ERROR: {e}" for e in self.errors]
        lines.append("OK" if self.ok else f"FAILED: {len(self.errors)} problem(s)")
        return "\n".join(lines)


def _find_items(root: Path, group: dict) -> list[Path]:
    """Paths under ``root`` that match a layout group (glob, kind, id regex), sorted by id."""
    regex = re.compile(group.get("id_regex", ".*"))
    kind_ok = Path.is_dir if group.get("kind", "file") == "dir" else Path.is_file
    items = [
        p
        for p in root.glob(group["glob"])
        if not p.name.startswith(".") and regex.search(p.name) and kind_ok(p)
    ]
    return sorted(items, key=lambda p: (_item_id(p, group), str(p)))


def _item_id(path: Path, group: dict) -> str:
    """The id of an item (e.g. ``"7"`` for ``3Dircadb1.7``), zero-padded so it sorts as a number."""
    match = re.search(group.get("id_regex", "(.*)"), path.name)
    item_id = match.group(1) if match and match.groups() else path.name
    return item_id.zfill(6) if item_id.isdigit() else item_id


def _resolve_root(directory: Path, card: dict) -> Path:
    """``directory`` itself, or its ``root_names`` subfolder when the items are one level down."""
    groups = card["layout"].get("groups", [])
    if any(_find_items(directory, g) for g in groups):
        return directory
    for sub in card["layout"].get("root_names", []):
        if (directory / sub).is_dir() and any(_find_items(directory / sub, g) for g in groups):
            return directory / sub
    return directory


def guess_dataset(directory: str | os.PathLike) -> str:
    """Name of the card whose layout matches the most items in ``directory``.

    Raises:
        DataError: No card matches, or two match equally well.
    """
    directory = Path(directory)
    scores = {}
    for name in list_cards():
        card = load_card(name)
        root = _resolve_root(directory, card)
        groups = [g for g in card["layout"].get("groups", []) if not g.get("optional")]
        scores[name] = sum(len(_find_items(root, g)) for g in groups)
    best = max(scores.values(), default=0)
    winners = [n for n, s in scores.items() if s == best]
    if best == 0:
        raise DataError(f"{directory}: no dataset layout recognised; pass --dataset NAME")
    if len(winners) > 1:
        raise DataError(f"{directory}: layout matches {', '.join(winners)}; pass --dataset NAME")
    return winners[0]


def _count_entries(item: Path, pattern: str) -> int | None:
    """Files matching ``pattern`` (e.g. ``PATIENT_DICOM/image_*``) in a folder or in its zip.

    The first component may be a folder or a ``<name>.zip`` whose members start with
    ``<name>/`` (how IRCAD ships PATIENT_DICOM and MASKS_DICOM). None when neither exists.

    Raises:
        DataError: The zip is not a readable zip file.
    """
    top = PurePosixPath(pattern).parts[0]
    if (item / top).is_dir():
        return sum(1 for p in item.glob(pattern) if p.is_file())
    archive = item / f"{top}.zip"
    if not archive.is_file():
        return None
    depth = len(PurePosixPath(pattern).parts)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive}: not a readable zip: {err}") from err
    return sum(
        1 for n in names if len(PurePosixPath(n).parts) == depth and fnmatch.fnmatchcase(n, pattern)
    )


def _check_group(root: Path, card: dict, group: dict, report: VerifyReport) -> list[Path]:
    """Check one layout group (presence, count, members, per-item counts); return its items."""
    name, items = group["name"], _find_items(root, group)
    expected = group.get("expected_count")
    report.items_found[name], report.items_expected[name] = len(items), expected
    if not items:
        message = f"{root}: no {name} found (pattern {group['glob']})"
        (report.notes if group.get("optional") else report.errors).append(message)
        return items
    if expected and len(items) < expected:
        report.notes.append(
            f"partial copy: {len(items)} of {expected} {name} present, {expected - len(items)} "
            "missing; only those present are checked"
        )
    elif expected and len(items) > expected:
        report.errors.append(f"{root}: {len(items)} {name} found, the card expects {expected}")
    for item in items:
        for any_of in group.get("members", []):
            if not any((item / m).exists() for m in any_of):
                report.errors.append(f"{item}: missing {' or '.join(any_of)}")
        known = card.get("expected_counts", {}).get(item.name, {})
        _check_item_counts(item, group.get("equal_counts", []), known, report)
    return items


def _check_item_counts(
    item: Path, equal_globs: list[str], known: dict[str, int], report: VerifyReport
) -> None:
    """Slice counts of one item: those the card knows, and CT vs mask counts that must agree."""
    try:
        counts = {p: _count_entries(item, p) for p in dict.fromkeys([*equal_globs, *known])}
    except DataError as err:  # an unreadable zip
        report.errors.append(str(err))
        return
    for pattern, n_expected in known.items():
        if counts[pattern] is not None and counts[pattern] != n_expected:
            report.errors.append(
                f"{item / pattern}: {counts[pattern]} files, the card expects {n_expected}"
            )
    found = [counts[p] for p in equal_globs]
    if None not in found and len(set(found)) > 1:
        detail = ", ".join(f"{p}: {counts[p]}" for p in equal_globs)
        report.errors.append(f"{item}: file counts differ ({detail})")


def _check_pairs(groups: dict[str, list[Path]], card: dict, report: VerifyReport) -> None:
    """Every item of a group with ``pair_with`` has a partner with the same id, and back."""
    for group in card["layout"].get("groups", []):
        other = group.get("pair_with")
        if not other or not groups.get(group["name"]) or not groups.get(other):
            continue
        spec = {g["name"]: g for g in card["layout"]["groups"]}
        ids = {_item_id(p, group): p for p in groups[group["name"]]}
        other_ids = {_item_id(p, spec[other]): p for p in groups[other]}
        for lonely, missing_in in (
            (set(ids) - set(other_ids), other),
            (set(other_ids) - set(ids), group["name"]),
        ):
            source = ids if missing_in == other else other_ids
            for item_id in sorted(lonely)[:5]:
                report.errors.append(f"{source[item_id]}: no matching file in {missing_in}")
            if len(lonely) > 5:
                report.errors.append(
                    f"... and {len(lonely) - 5} more without a match in {missing_in}"
                )


def _check_files(root: Path, card: dict, report: VerifyReport) -> None:
    """Compare every present file that has a known sha256 with the card."""
    absent = 0
    for entry in card.get("files", []):
        path = root / entry["path"]
        if not entry.get("sha256"):
            continue
        if not path.is_file():
            absent += 1
            if path.parent.is_dir():  # its patient is here but the file is not (unpacked?)
                report.notes.append(f"{path}: absent, its sha256 is not checked")
            continue
        size = entry.get("size_bytes")
        actual = sha256_file(path)
        report.files_hashed += 1
        if actual != entry["sha256"].lower():
            extra = f" (size {path.stat().st_size}, expected {size})" if size else ""
            report.errors.append(
                f"{path}: sha256 mismatch: expected {entry['sha256']}, got {actual}{extra}"
            )
    if absent:
        report.notes.append(f"{absent} file(s) with a known sha256 are not in this copy")
    if card.get("checksums_note"):
        report.notes.append(card["checksums_note"])


def verify_dataset(directory: str | os.PathLike, name: str | None = None) -> VerifyReport:
    """Check a local copy of a dataset against its card.

    Semantics: a partial copy (some patients missing) passes with a note saying how many are
    missing; everything present must be complete and correct: each item's required members,
    the slice counts the card knows, pairs (image with its label), and the sha256 of every file
    with a known checksum. Files the card does not mention are ignored.

    Args:
        directory: Dataset folder (or the folder above it, e.g. the one holding ``3Dircadb1/``).
        name: Card name or alias; guessed from the layout when None.

    Returns:
        A VerifyReport; ``report.ok`` is False when any error was found.

    Raises:
        DataError: ``directory`` is not a folder, or no card matches it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a folder")
    card = load_card(name or guess_dataset(directory))
    root = _resolve_root(directory, card)
    report = VerifyReport(dataset=card["name"], root=root)
    for required in card["layout"].get("required_files", []):
        if not (root / required).exists():
            report.errors.append(f"{root / required}: missing")
    groups = {g["name"]: _check_group(root, card, g, report) for g in card["layout"]["groups"]}
    _check_pairs(groups, card, report)
    _check_files(root, card, report)
    return report


def run_verify_cli(args: argparse.Namespace) -> int:
    """``liverseg data verify DIR [--dataset NAME] [--json]``: 0 if the copy is right, else 1."""
    report = verify_dataset(args.dir, args.dataset)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0 if report.ok else 1


def _downloads_for(card: dict, url: str | None) -> list[dict]:
    """The card's downloads, or one entry for ``url`` (with the checksums of the same file name)."""
    if not url:
        return list(card["downloads"])
    filename = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    known = {d["filename"]: d for d in card["downloads"]}
    if not filename and len(card["downloads"]) == 1:
        filename = card["downloads"][0]["filename"]
    if not filename:
        raise DataError(f"{url}: cannot tell the file name from the URL")
    entry = dict(known.get(filename, {"sha256": None, "md5": None, "extract": True}))
    entry.update(url=url, filename=filename)
    return [entry]


def run_fetch_cli(args: argparse.Namespace) -> int:
    """``liverseg data fetch DATASET --out DIR [--url URL]``: download, verify, unpack, check.

    Each archive is downloaded (resumable), checked against the card's checksums, unpacked
    safely unless already unpacked, and the folder is then verified. Returns the verify exit
    code (0 OK, 1 problems).
    """
    card = load_card(args.dataset)
    out_dir = Path(args.out)
    downloads = _downloads_for(card, args.url)
    if not downloads:
        raise DataError(f"{card['name']}: no direct download. {card.get('manual_download', '')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in downloads:
        archive = download_file(
            entry["url"],
            out_dir / entry["filename"],
            sha256=entry.get("sha256"),
            md5=entry.get("md5"),
        )
        print(f"downloaded {archive}")
        if entry.get("extract", True):
            tops = archive_top_level(archive)
            if tops and all((out_dir / t).exists() for t in tops):
                print(f"{archive.name}: already unpacked ({', '.join(tops)})")
            else:
                safe_extract(archive, out_dir)
                print(f"unpacked {archive.name} into {out_dir}")
    report = verify_dataset(out_dir, card["name"])
    print(report.format_text())
    return 0 if report.ok else 1
