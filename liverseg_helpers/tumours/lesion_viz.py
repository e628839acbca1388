"""Figures of the tumour chapter: lesions outlined on CT, a maximum-intensity projection of the
lesion map with found, missed and false lesions, and the crop the second stage sees.

Matplotlib only (no TensorFlow); each function returns a ``Figure`` of fixed size. Colours:
true lesion found = green, true lesion missed = red, predicted lesion that is no lesion
(false alarm) = orange, predicted lesion that is real = blue; the liver outline is white.
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from liverseg_helpers.figures.viz import LIVER_WINDOW_HU, draw_ct, label_ct_view

FOUND, MISSED, FALSE, REAL = "tab:green", "tab:red", "tab:orange", "tab:blue"
TUMOUR_WINDOW_HU = (70.0, 200.0)  # display window of preprocess.tumour_settings


def _ids_mask(lesions: np.ndarray, ids: list[int]) -> np.ndarray:
    return np.isin(lesions, ids) if ids else np.zeros(lesions.shape, bool)


def plot_lesion_outlines(
    volume_hu: np.ndarray,
    liver: np.ndarray,
    true_lesions: np.ndarray,
    pred_lesions: np.ndarray,
    match: dict,
    z: int | None = None,
    window: tuple[float, float] = TUMOUR_WINDOW_HU,
) -> Figure:
    """One axial slice: CT in the tumour window with true and predicted lesion outlines.

    Args:
        volume_hu: CT ``[z, y, x]`` in HU.
        liver: bool ``[z, y, x]`` liver (outlined in white).
        true_lesions: Integer id map of true lesions.
        pred_lesions: Integer id map of predicted lesions (``tumour.label_lesions``).
        match: ``lesion_eval.match_lesions`` of the two maps (colours found/missed/false).
        z: Slice index; None = the slice with the most true + predicted lesion voxels.
        window: Display ``(level, width)`` in HU.

    Returns:
        Figure with the slice, truth on the left and prediction on the right.
    """
    if z is None:
        counts = ((true_lesions != 0) | (pred_lesions != 0)).reshape(len(volume_hu), -1).sum(1)
        z = int(np.argmax(counts))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    layers = (
        ("truth", true_lesions[z], match["missed_ids"], FOUND, MISSED),
        ("prediction", pred_lesions[z], match["false_ids"], REAL, FALSE),
    )
    for ax, (title, ids2d, bad_ids, good, bad) in zip(axes, layers, strict=True):
        draw_ct(ax, volume_hu[z], window, "axial")
        if liver[z].any():
            ax.contour(liver[z], levels=[0.5], colors="white", linewidths=0.8)
        bad_mask = _ids_mask(ids2d, bad_ids)
        good_mask = (ids2d != 0) & ~bad_mask
        for mask, color in ((good_mask, good), (bad_mask, bad)):
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=color, linewidths=1.5)
        ax.set_title(f"{title}, slice {z}")
        ax.set_xlabel("column (pixels)")
        ax.set_ylabel("row (pixels)")
    handles = [
        Patch(color=c, label=n)
        for c, n in ((FOUND, "found"), (MISSED, "missed"), (REAL, "real"), (FALSE, "false"))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4)
    fig.suptitle(f"Lesions on CT (window L{window[0]:.0f}/W{window[1]:.0f} HU); liver in white")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_lesion_mip(
    liver: np.ndarray,
    true_lesions: np.ndarray,
    pred_lesions: np.ndarray,
    match: dict,
    spacing_mm: tuple[float, float, float],
) -> Figure:
    """Maximum-intensity projections of the lesion map: every lesion of the CT at once.

    A lesion anywhere along the projection direction shows, so a reader sees at a glance
    how many there are, where, and which were found (green), missed (red) or falsely
    predicted (orange). Axial (along z) and coronal (along rows) projections.

    Args:
        liver: bool ``[z, y, x]``.
        true_lesions, pred_lesions: Integer id maps.
        match: ``lesion_eval.match_lesions`` of the two maps.
        spacing_mm: Voxel size ``(z, y, x)``, for the aspect ratio of the coronal view.

    Returns:
        Figure with two panels.
    """
    # 0 none, 1 liver, 2 real predicted, 3 found truth, 4 false, 5 missed (max wins)
    code = liver.astype(np.uint8)
    code[pred_lesions != 0] = 2
    code[true_lesions != 0] = 3
    code[_ids_mask(pred_lesions, match["false_ids"])] = 4
    code[_ids_mask(true_lesions, match["missed_ids"])] = 5
    cmap = ListedColormap(["black", "dimgray", REAL, FOUND, FALSE, MISSED])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    shape = dict(cmap=cmap, vmin=0, vmax=5, interpolation="nearest")
    axes[0].imshow(code.max(axis=0), **shape)
    axes[0].set_title("axial MIP (along z)")
    axes[0].set_ylabel("row (pixels)")
    # Coronal: height in mm above the first slice, drawn upwards (origin "lower"), so the head
    # is at the top and the tick labels are true heights; one column is spacing_mm[2] mm wide.
    n_slices, n_cols = code.shape[0], code.shape[2]
    extent = (-0.5, n_cols - 0.5, -0.5 * spacing_mm[0], (n_slices - 0.5) * spacing_mm[0])
    axes[1].imshow(
        code.max(axis=1), origin="lower", extent=extent, aspect=1.0 / spacing_mm[2], **shape
    )
    axes[1].set_title("coronal MIP (along rows)")
    axes[1].set_ylabel("height z (mm above the first slice)")
    for ax, view in zip(axes, ("axial", "coronal"), strict=True):
        ax.set_xlabel("column (pixels)")
        label_ct_view(ax, view=view, colorbar=False)
    handles = [
        Patch(color=c, label=n)
        for c, n in ((FOUND, "found"), (MISSED, "missed"), (FALSE, "false"), (REAL, "predicted"))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4)
    fig.suptitle("Lesion map, maximum-intensity projection (liver in grey)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_crop(
    volume_hu: np.ndarray, box: tuple[int, int, int, int], z: int, crop_input: np.ndarray
) -> Figure:
    """What the second stage sees: the slice with the liver box, and the network input.

    Args:
        volume_hu: CT ``[z, y, x]`` in HU.
        box: ``(row_start, row_stop, col_start, col_stop)`` from ``preprocess.find_crop_box``.
        z: Slice index.
        crop_input: ``(S, S)`` preprocessed crop in [0, 1] (tumour window, resized).

    Returns:
        Figure with two panels.
    """
    r0, r1, c0, c1 = box
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    draw_ct(axes[0], volume_hu[z], LIVER_WINDOW_HU, "axial")
    axes[0].add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, color="yellow", lw=2))
    axes[0].set_title(f"stage one's view: whole slice {z}, liver window")
    grey = axes[1].imshow(crop_input, cmap="gray", vmin=0, vmax=1)
    label_ct_view(axes[1], view="axial", colorbar=False)
    fig.colorbar(grey, ax=axes[1], fraction=0.046, pad=0.04, label="input (tumour window as 0-1)")
    side = crop_input.shape[0]
    axes[1].set_title(f"stage two's input: liver box, tumour window, {side}x{side}")
    for ax in axes:
        ax.set_xlabel("column (pixels)")
        ax.set_ylabel("row (pixels)")
    fig.tight_layout()
    return fig
