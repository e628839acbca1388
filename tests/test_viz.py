"""Figures (viz.py) and the viewer's logic (widgets.py), without a widget front end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from io_fixtures import DATA_DIR  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.errors import DataError  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.figures import result_plots, viz, widgets  # noqa: E402
from liverseg_helpers.io.case import Case  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def toy():
    """A 16x32x32 CT with a sphere 'liver' at 60 HU and a prediction shifted by 2 voxels."""
    zz, yy, xx = np.indices((16, 32, 32))
    truth = (zz - 8) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2 <= 36
    pred = np.roll(truth, 2, axis=2)
    volume = np.where(truth, 60, -100).astype(np.int16)
    return volume, truth, pred


def test_plot_overlay_picks_liver_slice(toy):
    volume, truth, pred = toy
    fig = viz.plot_overlay(volume, truth, pred)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "slice 8" in ax.get_title() and "HU" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.collections) == 2  # two contour sets
    assert tuple(fig.get_size_inches()) == (6, 6)


def test_plot_overlay_on_given_axes_and_errors(toy):
    volume, truth, _ = toy
    fig, ax = plt.subplots()
    assert viz.plot_overlay(volume, truth=truth, slice_index=0, ax=ax) is fig
    with pytest.raises(DataError, match="slice_index"):
        viz.plot_overlay(volume, slice_index=99)
    with pytest.raises(DataError, match="shape"):
        viz.plot_overlay(volume, truth=truth[:3])


def test_window_for_display():
    image = np.array([-150, 50, 250, 1000])
    assert viz.window_for_display(image, (50, 400)).tolist() == [0.0, 0.5, 1.0, 1.0]


def test_three_views_have_true_proportions(toy):
    volume, truth, pred = toy
    spacing_mm = (2.5, 0.5, 0.5)
    fig = viz.plot_three_views(volume, spacing_mm, truth, pred)
    axial, coronal, sagittal = fig.axes[:3]
    assert coronal.get_ylabel() == "z (mm)" and "mm" in axial.get_xlabel()
    # image extents are in mm: coronal is 32*0.5 = 16 mm wide, 16*2.5 = 40 mm tall.
    left, right, bottom, top = coronal.images[0].get_extent()
    assert (right - left, top - bottom) == pytest.approx((16.0, 40.0))
    assert sagittal.get_aspect() == 1.0


def letters(ax) -> dict[str, str]:
    """The orientation letters on ``ax``, by the edge they sit on."""
    found = {}
    for text in ax.texts:
        x, y = text.get_position()
        edge = {
            (0.02, 0.5): "left",
            (0.98, 0.5): "right",
            (0.5, 0.98): "top",
            (0.5, 0.02): "bottom",
        }
        found[edge[(x, y)]] = text.get_text()
    return found


def rendered_grey(fig, ax, x_frac: float, y_frac: float) -> float:
    """Mean grey level (0..255) of a 5x5 pixel patch at an axes-fraction point, as drawn."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].mean(axis=-1)
    col, row_from_bottom = ax.transAxes.transform((x_frac, y_frac))
    row = pixels.shape[0] - int(row_from_bottom)
    return float(pixels[row - 2 : row + 3, int(col) - 2 : int(col) + 3].mean())


def test_ct_views_show_the_patient_sides_they_name():
    """A bright block in the patient's right, front and head end lands where the letters say.

    The readers' layout: column 0 is the patient's right, row 0 the front, the last slice the
    head end. Whatever the view, the block must be drawn in the top-left quadrant, and that
    quadrant's edges must be labelled with the block's sides.
    """
    zz, yy, xx = np.indices((16, 32, 32))
    volume = np.where((xx <= 16) & (yy <= 16) & (zz >= 8), 1000, -1000).astype(np.int16)
    fig = viz.plot_three_views(volume, (2.0, 1.0, 1.0), center=(8, 16, 16))
    expected = {"axial": ("R", "A"), "coronal": ("R", "S"), "sagittal": ("A", "S")}
    for ax, (view, (left, top)) in zip(fig.axes[:3], expected.items(), strict=True):
        assert ax.get_title().startswith(view)
        assert (letters(ax)["left"], letters(ax)["top"]) == (left, top), view
        assert rendered_grey(fig, ax, 0.25, 0.75) > 200, view  # bright block top left
        assert rendered_grey(fig, ax, 0.75, 0.25) < 50, view  # dark bottom right
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 3


def test_overlay_has_hu_colourbar_at_the_window(toy):
    volume, truth, _ = toy
    fig = viz.plot_overlay(volume, truth, window=(40.0, 300.0))
    colorbar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert colorbar.get_ylabel() == "HU"
    assert fig.axes[0].images[0].get_clim() == (-110.0, 190.0)
    assert letters(fig.axes[0]) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    fig = viz.plot_overlay(volume, truth, view="coronal", colorbar=False)
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("coronal")
    assert letters(fig.axes[0])["top"] == "S"
    with pytest.raises(ValueError, match="view"):
        viz.plot_overlay(volume, view="oblique")


