"""Figures of a CT and its masks: overlays, three views; and the training curves.

Matplotlib only (no TensorFlow). Every function makes a figure of fixed size, labels axes with
units and returns the :class:`~matplotlib.figure.Figure`; notebooks call ``plt.show()``.
Arrays are ``[slice, row, column]`` (``z, y, x``) as everywhere in the package.
Truth is drawn in green, prediction in red (their overlap looks yellow-brown). The figures
that score a prediction (per-slice Dice, metric boxes, worst slices, error map) are in
:mod:`liverseg_helpers.figures.result_plots`.

Every CT view carries a colour bar in HU and the patient's orientation letters on its edges
(:func:`draw_ct`, :func:`label_ct_view`): the readers turn every CT to the axial layout of a DICOM
series (columns towards the patient's left, rows towards the back, slices towards the head), and
the figures draw it in the radiological convention: axial slices seen from the feet, so the
patient's right is on the image's left, and coronal and sagittal planes with the head up.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from liverseg_helpers.errors import DataError

TRUTH_COLOR = "tab:green"
PRED_COLOR = "tab:red"
# Soft-tissue window (level 50 HU, width 400 HU): liver, vessels and tumours are visible.
LIVER_WINDOW_HU = (50.0, 400.0)
# The patient's sides at the (left, right, top, bottom) edges of each view, as the course draws
# it (module docstring): R/L right and left, A/P anterior and posterior, S/I superior and inferior.
ORIENTATION_LETTERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


def window_bounds(window: tuple[float, float]) -> tuple[float, float]:
    """The lowest and highest HU of a ``(level_hu, width_hu)`` window (black and white)."""
    level, width = window
    return level - width / 2.0, level + width / 2.0


def label_ct_view(
    ax: Axes, image: AxesImage | None = None, view: str = "axial", colorbar: bool = True
) -> None:
    """Put the orientation letters on the edges of a CT view, and a colour bar beside it.

    The letters assume the course's layout (module docstring): an axial slice drawn with row 0
    at the top, coronal and sagittal planes drawn with the head up.

    Args:
        ax: Axes showing the CT view.
        image: The image drawn on ``ax`` (``ax.imshow``'s result); its colour bar is labelled
            in HU, so draw it in HU (:func:`draw_ct` does). No colour bar when None.
        view: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        colorbar: Add the colour bar (when ``image`` is given).

    Raises:
        ValueError: If ``view`` is unknown.
    """
    if view not in ORIENTATION_LETTERS:
        raise ValueError(f"view {view!r}: expected one of {sorted(ORIENTATION_LETTERS)}")
    left, right, top, bottom = ORIENTATION_LETTERS[view]
    style = {
        "transform": ax.transAxes,
        "color": "yellow",
        "fontweight": "bold",
        "path_effects": [patheffects.withStroke(linewidth=2, foreground="black")],  # on bone too
    }
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    if colorbar and image is not None:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="HU")


def draw_ct(
    ax: Axes,
    image: np.ndarray,
    window: tuple[float, float] = LIVER_WINDOW_HU,
    view: str = "axial",
    colorbar: bool = True,
    **imshow_kwargs,
) -> AxesImage:
    """Draw one CT plane in grey at a display window, with a colour bar in HU and letters.

    Args:
        ax: Axes to draw on.
        image: 2D CT plane in HU, laid out as :func:`label_ct_view` expects.
        window: Display window ``(level_hu, width_hu)``: HU below it are black, above it white.
        view: ``"axial"``, ``"coronal"`` or ``"sagittal"`` (sets the letters).
        colorbar: Add the colour bar in HU.
        **imshow_kwargs: Passed to ``ax.imshow`` (e.g. ``extent``, ``origin``).

    Returns:
        The image artist.
    """
    low, high = window_bounds(window)
    artist = ax.imshow(np.asarray(image), cmap="gray", vmin=low, vmax=high, **imshow_kwargs)
    label_ct_view(ax, artist, view, colorbar)
    return artist


def window_for_display(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map HU to [0, 1] grey levels with a (level, width) window.

    Args:
        image: CT slice or volume in HU.
        window: ``(level_hu, width_hu)``.

    Returns:
        float32 array of the same shape in [0, 1].
    """
    level, width = window
    low = level - width / 2.0
    return np.clip((np.asarray(image, np.float32) - low) / max(width, 1e-6), 0.0, 1.0)


def pick_slice_index(*masks: np.ndarray | None, n_slices: int) -> int:
    """The slice with the most foreground in the first non-empty mask, else the middle slice."""
    for mask in masks:
        if mask is not None and np.any(mask):
            return int(np.argmax(np.count_nonzero(mask, axis=(1, 2))))
    return n_slices // 2


def draw_contours(ax: Axes, mask2d: np.ndarray | None, color: str, **kwargs) -> None:
    """Outline a 2D mask on ``ax`` (nothing when the mask is absent or empty)."""
    if mask2d is not None and np.any(mask2d):
        ax.contour(np.asarray(mask2d, np.float32), levels=[0.5], colors=[color], **kwargs)


def add_legend(ax: Axes, truth: bool, pred: bool) -> None:
    """Legend for the truth/prediction outlines that are drawn."""
    handles = []
    if truth:
        handles.append(Line2D([], [], color=TRUTH_COLOR, label="truth"))
    if pred:
        handles.append(Line2D([], [], color=PRED_COLOR, label="prediction"))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize="small")


