"""Leave-one-patient-out for the tumour stage: real lesions beside the phantom's.

Each real patient with a tumour is once the test patient of a fold whose stage two trains on
the phantom cohort, the other real tumour patients and every tumour-free real patient (as
negatives), and validates on two phantom patients with lesions. The test patient is scored
lesion by lesion (``lesion_eval.evaluate_tumour_cohort``) with the true liver as stage one,
so the figures measure stage two alone, and with ``liver_models`` also with a liver stage.
With ``final_export`` one more model trains on every real patient and is saved for shipping.

Folds are reused when finished (``metrics.json``) and continue from their last epoch when
interrupted (``training.run_reuse``), so the command can be stopped and run again.

Command::

    python -m liverseg_helpers.research.tumour_loo --data ../shared/data/3Dircadb1 \\
        --data ../shared/data/hcc_tace_seg --data ../shared/data/chaos_ct \\
        --out runs/tumour_loo [--export models/tumour_unet.keras] [--anatomy varied_lesions]

``--real-only`` trains each fold on the real patients alone (the phantoms then only validate).
``--liver-reference-hu 100`` shifts every CT so that its liver's median HU is 100 before the
tumour window (``preprocess.shift_to_liver_reference``): the network sees HU relative to the
patient's own liver, as ``tumours.hu_rule`` does.
``--paste-lesions 2`` adds, per fold, two new patients per training patient, each with four
real lesions of the fold's training patients pasted into its liver
(``research.lesion_paste``); the test patient is never a host or a donor.
``--anatomy`` turns on phantom anatomy options (``phantom_anatomy.AnatomyOptions``) for the
phantom cohort; an output folder keeps the phantoms it was started with.

Files written under ``out_dir``: ``phantoms/`` (the phantom cohort, made once), ``cohort/``
(symbolic links to every patient), ``fold_<patient>/`` (a ``train.train`` run folder and its
``metrics.json``), ``per_patient_metrics.csv`` (one row per test patient and stage one, then
the pooled ``cohort`` rows) and, with ``final_export``, ``final/``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from liverseg_helpers.atomic import atomic_file, write_json_atomic
from liverseg_helpers.data.phantom_anatomy import DEFAULT_ANATOMY, AnatomyOptions
from liverseg_helpers.errors import DataError
from liverseg_helpers.training.run_reuse import check_same_training, started_same_training

# The shipped stage two's recipe (models/tumour_unet.md): Dice + BCE, tumour slices x4, a
# 96 px liver box, 8 base filters, 40 epochs, the last epoch kept.
PROFILE = "course"
EPOCHS = 40
FOREGROUND_REPEAT = 4
OVERRIDES = {
    "image_size": 96,
    "base_filters": 8,
    "early_stopping_patience": 100,
    "reduce_lr_patience": 100,
}
# The phantom cohort of the shipped model: 14 patients, seed 100, 48 slices of 256 px.
PHANTOM_PATIENTS, PHANTOM_SEED, PHANTOM_SLICES, PHANTOM_SIZE = 14, 100, 48, 256
VAL_PHANTOMS = ("phantom_007", "phantom_008")  # both with lesions


@dataclass(frozen=True)
class Recipe:
    """How each fold's stage two trains (default: the shipped model's recipe)."""

    profile: str = PROFILE
    epochs: int = EPOCHS
    overrides: dict = field(default_factory=lambda: dict(OVERRIDES))
    seed: int = 42
    val_phantoms: tuple[str, ...] = VAL_PHANTOMS
    anatomy: AnatomyOptions = DEFAULT_ANATOMY  # of the phantom cohort
    train_phantoms: bool = True  # False: train on the real patients alone
    preprocess: dict = field(default_factory=dict)  # settings on top of tumour_settings
    pasted_copies: int = 0  # patients per training host with real lesions pasted in
    pasted_lesions: int = 4  # lesions pasted into each of them


def real_patients(data_dirs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """The real patients of the folders, split into those with a tumour and those without.

    Raises:
        DataError: Two patients share an id, or fewer than two patients have a tumour.
    """
    from liverseg_helpers import io
    from liverseg_helpers.research.crossval import real_case_paths

    with_tumour, without = [], []
    for path in real_case_paths(data_dirs):
        tumour = io.load_case(path).masks.get("tumour")
        (with_tumour if tumour is not None and tumour.any() else without).append(path)
    if len(with_tumour) < 2:
        raise DataError(
            f"tumour leave-one-out needs >= 2 real patients with tumours, found "
            f"{[p.name for p in with_tumour]} in {list(map(str, data_dirs))}"
        )
    return with_tumour, without


def prepare_cohort(
    out_dir: Path, real_paths: Sequence[Path], anatomy: AnatomyOptions = DEFAULT_ANATOMY
) -> tuple[Path, list[str]]:
    """The phantom cohort (made once) and one folder of links to it and the real patients.

    Returns:
        ``(cohort folder, phantom ids)``.

    Raises:
        DataError: The output folder holds phantoms drawn with other anatomy options.
    """
    from liverseg_helpers import io
    from liverseg_helpers.data import phantom
    from liverseg_helpers.research.crossval import make_cohort_dir

    phantom_dir = out_dir / "phantoms"
    found = phantom.read_cohort_settings(phantom_dir)  # written last: a complete cohort
    if found is None:
        phantom.write_phantom_cohort(
            phantom_dir,
            PHANTOM_PATIENTS,
            PHANTOM_SEED,
            PHANTOM_SLICES,
            PHANTOM_SIZE,
            anatomy=anatomy,
        )
    else:
        drawn = {key: found[key] for key in asdict(anatomy) if key in found}
        if drawn != anatomy.changed():
            raise DataError(
                f"{phantom_dir}: phantoms drawn with anatomy options {drawn or 'none'}, this "
                f"recipe asks for {anatomy.changed() or 'none'}; use another --out folder"
            )
    phantom_paths = io.list_case_paths(phantom_dir)
    cohort = make_cohort_dir(list(real_paths), phantom_paths, out_dir / "cohort")
    return cohort, [p.name for p in phantom_paths]


def fold_split(
    phantom_ids: Sequence[str],
    train_real: Sequence[str],
    test_id: str | None,
    val_phantoms: Sequence[str] = VAL_PHANTOMS,
    train_phantoms: bool = True,
) -> dict:
    """Train on phantoms and real patients, validate on lesion phantoms, test one patient.

    Args:
        phantom_ids: The phantom cohort.
        train_real: Real patients to train on.
        test_id: The fold's test patient; None: no test patient (the model to ship).
        val_phantoms: Validation phantoms (each with a lesion).
        train_phantoms: Train on the other phantoms too; False: on the real patients alone.

    Raises:
        DataError: The test patient is also a training patient, or a validation phantom is
            not in the cohort.
    """
    if test_id in train_real:
        raise DataError(f"fold {test_id}: the test patient is among its training patients")
    val = list(val_phantoms)
    if set(val) - set(phantom_ids):
        raise DataError(f"validation phantoms {sorted(set(val) - set(phantom_ids))} not found")
    phantoms = [p for p in phantom_ids if p not in val] if train_phantoms else []
    train = sorted(phantoms + list(train_real))
    return {"train": train, "val": val, "test": [test_id] if test_id else []}


def pasted_patients(
    out_dir: Path,
    cohort: Path,
    name: str,
    with_tumour: list[Path],
    without: list[Path],
    recipe: Recipe,
) -> list[str]:
    """The fold's pasted patients (``lesion_paste.paste_for_fold``); none if the recipe has none."""
    if recipe.pasted_copies < 1:
        return []
    from liverseg_helpers.research import lesion_paste

    copies, lesions = recipe.pasted_copies, recipe.pasted_lesions
    folder = out_dir / "pasted" / name
    return lesion_paste.paste_for_fold(
        folder, cohort, name, with_tumour, without, copies, lesions, recipe.seed
    )