def test_slice_dice_and_plot(toy):
    _, truth, pred = toy
    dice = result_plots.compute_slice_dice(pred, truth)
    assert np.isnan(dice[0]) and 0 < dice[8] < 1
    empty = result_plots.compute_slice_dice(np.zeros_like(truth), truth)
    assert np.nanmax(empty) == 0.0
    fig = result_plots.plot_slice_dice(pred, truth)
    assert fig.axes[0].get_xlabel() == "axial slice index"


def test_metric_boxes_drop_summary_rows(toy):
    _, truth, pred = toy
    df = evaluate.evaluate_cohort(
        {
            "a": (pred, truth, (1, 1, 1)),
            "b": (truth, truth, (1, 1, 1)),
            "c": (np.zeros_like(truth), truth, (1, 1, 1)),
        }
    )
    fig = result_plots.plot_metric_boxes(df)
    assert len(fig.axes) == 2
    assert "3 patients" in fig.axes[0].get_title()
    assert fig.axes[1].get_ylabel() == "distance (mm)"


def test_plot_history_from_run_dir(tmp_path):
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "loss": [0.9, 0.5, 0.3],
            "val_loss": [0.95, 0.6, 0.4],
            "dice_metric": [0.1, 0.5, 0.7],
            "val_dice_metric": [0.1, 0.4, 0.6],
        }
    )
    history.to_csv(tmp_path / "history.csv", index=False)
    fig = viz.plot_history(tmp_path)
    ax_loss, ax_dice = fig.axes
    assert len(ax_loss.lines) == 2 and len(ax_dice.lines) == 2
    assert ax_loss.get_xlabel() == "epoch"
    assert ax_dice.lines[0].get_xdata().tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="history"):
        viz.plot_history(tmp_path / "missing")


def test_worst_slices_sorted_by_dice(toy):
    volume, truth, pred = toy
    fig = result_plots.plot_worst_slices(volume, truth, pred, n=3)
    dice = result_plots.compute_slice_dice(pred, truth)
    titles = [ax.get_title() for ax in fig.axes[:3]]
    shown = [float(t.split("Dice ")[1]) for t in titles]
    assert shown == sorted(shown)
    assert shown[0] == pytest.approx(np.nanmin(dice), abs=0.01)


def test_threshold_callback():
    probs = np.array([[[0.1, 0.5, 0.51, 0.9]]], np.float32)
    assert widgets.threshold_probs(probs, 0.5).tolist() == [[[False, False, True, True]]]
    assert widgets.threshold_probs(probs, 0.05).all()
    assert widgets.threshold_probs(None, 0.5) is None


def test_render_viewer_slice_follows_controls(toy):
    volume, truth, pred = toy
    probs = pred.astype(np.float32) * 0.7
    fig = widgets.render_viewer_slice(volume, 8, 40, 350, probs=probs, truth=truth, threshold=0.6)
    assert "threshold 0.60" in fig.axes[0].get_title()
    assert len(fig.axes[0].collections) == 2
    # above every probability: the prediction outline disappears
    fig = widgets.render_viewer_slice(volume, 8, 40, 350, probs=probs, truth=truth, threshold=0.8)
    assert len(fig.axes[0].collections) == 1
    fig = widgets.render_viewer_slice(volume, 8, 40, 350, probs, truth, show_truth=False)
    assert len(fig.axes[0].collections) == 1


def test_static_fallback(toy, monkeypatch):
    volume, truth, pred = toy
    monkeypatch.setenv(widgets.ENV_STATIC_VIEWER, "1")
    assert widgets.use_static_viewer() is True
    assert widgets.use_static_viewer(False) is False
    fig = widgets.show_viewer(volume, probs=pred.astype(np.float32), truth=truth)
    assert isinstance(fig, Figure)
    assert fig.number not in plt.get_fignums()  # closed: shown once, as the cell's result
    assert fig.get_suptitle().startswith("threshold 0.50: Dice")
    case = Case("toy", volume, (2.0, 1.0, 1.0), masks={"liver": truth})
    fig = widgets.show_viewer(case, static=True)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3  # three views when the spacing is known
    monkeypatch.delenv(widgets.ENV_STATIC_VIEWER)
    assert widgets.use_static_viewer() is False


def test_interactive_viewer_builds_widgets(toy):
    volume, truth, pred = toy
    box = widgets.show_viewer(volume, probs=pred.astype(np.float32), truth=truth, static=False)
    controls = box.children[0].children
    threshold = next(c for c in controls if c.description == "threshold")
    scores = controls[-1]  # the live Dice and volume under the sliders
    assert scores.value == widgets.describe_threshold(pred.astype(np.float32), 0.5, truth)
    threshold.value = 1.0  # triggers the redraw and rescore callbacks without a front end
    assert len(controls) == 7
    n_true = np.count_nonzero(truth)
    assert scores.value == f"threshold 1.00: Dice 0.000 | volume 0 voxels (truth {n_true} voxels)"
    with pytest.raises(DataError, match="probs"):
        widgets.show_viewer(volume, probs=pred[:2].astype(np.float32), static=True)


