"""A liver cut off by the scan's edge: the axial + coronal pair against the axial network alone.
An experiment, not a test.

Each real patient's CT is scored as given and cut so that the scan stops a quarter or half-way
into the liver's extent along z, from the first slices' end or from the last slices' end
(four cut scans per patient). Every scan is predicted by an axial and a coronal member, and
three ways of combining them are scored in 3D at native resolution against the expert mask cut
the same way (the course's post-processing, threshold 0.5):

- ``pair``: the two members' probabilities averaged (``liverseg predict``'s default);
- ``axial``: the axial member alone;
- ``fallback``: the axial member alone where its own mask covers at least 1 cm² of the
  scan's first or last slice (the liver reaches the scan's edge), the pair elsewhere: what
  ``liverseg predict`` does, decided by its own ``ensemble_members.turned_members_to_run``.

Two kinds of models: two ``.keras`` files (e.g. the shipped pair) used on every patient of the
``--data`` folders, so give only patients they never saw; or two crossval variant folders, whose
fold model that never saw a patient predicts it (checked against each fold's ``split.json``).

Prints a row per scan, then the mean of each way over the cut scans, and writes the rows as CSV.

Usage::

    python benchmarks/truncated_scan.py models/liver_unet.keras models/liver_unet_coronal.keras \\
        --data ../shared/data/chaos_ct --data ../shared/data/hcc_tace_seg \\
        --csv runs/truncated/shipped.csv
    python benchmarks/truncated_scan.py runs/six/six runs/six/six_coronal \\
        --data ../shared/data/3Dircadb1 --data ../shared/data/chaos_ct \\
        --data ../shared/data/hcc_tace_seg --csv runs/truncated/six.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from multiview_ensemble import fold_models  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import ensemble_members, postprocess, predict  # noqa: E402
from liverseg_helpers.io.case import Case  # noqa: E402
from liverseg_helpers.preparation import views  # noqa: E402
from liverseg_helpers.research import crossval  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

CUT_FRACTIONS = (0.25, 0.5)
WAYS = ("pair", "axial", "fallback")


def cuts(liver: np.ndarray) -> list[tuple[str, slice]]:
    """The scan as given and the four cuts: slices kept so that the scan stops ``f`` of the
    way into the liver's z extent, from the first slices' end or from the last slices' end."""
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    first, last = int(zs[0]), int(zs[-1])
    extent = last - first
    out = [("as given", slice(None))]
    for fraction in CUT_FRACTIONS:
        step = round(fraction * extent)
        out.append((f"first {fraction:.0%} of liver cut", slice(first + step, None)))
        out.append((f"last {fraction:.0%} of liver cut", slice(None, last - step + 1)))
    return out


def score_scan(scan: Case, axial, coronal) -> list[dict]:
    """Rows of one scan: the pair, the axial member alone and the fallback."""
    volume, truth, spacing_mm = scan.volume, scan.masks["liver"], scan.spacing_mm
    probs_axial = predict.predict_volume(axial[0], volume, axial[1], spacing_mm=spacing_mm)
    probs_pair = probs_axial
    if views.fits_view(volume.shape, spacing_mm, coronal[1].view):
        probs_coronal = predict.predict_volume(
            coronal[0], volume, coronal[1], spacing_mm=spacing_mm
        )
        probs_pair = (probs_axial + probs_coronal) / 2
    masks = {
        "pair": postprocess.mask_from_probs(probs_pair, spacing_mm[0]),
        "axial": postprocess.mask_from_probs(probs_axial, spacing_mm[0]),
    }
    fired = not ensemble_members.turned_members_to_run([axial, coronal], probs_axial, scan, 0.5)
    masks["fallback"] = masks["axial"] if fired else masks["pair"]
    rows = []
    for way in WAYS:
        scores = evaluate.evaluate_masks(masks[way], truth, spacing_mm)
        rows.append(
            {"way": way, "fired": fired, "dice": scores["dice"], "assd_mm": scores["assd_mm"]}
        )
    return rows


def save_and_print_ways(rows: list[dict], column: str, csv: Path | None) -> pd.DataFrame:
    """The rows as a table, written to ``csv`` (when given) and printed with one row per scan
    (``patient``, ``scan`` and ``column``) and one Dice and ASSD column per way."""
    table = pd.DataFrame(rows)
    if csv:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
    wide = table.pivot_table(
        index=["patient", "scan", column], columns="way", values=["dice", "assd_mm"]
    )
    wide.columns = [f"{way} {metric}" for metric, way in wide.columns]
    print(format_markdown(wide.reset_index().set_index("patient"), digits=3))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("axial", type=Path, help="axial .keras file or crossval variant folder")
    parser.add_argument("coronal", type=Path, help="coronal .keras file or variant folder")
    parser.add_argument("--data", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--csv", type=Path, help="also write the rows here")
    args = parser.parse_args()
    by_folds = args.axial.is_dir()
    folds = (fold_models(args.axial), fold_models(args.coronal)) if by_folds else None
    shared = (
        None if by_folds else [predict.load_prediction_model(p) for p in (args.axial, args.coronal)]
    )
    rows = []
    for path in crossval.real_case_paths(args.data):
        case = io.load_case(path)
        if by_folds:
            if case.case_id not in folds[0] or case.case_id not in folds[1]:
                continue
            axial, coronal = (predict.load_prediction_model(f[case.case_id]) for f in folds)
        else:
            axial, coronal = shared
        liver = case.masks["liver"]
        for cut_name, keep in cuts(liver):
            scan = dataclasses.replace(case, volume=case.volume[keep], masks={"liver": liver[keep]})
            for row in score_scan(scan, axial, coronal):
                rows.append({"patient": case.case_id, "scan": cut_name, **row})
                print(rows[-1], flush=True)
    table = save_and_print_ways(rows, "fired", args.csv)
    cut = table[table.scan != "as given"]
    summary = cut.groupby("way")[["dice", "assd_mm"]].mean()
    summary["fired on cut scans"] = f"{int(cut[cut.way == 'pair'].fired.sum())} / {len(cut) // 3}"
    print(f"\nMean over the {len(cut) // 3} cut scans:")
    print(format_markdown(summary, digits=4))


if __name__ == "__main__":
    main()
