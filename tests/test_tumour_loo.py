"""Tumour leave-one-out (research/tumour_loo.py): folds, negatives, resuming, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.data import phantom  # noqa: E402
from liverseg_helpers.errors import DataError  # noqa: E402
from liverseg_helpers.research import tumour_loo  # noqa: E402

TINY = {"image_size": 32, "base_filters": 4, "depth": 2, "batch_size": 8}


def write_patients(folder: Path, names: list[str], seed: int) -> list[Path]:
    """Phantom patients (16 slices, 64 px) renamed to ``names``: stand-ins for real CT."""
    paths = phantom.write_phantom_cohort(folder, len(names), seed=seed, n_slices=16, size=64)
    (folder / phantom.COHORT_FILE).unlink(missing_ok=True)
    renamed = []
    for path, name in zip(paths, names, strict=True):
        os.rename(path, folder / name)
        renamed.append(folder / name)
    return renamed


def has_tumour(path: Path) -> bool:
    tumour = io.load_case(path).masks.get("tumour")
    return tumour is not None and bool(tumour.any())


def test_fold_split_never_tests_a_training_patient():
    phantoms = [f"phantom_{i:03d}" for i in range(1, 10)]
    split = tumour_loo.fold_split(phantoms, ["b", "c", "neg"], "a")
    assert split["test"] == ["a"] and split["val"] == list(tumour_loo.VAL_PHANTOMS)
    assert "a" not in split["train"] and not set(split["val"]) & set(split["train"])
    assert {"b", "c", "neg", "phantom_001"} <= set(split["train"])
    assert tumour_loo.fold_split(phantoms, ["a", "b"], None)["test"] == []
    real_only = tumour_loo.fold_split(phantoms, ["b", "neg"], "a", train_phantoms=False)
    assert real_only["train"] == ["b", "neg"] and real_only["val"] == split["val"]
    with pytest.raises(DataError, match="among its training patients"):
        tumour_loo.fold_split(phantoms, ["a", "b"], "a")
    with pytest.raises(DataError, match="not found"):
        tumour_loo.fold_split(phantoms[:3], ["b"], "a")


def test_too_few_tumour_patients_refused(tmp_path):
    folder = tmp_path / "hosp"
    # phantom patient 2 of a cohort never has a lesion: one tumour patient, one without
    write_patients(folder, ["with", "without"], seed=3)
    assert has_tumour(folder / "with") and not has_tumour(folder / "without")
    with pytest.raises(DataError, match=">= 2 real patients with tumours"):
        tumour_loo.real_patients([folder])


@pytest.mark.slow
def test_phantoms_of_other_anatomy_are_refused(tmp_path):
    """Folds of one output folder share one phantom cohort: another anatomy needs another."""
    phantom.write_phantom_cohort(tmp_path / "phantoms", 1, seed=100, n_slices=8, size=32)
    varied = phantom.AnatomyOptions(varied_lesions=True)
    with pytest.raises(DataError, match="varied_lesions.*another --out"):
        tumour_loo.prepare_cohort(tmp_path, [], varied)
    cohort, ids = tumour_loo.prepare_cohort(tmp_path, [])  # the anatomy it was drawn with
    assert ids == ["phantom_001"] and (cohort / "phantom_001").exists()


def test_tumour_loo_smoke_resumes_and_exports(tmp_path):
    hosp_a, hosp_b = tmp_path / "hosp_a", tmp_path / "hosp_b"
    write_patients(hosp_a, ["pat_a", "pat_neg"], seed=3)  # pat_neg: no lesion (patient 2)
    write_patients(hosp_b, ["pat_b"], seed=5)
    assert has_tumour(hosp_a / "pat_a") and has_tumour(hosp_b / "pat_b")
    out = tmp_path / "loo"
    phantom.write_phantom_cohort(out / "phantoms", 5, seed=100, n_slices=16, size=64)
    val = [p.name for p in io.list_case_paths(out / "phantoms") if has_tumour(p)][:1]
    recipe = tumour_loo.Recipe(profile="smoke", epochs=1, overrides=TINY, val_phantoms=val)
    export = tmp_path / "tumour.keras"

    table = tumour_loo.run_tumour_loo([hosp_a, hosp_b], out, recipe, final_export=export)

    per_patient = table[table["case_id"] != "cohort"]
    assert sorted(per_patient["case_id"]) == ["pat_a", "pat_b"]  # the negative is never tested
    for test_id in ("pat_a", "pat_b"):
        split = json.loads((out / f"fold_{test_id}" / "split.json").read_text())
        assert split["test"] == [test_id] and test_id not in split["train"]
        assert "pat_neg" in split["train"]  # tumour-free patients train as negatives
    pooled = table[table["case_id"] == "cohort"].iloc[0]
    assert pooled["n_true_lesions"] == per_patient["n_true_lesions"].sum() > 0
    assert (out / "per_patient_metrics.csv").exists()
    final = json.loads((out / "final" / "split.json").read_text())
    assert {"pat_a", "pat_b", "pat_neg"} <= set(final["train"]) and final["test"] == []
    assert export.exists() and export.with_suffix(".keras.json").exists()

    # a second run reuses the finished folds: same table, no training
    mtime = (out / "fold_pat_a" / "last.keras").stat().st_mtime
    again = tumour_loo.run_tumour_loo([hosp_a, hosp_b], out, recipe)
    assert (out / "fold_pat_a" / "last.keras").stat().st_mtime == mtime
    assert again["tumour_dice"].tolist() == pytest.approx(table["tumour_dice"].tolist())

    # the folds' out-of-fold probabilities are kept once and read back by research.tumour_oof
    from liverseg_helpers.research import tumour_oof

    choices, lesions = tumour_oof.run_tumour_oof(out, seen=True)
    assert sorted(set(choices["patient"])) == ["pat_a", "pat_b"]
    assert set(choices["way"]) == {"threshold", "gated rule", "own best threshold"}
    assert sorted(set(lesions["patient"])) == ["pat_a", "pat_b"]
    assert lesions["max_prob"].between(0, 1).all()
    cached = out / tumour_oof.PROBS_DIR / "pat_a.npy"
    mtime = cached.stat().st_mtime
    pat_a = io.load_case(hosp_a / "pat_a")
    kept = tumour_oof.fold_patient(out, "pat_a", pat_a).probs
    assert cached.stat().st_mtime == mtime  # read back, not predicted again
    later = mtime + 10  # a fold trained again: its probabilities are predicted again
    os.utime(out / "fold_pat_a" / "last.keras", (later, later))
    again = tumour_oof.fold_patient(out, "pat_a", pat_a).probs
    assert cached.stat().st_mtime > mtime
    assert np.array_equal(kept, again)  # the same model: the same probabilities
    assert (out / "oof_choices.csv").exists() and (out / "oof_lesions.csv").exists()
    seen = pd.read_csv(out / "oof_seen.csv")
    assert sorted(zip(seen["fold"], seen["patient"], strict=True)) == [
        ("pat_a", "pat_b"),
        ("pat_b", "pat_a"),
    ]


def test_pasted_patients_train_their_fold_only(tmp_path):
    """``--paste-lesions``: each fold trains on pasted patients made of its training patients
    alone, never of its test patient."""
    hosp = tmp_path / "hosp"
    write_patients(hosp, ["pat_a", "pat_neg", "pat_b"], seed=3)  # pat_neg: no lesion
    out = tmp_path / "loo"
    phantom.write_phantom_cohort(out / "phantoms", 5, seed=100, n_slices=16, size=64)
    val = [p.name for p in io.list_case_paths(out / "phantoms") if has_tumour(p)][:1]
    recipe = tumour_loo.Recipe(
        profile="smoke", epochs=1, overrides=TINY, val_phantoms=val, pasted_copies=1
    )

    tumour_loo.run_tumour_loo([hosp], out, recipe)

    for test_id, donor in (("pat_a", "pat_b"), ("pat_b", "pat_a")):
        train = json.loads((out / f"fold_{test_id}" / "split.json").read_text())["train"]
        pasted = sorted(t for t in train if t.startswith("paste-"))
        hosts = sorted({donor, "pat_neg"})
        assert pasted == [f"paste-{test_id}_{host}_1" for host in hosts]
        record = json.loads((out / "pasted" / test_id / "pasted.json").read_text())
        assert record["donors"] == [donor] and record["hosts"] == hosts
        for case in record["cases"].values():
            assert all(lesion.startswith(f"{donor} lesion") for lesion in case["lesions"])
