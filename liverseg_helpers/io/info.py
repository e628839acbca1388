"""``liverseg info``: what a case holds (format, grid, HU range, structure volumes)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from liverseg_helpers.io.case import Case
from liverseg_helpers.io.cohort import is_cohort_folder, list_case_paths, load_case


def describe_case(case: Case) -> dict:
    """Summarise a case as plain JSON-ready values.

    Args:
        case: Any case.

    Returns:
        Dict with ``case_id``, ``format``, ``source``, ``n_slices``, ``shape`` (slice, row,
        col), ``spacing_mm`` (slice, row, col), ``origin_mm`` (x, y, z), ``dtype``,
        ``hu_min``/``hu_max`` (None for PNG cases, whose values are grey levels, with
        ``grey_min``/``grey_max`` instead), ``structures`` (per mask: ``voxels``,
        ``volume_ml``, ``slices`` = number of slices it appears on) and ``n_lesions``
        (None when the case has no lesion map).
    """
    volume = np.asarray(case.volume)
    value_min = float(volume.min()) if volume.size else None
    value_max = float(volume.max()) if volume.size else None
    is_hu = case.format != "png"
    structures = {}
    for name, mask in case.masks.items():
        voxels = int(np.count_nonzero(mask))
        structures[name] = {
            "voxels": voxels,
            "volume_ml": round(voxels * case.voxel_volume_ml, 3),
            "slices": int(np.count_nonzero(mask.any(axis=(1, 2)))),
        }
    n_lesions = None
    if case.lesions is not None:
        # bincount, not unique: no sort of ~30 M voxels
        n_lesions = int(np.count_nonzero(np.bincount(case.lesions.ravel())[1:]))
    info = {
        "case_id": case.case_id,
        "format": case.format,
        "source": case.source,
        "n_slices": case.shape[0],
        "shape": list(case.shape),
        "spacing_mm": [float(v) for v in case.spacing_mm],
        "origin_mm": [float(v) for v in case.origin_mm],
        "dtype": str(volume.dtype),
        "hu_min": value_min if is_hu else None,
        "hu_max": value_max if is_hu else None,
        "structures": structures,
        "n_lesions": n_lesions,
    }
    if not is_hu:
        info["grey_min"], info["grey_max"] = value_min, value_max
        info["note"] = "PNG holds windowed 8-bit grey levels: HU are not recoverable"
    return info


def format_description(info: dict) -> str:
    """Human-readable text of :func:`describe_case`'s dict."""
    spacing = " x ".join(f"{v:.3f}" for v in info["spacing_mm"])
    lines = [
        f"{info['case_id']}  ({info['format']})  {info['source']}",
        f"  slices        {info['n_slices']}",
        f"  shape         {' x '.join(str(n) for n in info['shape'])} (slice, row, col)",
        f"  spacing       {spacing} mm (slice, row, col)",
    ]
    if info["hu_min"] is not None:
        lines.append(f"  HU range      {info['hu_min']:g} .. {info['hu_max']:g}")
    else:
        lines.append(
            f"  grey range    {info['grey_min']:g} .. {info['grey_max']:g}  ({info['note']})"
        )
    if info["structures"]:
        lines.append(f"  {'structure':<14}{'voxels':>10}{'volume mL':>12}{'slices':>8}")
        for name, s in info["structures"].items():
            lines.append(f"  {name:<14}{s['voxels']:>10}{s['volume_ml']:>12.1f}{s['slices']:>8}")
    else:
        lines.append("  no masks")
    if info["n_lesions"] is not None:
        lines.append(f"  liver lesions {info['n_lesions']}")
    return "\n".join(lines)


def run_info_cli(args: argparse.Namespace) -> int:
    """Handler of ``liverseg info PATH [--json]``: print :func:`describe_case` of the case, or
    of each case of a folder of patients (e.g. ``../shared/data/hcc_tace_seg``)."""
    paths = list_case_paths(args.path) if is_cohort_folder(args.path) else [args.path]
    infos = [describe_case(load_case(p)) for p in paths]
    if args.json:
        print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
    else:
        print("\n\n".join(format_description(info) for info in infos))
    return 0
