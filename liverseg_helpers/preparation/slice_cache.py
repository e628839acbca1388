"""The slice cache: each patient preprocessed once, its training slices kept on disk.

:func:`build_slice_cache` runs :func:`liverseg_helpers.preparation.preprocess.preprocess_volume`
once per patient and saves the selected slices (one ``.npz`` per patient) in a folder named by
a hash of the settings: changing a setting builds a new cache, re-running reuses it. Files are
written to a temporary name and renamed, so an interrupted run never leaves a half-written file
behind. :func:`load_cached_slices` reads the patients of one split into memory, ready for
:mod:`liverseg_helpers.preparation.dataset` to batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from liverseg_helpers.atomic import atomic_file, read_json, write_json_atomic
from liverseg_helpers.errors import DataError
from liverseg_helpers.io.case import LIVER, Case
from liverseg_helpers.preparation import preprocess, views

CACHE_FORMAT_VERSION = 2  # 2: masks resized by area share, aligned with the images
MANIFEST_NAME = "manifest.json"


def cache_key(
    settings: preprocess.PreprocessSettings,
    target: str = LIVER,
    crop_to: str | None = None,
    crop_margin_px: int = 16,
    seed: int = 42,
) -> str:
    """Short hash of everything that changes the cached slices (12 hex digits)."""
    described = dict(
        settings=settings.to_dict(),
        target=target,
        crop_to=crop_to,
        crop_margin_px=crop_margin_px if crop_to else None,
        seed=seed,
        format_version=CACHE_FORMAT_VERSION,
    )
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def read_manifest(folder: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a slice cache folder (settings, key and cases).

    Raises:
        DataError: Not a slice cache, or an unreadable manifest.
    """
    missing = f"not a slice cache (no {MANIFEST_NAME}); run build_slice_cache"
    return read_json(Path(folder) / MANIFEST_NAME, missing)


def _file_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id) + ".npz"


