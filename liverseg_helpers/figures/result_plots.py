"""Figures that score a prediction (chapter 05): per-slice Dice, metric boxes, worst slices,
and the error map that paints false positives and false negatives.

Built on :mod:`liverseg_helpers.figures.viz`'s CT views, with the same conventions: arrays
``[z, y, x]``, fixed figure sizes, axes labelled with units, the figure returned.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from liverseg_helpers.errors import DataError
from liverseg_helpers.figures.viz import (
    LIVER_WINDOW_HU,
    PRED_COLOR,
    TRUTH_COLOR,
    pick_slice_index,
    plot_overlay,
)


def compute_slice_dice(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice of each axial slice; ``nan`` where both slices are empty.

    Args:
        pred: Predicted mask ``[z, y, x]``.
        gt: True mask, same shape.

    Returns:
        float64 array of length ``z``.
    """
    pred = np.asarray(pred) != 0
    gt = np.asarray(gt) != 0
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {pred.shape} differs from truth shape {gt.shape}")
    both = np.count_nonzero(pred & gt, axis=(1, 2)).astype(np.float64)
    total = np.count_nonzero(pred, axis=(1, 2)) + np.count_nonzero(gt, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * both / total, np.nan)


def plot_slice_dice(pred: np.ndarray, gt: np.ndarray) -> Figure:
    """Per-slice Dice along z, with the true liver area as context (errors sit at the ends).

    Args:
        pred: Predicted mask ``[z, y, x]``.
        gt: True mask, same shape.

    Returns:
        A 10x4 inch figure.
    """
    dice = compute_slice_dice(pred, gt)
    area = np.count_nonzero(np.asarray(gt) != 0, axis=(1, 2))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(np.arange(dice.size), dice, ".-", color=PRED_COLOR, label="Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("axial slice index")
    ax.set_ylabel("Dice")
    ax.set_title("Dice per slice (gaps: no liver in truth or prediction)")
    twin = ax.twinx()
    twin.fill_between(np.arange(area.size), area, color=TRUTH_COLOR, alpha=0.2, label="truth area")
    twin.set_ylabel("true liver area (pixels)")
    ax.legend(loc="lower center")
    return fig


def plot_metric_boxes(
    df: pd.DataFrame,
    columns: tuple[tuple[str, ...], ...] = (
        ("dice", "jaccard", "voe"),
        ("assd_mm", "hd95_mm", "mssd_mm"),
    ),
) -> Figure:
    """Box plots of per-patient metrics: overlap (fraction) and surface distances (mm).

    Args:
        df: Table of ``evaluate.evaluate_cohort``; the summary rows (mean, std, n_valid) are
            dropped, as are ``nan`` values.
        columns: Groups of metric columns, one panel per group.

    Returns:
        A 12x4 inch figure.
    """
    cases = df.drop(index=[i for i in ("mean", "std", "n_valid") if i in df.index])
    fig, axes = plt.subplots(1, len(columns), figsize=(12, 4), squeeze=False)
    for ax, group in zip(axes[0], columns, strict=True):
        names = [c for c in group if c in cases.columns]
        data = [cases[c].replace([np.inf, -np.inf], np.nan).dropna().to_numpy() for c in names]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names)
        for i, values in enumerate(data, start=1):  # every patient as a dot
            ax.plot(np.full(values.size, i), values, "o", alpha=0.5, color="tab:blue")
        is_mm = all(n.endswith("_mm") for n in names)
        ax.set_ylabel("distance (mm)" if is_mm else "fraction")
        ax.set_title(f"{'surface distances' if is_mm else 'overlap'} ({len(cases)} patients)")
    fig.tight_layout()
    return fig


