"""A run folder is reused only for the training it records: seed, profile, recipe, preprocessing."""

import json

import pytest

from liverseg_helpers.errors import DataError
from liverseg_helpers.research import tumour_loo
from liverseg_helpers.training.run_reuse import (
    STATE_FILE,
    check_same_training,
    started_same_training,
)

OVERRIDES = {"image_size": 96, "base_filters": 8}


def write_run(run_dir, preprocess=None, resumable=False):
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"seed": 42, "profile": "course", "overrides": OVERRIDES}
    if preprocess is not None:
        config["preprocess"] = preprocess
    (run_dir / "config.json").write_text(json.dumps(config))
    if resumable:
        (run_dir / STATE_FILE).write_text("{}")
        (run_dir / "last.keras").write_bytes(b"")
    return run_dir


def test_the_same_training_is_reused(tmp_path):
    run = write_run(tmp_path / "run", {"liver_reference_hu": 100.0}, resumable=True)
    check_same_training(run, 42, "course", OVERRIDES, {"liver_reference_hu": 100.0})
    assert started_same_training(run, 42, "course", OVERRIDES, {"liver_reference_hu": 100.0})


@pytest.mark.parametrize(
    "saved, wanted",
    [
        (None, {"liver_reference_hu": 100.0}),  # a folder from before the setting existed
        ({}, {"liver_reference_hu": 100.0}),
        ({"liver_reference_hu": 100.0}, {}),
        ({"liver_reference_hu": 100.0}, {"liver_reference_hu": 80.0}),
    ],
)
def test_other_preprocessing_is_refused_with_the_folder_named(tmp_path, saved, wanted):
    run = write_run(tmp_path / "run", saved, resumable=True)
    with pytest.raises(DataError, match="run.*preprocess"):
        check_same_training(run, 42, "course", OVERRIDES, wanted)
    with pytest.raises(DataError, match="preprocess"):
        started_same_training(run, 42, "course", OVERRIDES, wanted)


def test_a_folder_without_preprocess_recorded_matches_the_defaults(tmp_path):
    run = write_run(tmp_path / "run", None)
    check_same_training(run, 42, "course", OVERRIDES, {})


def test_another_seed_is_refused(tmp_path):
    run = write_run(tmp_path / "run", {})
    with pytest.raises(DataError, match="seed"):
        check_same_training(run, 43, "course", OVERRIDES, {})


def test_an_unfinished_folder_is_not_resumed(tmp_path):
    run = write_run(tmp_path / "run", {"liver_reference_hu": 80.0})
    assert not started_same_training(run, 42, "course", OVERRIDES, {})


def test_tumour_loo_refuses_a_finished_fold_of_another_preprocessing(tmp_path):
    run = write_run(tmp_path / "fold_1720", {})
    (run / "metrics.json").write_text("{}")
    recipe = tumour_loo.Recipe(preprocess={"liver_reference_hu": 100.0})
    split = {"train": ["2022"], "val": ["phantom_007"], "test": ["1720"]}
    cfg = tumour_loo.train_config(tmp_path, run, split, recipe, tmp_path / "cache")
    cfg.overrides = dict(OVERRIDES)
    with pytest.raises(DataError, match="fold_1720.*liver_reference_hu"):
        tumour_loo.train_or_resume(cfg)