def _cache_case(
    case: Case,
    settings: preprocess.PreprocessSettings,
    target: str,
    crop_to: str | None,
    crop_margin_px: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Preprocess one case and pick its training slices."""
    name = f"{case.case_id} ({case.source})" if case.source else case.case_id
    for key in {target, crop_to} - {None}:
        if key not in case.masks:
            raise DataError(f"{name}: no {key!r} mask (has {sorted(case.masks)})")
        if case.masks[key].shape != case.volume.shape:
            raise DataError(
                f"{name}: {key!r} mask shape {case.masks[key].shape} != CT {case.volume.shape}"
            )
    for key in {target, crop_to, LIVER} & set(case.masks):
        preprocess.check_binary_mask(case.masks[key], f"{name} mask {key!r}")
    if LIVER in case.masks and not case.masks[LIVER].any():
        # A lost or mis-paired mask file, not a patient without a liver: its slices would
        # teach "no liver here" and its scores would be Dice 0.
        raise DataError(f"{name}: the liver mask is empty (not one liver voxel)")
    # Select on the liver (the organ the slices are about) so a tumour target keeps
    # patients without lesions; fall back to the target when there is no liver mask.
    volume = preprocess.shift_to_liver_reference(case.volume, case.masks.get(LIVER), settings, name)
    target_mask = case.masks[target]
    select_mask = case.masks.get(LIVER, target_mask)
    box = np.array([-1, -1, -1, -1])
    if crop_to:
        box = np.array(preprocess.find_crop_box(case.masks[crop_to], crop_margin_px))
        volume, target_mask, select_mask = (
            preprocess.crop_inplane(stack, tuple(box))
            for stack in (volume, target_mask, select_mask)
        )
    # A coronal or sagittal network's slices: the case turned (views.to_view), identity for axial.
    turn = dict(view=settings.view, target_spacing_mm=settings.target_spacing_mm, source=name)
    selects_on_target = select_mask is target_mask  # a liver target: turn that mask once
    volume, spacing = views.to_view(volume, case.spacing_mm, **turn)
    target_mask = views.to_view(target_mask, case.spacing_mm, is_mask=True, **turn)[0]
    if selects_on_target:
        select_mask = target_mask
    else:
        select_mask = views.to_view(select_mask, case.spacing_mm, is_mask=True, **turn)[0]
    rng = np.random.default_rng([seed, zlib.crc32(case.case_id.encode())])
    indices = preprocess.select_slices(select_mask, settings.non_liver_fraction, rng)
    images = preprocess.preprocess_volume(
        volume, settings, spacing, source=name, grey_levels=case.format == "png"
    )
    masks = preprocess.preprocess_mask(target_mask, settings, spacing, source=name)
    return dict(
        images=images[indices].astype(np.float16),
        masks=masks[indices],
        slice_indices=indices,
        crop_box=box,
        native_shape=np.array(case.shape),
        spacing_mm=np.array(case.spacing_mm, dtype=np.float64),
    )


def source_stamp(path: Path) -> list[int]:
    """Number of files, total bytes and newest modification time (ns) of a case on disk.

    A cached case whose stamp changed was rewritten in place (e.g. a phantom cohort generated
    again with other options) and is read again instead of served from the cache.
    """
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [p.stat() for p in files]
    return [
        len(stats),
        sum(s.st_size for s in stats),
        max((s.st_mtime_ns for s in stats), default=0),
    ]


def build_slice_cache(
    cases_or_paths: Iterable[Case | str | os.PathLike],
    settings: preprocess.PreprocessSettings,
    cache_dir: str | os.PathLike,
    target: str = LIVER,
    seed: int = 42,
    crop_to: str | None = None,
    crop_margin_px: int = 16,
) -> Path:
    """Preprocess cases once and store the selected slices, one ``.npz`` per patient.

    Args:
        cases_or_paths: ``Case`` objects, or paths that ``liverseg_helpers.io.load_case``
            reads (loaded one at a time, skipped when already cached).
        settings: Preprocessing settings.
        cache_dir: Parent folder; the cache goes into ``<cache_dir>/<target>_<hash>/``.
        target: Mask to learn (``"liver"``, or ``"tumour"`` for a cascaded second stage).
        seed: Seed of the random choice of non-liver slices.
        crop_to: Optional mask name (``"liver"``) whose bounding box (+ margin, squared)
            every slice is cropped to before resizing: the input of a tumour stage.
        crop_margin_px: Margin around the crop box, native pixels.

    Returns:
        The cache folder. Each ``<case_id>.npz`` holds ``images`` float16 ``(n, S, S, C)``,
        ``masks`` uint8 ``(n, S, S, 1)``, ``slice_indices``, ``crop_box``, ``native_shape``,
        ``spacing_mm`` and ``key``; ``manifest.json`` holds the settings and case list.
        ``slice_indices`` count along the slice axis of ``settings.view`` (for a coronal
        or sagittal view: of the turned, resampled volume, :func:`views.to_view`);
        ``native_shape`` and ``spacing_mm`` are the CT's own.

    Raises:
        DataError: A case lacks the target mask, has NaN HU or a non-binary mask, or no
            case has a single liver slice.
    """
    key = cache_key(settings, target, crop_to, crop_margin_px, seed)
    folder = Path(cache_dir) / f"{target}_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    header = dict(
        format_version=CACHE_FORMAT_VERSION,
        key=key,
        settings=settings.to_dict(),
        target=target,
        crop_to=crop_to,
        crop_margin_px=crop_margin_px,
        seed=seed,
    )
    try:
        manifest = read_manifest(folder)
    except DataError:
        manifest = {}
    if {k: manifest.get(k) for k in header} != header:  # new, foreign or damaged: rebuild
        for stale in folder.glob("*.npz"):
            stale.unlink()
        manifest = dict(header, cases={})
    by_source = {entry["source"]: cid for cid, entry in manifest["cases"].items()}

    for item in cases_or_paths:
        stamp = None
        if isinstance(item, Case):
            case, source = item, item.source
            cached = case.case_id in manifest["cases"]
        else:
            source = str(Path(item).resolve())
            stamp = source_stamp(Path(source))
            # A case rewritten in place since it was cached is read again.
            cached = source in by_source and (
                manifest["cases"][by_source[source]].get("stamp") == stamp
            )
            case = None
        cid = case.case_id if case is not None else by_source.get(source)
        if cached and (folder / manifest["cases"][cid]["file"]).is_file():
            continue
        if case is None:
            from liverseg_helpers.io import load_case  # the io chapter's reader

            case = load_case(item)
        arrays = _cache_case(case, settings, target, crop_to, crop_margin_px, seed)
        file_name = _file_name(case.case_id)
        with atomic_file(folder / file_name) as tmp:
            np.savez(tmp, key=key, **arrays)
        manifest["cases"][case.case_id] = dict(
            file=file_name, source=source, n_slices=len(arrays["slice_indices"]), stamp=stamp
        )
        write_json_atomic(manifest, folder / MANIFEST_NAME)
    if manifest["cases"] and sum(e["n_slices"] for e in manifest["cases"].values()) == 0:
        raise DataError(
            f"{folder}: no slice selected in any case ({sorted(manifest['cases'])}): "
            f"the {LIVER!r} masks are empty"
        )
    return folder


def _checked_manifest(
    folder: Path, settings: preprocess.PreprocessSettings | None, target: str | None
) -> dict:
    """The cache's manifest, after checking it was built with ``settings`` and ``target``."""
    manifest = read_manifest(folder)
    checks = [("settings", settings.to_dict() if settings else None), ("target", target)]
    for name, wanted in checks:
        if wanted is not None and manifest.get(name) != wanted:
            raise DataError(
                f"{folder / MANIFEST_NAME}: cache built with {name} {manifest.get(name)}, "
                f"expected {wanted}; call build_slice_cache with the new {name}"
            )
    return manifest


def cached_case_ids(
    cache_dir: str | os.PathLike,
    settings: preprocess.PreprocessSettings | None = None,
    target: str | None = None,
) -> list[str]:
    """The patients a slice cache holds, sorted (checked as :func:`load_cached_slices` does).

    Raises:
        DataError: Not a cache, or one built with other settings or another target.
    """
    return sorted(_checked_manifest(Path(cache_dir), settings, target)["cases"])


def load_cached_slices(
    cache_dir: str | os.PathLike,
    case_ids: Sequence[str] | None = None,
    settings: preprocess.PreprocessSettings | None = None,
    target: str | None = None,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Read the cached slices of some patients (e.g. one split) into memory.

    Args:
        cache_dir: A folder returned by :func:`build_slice_cache`.
        case_ids: Patients to read (all when None), in this order.
        settings: When given, the cache must have been built with exactly these settings.
        target: When given, the cache must hold this target mask.
        dtype: Image dtype returned (float16 halves the memory).

    Returns:
        ``(x, y)``: images ``(n, S, S, C)`` of ``dtype`` in ``[0, 1]``, masks uint8
        ``(n, S, S, 1)`` of 0/1.

    Raises:
        DataError: Not a cache, built with other settings or target, an unknown case id, a
            file from another cache, or no slices at all.
    """
    folder = Path(cache_dir)
    manifest = _checked_manifest(folder, settings, target)
    case_ids = sorted(manifest["cases"]) if case_ids is None else list(case_ids)
    missing = [c for c in case_ids if c not in manifest["cases"]]
    if missing:
        raise DataError(f"{folder}: cases {missing} are not in the cache; build it with them")
    xs, ys = [], []
    for cid in case_ids:
        path = folder / manifest["cases"][cid]["file"]
        with np.load(path) as data:
            if str(data["key"]) != manifest["key"]:
                raise DataError(f"{path}: belongs to another cache (key {data['key']})")
            xs.append(data["images"].astype(dtype))
            ys.append(data["masks"])
    if sum(len(x) for x in xs) == 0:
        raise DataError(f"{folder}: no slices for cases {case_ids} (no liver in their masks)")
    return np.concatenate(xs), np.concatenate(ys)
