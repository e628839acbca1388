"""Ensembles: several trained UNets whose probabilities are averaged, saved as one model.

Two models trained with different seeds make different mistakes; averaging their probability
maps before the 0.5 threshold cancels part of them. :func:`average_models` wraps the members
in one Keras model (input -> each member -> mean), so prediction, evaluation and the shipped
``.keras`` file need no special case: an ensemble *is* a model.

:func:`run_ensemble_lopo` scores such ensembles leave-one-patient-out: for each test patient it
averages the fold models that never saw that patient (one per seed, from several
``liverseg crossval --seed N`` output folders).

Command: ``liverseg crossval --data DIR --out DIR --variant NAME --ensemble-of CV1 CV2 ...``
(repeat ``--variant`` to average several recipes' folds).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import keras

from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.preparation.preprocess_settings import PreprocessSettings
from liverseg_helpers.preparation.split import read_split_without
from liverseg_helpers.training import model_files, quantize


def average_models(members: list[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of the members' outputs.

    Args:
        members: Trained models with the same input and output shapes (renamed in place to
            ``member_1`` ... so that their names are unique inside the ensemble).
        name: Name of the ensemble model.

    Raises:
        ValueError: No members, or members with different input or output shapes.
    """
    if not members:
        raise ValueError("an ensemble needs at least one model")
    shapes = {(tuple(m.input.shape[1:]), tuple(m.output.shape[1:])) for m in members}
    if len(shapes) > 1:
        raise ValueError(f"ensemble members differ in input/output shape: {sorted(shapes)}")
    for index, member in enumerate(members, start=1):
        member.name = f"member_{index}"
    inputs = keras.Input(members[0].input.shape[1:], name="image")
    outputs = [member(inputs) for member in members]
    mean = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="mean")(outputs)
    return keras.Model(inputs, mean, name=name)


def export_ensemble(
    model_paths: list[str | os.PathLike],
    dest: str | os.PathLike,
    int8: bool = False,
    fov_range_mm: tuple[float, float] | None = None,
) -> Path:
    """Average saved models into one ``.keras`` file (no optimizer state) with its sidecar.

    Args:
        model_paths: ``.keras`` files with sidecars, trained with the same preprocessing.
        dest: Where to write the ensemble, e.g. ``models/liver_unet.keras``.
        int8: Store the members' convolution weights as int8 (``quantize.quantize_int8``), a
            quarter of the float32 size, so that four wide UNets fit where one did.
        fov_range_mm: Record this field-of-view range in the sidecar
            (``PreprocessSettings.fov_range_mm``; :func:`with_fov_range`).

    Returns:
        The written path.

    Raises:
        ModelFileError: A member has no sidecar, or members differ in preprocessing or task
            (an ensemble of models that expect different inputs would be silently wrong).
    """
    sidecars = []
    for path in model_paths:
        side = model_files.read_sidecar(path)
        if side is None:
            raise ModelFileError(f"{path}: no sidecar (.keras.json); cannot check its inputs")
        sidecars.append(side)
    for path, side in zip(model_paths[1:], sidecars[1:], strict=True):
        for key in ("preprocess", "task"):
            if side.get(key) != sidecars[0].get(key):
                raise ModelFileError(
                    f"{path}: {key} {side.get(key)} differs from {model_paths[0]}'s "
                    f"{sidecars[0].get(key)}; ensemble members must match"
                )
    members = [model_files.load_model(p, compile=False) for p in model_paths]
    ensemble = average_models(members)
    if int8:
        ensemble = quantize.quantize_int8(ensemble)
    preprocess = with_fov_range(sidecars[0]["preprocess"], fov_range_mm)
    return model_files.save_model(ensemble, dest, preprocess, task=sidecars[0].get("task", "liver"))