def test_window_level_render_shades_the_window(toy):
    volume, _, _ = toy
    fig = widgets.render_window_level(volume, 8, level_hu=40, width_hu=300)
    ax_ct, ax_hist = fig.axes[:2]
    assert ax_ct.images[0].get_clim() == (-110.0, 190.0)
    band = ax_hist.patches[-1]  # the shaded window, drawn last
    assert (band.get_x(), band.get_x() + band.get_width()) == (-110.0, 190.0)
    counts = [patch.get_height() for patch in ax_hist.patches[:-1]]
    assert sum(counts) == volume[8].size  # every voxel of the slice is in the histogram
    with pytest.raises(DataError, match="slice_index"):
        widgets.render_window_level(volume, 16, 40, 300)
    with pytest.raises(DataError, match="3D"):
        widgets.render_window_level(volume[0], 0, 40, 300)


def test_window_level_static_and_interactive(toy, monkeypatch):
    volume, truth, _ = toy
    monkeypatch.setenv(widgets.ENV_STATIC_VIEWER, "1")
    fig = widgets.show_window_level(volume)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == len(widgets.WINDOW_PRESETS_HU)
    lung = viz.window_bounds(widgets.WINDOW_PRESETS_HU["lung"])
    assert panels[1].images[0].get_clim() == lung
    box = widgets.show_window_level(Case("toy", volume, (2.0, 1.0, 1.0)), 3, static=False)
    preset, level, width = box.children[0].children
    preset.value = "bone"  # the drop-down sets both sliders (and redraws)
    assert (level.value, width.value) == widgets.WINDOW_PRESETS_HU["bone"]


def test_error_map_paints_false_positives_and_negatives(toy):
    volume, truth, pred = toy  # pred: the truth shifted by 2 columns
    codes = result_plots.error_codes(truth, pred)
    assert (codes == 2).sum() == (pred & ~truth).sum() > 0
    assert (codes == 3).sum() == (truth & ~pred).sum() > 0
    assert (codes == 1).sum() == (truth & pred).sum()
    fig = result_plots.plot_error_map(volume, truth, pred)
    ax = fig.axes[0]
    painted = ax.images[-1].get_array()
    # slice 8 has the most wrong voxels; its row 16 runs through the sphere's middle
    assert "slice 8" in ax.get_title()
    row = truth[8, 16]
    first, last = np.flatnonzero(row)[[0, -1]]
    assert painted[16, first] == 3 and painted[16, last + 1] == 2  # missed left, extra right
    assert painted[16, first + 3] == 1 and np.ma.is_masked(painted[0, 0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1] == f"false positive ({(codes[8] == 2).sum()} px)"
    assert {"R", "L", "A", "P"} <= {t.get_text() for t in ax.texts}  # the CT view's letters
    with pytest.raises(DataError, match="pred"):
        result_plots.plot_error_map(volume, truth, pred[:2])


def test_viewer_scores_follow_the_threshold_and_it_renders_once(toy, monkeypatch):
    volume, truth, pred = toy
    probs = np.where(pred, 0.8, 0.1).astype(np.float32)
    overlap = np.count_nonzero(truth & pred)
    dice = 2 * overlap / (np.count_nonzero(truth) + np.count_nonzero(pred))
    line = widgets.describe_threshold(probs, 0.5, truth, spacing_mm=(2.0, 1.0, 1.0))
    ml = np.count_nonzero(pred) * 0.002
    assert line == f"threshold 0.50: Dice {dice:.3f} | volume {ml:.1f} mL (truth {ml:.1f} mL)"
    assert widgets.describe_threshold(probs, 0.05) == f"threshold 0.05: volume {probs.size} voxels"
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    widgets.show_viewer(volume, probs=probs, truth=truth, static=False)
    assert [type(obj) for obj in shown] == [Figure]  # one slice figure; the box is the result


# DICOM series whose ImageOrientationPatient is [1, 0, 0, 0, 1, 0], with liver masks.
REAL_LIVERS = [DATA_DIR / "3Dircadb1" / "3Dircadb1.1", DATA_DIR / "3Dircadb1" / "3Dircadb1.7"]


@pytest.mark.parametrize("path", REAL_LIVERS, ids=lambda p: p.name)
def test_real_liver_lies_on_the_image_left(path):
    """The radiological convention the figures state holds on real CT: the liver (in the patient's
    right) lies in the columns drawn on the image's left, under the letter R."""
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    case = io.load_case(path)
    direction = np.reshape(case.direction, (3, 3))
    assert direction[0, 0] > 0.9 and direction[1, 1] > 0.9  # columns to the left, rows to the back
    columns = np.nonzero(case.masks["liver"])[2]
    assert columns.mean() < 0.5 * case.shape[2]
    fig = viz.plot_overlay(case.volume, truth=case.masks["liver"])
    assert letters(fig.axes[0])["left"] == "R"
