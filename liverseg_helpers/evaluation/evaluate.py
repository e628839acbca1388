"""3D segmentation metrics of the SLIVER07 / LiTS challenges, per patient, in millimetres.

Overlap: Dice, Jaccard, volumetric overlap error (VOE = 1 - Jaccard) and relative volume
difference (RVD = (|pred| - |truth|) / |truth|), all as fractions, not percent.
Surface distances use the voxel spacing, so they are in mm: the average symmetric surface
distance (ASSD), the maximum symmetric surface distance (MSSD, the Hausdorff distance) and
HD95 (the larger of the two directed 95th percentiles, as in MedPy and MONAI).

Empty masks never crash, and give these documented values:

==================  ======  =======  =====  =====  ====================
case                dice    jaccard  voe    rvd    assd / mssd / hd95
==================  ======  =======  =====  =====  ====================
both empty          1.0     1.0      0.0    0.0    0.0
truth empty only    0.0     0.0      1.0    nan    nan
prediction empty    0.0     0.0      1.0    -1.0   nan
==================  ======  =======  =====  =====  ====================

A distance to a surface that does not exist is undefined, so it is ``nan`` (not ``inf``,
which would turn every cohort mean into ``inf``); :func:`evaluate_cohort` skips ``nan`` in its
summary rows and counts the cases that had a value in ``n_valid``.

This module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from liverseg_helpers.atomic import atomic_file
from liverseg_helpers.errors import DataError

METRIC_NAMES = (
    "dice",
    "jaccard",
    "voe",
    "rvd",
    "assd_mm",
    "mssd_mm",
    "hd95_mm",
    "pred_volume_ml",
    "true_volume_ml",
)
SUMMARY_ROWS = ("mean", "std", "n_valid")


def crop_to_union(
    pred: np.ndarray, gt: np.ndarray, margin: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus ``margin`` voxels.

    Surface distances only involve voxels near the two masks, so this box gives the same
    distances as the whole CT at a fraction of the cost.

    Args:
        pred: Boolean mask ``[z, y, x]``.
        gt: Boolean mask of the same shape.
        margin: Voxels added on each side (clipped at the array edge).

    Returns:
        ``(pred_crop, gt_crop)`` views; both empty masks are returned unchanged.
    """
    union = pred | gt
    if not union.any():
        return pred, gt
    slices = ndimage.find_objects(union.astype(np.uint8))[0]
    box = tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(slices, union.shape, strict=True)
    )
    return pred[box], gt[box]


def extract_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a mask: those with a face neighbour outside it (mask XOR eroded mask).

    Args:
        mask: Boolean mask ``[z, y, x]``.

    Returns:
        Boolean array of the same shape, True on the surface.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask ^ eroded