def plot_worst_slices(
    volume: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    n: int = 4,
    window: tuple[float, float] = LIVER_WINDOW_HU,
) -> Figure:
    """The ``n`` axial slices with the lowest Dice (slices where truth or prediction has liver).

    Args:
        volume: CT ``[z, y, x]`` in HU.
        gt: True mask, same shape.
        pred: Predicted mask, same shape.
        n: Number of slices to show.
        window: Display window ``(level_hu, width_hu)``.

    Returns:
        A figure of ``n`` panels, 4 inches each, titled with slice index and Dice.
    """
    dice = compute_slice_dice(pred, gt)
    candidates = np.flatnonzero(~np.isnan(dice))
    worst = candidates[np.argsort(dice[candidates], kind="stable")][:n]
    fig, axes = plt.subplots(1, max(n, 1), figsize=(4 * max(n, 1), 4), squeeze=False)
    for ax in axes[0]:
        ax.axis("off")
    for ax, index in zip(axes[0], worst, strict=False):
        plot_overlay(volume, gt, pred, slice_index=int(index), window=window, ax=ax)
        ax.axis("on")
        ax.set_title(f"slice {index}: Dice {dice[index]:.2f}")
    fig.suptitle(f"{len(worst)} worst slices by Dice")
    fig.tight_layout()
    return fig


# Error map: what each voxel of the prediction is, against the truth (0: background, unpainted).
ERROR_CLASSES = {
    1: ("true positive", "tab:green"),
    2: ("false positive", "tab:red"),
    3: ("false negative", "tab:blue"),
}


def error_codes(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each voxel's class in an error map: 0 true negative, then the keys of ERROR_CLASSES.

    Args:
        truth: True mask, any shape, bool or 0/1.
        pred: Predicted mask, same shape.

    Returns:
        uint8 array of the same shape: 1 true positive, 2 false positive, 3 false negative.
    """
    truth, pred = np.asarray(truth) != 0, np.asarray(pred) != 0
    codes = np.zeros(truth.shape, np.uint8)
    codes[truth & pred] = 1
    codes[pred & ~truth] = 2
    codes[truth & ~pred] = 3
    return codes


def plot_error_map(
    volume: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    slice_index: int | None = None,
    window: tuple[float, float] = LIVER_WINDOW_HU,
    ax: Axes | None = None,
) -> Figure:
    """Where a prediction is wrong: false positives and false negatives painted on an axial slice.

    Outlines show where two masks differ only as two nearby lines; painting each pixel by its
    class shows the errors themselves: red where the prediction calls liver and the truth does
    not, blue where it misses liver, green where both agree.

    Args:
        volume: CT ``[z, y, x]`` in HU.
        truth: True mask, same shape.
        pred: Predicted mask, same shape.
        slice_index: Axial slice; default the one with the most wrong voxels.
        window: Display window ``(level_hu, width_hu)``.
        ax: Axes to draw on; a new 6x6 inch figure when absent.

    Returns:
        The figure; the legend counts each class's pixels in the slice.

    Raises:
        DataError: If a mask's shape differs from the volume's or the slice is out of range.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    volume = np.asarray(volume)
    for name, mask in (("truth", truth), ("pred", pred)):
        if np.shape(mask) != volume.shape:
            raise DataError(f"{name} shape {np.shape(mask)} differs from volume {volume.shape}")
    codes = error_codes(truth, pred)
    if slice_index is None:
        slice_index = pick_slice_index(codes >= 2, truth, n_slices=volume.shape[0])
    # The CT slice with its colour bar and letters (and the slice's range checked) first.
    fig = plot_overlay(volume, slice_index=slice_index, window=window, ax=ax)
    ax = fig.axes[0] if ax is None else ax
    colours = ListedColormap([colour for _, colour in ERROR_CLASSES.values()])
    painted = np.ma.masked_equal(codes[slice_index], 0)
    ax.imshow(painted, cmap=colours, vmin=1, vmax=3, alpha=0.55, interpolation="nearest")
    counts = np.bincount(codes[slice_index].ravel(), minlength=4)
    handles = [
        Patch(color=colour, alpha=0.55, label=f"{label} ({counts[code]} px)")
        for code, (label, colour) in ERROR_CLASSES.items()
    ]
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    ax.set_title(f"errors on axial slice {slice_index} (W {window[1]:g} / L {window[0]:g} HU)")
    return fig
