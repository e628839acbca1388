"""Liver tumours with a cascade of two UNets (Christ et al. 2016), and the lesion table.

Stage one is the liver model of the course. Stage two is the same ``build_unet`` trained
with ``train.TrainConfig(task="tumour")``: it sees only the liver's bounding box (plus
``preprocess.TUMOUR_CROP_MARGIN_PX``) in a tighter HU window, so a 1 cm lesion covers many
more input pixels than in the whole slice, and everything outside the liver (bowel, kidney
cysts, the heart) can no longer be mistaken for a lesion. :func:`predict_tumours` runs both:

1. the liver: ``predict.predict_case`` with the liver model (or a liver mask given);
2. the crop: ``preprocess.find_crop_box`` of the predicted liver, ``preprocess.crop_inplane``;
3. the lesions: ``predict.predict_volume`` with the tumour model's own sidecar settings on
   the liver's slices of the crop, which restores the probabilities onto the crop's grid;
4. threshold, keep only voxels inside the predicted liver, drop specks below
   ``min_lesion_ml``, and paste the crop back into a label map of the whole CT.

The label map follows LiTS: 0 background, 1 liver, 2 tumour (the liver's volume is
``labels >= 1``, tumours included, as in 3D-IRCADb's liver masks).

:func:`lesion_table` lists lesions (connected components, cc3d) with their volume and
centroid; :func:`tumour_burden` is tumour volume / liver volume. ``liverseg predict --tumours``
runs the cascade as a step of :func:`liverseg_helpers.inference.pipeline.segment_ct`, which
prints :func:`format_report`. TensorFlow is imported only when a model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cc3d
import numpy as np
import pandas as pd

from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.inference import predict
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation import preprocess

BACKGROUND, LIVER_LABEL, TUMOUR_LABEL = 0, 1, 2
# The tumour model shipped with the course (see models/tumour_unet.md).
REFERENCE_TUMOUR_MODEL = Path(__file__).resolve().parents[2] / "models" / "tumour_unet.keras"


def load_tumour_model(
    model_or_path: Any, settings: preprocess.PreprocessSettings | None = None
) -> tuple[Any, preprocess.PreprocessSettings]:
    """Load a stage-two model with its preprocessing, refusing a liver model.

    Args:
        model_or_path: ``.keras`` path (settings from its sidecar) or a loaded model.
        settings: Settings to use instead; for a loaded model without them, the defaults
            of ``preprocess.tumour_settings`` at the model's input size.

    Returns:
        ``(model, settings)``.

    Raises:
        ModelFileError: Missing file, or a sidecar that says the model segments the liver.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        return predict.load_prediction_model(model_or_path, settings, task="tumour")
    if settings is None:
        height, _, channels = predict.get_model_input_shape(model_or_path)
        size = SimpleNamespace(
            image_size=height or 256,
            context_slices=((channels or 1) - 1) // 2,
            non_liver_fraction=0.25,
        )
        settings = preprocess.tumour_settings(size)
    return predict.load_prediction_model(model_or_path, settings)