def plot_overlay(
    volume: np.ndarray,
    truth: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    slice_index: int | None = None,
    window: tuple[float, float] = LIVER_WINDOW_HU,
    ax: Axes | None = None,
    view: str = "axial",
    colorbar: bool = True,
) -> Figure:
    """One CT slice (axial by default) with the truth and prediction outlined.

    Args:
        volume: CT ``[z, y, x]`` in HU (or a turned volume whose slices are ``view``'s planes,
            drawn head up).
        truth: Optional true mask, same shape.
        pred: Optional predicted mask, same shape.
        slice_index: Slice; default the one with the most truth (or prediction).
        window: Display window ``(level_hu, width_hu)``.
        ax: Axes to draw on; a new 6x6 inch figure when absent.
        view: The plane the slices are in (sets the orientation letters and the title).
        colorbar: Add a colour bar in HU.

    Returns:
        The figure.

    Raises:
        DataError: If a mask's shape differs from the volume's or the slice is out of range.
    """
    volume = np.asarray(volume)
    for name, mask in (("truth", truth), ("pred", pred)):
        if mask is not None and np.shape(mask) != volume.shape:
            raise DataError(f"{name} shape {np.shape(mask)} differs from volume {volume.shape}")
    if slice_index is None:
        slice_index = pick_slice_index(truth, pred, n_slices=volume.shape[0])
    if not 0 <= slice_index < volume.shape[0]:
        raise DataError(f"slice_index {slice_index} outside 0..{volume.shape[0] - 1}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6))
    else:
        fig = ax.figure
    draw_ct(ax, volume[slice_index], window, view, colorbar)
    draw_contours(ax, None if truth is None else truth[slice_index], TRUTH_COLOR)
    draw_contours(ax, None if pred is None else pred[slice_index], PRED_COLOR)
    add_legend(ax, truth is not None, pred is not None)
    ax.set_title(f"{view} slice {slice_index} (W {window[1]:g} / L {window[0]:g} HU)")
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("row (pixels)")
    return fig


def plot_three_views(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    truth: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    center: tuple[int, int, int] | None = None,
    window: tuple[float, float] = LIVER_WINDOW_HU,
) -> Figure:
    """Axial, coronal and sagittal planes through the liver, drawn in mm with true proportions.

    Args:
        volume: CT ``[z, y, x]`` in HU.
        spacing_mm: Voxel size ``(z, y, x)`` in mm (sets each view's aspect).
        truth: Optional true mask, same shape.
        pred: Optional predicted mask, same shape.
        center: Voxel ``(z, y, x)`` the planes cross; default the centre of mass of the truth
            (or prediction), else the volume centre.
        window: Display window ``(level_hu, width_hu)``.

    Returns:
        A 15x5 inch figure with three panels, each with its colour bar in HU and the
        patient's orientation letters (coronal and sagittal drawn head up).
    """
    volume = np.asarray(volume)
    sz, sy, sx = (float(s) for s in spacing_mm)
    if center is None:
        ref = next((m for m in (truth, pred) if m is not None and np.any(m)), None)
        if ref is None:
            center = tuple(n // 2 for n in volume.shape)
        else:
            center = tuple(int(round(c.mean())) for c in np.nonzero(ref))
    cz, cy, cx = center
    nz, ny, nx = volume.shape
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))

    def take(arr, view):
        if arr is None:
            return None
        return {"axial": arr[cz], "coronal": arr[:, cy, :], "sagittal": arr[:, :, cx]}[view]

    # extent in mm: (left, right, bottom, top); z is drawn upwards (head at the top).
    extents = {
        "axial": ((0, nx * sx, ny * sy, 0), "x (mm)", "y (mm)", f"axial z={cz}"),
        "coronal": ((0, nx * sx, 0, nz * sz), "x (mm)", "z (mm)", f"coronal y={cy}"),
        "sagittal": ((0, ny * sy, 0, nz * sz), "y (mm)", "z (mm)", f"sagittal x={cx}"),
    }
    for ax, (view, (extent, xlabel, ylabel, title)) in zip(axes, extents.items(), strict=True):
        origin = "upper" if view == "axial" else "lower"
        draw_ct(ax, take(volume, view), window, view, extent=extent, origin=origin)
        for mask, color in ((truth, TRUTH_COLOR), (pred, PRED_COLOR)):
            plane = take(mask, view)
            if plane is not None and np.any(plane):
                ax.contour(
                    np.asarray(plane, np.float32),
                    levels=[0.5],
                    colors=[color],
                    extent=extent,
                    origin=origin,
                )
        ax.set_aspect("equal")  # extents are in mm, so equal aspect is the true shape
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    add_legend(axes[0], truth is not None, pred is not None)
    fig.tight_layout()
    return fig


