"""Segment a whole CT with a trained 2D UNet, slice by slice, then clean the mask in 3D.

The steps of :func:`predict_case`, each its own function so notebook 05 can show what it does:

1. :func:`load_settings_for` – the preprocessing the model was trained with (its sidecar).
2. :func:`predict_volume` – ``preprocess.preprocess_volume`` (the same function training
   used), the model on batches of slices, and ``preprocess.restore_slices`` to bring the
   probabilities back to the CT's own grid (linear interpolation of probabilities, which is
   smoother than resizing a thresholded mask).
3. threshold: ``probs > threshold``.
4. :func:`postprocess_mask` – keep the largest 3D connected component (the liver is one
   organ; false positives in the spleen or heart are separate blobs) and fill holes slice by
   slice (vessels and tumours inside the liver belong to it).

Writing the result (NIfTI, PNG folder, DICOM-SEG) lives with the other writers in
:mod:`liverseg_helpers.io.mask_output`; the ``liverseg predict`` command is the one road of
:mod:`liverseg_helpers.inference.pipeline`.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
from scipy import ndimage

from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import preprocess, views
from liverseg_helpers.preparation.preprocess import PreprocessSettings

PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass
class PredictionResult:
    """The prediction of one CT.

    Attributes:
        probs: Liver probabilities, float32 ``[z, y, x]`` on the CT's own grid.
        pred: Final mask, bool ``[z, y, x]`` (thresholded, post-processed when asked).
        seconds: Wall time of the prediction (preprocess, model, resize, post-process).
        liver_volume_ml: Volume of ``pred`` in millilitres.
        stage_seconds: Wall time per stage: preprocess, model, resize, postprocess.
    """

    probs: np.ndarray
    pred: np.ndarray
    seconds: float
    liver_volume_ml: float
    stage_seconds: dict[str, float] = field(default_factory=dict)


def get_model_input_shape(model: Any) -> tuple:
    """``(height, width, channels)`` the model expects (entries may be None)."""
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return tuple(None if d is None else int(d) for d in shape[1:])


def check_model_fits(model: Any, settings: PreprocessSettings, source: str = "model") -> None:
    """Refuse a model whose input does not match the preprocessing.

    Args:
        model: A Keras model taking ``(batch, S, S, C)`` slices.
        settings: The preprocessing that will make its input.
        source: Model file name for the message.

    Raises:
        ModelFileError: Not a 2D image model, or another size or channel count.
    """
    shape = get_model_input_shape(model)
    if len(shape) != 3:
        raise ModelFileError(f"{source}: expected a 2D slice model (H, W, C), input is {shape}")
    height, width, channels = shape
    expected = (settings.image_size, settings.image_size, settings.n_channels)
    if channels is not None and channels != settings.n_channels:
        raise ModelFileError(
            f"{source}: model takes {channels} input channels but the preprocessing gives "
            f"{settings.n_channels} (context_slices={settings.context_slices}); "
            "use the model's sidecar settings or a model trained with these settings"
        )
    for got, want in ((height, expected[0]), (width, expected[1])):
        if got is not None and got != want:
            raise ModelFileError(
                f"{source}: model input is {height}x{width} pixels but the preprocessing "
                f"makes {want}x{want} (image_size={settings.image_size})"
            )


def load_settings_for(
    model_path: str | os.PathLike | None, model: Any = None, sidecar: dict | None = None
) -> PreprocessSettings:
    """The preprocessing settings a model was trained with.

    Read from the model's JSON sidecar (``best.keras.json``, written by
    ``model.save_model``); a model without a sidecar (plain ``model.save``) gets the default
    settings with ``image_size`` taken from its input shape.

    Args:
        model_path: The ``.keras`` file, or None for an in-memory model.
        model: The loaded model (needed when there is no sidecar).
        sidecar: The sidecar already read (``model.read_sidecar``); None reads it here.

    Returns:
        The settings, checked against the model's input shape when ``model`` is given.

    Raises:
        ModelFileError: Unreadable sidecar, or settings that do not fit the model.
    """
    from liverseg_helpers.training import model as model_lib  # lazy: imports Keras

    source = str(model_path) if model_path is not None else "model"
    if sidecar is None and model_path is not None:
        sidecar = model_lib.read_sidecar(model_path)
    if sidecar is not None:
        try:
            settings = PreprocessSettings.from_dict(sidecar["preprocess"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(
                f"{source}: sidecar has no valid 'preprocess' block: {err}"
            ) from err
    elif model is not None:
        height = get_model_input_shape(model)[0]
        settings = PreprocessSettings() if height is None else PreprocessSettings(image_size=height)
    else:
        raise ModelFileError(f"{source}: no sidecar settings and no model to read the size from")
    if model is not None:
        check_model_fits(model, settings, source)
    if sidecar is None:
        warnings.warn(
            f"{source}: no sidecar (.json) with the preprocessing it was trained with; assuming "
            f"the course's defaults ({settings}). Save models with model.save_model to keep it.",
            stacklevel=2,
        )
    return settings


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), on Linux."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(precision: str = "auto") -> str:
    """The precision to predict in: ``"bfloat16"`` or ``"float32"``.

    ``"auto"`` picks bfloat16 on a CPU-only machine with bfloat16 hardware (about 3x faster
    there, for the paper's UNet on 2 cores) and float32 otherwise (GPU, older CPUs, where
    bfloat16 would be emulated and slow).

    Raises:
        DataError: An unknown precision.
    """
    if precision not in PRECISIONS:
        raise DataError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return "float32"
    return "bfloat16" if cpu_has_bfloat16() else "float32"


def _set_bfloat16_policy(config: dict) -> None:
    """Mark every layer of a model config ``mixed_bfloat16``, except its output layers.

    Nested models (the members of an ensemble) are entered, so their convolutions compute in
    bfloat16 too; their own output layers stay float32, like the outer model's.
    """
    layers = config.get("layers", [])
    outputs = config.get("output_layers", [])
    if outputs and isinstance(outputs[0], str):  # one output: ["probs", 0, 0]
        outputs = [outputs]
    keep = {entry[0] for entry in outputs}
    if not keep and layers:  # Sequential: no output_layers entry; keep its last layer
        keep = {layers[-1].get("config", {}).get("name")}
    for layer in layers:
        layer_config = layer.get("config", {})
        if "layers" in layer_config:  # a nested model: convert its layers instead
            _set_bfloat16_policy(layer_config)
        elif layer.get("class_name") != "InputLayer" and layer_config.get("name") not in keep:
            layer_config["dtype"] = "mixed_bfloat16"


def convert_to_bfloat16(model: Any) -> Any:
    """A copy of a Keras model computing in bfloat16 (its output layer stays float32).

    Weights stay float32 (``mixed_bfloat16`` policy); probabilities move by about 1e-3,
    which rarely flips a thresholded voxel. A model that cannot be rebuilt from its config
    (a subclassed model) is returned unchanged.
    """
    config = model.get_config()
    _set_bfloat16_policy(config)
    try:
        fast = model.__class__.from_config(config)
        fast.set_weights(model.get_weights())
    except Exception:  # noqa: BLE001 - any rebuild failure: predict in float32 instead
        return model
    return fast


def run_model_on_slices(
    model: Any, images: np.ndarray, batch_size: int = 8, progress: bool = False
) -> np.ndarray:
    """Probabilities of the model for preprocessed slices, batch by batch.

    ``predict_on_batch`` reuses one compiled graph, with none of ``model.predict``'s
    per-call set-up; the last, smaller batch is padded so no second graph is traced.

    Args:
        images: float32 ``(n, S, S, C)`` from ``preprocess.preprocess_volume``.
        batch_size: Slices per model call.
        progress: Show a tqdm bar over batches.

    Returns:
        float32 ``(n, S, S)``.
    """
    from tqdm.auto import tqdm

    n = len(images)
    out = np.empty(images.shape[:3], dtype=np.float32)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="predict", unit="batch", disable=not progress):
        batch = images[start : start + batch_size]
        size = len(batch)
        if size < batch_size and n > batch_size:
            pad = np.zeros((batch_size - size, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        probs = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        out[start : start + size] = probs[:size, ..., 0]
    return out


def predict_volume(
    model: Any,
    volume_hu: np.ndarray,
    settings: PreprocessSettings,
    batch_size: int = 8,
    spacing_mm: tuple[float, float, float] | None = None,
    progress: bool = False,
    stage_seconds: dict[str, float] | None = None,
    precision: str = "auto",
    grey_levels: bool = False,
) -> np.ndarray:
    """Liver probabilities of a whole CT on its own grid.

    Args:
        model: Keras model, input ``(batch, S, S, C)`` as ``settings`` makes it.
        volume_hu: CT ``[z, y, x]`` in HU.
        settings: The model's preprocessing (:func:`load_settings_for`).
        batch_size: Slices per model call.
        spacing_mm: Voxel size ``(z, y, x)``; needed when ``settings.target_spacing_mm``.
        progress: Show a tqdm bar over batches.
        stage_seconds: If given, the seconds of ``preprocess``, ``model`` and ``resize`` are
            added to its entries (so one dict can time several models).
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (:func:`choose_precision`).
        grey_levels: ``volume_hu`` is a PNG export's 0..255 grey levels, not HU
            (:func:`preprocess.preprocess_volume`).

    Returns:
        float32 ``[z, y, x]`` in [0, 1], the shape of ``volume_hu``.

    Raises:
        DataError: A volume that is not 3D or holds NaN, or one too short from feet to head
            for a coronal or sagittal model (:func:`views.check_fits_view`).
        ModelFileError: A model whose input does not fit ``settings``.
    """
    check_model_fits(model, settings)
    timer = {} if stage_seconds is None else stage_seconds

    def add_time(stage: str, start: float) -> None:
        timer[stage] = timer.get(stage, 0.0) + time.perf_counter() - start

    views.check_fits_view(volume_hu.shape, spacing_mm, settings.view)
    start = time.perf_counter()
    turned, turned_mm = views.to_view(
        volume_hu, spacing_mm, settings.view, settings.target_spacing_mm
    )
    images = preprocess.preprocess_volume(turned, settings, turned_mm, grey_levels=grey_levels)
    add_time("preprocess", start)
    start = time.perf_counter()
    if choose_precision(precision) == "bfloat16":
        model = convert_to_bfloat16(model)
    small_probs = run_model_on_slices(model, images, batch_size, progress)
    add_time("model", start)
    start = time.perf_counter()
    probs = preprocess.restore_slices(small_probs, turned.shape[1:], settings, turned_mm)
    probs = views.from_view(probs, settings.view, volume_hu.shape)
    add_time("resize", start)
    return probs


def smooth_across_slices(probs: np.ndarray, slice_mm: float, sigma_mm: float) -> np.ndarray:
    """Blur a probability map along z only, with a Gaussian of ``sigma_mm``.

    A 2D network sees each slice alone, so its outline can jump from one slice to the next
    where the anatomy does not. Averaging each voxel's probability with its neighbours above
    and below (before thresholding) makes the 3D surface consistent again.

    Args:
        probs: float ``[z, y, x]`` in [0, 1].
        slice_mm: Distance between slices in mm.
        sigma_mm: Standard deviation of the Gaussian in mm; 0 returns ``probs`` unchanged.

    Returns:
        float32 ``[z, y, x]``.

    Raises:
        DataError: A negative ``sigma_mm``, a ``slice_mm`` that is not positive, or a
            ``probs`` that is not 3D.
    """
    if sigma_mm < 0 or slice_mm <= 0:
        raise DataError(
            f"smooth_across_slices: need sigma_mm >= 0 and slice_mm > 0, got {sigma_mm}, {slice_mm}"
        )
    if np.ndim(probs) != 3:
        raise DataError(f"smooth_across_slices: expected [z, y, x], got shape {np.shape(probs)}")
    probs = np.asarray(probs, dtype=np.float32)
    if sigma_mm == 0:
        return probs
    return ndimage.gaussian_filter1d(probs, sigma_mm / slice_mm, axis=0, mode="nearest")


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D mask (empty stays empty).

    Args:
        mask: bool ``[z, y, x]``.

    Returns:
        bool, same shape.
    """
    if not mask.any():
        return mask.copy()
    return cc3d.largest_k(mask, k=1, connectivity=26) > 0


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of each axial slice (vessels, tumours inside the liver outline).

    Slice by slice, because in 3D a vessel that leaves the liver is not an enclosed hole.

    Args:
        mask: bool ``[z, y, x]``.

    Returns:
        bool, same shape.
    """
    out = mask.copy()
    for z in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
        out[z] = ndimage.binary_fill_holes(mask[z])
    return out


def postprocess_mask(
    pred: np.ndarray, keep_largest: bool = True, fill_holes: bool = True
) -> np.ndarray:
    """3D clean-up of a thresholded prediction.

    Args:
        pred: Mask ``[z, y, x]``, bool or 0/1.
        keep_largest: Keep only the largest 3D connected component.
        fill_holes: Fill holes slice by slice.

    Returns:
        bool ``[z, y, x]``.

    Raises:
        DataError: If ``pred`` is not 3D.
    """
    pred = np.asarray(pred) != 0
    if pred.ndim != 3:
        raise DataError(f"postprocess_mask: expected a 3D mask [z, y, x], got shape {pred.shape}")
    out = np.zeros(pred.shape, dtype=bool)
    boxes = ndimage.find_objects(pred.astype(np.uint8))
    if not boxes:  # empty prediction
        return out
    box = boxes[0]  # both steps only change voxels inside the mask's bounding box: 5x faster
    crop = pred[box]
    if keep_largest:
        crop = keep_largest_component(crop)
    if fill_holes:
        crop = fill_holes_per_slice(crop)
    out[box] = crop
    return out


def mask_from_probs(
    probs: np.ndarray,
    slice_mm: float,
    threshold: float = 0.5,
    postprocess: bool = True,
    smooth_z_mm: float = 0.0,
) -> np.ndarray:
    """The final mask of a probability map, as :func:`predict_case` makes it.

    Args:
        probs: float ``[z, y, x]`` in [0, 1].
        slice_mm: Distance between slices in mm.
        threshold: Probability above which a voxel is liver.
        postprocess: Blur along z by ``smooth_z_mm`` (:func:`smooth_across_slices`), then
            threshold and :func:`postprocess_mask`; False = the threshold alone.
        smooth_z_mm: Width of that blur in mm; 0 = off.

    Returns:
        bool ``[z, y, x]``.
    """
    if not postprocess:
        return probs > threshold
    return postprocess_mask(smooth_across_slices(probs, slice_mm, smooth_z_mm) > threshold)


def load_prediction_model(
    model_or_path: Any, settings: PreprocessSettings | None = None, task: str = "liver"
) -> tuple[Any, PreprocessSettings]:
    """Load a model file (or take a model) with its preprocessing settings.

    Args:
        model_or_path: ``.keras`` path or a loaded Keras model.
        settings: Use these settings instead of the sidecar's (checked against the model).
        task: What the model must segment: ``"liver"`` or ``"tumour"`` (checked against
            the sidecar's ``task`` when there is one).

    Returns:
        ``(model, settings)``.

    Raises:
        ModelFileError: Missing or foreign file, a sidecar of another task, or a model that
            does not fit its settings.
    """
    path, sidecar = None, None
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        from liverseg_helpers.training import model as model_lib  # lazy: imports Keras

        path = Path(model_or_path)
        sidecar = model_lib.read_sidecar(path)  # read (and its hash checked) once
        trained_for = (sidecar or {}).get("task", task)
        if trained_for != task:
            raise ModelFileError(
                f"{path}: its sidecar says it segments the {trained_for}; this step needs a "
                f"model trained with task {task!r} (liverseg train --task {task})"
            )
        # compile=False: prediction needs neither the loss nor the optimizer state.
        model = model_lib.load_model(path, compile=False)
    if settings is None:
        settings = load_settings_for(path, model, sidecar)
    else:
        check_model_fits(model, settings, str(path or "model"))
    return model, settings


def members_that_fit(
    loaded: list[tuple[Any, PreprocessSettings]], members: list[Any], case: Case
) -> list[tuple[Any, PreprocessSettings]]:
    """The ensemble members whose view suits the case; the others are left out with a warning.

    A coronal or sagittal member needs a CT that reaches at least
    :data:`views.MIN_TURNED_HEIGHT_MM` from feet to head; on a thinner one (a few slices) it
    would see slices unlike any it learnt from, so the axial members decide alone.

    Raises:
        DataError: No member suits the case.
    """
    fits = [views.fits_view(case.shape, case.spacing_mm, settings.view) for _, settings in loaded]
    if not any(fits):
        views.check_fits_view(case.shape, case.spacing_mm, loaded[0][1].view, case.case_id)
    height = views.ct_height_mm(case.shape, case.spacing_mm)
    for (_, settings), member, fit in zip(loaded, members, fits, strict=True):
        if not fit:
            warnings.warn(
                f"{case.case_id}: the CT spans {height:.0f} mm from feet to head, too short for "
                f"the {settings.view} model {getattr(member, 'name', member)} (it needs "
                f"{views.MIN_TURNED_HEIGHT_MM:.0f} mm); predicting without it",
                stacklevel=3,
            )
    return [pair for pair, fit in zip(loaded, fits, strict=True) if fit]


def field_of_view_mm(shape: tuple[int, ...], spacing_mm: tuple[float, float, float]) -> float:
    """The wider in-plane side of a CT ``[z, y, x]`` in mm."""
    return max(shape[1] * float(spacing_mm[1]), shape[2] * float(spacing_mm[2]))


def settings_for_field_of_view(
    settings: PreprocessSettings,
    shape: tuple[int, ...],
    spacing_mm: tuple[float, float, float] | None,
) -> PreprocessSettings:
    """An axial network's settings for one CT, so that the liver has the size it learnt.

    An axial network that shrinks each whole slice to its input (``target_spacing_mm`` None)
    sees a liver whose size depends on the scanner's field of view. When the CT's field of
    view (:func:`field_of_view_mm`) lies outside the ``fov_range_mm`` the network learnt from
    (its sidecar's; the shipped axial model: 263-440 mm), its slices are resampled to the
    nearest bound's pixel (bound / input size) and centre-cropped or padded instead. Settings
    without ``fov_range_mm`` or with ``target_spacing_mm``, other views, CTs inside the range
    and CTs without spacing are returned unchanged.
    """
    if (
        settings.fov_range_mm is None
        or settings.view != "axial"
        or settings.target_spacing_mm is not None
        or spacing_mm is None
    ):
        return settings
    fov = field_of_view_mm(shape, spacing_mm)
    bound = min(max(fov, settings.fov_range_mm[0]), settings.fov_range_mm[1])
    if bound == fov:
        return settings
    return replace(settings, target_spacing_mm=bound / settings.image_size)


EDGE_MIN_AREA_MM2 = 100.0  # 1 cm2 of liver on the scan's first or last slice


def liver_reaches_scan_edge(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    min_area_mm2: float = EDGE_MIN_AREA_MM2,
) -> bool:
    """Whether a liver mask ``[z, y, x]`` covers at least ``min_area_mm2`` of the scan's first
    or last slice: the scan stops inside the liver."""
    pixel_mm2 = float(spacing_mm[1]) * float(spacing_mm[2])
    end_pixels = max(np.count_nonzero(mask[0]), np.count_nonzero(mask[-1]))
    return end_pixels * pixel_mm2 >= min_area_mm2


def turned_members_to_run(
    loaded: list[tuple[Any, PreprocessSettings]],
    axial_probs: np.ndarray | None,
    case: Case,
    threshold: float,
) -> list[tuple[Any, PreprocessSettings]]:
    """The coronal or sagittal members to add to the axial ones, or none where the liver
    reaches the scan's edge.

    A turned network sees a liver that the scan cuts off as a shape with a straight edge,
    unlike any it learnt from, and fails there; the axial network sees ordinary slices. So when
    the axial members' mask (``threshold``, the course's post-processing) covers at least
    :data:`EDGE_MIN_AREA_MM2` of the first or last slice (:func:`liver_reaches_scan_edge`),
    the axial members decide alone, with a warning. Without axial members the turned ones
    always run.
    """
    turned = [member for member in loaded if member[1].view != "axial"]
    if not turned or axial_probs is None:
        return turned
    # The end slices thresholded and filled, before the largest component is kept, hold at
    # least the final mask's pixels there: most scans are decided without post-processing.
    ends = [ndimage.binary_fill_holes(end > threshold) for end in axial_probs[[0, -1]]]
    if not liver_reaches_scan_edge(np.stack(ends), case.spacing_mm):
        return turned
    axial_mask = mask_from_probs(axial_probs, case.spacing_mm[0], threshold)
    if not liver_reaches_scan_edge(axial_mask, case.spacing_mm):
        return turned
    warnings.warn(
        f"{case.case_id}: the liver reaches the scan's first or last slice, which a "
        f"{turned[0][1].view} network sees as a shape it never learnt; the axial model(s) "
        "decide alone",
        stacklevel=3,
    )
    return []


def predict_case(
    model_or_path: Any,
    case: Case,
    threshold: float = 0.5,
    postprocess: bool = True,
    batch_size: int = 8,
    settings: PreprocessSettings | None = None,
    progress: bool = False,
    precision: str = "auto",
    smooth_z_mm: float = 0.0,
) -> PredictionResult:
    """Segment the liver of one case.

    Args:
        model_or_path: A ``.keras`` file (settings from its sidecar) or a loaded model; or a
            list of them, whose probabilities are averaged on the case's grid (an ensemble of
            networks that see the CT from different sides, e.g. an axial and a coronal one:
            each is run with its own settings and view, then turned back to the CT's grid;
            a coronal or sagittal member is left out, with a warning, on a CT too short for
            it (:func:`members_that_fit`) or one that stops inside the liver
            (:func:`turned_members_to_run`)). An axial member resamples a CT whose field of
            view it never learnt (:func:`settings_for_field_of_view`).
        case: The CT.
        threshold: Probability above which a voxel is liver.
        postprocess: Apply :func:`postprocess_mask` (largest component, filled holes).
        batch_size: Slices per model call.
        settings: Override the settings found for the model (one model only).
        progress: Show a tqdm bar over batches.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (:func:`choose_precision`).
        smooth_z_mm: With ``postprocess``, first blur the probabilities along z by this
            many mm (:func:`smooth_across_slices`); 0 = off. ``probs`` stays unblurred.

    Returns:
        :class:`PredictionResult` on the case's grid.

    Raises:
        DataError: Threshold outside (0, 1), a broken volume, an empty model list,
            ``settings`` given for several models, or a CT too short for every model's view.
        ModelFileError: A model that cannot be loaded or does not fit.
    """
    if not 0.0 < threshold < 1.0:
        raise DataError(f"threshold must be between 0 and 1, got {threshold}")
    members = list(model_or_path) if isinstance(model_or_path, (list, tuple)) else [model_or_path]
    if not members:
        raise DataError("predict_case needs at least one model")
    if settings is not None and len(members) > 1:
        raise DataError("settings can override one model's sidecar, not those of several models")
    start = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    # A PNG export's spacing is a nominal 1 mm: its field of view is unknown.
    known_spacing = None if case.format == "png" else case.spacing_mm
    loaded = [
        (model, settings_for_field_of_view(member_settings, case.shape, known_spacing))
        for model, member_settings in members_that_fit(
            [load_prediction_model(member, settings) for member in members], members, case
        )
    ]

    def summed_probs(chosen: list[tuple[Any, PreprocessSettings]]) -> np.ndarray:
        total = np.zeros(case.shape, dtype=np.float32)
        for model, member_settings in chosen:
            total += predict_volume(
                model,
                case.volume,
                member_settings,
                batch_size,
                case.spacing_mm,
                progress,
                stage_seconds,
                precision,
                grey_levels=case.format == "png",
            )
        return total

    axial = [member for member in loaded if member[1].view == "axial"]
    probs = summed_probs(axial)
    turned: list[tuple[Any, PreprocessSettings]] = []
    if len(axial) < len(loaded):  # only an ensemble with turned members needs the edge check
        edge_start = time.perf_counter()
        axial_probs = probs / len(axial) if axial else None
        turned = turned_members_to_run(loaded, axial_probs, case, threshold)
        stage_seconds["edge check"] = time.perf_counter() - edge_start
    probs = (probs + summed_probs(turned)) / (len(axial) + len(turned))
    post_start = time.perf_counter()
    pred = mask_from_probs(probs, case.spacing_mm[0], threshold, postprocess, smooth_z_mm)
    stage_seconds["postprocess"] = time.perf_counter() - post_start
    return PredictionResult(
        probs=probs,
        pred=pred,
        seconds=time.perf_counter() - start,
        liver_volume_ml=float(np.count_nonzero(pred)) * case.voxel_volume_ml,
        stage_seconds=stage_seconds,
    )