def with_fov_range(preprocess: dict, fov_range_mm: tuple[float, float] | None) -> dict:
    """A sidecar's preprocessing with ``fov_range_mm`` set (unchanged when it is None).

    The range is the fields of view the network learnt from, e.g. the training CTs' smallest
    and largest times the augmentation's zoom range; outside it, prediction resamples the CT.

    Raises:
        DataError: The range is not ``0 < smallest <= largest``.
    """
    if fov_range_mm is None:
        return preprocess
    try:
        settings = PreprocessSettings.from_dict({**preprocess, "fov_range_mm": fov_range_mm})
    except ValueError as err:
        raise DataError(f"--fov-range-mm {list(fov_range_mm)}: {err}") from None
    return {**preprocess, "fov_range_mm": list(settings.fov_range_mm)}


def _as_list(variants: str | list[str]) -> list[str]:
    return [variants] if isinstance(variants, str) else list(variants)


def fold_members(run_roots: list[Path], variants: str | list[str], test_id: str) -> list[Path]:
    """The ``last.keras`` of one fold per crossval folder and variant, each never shown it.

    Args:
        run_roots: ``liverseg crossval`` output folders (one per seed).
        variants: One variant or several (recipes may be mixed: every folder must hold each).
        test_id: The test patient.

    Raises:
        DataError: A fold is missing, or its split.json has the test patient in train or val.
    """
    names = _as_list(variants)
    paths = []
    for root, variant in ((root, variant) for root in run_roots for variant in names):
        fold = Path(root) / variant / f"fold_{test_id}"
        model_path, split_path = fold / "last.keras", fold / "split.json"
        if not (model_path.exists() and split_path.exists()):
            raise DataError(f"{fold}: no finished fold (run liverseg crossval --out {root} first)")
        read_split_without(split_path, test_id)
        paths.append(model_path)
    return paths


def fold_test_patient(model_path: str | os.PathLike) -> str:
    """The test patient of a crossval fold model, checked never to have been trained on.

    Works for a fold's ``<variant>/fold_<id>/last.keras`` (checked against its ``split.json``)
    and for an ensemble's ``fold_<id>/ensemble.keras`` (each member listed in the fold's
    ``metrics.json`` checked against its own ``split.json``).

    Raises:
        DataError: The folder is not ``fold_<id>``, the model (or a member) saw ``<id>``, or a
            member's folder is missing (older ensembles list members relative to the folder
            they were made from).
    """
    return _checked_member_splits(Path(model_path))[0]


def fold_training_patients(model_path: str | os.PathLike) -> set[str]:
    """Every patient a fold model (or each member of a fold's ensemble) was trained on.

    The validation patients are not included: a crossval fold only monitors them (fixed
    epochs, last checkpoint). The model is checked as in :func:`fold_test_patient`.
    """
    _, splits = _checked_member_splits(Path(model_path))
    return {patient for split in splits for patient in split["train"]}


def _checked_member_splits(model_path: Path) -> tuple[str, list[dict[str, list[str]]]]:
    """The fold's test patient and the split of the model, or of each member of a fold's
    ``ensemble.keras``, each checked never to have trained on that patient."""
    fold = model_path.parent
    if not fold.name.startswith("fold_"):
        raise DataError(f"{model_path}: not inside a crossval fold_<patient> folder")
    test_id = fold.name.removeprefix("fold_")
    if model_path.name == "ensemble.keras":
        members = json.loads((fold / "metrics.json").read_text())["members"]
    else:
        members = [model_path]
    splits = []
    for member in members:
        split_path = Path(member).parent / "split.json"
        if not split_path.exists():
            raise DataError(
                f"{fold / 'metrics.json'}: member {member} has no {split_path.name} here"
                f" (a relative path is read from {Path.cwd()})"
            )
        splits.append(read_split_without(split_path, test_id))
    return test_id, splits


def ensemble_name(variants: str | list[str], int8: bool = False) -> str:
    """Folder name of an ensemble: ``ensemble_aligned``, ``ensemble_aligned+aligned_long``.

    Int8 ensembles get the suffix ``_int8``, so both can be scored into one folder.
    """
    return "ensemble_" + "+".join(_as_list(variants)) + ("_int8" if int8 else "")


