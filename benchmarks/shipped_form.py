"""The shipped pair's form, leave-one-patient-out over every real patient. An experiment.

``models/liver_unet.keras`` averages fine-tuned axial networks of several seeds and
``liverseg predict`` joins it with the coronal file. This script scores that form on patients
none of its networks saw. For each test patient it:

1. takes one fold network per ``--axial`` group (one seed: its crossval variant folders,
   which between them test each patient at most once), each checked never to have been
   trained on the patient (``ensemble.fold_test_patient``);
2. averages them with int8 weights, as the shipped file stores them
   (``ensemble.export_ensemble``);
3. scores (A) that average alone and (B) that average with a coronal network that never saw
   the patient, by ``liverseg predict``'s own road (``predict.predict_case``: post-processing
   on, the coronal network left out where the scan stops inside the liver). The coronal
   network is the patient's fold in ``--coronal`` if there is one (with several ``--coronal``
   groups, one per seed, the int8 average of their folds, as the shipped coronal file averages
   three seeds); otherwise the shipped coronal file, which was trained on the two IRCAD
   patients only, so they need folds.

Prints one markdown row per patient, then for (A) and (B) the means and the issue's goal
(mean Dice >= 0.95, mean ASSD < 2 mm, no patient below 0.92). The rule this was written for is
in docs/real_ct_experiments.md, "Toward the shipped form over six patients".

Usage::

    python benchmarks/shipped_form.py \\
        --axial runs/tuned/six_tuned runs/ircad_tuned/six_tuned \\
        --axial runs/tuned/six_tuned_2 runs/ircad_tuned_s43/six_tuned_2 \\
        --axial runs/tuned/six_tuned_3 runs/ircad_tuned_s44/six_tuned_3 \\
        --coronal runs/ircad_coronal/aligned_coronal \\
        --coronal runs/ircad_coronal_s43/aligned_coronal \\
        --coronal runs/ircad_coronal_s44/aligned_coronal \\
        --data ../shared/data/3Dircadb1 --data ../shared/data/chaos_ct \\
        --data ../shared/data/hcc_tace_seg
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
from fine_tuning import SHIPPED_TRAINING_PATIENTS, pair_scores, print_pooled  # noqa: E402
from multiview_ensemble import fold_models  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.inference import pipeline  # noqa: E402
from liverseg_helpers.research import crossval  # noqa: E402
from liverseg_helpers.research.ensemble import export_ensemble  # noqa: E402

#: The shipped coronal file's real training patients (its card, models/liver_unet_coronal.md).
CORONAL_TRAINING_PATIENTS = SHIPPED_TRAINING_PATIENTS


def merged_folds(variant_dirs: list[Path]) -> dict[str, Path]:
    """``{test patient: fold model}`` over several variant folders of one seed.

    Raises:
        SystemExit: Two folders test the same patient.
    """
    merged: dict[str, Path] = {}
    for variant_dir in variant_dirs:
        for patient, path in fold_models(variant_dir).items():
            if patient in merged:
                raise SystemExit(f"{patient} is tested by both {merged[patient]} and {path}")
            merged[patient] = path
    return merged


def coronal_for(patient: str, coronal_seeds: list[dict[str, Path]], out_dir: Path) -> Path:
    """The patient's coronal network: its folds, or the shipped file where that never saw it.

    One fold per coronal seed; several are averaged with int8 weights, as the shipped coronal
    file stores its three seeds.

    Raises:
        SystemExit: Some coronal seeds test the patient and others do not, or the shipped file
            saw the patient and no fold tests it.
    """
    folds = [seed[patient] for seed in coronal_seeds if patient in seed]
    if folds and len(folds) < len(coronal_seeds):
        raise SystemExit(f"{patient}: {len(folds)} of {len(coronal_seeds)} coronal seeds test it")
    if len(folds) == 1:
        return folds[0]
    if folds:
        return export_ensemble(folds, out_dir / f"coronal_{patient}.keras", int8=True)
    if patient in CORONAL_TRAINING_PATIENTS:
        raise SystemExit(f"{patient}: the shipped coronal file saw it; give its fold (--coronal)")
    return pipeline.REFERENCE_CORONAL_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--axial",
        nargs="+",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="one seed's fine-tuned axial variant folders (repeat per seed)",
    )
    parser.add_argument(
        "--coronal",
        nargs="+",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="one seed's coronal fold variant folders (repeat per seed; averaged like --axial)",
    )
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/shipped_form"))
    parser.add_argument("--csv", type=Path, help="also write the rows here")
    args = parser.parse_args()
    seeds = [merged_folds(group) for group in args.axial]
    coronal_seeds = [merged_folds(group) for group in args.coronal]
    patients = sorted(set.intersection(*(set(s) for s in seeds)))
    case_paths = {io.case_id_of(p): p for p in crossval.real_case_paths(args.data)}
    rows = []
    for patient in patients:
        members = [seed[patient] for seed in seeds]
        axial = export_ensemble(members, args.out / f"axial_{patient}.keras", int8=True)
        coronal = coronal_for(patient, coronal_seeds, args.out)
        case = io.load_case(case_paths[patient])
        alone, pair = pair_scores([axial], case), pair_scores([axial, coronal], case)
        rows.append(
            {
                "patient": patient,
                "axial_networks": len(members),
                "coronal": str(coronal),
                **{f"axial_{k}": alone[k] for k in ("dice", "assd_mm", "hd95_mm")},
                **{f"pair_{k}": pair[k] for k in ("dice", "assd_mm", "hd95_mm")},
            }
        )
        print(
            f"{patient}: axial {alone['dice']:.3f} / {alone['assd_mm']:.2f} mm, "
            f"pair {pair['dice']:.3f} / {pair['assd_mm']:.2f} mm ({coronal})",
            flush=True,
        )
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    for form in ("axial", "pair"):
        print(f"\n({'A' if form == 'axial' else 'B'}) {form}:")
        scores = [(r["patient"], r[f"{form}_dice"], r[f"{form}_assd_mm"]) for r in rows]
        print_pooled([{"case_id": p, "dice": d, "assd_mm": a} for p, d, a in scores])


if __name__ == "__main__":
    main()