def train_config(cohort: Path, run_dir: Path, split: dict, recipe: Recipe, cache_dir: Path):
    """The stage-two training of one fold."""
    from liverseg_helpers.training import train

    return train.TrainConfig(
        data_dir=cohort,
        run_dir=run_dir,
        profile=recipe.profile,
        seed=recipe.seed,
        task="tumour",
        loss="dice_bce",
        epochs=recipe.epochs,
        split=split,
        foreground_repeat=FOREGROUND_REPEAT,
        overrides=dict(recipe.overrides),
        preprocess=dict(recipe.preprocess),
        cache_dir=cache_dir,
    )


def train_or_resume(cfg) -> Path:
    """Train a fold, continue it from its last epoch, or reuse it when finished.

    Returns:
        The run folder's ``last.keras``.
    """
    from liverseg_helpers.training import train

    run_dir = Path(cfg.run_dir)
    if (run_dir / "metrics.json").exists():
        check_same_training(run_dir, cfg.seed, cfg.profile, cfg.overrides, cfg.preprocess)
    else:
        cfg.resume = started_same_training(
            run_dir, cfg.seed, cfg.profile, cfg.overrides, cfg.preprocess
        )
        train.train(cfg)
    return run_dir / "last.keras"


def cascade_results(
    tumour_model: Path, paths: Sequence[Path], liver_models: Sequence[str] | None = None
) -> dict:
    """Run the cascade on each patient: ``{case_id: (pred, truth, spacing, lesions)}``.

    Args:
        tumour_model: Stage two's ``.keras`` file.
        paths: Patients with a liver (and tumour) mask.
        liver_models: Stage one's ``.keras`` files (averaged); None: the true liver.
    """
    from liverseg_helpers import io
    from liverseg_helpers.tumours import tumour

    stage_one = list(liver_models) if liver_models else None
    results = {}
    for path in paths:
        case = io.load_case(path)
        liver = None if stage_one else case.masks["liver"]
        labels = tumour.predict_tumours(stage_one, tumour_model, case, liver_mask=liver)
        truth = tumour.labels_from_case(case)
        results[case.case_id] = (labels, truth, case.spacing_mm, case.lesions)
    return results


