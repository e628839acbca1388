"""Other fields of view: the shipped pair on CTs reconstructed at other pixel sizes. An
experiment, not a test.

Each patient's CT and expert liver mask are resampled in-plane to each ``--pixel-mm`` on a
512 x 512 matrix (centre crop, or padding with air), as a scanner reconstructing another field
of view (FOV) would give them, then predicted by the pair as ``liverseg predict`` runs it
(``ensemble_members.turned_members_to_run`` included) in two ways:

- ``as before``: the axial network shrinks each whole slice to its input size;
- ``clamped``: where the FOV lies outside ``--fov-range``, the axial network's slices are
  resampled to the nearest bound's pixel (FOV / input size) and centre-cropped or padded,
  as ``liverseg predict`` now does (``ensemble_members.settings_for_field_of_view``).

Scored in 3D on the new grid. Give only patients the models never saw. Prints a row per scan,
then the means over the scans outside the range, and writes the rows as CSV.

Usage::

    python benchmarks/field_of_view.py --data ../shared/data/chaos_ct \\
        --data ../shared/data/hcc_tace_seg --csv runs/fov/shipped.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from truncated_scan import save_and_print_ways  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import ensemble_members, pipeline, postprocess, predict  # noqa: E402
from liverseg_helpers.io.case import Case  # noqa: E402
from liverseg_helpers.preparation.slice_geometry import (  # noqa: E402
    pad_or_crop_square,
    resample_inplane,
)
from liverseg_helpers.research import crossval  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

AIR_HU = -1024
MATRIX = 512


def reconstruct(case: Case, pixel_mm: float) -> Case:
    """The case as a 512 x 512 reconstruction at ``pixel_mm`` (air where the old FOV ends)."""
    spacing_rc = case.spacing_mm[1:]
    hu = resample_inplane(case.volume.astype(np.float32) - AIR_HU, spacing_rc, pixel_mm)
    volume = np.rint(pad_or_crop_square(hu, MATRIX) + AIR_HU).astype(np.int16)
    liver = resample_inplane(case.masks["liver"], spacing_rc, pixel_mm, is_mask=True)
    spacing = (case.spacing_mm[0], pixel_mm, pixel_mm)
    return dataclasses.replace(
        case,
        volume=volume,
        spacing_mm=spacing,
        masks={"liver": pad_or_crop_square(liver, MATRIX) > 0},
    )


def score(case: Case, axial, coronal) -> list[dict]:
    """Rows of one scan: the pair as before and with the axial network clamped."""
    coronal_probs = None
    fov = ensemble_members.field_of_view_mm(case.shape, case.spacing_mm)
    clamped = ensemble_members.settings_for_field_of_view(axial[1], case.shape, case.spacing_mm)
    rows = []
    for way, settings in (("as before", axial[1]), ("clamped", clamped)):
        probs = predict.predict_volume(axial[0], case.volume, settings, spacing_mm=case.spacing_mm)
        if ensemble_members.turned_members_to_run([axial, coronal], probs, case, 0.5):
            if coronal_probs is None:
                coronal_probs = predict.predict_volume(
                    coronal[0], case.volume, coronal[1], spacing_mm=case.spacing_mm
                )
            probs = (probs + coronal_probs) / 2
        mask = postprocess.mask_from_probs(probs, case.spacing_mm[0])
        scores = evaluate.evaluate_masks(mask, case.masks["liver"], case.spacing_mm)
        rows.append(
            {
                "way": way,
                "fov_mm": round(fov),
                "resampled": settings is not axial[1],
                "dice": scores["dice"],
                "assd_mm": scores["assd_mm"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--pixel-mm", type=float, nargs="+", default=[0.5, 0.6, 0.9, 1.0])
    parser.add_argument(
        "--fov-range", type=float, nargs=2, help="default: the axial model's (its sidecar)"
    )
    parser.add_argument("--csv", type=Path, help="also write the rows here")
    args = parser.parse_args()
    axial, coronal = (predict.load_prediction_model(p) for p in pipeline.resolve_model_paths(None))
    fov_range = args.fov_range or axial[1].fov_range_mm
    if fov_range is None:
        raise SystemExit("the axial model's sidecar has no fov_range_mm: give --fov-range")
    axial = (axial[0], dataclasses.replace(axial[1], fov_range_mm=tuple(fov_range)))
    rows = []
    for path in crossval.real_case_paths(args.data):
        case = io.load_case(path)
        scans = [("as given", case)] + [
            (f"{mm:g} mm", reconstruct(case, mm)) for mm in args.pixel_mm
        ]
        for name, scan in scans:
            for row in score(scan, axial, coronal):
                rows.append({"patient": case.case_id, "scan": name, **row})
                print(rows[-1], flush=True)
    table = save_and_print_ways(rows, "fov_mm", args.csv)
    outside = table[table.resampled.groupby([table.patient, table.scan]).transform("any")]
    print(f"\nMean over the {len(outside) // 2} scans outside {fov_range} mm:")
    print(format_markdown(outside.groupby("way")[["dice", "assd_mm"]].mean(), digits=4))


if __name__ == "__main__":
    main()