def remove_small_lesions(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 26-connected components with fewer than ``min_voxels`` voxels.

    Args:
        mask: bool ``[z, y, x]``.
        min_voxels: Smallest component kept (0 or 1 keeps everything).

    Returns:
        bool, same shape.
    """
    if min_voxels <= 1 or not mask.any():
        return mask.astype(bool)
    return cc3d.dust(mask.astype(np.uint8), threshold=int(min_voxels), connectivity=26) > 0


def remove_lesions_below_ml(mask: np.ndarray, min_lesion_ml: float, voxel_ml: float) -> np.ndarray:
    """:func:`remove_small_lesions` with the smallest lesion in mL (0 keeps everything)."""
    min_voxels = int(np.ceil(min_lesion_ml / voxel_ml)) if min_lesion_ml > 0 else 0
    return remove_small_lesions(mask, min_voxels)


def predict_tumour_probs(
    tumour_model: Any,
    settings: preprocess.PreprocessSettings,
    volume_hu: np.ndarray,
    liver: np.ndarray,
    spacing_mm: tuple[float, float, float],
    crop_margin_px: int = preprocess.TUMOUR_CROP_MARGIN_PX,
    batch_size: int = 8,
) -> np.ndarray:
    """Stage two alone: tumour probabilities inside the liver's box, zero elsewhere.

    Args:
        tumour_model: Loaded stage-two Keras model.
        settings: Its preprocessing (from its sidecar).
        volume_hu: CT ``[z, y, x]`` in HU.
        liver: bool ``[z, y, x]``, the (predicted) liver; gives the crop and the slices.
        spacing_mm: Voxel size ``(z, y, x)``.
        crop_margin_px: Margin around the liver's box, native pixels (as in training).
        batch_size: Slices per model call.

    Returns:
        float32 ``[z, y, x]`` on the CT's grid; 0 outside the crop and off the liver's slices.
    """
    probs = np.zeros(volume_hu.shape, dtype=np.float32)
    if not liver.any():
        return probs
    r0, r1, c0, c1 = preprocess.find_crop_box(liver, crop_margin_px)
    slices = np.flatnonzero(liver.reshape(len(liver), -1).any(axis=1))
    z0, z1 = int(slices[0]), int(slices[-1]) + 1
    # Context slices (2.5D) need neighbours: predict a slab padded by them, keep the middle.
    # A coronal or sagittal stage was trained on the CT's whole height (cropped in-plane
    # only), and z is a row of its slices: give it the whole height too.
    pad = settings.context_slices if settings.view == "axial" else len(volume_hu)
    s0, s1 = max(0, z0 - pad), min(len(volume_hu), z1 + pad)
    # The crop holds every liver voxel, so shifting it alone gives the same liver median.
    crop = preprocess.shift_to_liver_reference(
        volume_hu[s0:s1, r0:r1, c0:c1], liver[s0:s1, r0:r1, c0:c1], settings, "tumour stage"
    )
    crop_probs = predict.predict_volume(
        tumour_model, crop, settings, batch_size, spacing_mm, precision="float32"
    )
    probs[z0:z1, r0:r1, c0:c1] = crop_probs[z0 - s0 : z1 - s0]
    return probs


def predict_tumours(
    liver_model: Any,
    tumour_model: Any,
    case: Case,
    threshold: float = 0.5,
    liver_mask: np.ndarray | None = None,
    min_lesion_ml: float = 0.1,
    crop_margin_px: int = preprocess.TUMOUR_CROP_MARGIN_PX,
    batch_size: int = 8,
    tumour_settings: preprocess.PreprocessSettings | None = None,
) -> np.ndarray:
    """Segment liver and liver tumours of one CT with the two-stage cascade.

    Args:
        liver_model: Stage one: ``.keras`` path or loaded model (None when ``liver_mask``).
        tumour_model: Stage two: ``.keras`` path (task ``"tumour"``) or loaded model.
        case: The CT.
        threshold: Tumour probability above which a voxel is tumour.
        liver_mask: bool ``[z, y, x]``: use this liver instead of running stage one (e.g.
            a prediction already made, or the truth to study stage two alone).
        min_lesion_ml: Lesions smaller than this (mL) are dropped as noise.
        crop_margin_px: Margin around the liver's box, native pixels (as in training).
        batch_size: Slices per model call.
        tumour_settings: Stage two's preprocessing, instead of its sidecar's.

    Returns:
        uint8 label map ``[z, y, x]``: 0 background, 1 liver, 2 tumour (inside the liver).

    Raises:
        DataError: Threshold outside (0, 1), a liver mask of another shape, or a PNG case.
        ModelFileError: A model that cannot be loaded, or a liver model as stage two.
    """
    if not 0.0 < threshold < 1.0:
        raise DataError(f"threshold must be between 0 and 1, got {threshold}")
    if case.format == "png":
        raise DataError(
            f"{case.source or case.case_id}: PNG slices were windowed before export, so the "
            "tumour stage's own window cannot be applied; give it the CT in HU"
        )
    if liver_mask is None:
        liver = predict.predict_case(liver_model, case, precision="float32").pred
    else:
        liver = np.asarray(liver_mask) != 0
        if liver.shape != case.shape:
            raise DataError(f"{case.case_id}: liver mask {liver.shape} != CT {case.shape}")
    model, settings = load_tumour_model(tumour_model, tumour_settings)
    probs = predict_tumour_probs(
        model, settings, case.volume, liver, case.spacing_mm, crop_margin_px, batch_size
    )
    tumour = (probs > threshold) & liver  # a liver lesion lies in the liver, by definition
    return label_map(liver, remove_lesions_below_ml(tumour, min_lesion_ml, case.voxel_volume_ml))


def label_lesions(tumour: np.ndarray) -> np.ndarray:
    """One id per lesion: the 26-connected components of a tumour mask.

    Args:
        tumour: bool or 0/1 mask ``[z, y, x]`` (for a 0/1/2 label map pass ``labels == 2``).

    Returns:
        uint32 ``[z, y, x]``: 0 background, 1..n lesions.
    """
    return cc3d.connected_components((np.asarray(tumour) != 0).astype(np.uint8), connectivity=26)


def longest_axial_diameters_mm(
    lesions: np.ndarray, spacing_mm: tuple[float, float, float]
) -> dict[int, float]:
    """Each lesion's longest diameter in an axial slice (RECIST 1.1's measure), in mm.

    For every axial slice, the maximum Feret diameter of each lesion's cut (scikit-image's
    ``feret_diameter_max``, with the in-plane pixel spacing); the largest over the slices.

    Args:
        lesions: Integer id map ``[z, y, x]``, one id per lesion, 0 elsewhere.
        spacing_mm: Voxel size ``(z, y, x)`` in mm.

    Returns:
        ``{lesion id: diameter in mm}`` for every id present.
    """
    from skimage.measure import regionprops

    longest: dict[int, float] = {}
    for z in np.flatnonzero(np.asarray(lesions).reshape(len(lesions), -1).any(axis=1)):
        for region in regionprops(lesions[z], spacing=tuple(spacing_mm[1:])):
            diameter = float(region.feret_diameter_max)
            longest[region.label] = max(longest.get(region.label, 0.0), diameter)
    return longest


def lesion_table(lesions: np.ndarray, spacing_mm: tuple[float, float, float]) -> pd.DataFrame:
    """One row per lesion: volume, centroid, size.

    Args:
        lesions: Integer id map ``[z, y, x]``, one id per lesion (``case.lesions``, or
            :func:`label_lesions` of a mask or a 0/1/2 label map). Ids need not be
            consecutive.
        spacing_mm: Voxel size ``(z, y, x)`` in mm.

    Returns:
        DataFrame indexed by ``lesion`` (1..n, by decreasing volume) with ``source_id`` (the
        id in ``lesions``), ``volume_ml``, ``voxels``, ``centroid_z``, ``centroid_y``,
        ``centroid_x`` (voxel indices), ``axial_diameter_mm`` (the longest diameter in an
        axial slice, what a radiologist measures under RECIST 1.1, see
        :func:`longest_axial_diameters_mm`), ``sphere_diameter_mm`` (of the sphere of the
        same volume) and ``slices`` (z extent).
        Empty (those columns, no rows) when there is no lesion.
    """
    lesions = np.asarray(lesions)
    if lesions.dtype == bool or not np.issubdtype(lesions.dtype, np.integer):
        raise DataError(f"lesion_table: expected an integer id map, got {lesions.dtype}")
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    stats = cc3d.statistics(lesions.astype(np.uint32, copy=False))
    axial = longest_axial_diameters_mm(lesions, spacing_mm)
    rows = []
    for lesion_id in range(1, len(stats["voxel_counts"])):
        voxels = int(stats["voxel_counts"][lesion_id])
        if voxels == 0:
            continue
        cz, cy, cx = (float(v) for v in stats["centroids"][lesion_id])
        zbox = stats["bounding_boxes"][lesion_id][0]
        volume_ml = voxels * voxel_ml
        rows.append(
            dict(
                source_id=lesion_id,
                volume_ml=volume_ml,
                voxels=voxels,
                centroid_z=cz,
                centroid_y=cy,
                centroid_x=cx,
                axial_diameter_mm=axial[lesion_id],
                sphere_diameter_mm=float((6000.0 * volume_ml / np.pi) ** (1 / 3)),
                slices=int(zbox.stop - zbox.start),
            )
        )
    columns = [
        "source_id",
        "volume_ml",
        "voxels",
        "centroid_z",
        "centroid_y",
        "centroid_x",
        "axial_diameter_mm",
        "sphere_diameter_mm",
        "slices",
    ]
    table = pd.DataFrame(rows, columns=columns).sort_values("volume_ml", ascending=False)
    table.index = pd.RangeIndex(1, len(table) + 1, name="lesion")
    return table


def tumour_burden(labels: np.ndarray) -> float:
    """Tumour volume / liver volume (tumours included in the liver), as LiTS defines it.

    Args:
        labels: 0/1/2 label map ``[z, y, x]``.

    Returns:
        Fraction in [0, 1]; 0.0 when there is no liver (nothing to be a share of).
    """
    labels = np.asarray(labels)
    liver_voxels = int(np.count_nonzero(labels >= LIVER_LABEL))
    if liver_voxels == 0:
        return 0.0
    return int(np.count_nonzero(labels == TUMOUR_LABEL)) / liver_voxels


def label_map(liver: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """A 0/1/2 label map from a liver and a tumour mask (tumour kept only inside the liver)."""
    liver = np.asarray(liver).astype(bool)
    labels = liver.astype(np.uint8) * LIVER_LABEL
    labels[np.asarray(tumour).astype(bool) & liver] = TUMOUR_LABEL
    return labels


def labels_from_case(case: Case) -> np.ndarray:
    """The truth of a case as a 0/1/2 label map (tumour restricted to the liver).

    Raises:
        DataError: The case has no liver mask.
    """
    if "liver" not in case.masks:
        raise DataError(f"{case.case_id}: no liver mask (has {sorted(case.masks)})")
    liver = case.masks["liver"]
    tumour = case.masks.get("tumour")
    return label_map(liver, np.zeros(liver.shape, bool) if tumour is None else tumour)


def resolve_tumour_model_path(model: str | None) -> Path:
    """The ``--tumour-model`` path, or the shipped one.

    Raises:
        ModelFileError: None given and none shipped.
    """
    if model:
        return Path(model)
    if REFERENCE_TUMOUR_MODEL.exists():
        return REFERENCE_TUMOUR_MODEL
    raise ModelFileError(
        f"no tumour model given and none at {REFERENCE_TUMOUR_MODEL}: train one with "
        "`liverseg train --task tumour` and pass --tumour-model runs/<profile>/best.keras"
    )


def format_report(labels: np.ndarray, case: Case) -> list[str]:
    """Lines printed by ``liverseg predict --tumours``: liver, lesions, burden."""
    voxel_ml = case.voxel_volume_ml
    liver_ml = float(np.count_nonzero(labels >= LIVER_LABEL)) * voxel_ml
    table = lesion_table(label_lesions(labels == TUMOUR_LABEL), case.spacing_mm)
    lines = [f"liver volume: {liver_ml:.1f} mL (tumours included)", f"tumours: {len(table)}"]
    for lesion_id, row in table.iterrows():
        lines.append(
            f"  lesion {lesion_id}: {row.volume_ml:.2f} mL at slice {row.centroid_z:.0f}, "
            f"row {row.centroid_y:.0f}, col {row.centroid_x:.0f}"
        )
    tumour_ml = float(table["volume_ml"].sum()) if len(table) else 0.0
    lines.append(f"tumour volume: {tumour_ml:.2f} mL")
    lines.append(f"tumour burden: {100 * tumour_burden(labels):.2f} % of the liver")
    return lines