def compute_surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing_mm: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of one mask to the other mask's surface.

    Args:
        pred: Non-empty boolean mask ``[z, y, x]``.
        gt: Non-empty boolean mask of the same shape.
        spacing_mm: Voxel size ``(z, y, x)`` in mm.

    Returns:
        ``(pred_to_gt_mm, gt_to_pred_mm)``, 1-D float64 arrays.
    """
    pred, gt = crop_to_union(pred, gt)
    surface_pred = extract_surface(pred)
    surface_gt = extract_surface(gt)
    # distance_transform_edt measures the distance to the nearest zero, so invert the surfaces.
    dist_to_gt = ndimage.distance_transform_edt(~surface_gt, sampling=spacing_mm)
    dist_to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing_mm)
    return dist_to_gt[surface_pred], dist_to_pred[surface_gt]


def evaluate_masks(
    pred: np.ndarray, gt: np.ndarray, spacing_mm: tuple[float, float, float]
) -> dict[str, float]:
    """All per-patient metrics of a predicted mask against the truth, in 3D.

    Args:
        pred: Predicted mask ``[z, y, x]``, bool or 0/1 (any nonzero counts as liver).
        gt: True mask, same shape.
        spacing_mm: Voxel size ``(z, y, x)`` in mm.

    Returns:
        Dict with keys :data:`METRIC_NAMES`: dice, jaccard, voe, rvd (fractions), assd_mm,
        mssd_mm, hd95_mm (mm; ``nan`` when exactly one mask is empty), pred_volume_ml,
        true_volume_ml (mL). See the module docstring for empty masks.

    Raises:
        DataError: If the shapes differ or ``spacing_mm`` does not have one value per axis.
    """
    pred = np.asarray(pred) != 0
    gt = np.asarray(gt) != 0
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {pred.shape} differs from truth shape {gt.shape}")
    spacing_mm = tuple(float(s) for s in spacing_mm)
    if len(spacing_mm) != pred.ndim:
        raise DataError(f"spacing_mm {spacing_mm} needs one value per axis of shape {pred.shape}")
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    n_both = int(np.count_nonzero(pred & gt))
    n_union = n_pred + n_gt - n_both

    if n_union == 0:  # both empty: a perfect answer
        dice = jaccard = 1.0
        rvd = assd = mssd = hd95 = 0.0
    else:
        dice = 2.0 * n_both / (n_pred + n_gt)
        jaccard = n_both / n_union
        rvd = (n_pred - n_gt) / n_gt if n_gt else math.nan
        if n_pred and n_gt:
            pred_to_gt, gt_to_pred = compute_surface_distances(pred, gt, spacing_mm)
            both = np.concatenate([pred_to_gt, gt_to_pred])
            assd = float(both.mean())
            mssd = float(both.max())
            hd95 = float(max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95)))
        else:
            assd = mssd = hd95 = math.nan
    return {
        "dice": float(dice),
        "jaccard": float(jaccard),
        "voe": float(1.0 - jaccard),
        "rvd": float(rvd),
        "assd_mm": assd,
        "mssd_mm": mssd,
        "hd95_mm": hd95,
        "pred_volume_ml": n_pred * voxel_ml,
        "true_volume_ml": n_gt * voxel_ml,
    }


def evaluate_cohort(
    cases: Mapping[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]
    | Iterable[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]] | dict[str, Any]],
    summary: bool = True,
) -> pd.DataFrame:
    """Metrics of every patient in one table, with ``mean``, ``std`` and ``n_valid`` rows.

    Args:
        cases: Either a dict ``case_id -> (pred, gt, spacing_mm)``, or rows that are tuples
            ``(case_id, pred, gt, spacing_mm)`` or dicts already returned by
            :func:`evaluate_masks` plus a ``"case_id"`` key (so a notebook can evaluate one
            patient at a time without keeping all masks in memory).
        summary: Append the summary rows ``mean`` and ``std`` (``nan`` skipped, e.g. the
            distances of an empty prediction) and ``n_valid`` (cases with a finite value).

    Returns:
        DataFrame indexed by ``case_id``, one column per metric.

    Raises:
        DataError: If a row has neither form or no case is given.
    """
    items = cases.items() if isinstance(cases, Mapping) else cases
    rows = []
    for item in items:
        if isinstance(item, dict):
            if "case_id" not in item:
                raise DataError(f"metric row without 'case_id': {sorted(item)}")
            rows.append(dict(item))
            continue
        if isinstance(cases, Mapping):
            case_id, (pred, gt, spacing_mm) = item
        elif len(item) == 4:
            case_id, pred, gt, spacing_mm = item
        else:
            raise DataError("cohort rows must be (case_id, pred, gt, spacing_mm) or metric dicts")
        try:
            metrics = evaluate_masks(pred, gt, spacing_mm)
        except DataError as err:
            raise DataError(f"{case_id}: {err}") from err
        rows.append({"case_id": str(case_id), **metrics})
    if not rows:
        raise DataError("evaluate_cohort got no cases")
    df = pd.DataFrame(rows).set_index("case_id")
    if summary:
        numeric = df.select_dtypes("number").replace([np.inf, -np.inf], np.nan)
        stats = pd.DataFrame(
            [numeric.mean(), numeric.std(ddof=0), numeric.notna().sum().astype(float)],
            index=list(SUMMARY_ROWS),
        )
        df = pd.concat([df, stats])
        df.index.name = "case_id"
    return df


def format_summary(df: pd.DataFrame, columns: Iterable[str] = METRIC_NAMES) -> str:
    """One ``name mean ± std`` line per metric, from a table of :func:`evaluate_cohort`.

    Args:
        df: Table with ``mean`` and ``std`` rows.
        columns: Metrics to show (missing ones are skipped).

    Returns:
        Multi-line text, e.g. ``"dice      0.951 ± 0.012"``.
    """
    lines = []
    for name in columns:
        if name in df.columns:
            mean, std = df.loc["mean", name], df.loc["std", name]
            lines.append(f"{name:<15} {mean:8.3f} ± {std:.3f}")
    return "\n".join(lines)


def save_metrics_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the metric table as CSV atomically (temp file in the same folder, then rename).

    Args:
        df: Table of :func:`evaluate_cohort`.
        path: Destination ``.csv``; its folder is created.

    Returns:
        The written path.
    """
    with atomic_file(path) as tmp:
        df.to_csv(tmp, float_format="%.6g")
    return Path(path)


