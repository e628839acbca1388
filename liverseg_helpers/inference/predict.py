"""Segment a whole CT with a trained 2D UNet, slice by slice, then clean the mask in 3D.

The steps of :func:`predict_case`, each its own function so notebook 05 can show what it does:

1. :func:`load_settings_for` – the preprocessing the model was trained with (its sidecar).
2. :func:`predict_volume` – ``preprocess.preprocess_volume`` (the same function training
   used), the model on batches of slices, and ``preprocess.restore_slices`` to bring the
   probabilities back to the CT's own grid (linear interpolation of probabilities, which is
   smoother than resizing a thresholded mask).
3. threshold: ``probs > threshold``.
4. ``postprocess.postprocess_mask`` – keep the largest 3D connected component (the liver is one
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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.inference import region
from liverseg_helpers.inference.ensemble_members import (
    ensemble_probs,
    members_that_fit,
    settings_for_field_of_view,
)
from liverseg_helpers.inference.onnx_model import load_network
from liverseg_helpers.inference.postprocess import mask_from_probs
from liverseg_helpers.inference.precision import choose_precision, convert_to_bfloat16
from liverseg_helpers.inference.region import run_on_chosen_slices
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import preprocess, views
from liverseg_helpers.preparation.preprocess import PreprocessSettings
from liverseg_helpers.training.sidecar import read_sidecar


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
    ``model_files.save_model``); a model without a sidecar (plain ``model.save``) gets the default
    settings with ``image_size`` taken from its input shape.

    Args:
        model_path: The ``.keras`` file, or None for an in-memory model.
        model: The loaded model (needed when there is no sidecar).
        sidecar: The sidecar already read (``sidecar.read_sidecar``); None reads it here.

    Returns:
        The settings, checked against the model's input shape when ``model`` is given.

    Raises:
        ModelFileError: Unreadable sidecar, or settings that do not fit the model.
    """
    source = str(model_path) if model_path is not None else "model"
    if sidecar is None and model_path is not None:
        sidecar = read_sidecar(model_path)
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
            f"the course's defaults ({settings}). Save models with model_files.save_model to "
            "keep it.",
            stacklevel=2,
        )
    return settings


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
    slices: np.ndarray | None = None,
    skip_blank_slices: bool = True,
    step_mm: float = 0.0,
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
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (``precision.choose_precision``).
        grey_levels: ``volume_hu`` is a PNG export's 0..255 grey levels, not HU
            (:func:`preprocess.preprocess_volume`).
        slices: bool ``(z,)``, an axial model only: run it on these slices of the CT
            (``region.liver_slab``), probabilities 0 on the others. None: every slice.
        skip_blank_slices: Run the model on one blank input slice for all of them
            (``region.run_on_chosen_slices``; the same probabilities, sooner). False:
            on every slice (for comparing).
        step_mm: An axial model with ``spacing_mm``: see slices at most this far apart, draw
            the others from them (``region.predict_thinned``); 0: every slice.

    Returns:
        float32 ``[z, y, x]`` in [0, 1], the shape of ``volume_hu``.

    Raises:
        DataError: A volume that is not 3D or holds NaN, one too short from feet to head
            for a coronal or sagittal model (:func:`views.check_fits_view`), or ``slices``
            for a model of another view or of another length than the CT.
        ModelFileError: A model whose input does not fit ``settings``.
    """
    check_model_fits(model, settings)
    timer = {} if stage_seconds is None else stage_seconds

    def add_time(stage: str, start: float) -> None:
        timer[stage] = timer.get(stage, 0.0) + time.perf_counter() - start

    views.check_fits_view(volume_hu.shape, spacing_mm, settings.view)
    if slices is not None and (settings.view != "axial" or slices.shape != volume_hu.shape[:1]):
        raise DataError(
            f"slices ({slices.shape}) choose slices of a {len(volume_hu)}-slice CT for an axial "
            f"model; this model is {settings.view}"
        )
    if slices is not None and not slices.any():
        return np.zeros(volume_hu.shape, dtype=np.float32)
    step = region.slice_step(spacing_mm[0], step_mm) if spacing_mm is not None else 1
    if step > 1 and settings.view == "axial":  # every step-th slice, the others drawn from them
        again = partial(predict_volume, model, volume_hu, settings, batch_size, spacing_mm)
        kwargs = {"progress": progress, "stage_seconds": timer, "precision": precision}
        kwargs |= {"grey_levels": grey_levels, "skip_blank_slices": skip_blank_slices}
        wanted = np.ones(len(volume_hu), dtype=bool) if slices is None else slices
        return region.predict_thinned(lambda ran: again(slices=ran, **kwargs), wanted, step)
    volume, chosen = volume_hu, slices
    if slices is not None and settings.context_slices == 0:
        volume, chosen = volume_hu[slices], None  # each slice on its own: only the chosen
    start = time.perf_counter()
    turned, turned_mm = views.to_view(volume, spacing_mm, settings.view, settings.target_spacing_mm)
    images = preprocess.preprocess_volume(turned, settings, turned_mm, grey_levels=grey_levels)
    add_time("preprocess", start)
    start = time.perf_counter()
    if choose_precision(precision) == "bfloat16":
        model = convert_to_bfloat16(model)

    def run(part: np.ndarray) -> np.ndarray:
        return run_model_on_slices(model, part, batch_size, progress)

    if skip_blank_slices or chosen is not None:
        small_probs = run_on_chosen_slices(run, images, chosen)
    else:
        small_probs = run(images)
    add_time("model", start)
    start = time.perf_counter()
    probs = preprocess.restore_slices(small_probs, turned.shape[1:], settings, turned_mm)
    probs = views.from_view(probs, settings.view, volume.shape)
    if volume is not volume_hu:
        probs, part = np.zeros(volume_hu.shape, dtype=np.float32), probs
        probs[slices] = part
    add_time("resize", start)
    return probs


def load_prediction_model(
    model_or_path: Any, settings: PreprocessSettings | None = None, task: str = "liver"
) -> tuple[Any, PreprocessSettings]:
    """Load a model file (or take a model) with its preprocessing settings.

    Args:
        model_or_path: ``.keras`` or ``.onnx`` (``onnx_model``) path, or a loaded Keras model.
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
        path = Path(model_or_path)
        sidecar = read_sidecar(path)  # read (and its hash checked) once
        trained_for = (sidecar or {}).get("task", task)
        if trained_for != task:
            raise ModelFileError(
                f"{path}: its sidecar says it segments the {trained_for}; this step needs a "
                f"model trained with task {task!r} (liverseg train --task {task})"
            )
        model = load_network(path, sidecar)  # .keras: Keras; an ONNX twin: ONNX Runtime
    if settings is None:
        settings = load_settings_for(path, model, sidecar)
    else:
        check_model_fits(model, settings, str(path or "model"))
    return model, settings


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
    skip_slices: bool = True,
    axial_step_mm: float = 0.0,
) -> PredictionResult:
    """Segment the liver of one case.

    Args:
        model_or_path: A ``.keras`` file (settings from its sidecar) or a loaded model; or a
            list of them, whose probabilities are averaged on the case's grid (an ensemble of
            networks that see the CT from different sides, e.g. an axial and a coronal one:
            each is run with its own settings and view, then turned back to the CT's grid;
            a coronal or sagittal member is left out, with a warning, on a CT too short for
            it (``ensemble_members.members_that_fit``) or one that stops inside the liver
            (``ensemble_members.turned_members_to_run``); the axial members look only at the
            slices around the liver the turned ones found: ``ensemble_members.ensemble_probs``).
            An axial member resamples a CT whose field of view it never learnt
            (``ensemble_members.settings_for_field_of_view``).
        case: The CT.
        threshold: Probability above which a voxel is liver.
        postprocess: Apply ``postprocess.postprocess_mask`` (largest component, filled holes).
        batch_size: Slices per model call.
        settings: Override the settings found for the model (one model only).
        progress: Show a tqdm bar over batches.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (``precision.choose_precision``).
        smooth_z_mm: With ``postprocess``, first blur the probabilities along z by this
            many mm (``postprocess.smooth_across_slices``); 0 = off. ``probs`` stays unblurred.
        skip_slices: Run each network once for all blank slices, and, in an ensemble of
            axial and turned networks, the axial ones only on the slices around the liver
            the turned ones found (``region.liver_slab``). False: every network on every
            slice, the axial ones first (slower; for comparing).
        axial_step_mm: ``predict_volume``'s ``step_mm`` for the axial networks (not on a PNG
            export, whose slice spacing is unknown); 0: every slice.

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
    if choose_precision(precision) == "bfloat16":  # once per model, not per part of the CT
        loaded = [(convert_to_bfloat16(model), member) for model, member in loaded]
        precision = "float32"  # what predict_volume is to do: they compute in bfloat16 now

    def summed_probs(
        chosen: list[tuple[Any, PreprocessSettings]], slices: np.ndarray | None = None
    ) -> np.ndarray:
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
                slices=slices,
                skip_blank_slices=skip_slices,
                step_mm=axial_step_mm if known_spacing is not None else 0.0,
            )
        return total

    probs = ensemble_probs(loaded, case, summed_probs, threshold, batch_size, skip_slices)
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
