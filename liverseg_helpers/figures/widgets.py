"""An interactive CT viewer for JupyterLab (ipywidgets), with a static fallback.

The viewer has a slice slider, window level/width sliders, check boxes for the truth and
prediction outlines, and a threshold slider that re-thresholds the stored probabilities live.

When no widget front end will draw it (papermill, nbval, a plain ``jupyter nbconvert``), the
viewer falls back to one static figure instead. Whether a front end is attached cannot be
detected reliably (ipywidgets always imports), so the choice is explicit:

* ``show_viewer(..., static=True)`` or ``static=False`` decides;
* ``static=None`` (default) reads the environment variable ``LIVERSEG_STATIC_VIEWER``: ``1``
  means static. The course runner (``liverseg course``) sets it for papermill runs.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from liverseg_helpers.errors import DataError
from liverseg_helpers.figures import viz
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
        The ipywidgets container (interactive), or the static Figure (fallback).

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

    if use_static_viewer(static):
        pred = threshold_probs(probs, threshold)
        if spacing_mm is not None:
            return viz.plot_three_views(volume, spacing_mm, truth, pred)
        return viz.plot_overlay(volume, truth, pred, slice_index=start)

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

    def redraw(_change=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = render_viewer_slice(
                volume, probs=probs, truth=truth, **{k: w.value for k, w in controls.items()}
            )
            display(fig)
            plt.close(fig)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    box = widgets.HBox([widgets.VBox(list(controls.values())), output])
    display(box)
    return box