@dataclass
class MaskFile:
    """A mask read for evaluation, with the grid it lies on.

    Attributes:
        mask: bool ``[z, y, x]``; any nonzero label counts as liver.
        spacing_mm: ``(z, y, x)``.
        origin_mm: World position of the first voxel ``(x, y, z)``; None for a PNG folder,
            which has no geometry.
        direction: Row-major 3x3 direction cosines, None for a PNG folder.
    """

    mask: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None


def read_mask_file(path: str | os.PathLike) -> MaskFile:
    """Read a mask for evaluation: NIfTI/NRRD file, or a case folder (its liver mask).

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``/``.nhdr`` file, or anything
            ``io.load_case`` reads (3D-IRCADb patient, PNG folder...).

    Returns:
        The mask in the axial voxel order of :data:`io.nifti.CANONICAL` (a PNG folder as it
        is), with its grid.

    Raises:
        DataError: If the file is missing or unreadable, or a case has no liver mask.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    import SimpleITK as sitk  # lazy: only the CLI reads

    from liverseg_helpers.io.nifti import case_image, to_canonical  # lazy: io imports readers

    name = path.name.lower()
    if path.is_file() and name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")):
        from liverseg_helpers.io.nrrd_mask import read_mask_image

        image = read_mask_image(path)[1]
    else:
        from liverseg_helpers import io

        case = io.load_case(path)
        if "liver" not in case.masks:
            raise DataError(f"{path}: case has no liver mask")
        labels = np.asarray(case.masks["liver"]) != 0
        if case.format == "png":  # no geometry to compare or reorder
            return MaskFile(labels, tuple(case.spacing_mm))
        image = case_image(labels.astype(np.uint8), case)
    # Both files in one voxel order (as io.nifti reads volumes), so a mask stored flipped
    # but on the same anatomy compares voxel by voxel.
    image = to_canonical(image)
    spacing_xyz = image.GetSpacing()
    return MaskFile(
        sitk.GetArrayFromImage(image) != 0,
        (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]),
        image.GetOrigin(),
        image.GetDirection(),
    )


def check_same_grid(pred: MaskFile, truth: MaskFile, pred_path, truth_path) -> None:
    """Refuse two masks that do not lie on the same voxels: shape, spacing, then placement.

    Raises:
        DataError: Naming both files and what differs.
    """
    if pred.mask.shape != truth.mask.shape:
        raise DataError(
            f"shape mismatch: {pred_path} has {pred.mask.shape}, {truth_path} has "
            f"{truth.mask.shape} (both masks must be on the same CT grid)"
        )
    from liverseg_helpers.io.grid import grid_difference  # lazy: io imports its readers

    differs = grid_difference(
        (pred.spacing_mm, truth.spacing_mm),
        (pred.direction, truth.direction),
        (pred.origin_mm, truth.origin_mm),
    )
    if differs:
        raise DataError(f"{pred_path} and {truth_path} are not on the same grid: {differs}")


def run_evaluate_cli(args: argparse.Namespace) -> int:
    """``liverseg evaluate PRED GT [--json]``: print the 3D metrics of one prediction.

    Args:
        args: Parsed arguments with ``pred``, ``gt`` (paths) and ``json`` (bool).

    Returns:
        Exit code 0.

    Raises:
        DataError: If a file cannot be read or the two masks lie on different grids (shape,
            spacing, direction or origin; names both files).
    """
    pred, truth = read_mask_file(args.pred), read_mask_file(args.gt)
    check_same_grid(pred, truth, args.pred, args.gt)
    spacing_mm = truth.spacing_mm
    metrics = evaluate_masks(pred.mask, truth.mask, spacing_mm)
    if args.json:
        # JSON has no nan: write null for undefined distances.
        clean = {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
        print(json.dumps({"pred": str(args.pred), "gt": str(args.gt), **clean}))
    else:
        print(f"prediction: {args.pred}\ntruth:      {args.gt}")
        print(f"spacing:    {tuple(round(s, 3) for s in spacing_mm)} mm (z, y, x)")
        for name, value in metrics.items():
            print(f"{name:<15} {value:10.4f}")
    return 0