def run_ensemble_lopo(
    data_dir: str | os.PathLike,
    run_roots: list[str | os.PathLike],
    variants: str | list[str],
    out_dir: str | os.PathLike,
    int8: bool = False,
):
    """Leave-one-patient-out scores of the ensemble of one or more variants' folds over seeds.

    Args:
        data_dir: The real patients (each is the test patient once).
        run_roots: ``liverseg crossval`` output folders, one per seed, each with
            ``<variant>/fold_<patient>/`` for every variant.
        variants: Variant name, or several to mix recipes (one member per folder and variant).
        out_dir: Output folder; ``<ensemble_name>/fold_<patient>/`` gets the ensemble model
            and ``metrics.json``, ``<ensemble_name>/per_patient_metrics.csv`` the table.
        int8: Score the int8-weight twin of each ensemble (what ``--int8 --export`` ships).

    Returns:
        The per-patient table (``evaluate.evaluate_cohort``).
    """
    from liverseg_helpers import io
    from liverseg_helpers.evaluation import evaluate
    from liverseg_helpers.research import crossval

    roots = [Path(r) for r in run_roots]
    folder = Path(out_dir) / ensemble_name(variants, int8)
    rows = []
    for case_path in io.list_case_paths(data_dir):
        fold = folder / f"fold_{case_path.name}"
        members = fold_members(roots, variants, case_path.name)
        model_path = export_ensemble(members, fold / "ensemble.keras", int8)
        metrics, raw = crossval.evaluate_fold(model_path, case_path)
        row = crossval.fold_row(case_path.name, metrics, raw)
        # Absolute member paths: the record is read again from other folders (benchmarks).
        members_abs = [str(Path(p).resolve()) for p in members]
        write_json_atomic({**row, "members": members_abs}, fold / "metrics.json")
        print(
            f"{folder.name} test {row['case_id']}: dice {row['dice']:.4f} "
            f"assd {row['assd_mm']:.2f} mm ({len(members)} models)",
            flush=True,
        )
        rows.append(row)
    table = evaluate.evaluate_cohort(rows)
    evaluate.save_metrics_csv(table, folder / "per_patient_metrics.csv")
    return table


def all_fold_models(run_roots: list[Path], variants: str | list[str]) -> list[Path]:
    """Every fold's ``last.keras`` of the variants in each crossval folder (sorted by patient).

    Raises:
        DataError: A folder has no finished fold of a variant.
    """
    names = _as_list(variants)
    paths = []
    for root, variant in ((root, variant) for root in run_roots for variant in names):
        found = sorted((Path(root) / variant).glob("fold_*/last.keras"))
        if not found:
            raise DataError(f"{Path(root) / variant}: no finished folds to average")
        paths.extend(found)
    return paths


def run_ensemble_cli(args: argparse.Namespace) -> int:
    """``liverseg crossval --ensemble-of DIR ...``: score or export an ensemble.

    * with ``--variant V``: LOPO scores of the average of V's folds over the folders (one
      per seed; several ``--variant`` mix recipes: one member per folder and variant); with
      ``--export PATH`` also the average of *all* those fold models, which together have
      seen every real patient (a model to ship, not one to score on them);
    * with ``--reference V --export PATH``: the average of each folder's reference model
      (repeat ``--reference`` to mix recipes: every folder must hold each).
    """
    roots = [Path(d) for d in args.ensemble_of]
    if args.reference:
        if not args.export:
            raise DataError("--ensemble-of with --reference needs --export PATH")
        paths = [
            root / f"reference_{variant}" / "last.keras"
            for root in roots
            for variant in _as_list(args.reference)
        ]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise DataError(f"no reference model at {missing}; train each with --reference")
        dest = export_ensemble(paths, args.export, args.int8, args.fov_range_mm)
        print(f"exported to {dest}")
        return 0
    if not args.variant:
        raise DataError("--ensemble-of needs --variant (one, or several to mix recipes)")
    table = run_ensemble_lopo(args.data, roots, args.variant, args.out, args.int8)
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.export:
        paths = all_fold_models(roots, args.variant)
        print(
            f"exported the average of {len(paths)} fold models to "
            f"{export_ensemble(paths, args.export, args.int8, args.fov_range_mm)}"
        )
    return 0