def score_fold(model: Path, test_path: Path, liver_models: Sequence[str] | None) -> list[dict]:
    """Lesion-level scores of one fold's test patient, with the true liver and a liver stage."""
    from liverseg_helpers.tumours import lesion_eval

    stage_ones = {"true liver": None}
    if liver_models:
        stage_ones["liver model"] = list(liver_models)
    rows = []
    for name, livers in stage_ones.items():
        table = lesion_eval.evaluate_tumour_cohort(cascade_results(model, [test_path], livers))
        patient = table.drop(index="cohort").reset_index()
        patient.insert(1, "stage_one", name)
        rows += json.loads(patient.to_json(orient="records"))  # numpy values to JSON's own
    return rows


def pooled_rows(rows: list[dict]) -> pd.DataFrame:
    """Per-patient rows and, per stage one, a ``cohort`` row (``lesion_eval.pooled_row``:
    mean tumour Dice, pooled lesion counts; no global Dice, the folds' masks are not kept)."""
    from liverseg_helpers.tumours import lesion_eval

    table = pd.DataFrame(rows)
    pooled = [
        {"case_id": "cohort", "stage_one": stage_one, **lesion_eval.pooled_row(group)}
        for stage_one, group in table.groupby("stage_one", sort=False)
    ]
    return pd.concat([table, pd.DataFrame(pooled)], ignore_index=True)


