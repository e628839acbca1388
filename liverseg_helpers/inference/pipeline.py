"""The one road of ``liverseg predict``: load the CT, liver stage, optional tumour stage, write.

:func:`segment_ct` runs the steps in order, each a function of its own chapter:

1. check the output path and find the models (the shipped reference models by default), so a
   wrong output or a missing model fails before any work;
2. load the case: ``io.load_case`` reads any format the course reads (the CT alone: the
   expert masks are not needed to predict);
3. liver stage: ``predict.predict_case`` with one model or several (their probabilities
   averaged on the CT's grid), post-processed by ``postprocess.postprocess_mask``;
4. optional tumour stage: ``tumour.predict_tumours`` inside the predicted liver (the cascade),
   which drops specks and returns a 0/1/2 label map;
5. write: ``io.write_prediction`` in the format the output path asks for.

:func:`run_predict_cli` only turns the parsed arguments into one :func:`segment_ct` call and
prints its report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg_helpers.atomic import check_output_path
from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.inference import onnx_int8, onnx_model, predict, region
from liverseg_helpers.inference.precision import cpu_has_bfloat16, cpu_without_bfloat16
from liverseg_helpers.io.case import Case
from liverseg_helpers.io.cohort import load_case
from liverseg_helpers.io.mask_output import output_kind, write_prediction
from liverseg_helpers.preparation.preprocess import PreprocessSettings
from liverseg_helpers.training.sidecar import read_sidecar
from liverseg_helpers.tumours import tumour

# The reference models shipped with the course (models/liver_unet.md): the axial network,
# and a coronal one whose probabilities `liverseg predict` averages with it by default.
REFERENCE_MODEL = Path(__file__).resolve().parents[2] / "models" / "liver_unet.keras"
REFERENCE_CORONAL_MODEL = REFERENCE_MODEL.with_name("liver_unet_coronal.keras")


@dataclass
class PipelineResult:
    """What :func:`segment_ct` made of one CT.

    Attributes:
        case: The CT that was read (with its expert masks only with ``read_masks``).
        labels: The mask written: bool ``[z, y, x]`` (liver), or with the tumour stage uint8
            ``[z, y, x]`` with 0 background, 1 liver, 2 tumour.
        liver: The liver stage's :class:`predict.PredictionResult` (probabilities, mask, time).
        written: The output path.
        seconds: Wall time of loading the models, reading the CT, predicting and writing.
        report: Lines that describe the result (volumes; lesions with the tumour stage).
    """

    case: Case
    labels: np.ndarray
    liver: predict.PredictionResult
    written: Path
    seconds: float
    report: list[str] = field(default_factory=list)


def resolve_model_paths(models: list[str] | None) -> list[Path]:
    """The ``--model`` paths (one or several to average), or the shipped reference models:
    the axial one, with the coronal one when it is there (a multi-view ensemble).

    Raises:
        ModelFileError: No model given and no reference model shipped.
    """
    if models:
        return [Path(model) for model in models]
    if REFERENCE_MODEL.exists():
        return [path for path in (REFERENCE_MODEL, REFERENCE_CORONAL_MODEL) if path.exists()]
    raise ModelFileError(
        f"no model given and no reference model at {REFERENCE_MODEL}: train one with "
        "`liverseg train` and pass --model runs/<profile>/best.keras"
    )


def twin_maker(runtime: str) -> Callable[..., Path]:
    """What makes a model file's twin for an ONNX runtime: ``onnx_model.onnx_twin`` (float32)
    or ``onnx_int8.int8_twin``."""
    return onnx_int8.int8_twin if runtime == "onnx-int8" else onnx_model.onnx_twin


def first_axial_network(
    paths: list[Path], runtime: str = "keras", log: Callable[[str], object] | None = None
) -> tuple[Any, PreprocessSettings]:
    """The one network ``liverseg predict --fast`` runs: the first network of the first axial model.

    A model file that averages several networks (``research.ensemble.average_models``) holds
    them as its layers ``member_1``, ``member_2`` ...; the fast road runs ``member_1`` alone, and
    a file of one network as it is. Files are loaded in order until an axial one is found, so
    with the shipped pair (axial first) the coronal file is never read. With the shipped files:
    a third of the axial file's arithmetic, and none of the coronal file's.

    With ``runtime="onnx"`` (``"onnx-int8"``), that network's ONNX twin (int8 twin: see
    :func:`twin_maker`), made the first time, saying so to ``log``; the files' views are read
    from their sidecars, so no Keras model is loaded.

    Raises:
        ModelFileError: No axial model among them, or one that cannot be loaded.
    """
    for path in paths:
        if runtime in onnx_model.ONNX_RUNTIMES:
            sidecar = read_sidecar(path)  # read (and the model file hashed) once
            if predict.load_settings_for(path, sidecar=sidecar).view == "axial":
                twin = twin_maker(runtime)(path, first_member=True, log=log, sidecar=sidecar)
                return predict.load_prediction_model(twin)
            continue
        model, settings = predict.load_prediction_model(path)
        if settings.view == "axial":
            names = {layer.name for layer in getattr(model, "layers", [])}
            return (model.get_layer("member_1") if "member_1" in names else model), settings
    listed = ", ".join(Path(path).name for path in paths)
    raise ModelFileError(f"--fast runs one axial network, and none of {listed} is axial")


def segment_ct(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    models: list[str] | None = None,
    tumour_model: str | None = None,
    tumours: bool = False,
    threshold: float = 0.5,
    postprocess: bool = True,
    smooth_z_mm: float = 0.0,
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
    fast: bool = False,
    read_masks: bool = False,
    axial_step_mm: float = 0.0,
    runtime: str = "keras",
) -> PipelineResult:
    """Segment the liver (and with ``tumours`` its tumours) of one CT and write the mask.

    Args:
        input_path: DICOM series (folder or zip), 3D-IRCADb patient, NIfTI file, PNG folder.
        out: Output ``.nii.gz``, PNG folder (``/`` at the end) or ``.dcm`` (DICOM-SEG); a
            0/1/2 label map (``tumours``) needs ``.nii.gz``.
        models: Liver ``.keras`` files (several: probabilities averaged); None: the shipped
            reference models (:func:`resolve_model_paths`).
        tumour_model: Stage-two ``.keras`` file; None: the shipped tumour model.
        tumours: Run the tumour stage after the liver stage.
        threshold: Probability threshold of the last stage: the liver's alone, the tumours'
            with ``tumours`` (the liver stage of the cascade then keeps 0.5).
        postprocess: Liver alone: largest component and filled holes (``predict_case``).
        smooth_z_mm: Liver alone: blur the probabilities along z first, in mm.
        overwrite: Replace an existing output.
        progress: Show a progress bar over slice batches.
        log: Called with a line when the models are chosen and when the CT is read (e.g.
            ``print``, for a command that runs for minutes); None: silent.
        fast: Run one network, the first of the first axial model
            (:func:`first_axial_network`), instead of averaging them all: for a
            CPU without bfloat16 hardware, at some cost in accuracy (docs/results.md).
        read_masks: Also read the case's expert masks into ``PipelineResult.case`` (to score
            the prediction); the command does not (``io.load_case(..., masks=False)``).
        axial_step_mm: The axial networks see slices at most this far apart, the others drawn
            between (``predict.predict_case``); 0: every slice.
        runtime: ``"keras"``; ``"onnx"``: the liver networks' ONNX twins in ONNX Runtime
            (``onnx_model``; float32, and TensorFlow is not imported for the liver stage);
            ``"onnx-int8"``: their int8 twins (``onnx_int8``); ``"auto"`` (the command's
            default): ``onnx_model.choose_runtime``.

    Returns:
        :class:`PipelineResult`.

    Raises:
        DataError: Unknown output type, a label map to a format without labels, a broken CT.
        OutputExistsError: The output exists and ``overwrite`` is False.
        ModelFileError: A model that is missing, cannot be loaded, or does not fit.
    """
    say = log or (lambda line: None)
    kind = output_kind(out)  # fail on an unknown output type before any work
    if tumours and kind != "nifti":
        raise DataError(f"{out}: --tumours writes a 0/1/2 label map; use a .nii.gz output")
    check_output_path(Path(out), overwrite)
    runtime = onnx_model.choose_runtime(runtime, fast)
    on_onnx = runtime in onnx_model.ONNX_RUNTIMES
    liver_paths = resolve_model_paths(models)
    tumour_path = tumour.resolve_tumour_model_path(tumour_model) if tumours else None
    label = "models (probabilities averaged)" if len(liver_paths) > 1 else "model"
    say(f"{label}: {', '.join(str(path) for path in liver_paths)}")
    start = time.perf_counter()
    liver_models: object = liver_paths
    liver_settings = None
    if fast:
        liver_models, liver_settings = first_axial_network(liver_paths, runtime, say)
        say(f"fast: the first axial network alone ({liver_models.name})")
    elif on_onnx:
        liver_models = [twin_maker(runtime)(path, log=say) for path in liver_paths]
    if on_onnx:
        kind = "int8 twins" if runtime == "onnx-int8" else "ONNX twins"
        say(f"runtime: ONNX Runtime, the networks' {kind} in {onnx_model.cache_dir()}")
    if tumour_path is not None:
        say(f"tumour model: {tumour_path}")
    case = load_case(input_path, masks=read_masks)
    say(f"read {case.case_id}: {case.shape} voxels, spacing {case.spacing_mm} mm")
    # ONNX Runtime computes in float32 on the CPU; asking Keras about GPUs imports TensorFlow
    slow_cpu = not cpu_has_bfloat16() if on_onnx else cpu_without_bfloat16()
    precision = "float32" if on_onnx else "auto"
    if not fast and len(liver_paths) > 1 and slow_cpu and runtime != "onnx-int8":
        say(
            f"this CPU has no bfloat16 hardware, so the {len(liver_paths)} model files' networks "
            "compute in float32 (slow); --fast runs one network instead"
        )
    thin = region.slice_step(case.spacing_mm[0], region.AXIAL_STEP_MM) > 1
    if slow_cpu and thin and not axial_step_mm and case.format != "png":
        say(
            f"thin slices ({case.spacing_mm[0]:g} mm): --axial-step-mm {region.AXIAL_STEP_MM:g} "
            "lets the axial networks see every second one (about 0.7x their time, 0.5x with "
            "--fast; outlines move about 0.06 mm)"
        )
    if tumour_path is None:
        liver = predict.predict_case(
            liver_models,
            case,
            threshold=threshold,
            postprocess=postprocess,
            smooth_z_mm=smooth_z_mm,
            progress=progress,
            settings=liver_settings,
            axial_step_mm=axial_step_mm,
            precision=precision,
        )
        labels = liver.pred
        report = [f"liver volume: {liver.liver_volume_ml:.1f} mL"]
    else:
        liver = predict.predict_case(
            liver_models,
            case,
            progress=progress,
            settings=liver_settings,
            axial_step_mm=axial_step_mm,
            precision=precision,
        )
        labels = tumour.predict_tumours(
            None, tumour_path, case, threshold=threshold, liver_mask=liver.pred
        )
        report = tumour.format_report(labels, case)
    written = write_prediction(labels, case, out, overwrite)
    return PipelineResult(case, labels, liver, written, time.perf_counter() - start, report)


def run_predict_cli(args: argparse.Namespace) -> int:
    """``liverseg predict INPUT -o OUT``: one :func:`segment_ct` call, then its report.

    Args:
        args: Parsed arguments: ``input``, ``model``, ``out``, ``threshold``,
            ``no_postprocess``, ``smooth_z_mm``, ``tumours``, ``tumour_model``, ``overwrite``,
            ``fast``, ``axial_step_mm``, ``runtime`` (``--tumour-model`` alone also turns the
            tumour stage on).

    Returns:
        Exit code 0.

    Raises:
        OutputExistsError, ModelFileError, DataError: see :func:`segment_ct`.
    """
    tumours = bool(args.tumours or args.tumour_model)
    result = segment_ct(
        args.input,
        args.out,
        models=args.model,
        tumour_model=args.tumour_model,
        tumours=tumours,
        threshold=args.threshold,
        postprocess=not args.no_postprocess,
        smooth_z_mm=args.smooth_z_mm,
        overwrite=args.overwrite,
        fast=args.fast,
        axial_step_mm=args.axial_step_mm,
        runtime=args.runtime,
        progress=sys.stderr.isatty(),
        log=lambda line: print(line, flush=True),
    )
    for line in result.report:
        print(line)
    if tumours:
        what = "(0 background, 1 liver, 2 tumour) "
        print(f"wrote {result.written} {what}in {result.seconds:.1f} s")
    else:
        print(
            f"wrote {result.written} in {result.seconds:.1f} s "
            f"(model and post-processing {result.liver.seconds:.1f} s)"
        )
    return 0
