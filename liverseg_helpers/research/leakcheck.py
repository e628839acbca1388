"""Find training scans that are copies of a test patient's scan.

LiTS and MSD Task03 include the 3D-IRCADb-01 scans among their training cases, under other
names and in another format (NIfTI instead of DICOM, possibly flipped). Adding them to the
training set of a 3D-IRCADb leave-one-patient-out run would put the test patient in training.
So scans are compared by content, with a fingerprint that re-saving, flipping or transposing a
volume does not change: its shape and voxel spacing (both sorted) and the histogram of its HU
values. Two scans match when their shapes are equal, their spacings agree to 1 % and their
histograms differ by less than ``HISTOGRAM_TOLERANCE`` (L1 distance of the two fractions).

What it cannot see: a copy cropped to fewer slices or re-sampled, or another scan of the same
patient. It guards against the known overlap, not against every leak.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.io.case import Case

HU_BIN_EDGES = np.arange(-1024, 3073, 16)  # 256 bins of 16 HU; values outside are clipped
HISTOGRAM_TOLERANCE = 0.02
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class ScanFingerprint:
    """What :func:`same_scan` compares.

    Attributes:
        shape: Voxel counts along the three axes, sorted.
        spacing_mm: Voxel sizes in mm, sorted.
        hu_fractions: Fraction of voxels in each 16 HU bin from -1024 to 3072 HU.
    """

    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    hu_fractions: tuple[float, ...]


def fingerprint(case: Case) -> ScanFingerprint:
    """The orientation-free fingerprint of a case's CT."""
    values = np.clip(case.volume, HU_BIN_EDGES[0], HU_BIN_EDGES[-1] - 1)
    counts, _ = np.histogram(values, bins=HU_BIN_EDGES)
    return ScanFingerprint(
        shape=tuple(sorted(int(n) for n in case.shape)),
        spacing_mm=tuple(sorted(round(float(s), 4) for s in case.spacing_mm)),
        hu_fractions=tuple(float(c) for c in counts / max(counts.sum(), 1)),
    )


def histogram_distance(a: ScanFingerprint, b: ScanFingerprint) -> float:
    """L1 distance between two HU histograms (0: identical, 2: nothing in common)."""
    return float(np.abs(np.subtract(a.hu_fractions, b.hu_fractions)).sum())


def same_scan(a: ScanFingerprint, b: ScanFingerprint) -> bool:
    """True when two fingerprints look like one scan saved twice (see the module docstring)."""
    if a.shape != b.shape:
        return False
    spacing_a, spacing_b = np.array(a.spacing_mm), np.array(b.spacing_mm)
    if np.any(np.abs(spacing_a - spacing_b) > SPACING_TOLERANCE * spacing_b):
        return False
    return histogram_distance(a, b) < HISTOGRAM_TOLERANCE


def fingerprints(paths: Sequence[Path], cache_file: Path | None = None) -> list[ScanFingerprint]:
    """Fingerprints of cases on disk, read once: kept in ``cache_file`` (JSON) when given.

    A cached entry is used only while the case's files keep their count, size and time.
    """
    from tqdm.auto import tqdm

    from liverseg_helpers import io
    from liverseg_helpers.preparation.slice_cache import source_stamp

    cache: dict = {}
    if cache_file is not None and cache_file.exists():
        cache = json.loads(cache_file.read_text())
    result, changed = [], False
    for path in tqdm(paths, desc="scan fingerprints", disable=None):
        key, stamp = str(Path(path).resolve()), source_stamp(Path(path))
        entry = cache.get(key)
        if entry is None or entry["stamp"] != stamp:
            found = fingerprint(io.load_case(path))
            cache[key] = entry = {"stamp": stamp, **asdict(found)}
            changed = True
        result.append(
            ScanFingerprint(
                tuple(entry["shape"]), tuple(entry["spacing_mm"]), tuple(entry["hu_fractions"])
            )
        )
    if cache_file is not None and changed:
        write_json_atomic(cache, cache_file)
    return result


def find_copies(
    candidates: Sequence[Path], protected: Sequence[Path], cache_file: Path | None = None
) -> dict[Path, Path]:
    """The candidates that are copies of a protected scan.

    Args:
        candidates: Cases that would join training (e.g. a LiTS or MSD folder's cases).
        protected: Cases that must stay unseen (the leave-one-out test patients).
        cache_file: JSON file keeping the fingerprints between runs.

    Returns:
        ``{candidate: the protected case it copies}``; candidates that copy none are left out.
    """
    prints = fingerprints([*candidates, *protected], cache_file)
    cand_prints, prot_prints = prints[: len(candidates)], prints[len(candidates) :]
    copies = {}
    for path, found in zip(candidates, cand_prints, strict=True):
        for original, known in zip(protected, prot_prints, strict=True):
            if same_scan(found, known):
                copies[Path(path)] = Path(original)
                break
    return copies


__all__ = [
    "HISTOGRAM_TOLERANCE",
    "ScanFingerprint",
    "find_copies",
    "fingerprint",
    "fingerprints",
    "histogram_distance",
    "same_scan",
]