def run_tumour_loo(
    data_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    recipe: Recipe = Recipe(),
    liver_models: Sequence[str] | None = None,
    final_export: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Tumour leave-one-out over the real patients with tumours (see the module docstring).

    Args:
        data_dirs: Cohort folders of real patients (one per source).
        out_dir: Output folder (reused: finished folds are read back, interrupted ones resumed).
        recipe: How each fold trains.
        liver_models: Also score with this liver stage (``.keras`` files, averaged).
        final_export: Also train on every real patient and save that model here.

    Returns:
        The table written to ``per_patient_metrics.csv``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from liverseg_helpers.research import reference

    with_tumour, without = real_patients(data_dirs)
    cohort, phantom_ids = prepare_cohort(out_dir, [*with_tumour, *without], recipe.anatomy)
    tumour_ids = [p.name for p in with_tumour]
    negative_ids = [p.name for p in without]
    rows = []
    for test_id in tumour_ids:
        run_dir = out_dir / f"fold_{test_id}"
        done = run_dir / "metrics.json"
        train_real = [p for p in tumour_ids if p != test_id] + negative_ids
        train_real += pasted_patients(out_dir, cohort, test_id, with_tumour, without, recipe)
        split = fold_split(
            phantom_ids, train_real, test_id, recipe.val_phantoms, recipe.train_phantoms
        )
        cfg = train_config(cohort, run_dir, split, recipe, out_dir / "slice_cache")
        model = train_or_resume(cfg)
        if not done.exists():
            fold_rows = score_fold(model, cohort / test_id, liver_models)
            write_json_atomic({"train": split["train"], "rows": fold_rows}, done)
        saved = json.loads(done.read_text())
        if test_id in saved["train"]:
            raise DataError(f"{done}: the test patient {test_id} was trained on")
        if saved["train"] != split["train"]:
            raise DataError(
                f"{done}: this fold trained on other patients than this recipe asks for "
                "(phantoms or real-only?); use another --out folder"
            )
        rows += saved["rows"]
        print(f"fold {test_id}: tumour Dice {saved['rows'][0]['tumour_dice']:.3f}", flush=True)
    table = pooled_rows(rows)
    with atomic_file(out_dir / "per_patient_metrics.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    if final_export is not None:
        pasted = pasted_patients(out_dir, cohort, "all", with_tumour, without, recipe)
        split = fold_split(
            phantom_ids,
            tumour_ids + negative_ids + pasted,
            None,
            recipe.val_phantoms,
            recipe.train_phantoms,
        )
        cfg = train_config(cohort, out_dir / "final", split, recipe, out_dir / "slice_cache")
        last = train_or_resume(cfg)
        print(f"exported to {reference.export_model(last, final_export)}")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="cohort folder (repeat)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--liver-model", action="append", default=None, help="also score with this stage one"
    )
    parser.add_argument("--export", default=None, help="train on all and save this .keras")
    parser.add_argument(
        "--anatomy",
        action="append",
        default=[],
        choices=sorted(asdict(DEFAULT_ANATOMY)),
        help="phantom anatomy option to turn on (repeat), e.g. varied_lesions",
    )
    parser.add_argument(
        "--real-only",
        action="store_true",
        help="train on the real patients alone (phantoms only validate)",
    )
    parser.add_argument(
        "--liver-reference-hu",
        type=float,
        default=None,
        help="shift each CT so its liver's median HU lands here (input relative to the liver)",
    )
    parser.add_argument(
        "--paste-lesions",
        type=int,
        default=0,
        metavar="COPIES",
        help="add COPIES patients per training patient with the training patients' "
        "real lesions pasted into its liver (research.lesion_paste)",
    )
    args = parser.parse_args(argv)
    preprocess = {}
    if args.liver_reference_hu is not None:
        preprocess["liver_reference_hu"] = args.liver_reference_hu
    recipe = Recipe(
        seed=args.seed,
        anatomy=AnatomyOptions(**dict.fromkeys(args.anatomy, True)),
        train_phantoms=not args.real_only,
        preprocess=preprocess,
        pasted_copies=args.paste_lesions,
    )
    table = run_tumour_loo(args.data, args.out, recipe, args.liver_model, args.export)
    columns = [
        "case_id",
        "stage_one",
        "tumour_dice",
        "n_true_lesions",
        "n_detected",
        "n_false_lesions",
        "true_tumour_ml",
        "pred_tumour_ml",
    ]
    print(table[columns].round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