def read_history(run_dir_or_csv: str | os.PathLike) -> pd.DataFrame:
    """Training history from a run folder (its ``history.csv``) or a CSV file.

    Raises:
        DataError: If the file is missing.
    """
    path = Path(run_dir_or_csv)
    if path.is_dir():
        path = path / "history.csv"
    if not path.is_file():
        raise DataError(f"{path}: no training history (run notebook 04 or `liverseg train` first)")
    return pd.read_csv(path)


def plot_history(run_dir_or_csv: str | os.PathLike | pd.DataFrame) -> Figure:
    """Loss and Dice per epoch, training and validation.

    Args:
        run_dir_or_csv: Run folder with ``history.csv``, the CSV itself, or a DataFrame with
            columns such as ``loss``, ``val_loss``, ``dice_metric``, ``val_dice_metric``.

    Returns:
        A 12x4 inch figure with a loss panel and a Dice panel.
    """
    if isinstance(run_dir_or_csv, pd.DataFrame):
        history = run_dir_or_csv
    else:
        history = read_history(run_dir_or_csv)
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, ylabel in ((ax_loss, "loss", "loss"), (ax_dice, "dice", "Dice")):
        train_cols = [
            c for c in history.columns if key in c and not c.startswith("val_") and c != "epoch"
        ]
        if key == "loss":
            train_cols = [c for c in train_cols if c == "loss"] or train_cols
        for col in train_cols:
            ax.plot(epochs, history[col], "o-", label=f"train {col}")
            if f"val_{col}" in history:
                ax.plot(epochs, history[f"val_{col}"], "s--", label=f"validation {col}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} per epoch")
        if train_cols:
            ax.legend()
    fig.tight_layout()
    return fig
