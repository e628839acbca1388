"""An interactive CT viewer for JupyterLab (ipywidgets), with a static fallback.

The viewer has a slice slider, window level/width sliders, check boxes for the truth and
prediction outlines, and a threshold slider that re-thresholds the stored probabilities live.

When no widget front end will draw it (papermill, nbval, a plain ``jupyter nbconvert``), the
viewer falls back to one static figure instead. Whether a front end is attached cannot be
detected reliably (ipywidgets always imports), so the choice is explicit:

* ``show_viewer(..., static=True)`` or ``static=False`` decides;
* ``static=None`` (default) reads the environment variable ``LIVERSEG_STATIC_VIEWER``: ``1``
  means static. The course runner (``liverseg course``) sets it for papermill runs.

:func:`show_window_level` is a smaller widget of the same kind for notebook 01: a window
level/width slider on one slice, beside the slice's HU histogram with the window shaded.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from liverseg_helpers.errors import DataError
from liverseg_helpers.figures import result_plots, viz
from liverseg_helpers.io.case import LIVER, Case

ENV_STATIC_VIEWER = "LIVERSEG_STATIC_VIEWER"


def use_static_viewer(static: bool | None = None) -> bool:
    """Whether to draw a static figure: ``static`` if given, else ``LIVERSEG_STATIC_VIEWER=1``."""
    if static is not None:
        return bool(static)
    return os.environ.get(ENV_STATIC_VIEWER, "").strip().lower() in {"1", "true", "yes"}


def threshold_probs(probs: np.ndarray | None, threshold: float) -> np.ndarray | None:
    """Re-threshold probabilities: the callback of the viewer's threshold slider.

    Args:
        probs: Foreground probabilities ``[z, y, x]`` (or one slice) in [0, 1], or None.
        threshold: Probability above which a voxel is liver (strictly greater, as in
            ``predict``).

    Returns:
        bool array of the same shape, or None when ``probs`` is None.
    """
    if probs is None:
        return None
    return np.asarray(probs) > threshold


def render_viewer_slice(
    volume: np.ndarray,
    slice_index: int,
    level_hu: float,
    width_hu: float,
    probs: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    threshold: float = 0.5,
    show_truth: bool = True,
    show_pred: bool = True,
) -> Figure:
    """Draw one state of the viewer (what every slider change calls).

    Args:
        volume: CT ``[z, y, x]`` in HU.
        slice_index: Axial slice.
        level_hu: Window level in HU.
        width_hu: Window width in HU.
        probs: Optional probabilities ``[z, y, x]``; the prediction is ``probs > threshold``.
        truth: Optional true mask ``[z, y, x]``.
        threshold: Probability threshold.
        show_truth: Draw the truth outline.
        show_pred: Draw the prediction outline.

    Returns:
        A 6x6 inch figure.
    """
    pred = threshold_probs(probs, threshold) if show_pred else None
    fig = viz.plot_overlay(
        volume,
        truth=truth if show_truth else None,
        pred=pred,
        slice_index=slice_index,
        window=(level_hu, width_hu),
    )
    if pred is not None:
        ax = fig.axes[0]
        ax.set_title(f"{ax.get_title()}, threshold {threshold:.2f}")
    return fig


def describe_threshold(
    probs: np.ndarray,
    threshold: float,
    truth: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> str:
    """What the viewer prints under its threshold slider: 3D Dice and predicted volume.

    Args:
        probs: Probabilities ``[z, y, x]`` in [0, 1]; the prediction is ``probs > threshold``.
        threshold: Probability threshold.
        truth: Optional true mask, same shape (for the Dice and the true volume).
        spacing_mm: Optional voxel size ``(z, y, x)``: volumes in mL; voxels without it.

    Returns:
        One line, e.g. ``"threshold 0.50: Dice 0.934 | volume 1523.4 mL (truth 1490.2 mL)"``.
    """
    pred = threshold_probs(probs, threshold)

    def volume(mask: np.ndarray) -> str:
        voxels = np.count_nonzero(mask)
        if spacing_mm is None:
            return f"{voxels} voxels"
        return f"{voxels * float(np.prod(spacing_mm)) / 1000.0:.1f} mL"

    line = f"threshold {threshold:.2f}: "
    if truth is not None:
        counts = np.bincount(result_plots.error_codes(truth, pred).ravel(), minlength=4)
        overlap, wrong = 2 * counts[1], counts[2] + counts[3]
        line += f"Dice {overlap / (overlap + wrong) if overlap + wrong else 1.0:.3f} | "
    line += f"volume {volume(pred)}"
    if truth is not None:
        line += f" (truth {volume(truth)})"
    return line


def show_viewer(
    volume: np.ndarray | Case,
    probs: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    static: bool | None = None,
    threshold: float = 0.5,
):
    """Show the interactive viewer, or a static figure where widgets cannot be drawn.

    Args:
        volume: CT ``[z, y, x]`` in HU (e.g. ``case.volume``), or a whole ``Case``: its
            volume, liver mask (as ``truth`` when not given) and spacing are used.
        probs: Optional predicted probabilities, same shape (``PredictionResult.probs``).
        truth: Optional true mask, same shape (``case.masks["liver"]``).
        spacing_mm: Optional voxel size ``(z, y, x)``; the static fallback then adds
            ``viz.plot_three_views`` in true proportions.
        static: True: static figure; False: widgets; None: ``LIVERSEG_STATIC_VIEWER`` decides.
        threshold: Initial probability threshold.

    Returns:
        The ipywidgets container (interactive), or the static Figure (fallback), for the
        notebook to show once as the cell's result (the viewer does not display itself). Under
        the threshold slider, :func:`describe_threshold` gives the 3D Dice and the predicted
        volume at the current threshold; the static figure has that line as its title.

    Raises:
        DataError: If ``probs`` or ``truth`` does not have the volume's shape.
    """
    if isinstance(volume, Case):
        truth = volume.masks.get(LIVER) if truth is None else truth
        spacing_mm = volume.spacing_mm if spacing_mm is None else spacing_mm
        volume = volume.volume
    volume = np.asarray(volume)
    for name, arr in (("probs", probs), ("truth", truth)):
        if arr is not None and np.shape(arr) != volume.shape:
            raise DataError(f"{name} shape {np.shape(arr)} differs from volume {volume.shape}")
    start = viz.pick_slice_index(truth, threshold_probs(probs, threshold), n_slices=len(volume))
    level_hu, width_hu = viz.LIVER_WINDOW_HU

    summary = None if probs is None else describe_threshold(probs, threshold, truth, spacing_mm)
    if use_static_viewer(static):
        import matplotlib.pyplot as plt

        pred = threshold_probs(probs, threshold)
        if spacing_mm is not None:
            fig = viz.plot_three_views(volume, spacing_mm, truth, pred)
        else:
            fig = viz.plot_overlay(volume, truth, pred, slice_index=start)
        if summary:
            fig.suptitle(summary)
        plt.close(fig)  # shown once, as the cell's result, not a second time by pyplot
        return fig

    import ipywidgets as widgets  # lazy: only the interactive viewer needs it
    import matplotlib.pyplot as plt
    from IPython.display import display

    controls = {
        "slice_index": widgets.IntSlider(
            value=start, min=0, max=len(volume) - 1, description="slice"
        ),
        "level_hu": widgets.FloatSlider(
            value=level_hu, min=-1000, max=1000, step=10, description="level HU"
        ),
        "width_hu": widgets.FloatSlider(
            value=width_hu, min=10, max=2000, step=10, description="width HU"
        ),
        "threshold": widgets.FloatSlider(
            value=threshold,
            min=0.0,
            max=1.0,
            step=0.05,
            description="threshold",
            disabled=probs is None,
        ),
        "show_truth": widgets.Checkbox(
            value=truth is not None, description="truth", disabled=truth is None
        ),
        "show_pred": widgets.Checkbox(
            value=probs is not None, description="prediction", disabled=probs is None
        ),
    }
    output = widgets.Output()
    scores = widgets.Label(value=summary or "")

    def redraw(_change=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = render_viewer_slice(
                volume, probs=probs, truth=truth, **{k: w.value for k, w in controls.items()}
            )
            display(fig)
            plt.close(fig)

    def rescore(change) -> None:
        scores.value = describe_threshold(probs, change["new"], truth, spacing_mm)

    for control in controls.values():
        control.observe(redraw, names="value")
    if probs is not None:
        controls["threshold"].observe(rescore, names="value")
    redraw()
    return widgets.HBox([widgets.VBox([*controls.values(), scores]), output])


# Display windows ``(level_hu, width_hu)`` that radiologists switch between.
WINDOW_PRESETS_HU = {
    "liver": viz.LIVER_WINDOW_HU,
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "full range": (250.0, 2500.0),
}


def check_slice(volume: np.ndarray, slice_index: int | None) -> int:
    """The slice to show: ``slice_index``, or the middle one when None.

    Raises:
        DataError: If ``volume`` is not 3D or the slice is outside it.
    """
    if volume.ndim != 3:
        raise DataError(f"volume shape {volume.shape}: expected a 3D CT [slice, row, column]")
    if slice_index is None:
        return len(volume) // 2
    if not 0 <= slice_index < len(volume):
        raise DataError(f"slice_index {slice_index} outside 0..{len(volume) - 1}")
    return int(slice_index)


def render_window_level(
    volume: np.ndarray, slice_index: int, level_hu: float, width_hu: float
) -> Figure:
    """One axial slice at a display window, beside its HU histogram with the window shaded.

    HU below the window are drawn black, above it white, and only the HU inside it get
    shades of grey: the histogram shows which tissues share that grey ramp.

    Args:
        volume: CT ``[z, y, x]`` in HU.
        slice_index: Axial slice.
        level_hu: Window level (its centre) in HU.
        width_hu: Window width in HU.

    Returns:
        An 11x4.5 inch figure: the slice (colour bar in HU, orientation letters) and the
        histogram of its voxels.

    Raises:
        DataError: If ``volume`` is not 3D or the slice is outside it.
    """
    volume = np.asarray(volume)
    slice_index = check_slice(volume, slice_index)
    window = (float(level_hu), float(width_hu))
    low, high = viz.window_bounds(window)
    fig, (ax_ct, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.5))
    viz.draw_ct(ax_ct, volume[slice_index], window)
    ax_ct.set_title(f"axial slice {slice_index}, W {width_hu:g} / L {level_hu:g} HU")
    ax_ct.set_xlabel("column (pixels)")
    ax_ct.set_ylabel("row (pixels)")
    ax_hist.hist(volume[slice_index].ravel(), bins=200, range=(-1100, 1500), color="dimgrey")
    ax_hist.axvspan(low, high, color="tab:orange", alpha=0.3, label="window (grey ramp)")
    ax_hist.set_yscale("log")
    ax_hist.set(xlabel="HU", ylabel="voxels (log scale)", title="HU histogram of the slice")
    ax_hist.legend(loc="upper right")
    fig.tight_layout()
    return fig


def show_window_level(
    volume: np.ndarray | Case,
    slice_index: int | None = None,
    static: bool | None = None,
    presets: dict[str, tuple[float, float]] | None = None,
):
    """Window level/width sliders on one slice, or the preset windows side by side (static).

    Args:
        volume: CT ``[z, y, x]`` in HU, or a ``Case``.
        slice_index: Axial slice; default the middle one.
        static: True: static figure; False: widgets; None: ``LIVERSEG_STATIC_VIEWER`` decides.
        presets: Named windows ``{name: (level_hu, width_hu)}`` for the drop-down (and the
            static figure's panels); default :data:`WINDOW_PRESETS_HU`.

    Returns:
        The ipywidgets container (interactive), or a Figure with one panel per preset, each
        4.5 inches wide (static).

    Raises:
        DataError: If ``volume`` is not 3D or the slice is outside it.
    """
    volume = np.asarray(volume.volume if isinstance(volume, Case) else volume)
    slice_index = check_slice(volume, slice_index)
    presets = dict(WINDOW_PRESETS_HU if presets is None else presets)

    if use_static_viewer(static):
        fig, axes = plt.subplots(1, len(presets), figsize=(4.5 * len(presets), 4.5), squeeze=False)
        for ax, (name, window) in zip(axes[0], presets.items(), strict=True):
            viz.draw_ct(ax, volume[slice_index], window)
            ax.set_title(f"{name}: W {window[1]:g} / L {window[0]:g} HU")
            ax.axis("off")
        fig.suptitle(f"axial slice {slice_index} at {len(presets)} display windows")
        fig.tight_layout()
        return fig

    import ipywidgets as widgets  # lazy: only the interactive viewer needs it
    from IPython.display import display

    level_hu, width_hu = next(iter(presets.values()))
    preset = widgets.Dropdown(options=list(presets), description="preset")
    level = widgets.FloatSlider(
        value=level_hu, min=-1000, max=1000, step=10, description="level HU"
    )
    width = widgets.FloatSlider(value=width_hu, min=10, max=2500, step=10, description="width HU")
    output = widgets.Output()

    def apply_preset(_change=None) -> None:
        level.value, width.value = presets[preset.value]

    def redraw(_change=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = render_window_level(volume, slice_index, level.value, width.value)
            display(fig)
            plt.close(fig)

    preset.observe(apply_preset, names="value")
    level.observe(redraw, names="value")
    width.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([preset, level, width]), output])
    display(box)
    return box
