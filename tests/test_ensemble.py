"""Ensembles (ensemble.py): averaged models, their export, and leak-checked fold members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverseg_helpers.errors import DataError, ModelFileError  # noqa: E402
from liverseg_helpers.research import ensemble  # noqa: E402
from liverseg_helpers.training import model as model_lib  # noqa: E402
from liverseg_helpers.training import model_files  # noqa: E402

SETTINGS = {"image_size": 32, "window_level_hu": 50.0}


def tiny_unet(seed: int, size: int = 32) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return model_lib.build_unet((size, size, 1), base_filters=4, depth=2)


def test_average_models_outputs_the_mean_of_its_members():
    a, b = tiny_unet(1), tiny_unet(2)
    x = np.random.default_rng(0).random((3, 32, 32, 1)).astype("float32")
    expected = (a.predict(x, verbose=0) + b.predict(x, verbose=0)) / 2
    averaged = ensemble.average_models([a, b])
    np.testing.assert_allclose(averaged.predict(x, verbose=0), expected, atol=1e-6)
    assert not np.allclose(expected, a.predict(x, verbose=0))  # the members really differ


def test_average_models_refuses_mismatched_members():
    with pytest.raises(ValueError, match="shape"):
        ensemble.average_models([tiny_unet(1, 32), tiny_unet(2, 64)])
    with pytest.raises(ValueError, match="at least one"):
        ensemble.average_models([])


def test_export_ensemble_round_trips_and_checks_preprocessing(tmp_path):
    paths = [
        model_files.save_model(tiny_unet(seed), tmp_path / f"m{seed}.keras", SETTINGS)
        for seed in (1, 2)
    ]
    dest = ensemble.export_ensemble(paths, tmp_path / "ens.keras")
    loaded = model_files.load_model(dest, compile=False)
    x = np.random.default_rng(1).random((2, 32, 32, 1)).astype("float32")
    members = [model_files.load_model(p, compile=False) for p in paths]
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    assert model_files.read_sidecar(dest)["preprocess"] == SETTINGS

    other = model_files.save_model(
        tiny_unet(3), tmp_path / "other.keras", {**SETTINGS, "window_level_hu": 70.0}
    )
    with pytest.raises(ModelFileError, match="other.keras: preprocess"):
        ensemble.export_ensemble([paths[0], other], tmp_path / "bad.keras")
    assert not (tmp_path / "bad.keras").exists()


def _fake_fold(root: Path, variant: str, test_id: str, train: list[str]) -> None:
    fold = root / variant / f"fold_{test_id}"
    fold.mkdir(parents=True)
    (fold / "last.keras").write_bytes(b"model")
    (fold / "split.json").write_text(json.dumps({"train": train, "val": ["phantom_001"]}))


def test_fold_members_refuse_a_fold_that_saw_the_test_patient(tmp_path):
    _fake_fold(tmp_path / "seed42", "lobe", "p1", ["p2"])
    _fake_fold(tmp_path / "seed43", "lobe", "p1", ["p1", "p2"])
    roots = [tmp_path / "seed42", tmp_path / "seed43"]
    assert ensemble.fold_members(roots[:1], "lobe", "p1") == [
        tmp_path / "seed42/lobe/fold_p1/last.keras"
    ]
    with pytest.raises(DataError, match="p1 was used in training"):
        ensemble.fold_members(roots, "lobe", "p1")
    with pytest.raises(DataError, match="no finished fold"):
        ensemble.fold_members(roots, "lobe", "p2")


def test_fold_members_mix_recipes_one_member_per_folder_and_variant(tmp_path):
    for seed in ("seed42", "seed43"):
        _fake_fold(tmp_path / seed, "lobe", "p1", ["p2"])
        _fake_fold(tmp_path / seed, "long", "p1", ["p2"])
    _fake_fold(tmp_path / "seed44", "lobe", "p1", ["p2"])
    roots = [tmp_path / "seed42", tmp_path / "seed43"]
    members = ensemble.fold_members(roots, ["lobe", "long"], "p1")
    assert [p.relative_to(tmp_path).parts[:2] for p in members] == [
        ("seed42", "lobe"),
        ("seed42", "long"),
        ("seed43", "lobe"),
        ("seed43", "long"),
    ]
    assert ensemble.ensemble_name(["lobe", "long"]) == "ensemble_lobe+long"
    assert ensemble.ensemble_name("lobe") == ensemble.ensemble_name(["lobe"]) == "ensemble_lobe"
    with pytest.raises(DataError, match="seed44/long/fold_p1: no finished fold"):
        ensemble.fold_members([tmp_path / "seed44"], ["lobe", "long"], "p1")
    _fake_fold(tmp_path / "seed45", "lobe", "p1", ["p2"])
    _fake_fold(tmp_path / "seed45", "long", "p1", ["p1"])
    with pytest.raises(DataError, match="p1 was used in training"):
        ensemble.fold_members([tmp_path / "seed45"], ["lobe", "long"], "p1")


def test_cli_exports_the_reference_models_of_several_recipes(tmp_path, capsys):
    from liverseg_helpers import cli

    roots = [tmp_path / "seed42", tmp_path / "seed43"]
    seed = 0
    for root in roots:
        for variant in ("lobe", "long"):
            seed += 1
            model_files.save_model(
                tiny_unet(seed), root / f"reference_{variant}" / "last.keras", SETTINGS
            )
    dest = tmp_path / "shipped.keras"
    argv = ["crossval", "--data", str(tmp_path), "--out", str(tmp_path / "ens")]
    argv += ["--reference", "lobe", "--reference", "long", "--export", str(dest)]
    assert cli.main([*argv, "--ensemble-of", *map(str, roots)]) == 0
    members = [layer.name for layer in model_files.load_model(dest, compile=False).layers]
    assert members == ["image", "member_1", "member_2", "member_3", "member_4", "mean"]
    # --int8 ships the same average with int8 kernels (test_quantize.py checks the file size).
    small = tmp_path / "shipped_int8.keras"
    assert cli.main([*argv[:-1], str(small), "--int8", "--ensemble-of", *map(str, roots)]) == 0
    assert model_files.read_sidecar(small)["weights"] == "int8"
    x = np.random.default_rng(3).random((2, 32, 32, 1)).astype("float32")
    float_probs = model_files.load_model(dest, compile=False).predict(x, verbose=0)
    int8_probs = model_files.load_model(small, compile=False).predict(x, verbose=0)
    assert np.abs(int8_probs - float_probs).max() < 0.01
    # Training takes one recipe at a time: two without --ensemble-of is an error, not a guess.
    assert cli.main(argv) == 2
    assert "several need --ensemble-of" in capsys.readouterr().err
    # --fov-range-mm records the fields of view the networks learnt from in the sidecar.
    ranged = tmp_path / "ranged.keras"
    fov = ["--fov-range-mm", "263", "453", "--ensemble-of", *map(str, roots)]
    assert cli.main([*argv[:-1], str(ranged), *fov]) == 0
    assert model_files.read_sidecar(ranged)["preprocess"] == {
        **model_files.read_sidecar(dest)["preprocess"],
        "fov_range_mm": [263.0, 453.0],
    }
    fov[1:3] = ["453", "263"]
    assert cli.main([*argv[:-1], str(tmp_path / "bad.keras"), *fov]) == 2
    assert "--fov-range-mm [453.0, 263.0]: fov_range_mm must be 0 < smallest" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "bad.keras").exists()
    assert cli.main([*argv[:-1], str(ranged), "--fov-range-mm", "263", "453"]) == 2
    assert "--fov-range-mm is recorded by --export with --ensemble-of" in capsys.readouterr().err


def test_fold_test_patient_checks_a_fold_and_every_member_of_an_ensemble(tmp_path):
    _fake_fold(tmp_path / "seed42", "lobe", "p1", ["p2"])
    _fake_fold(tmp_path / "seed43", "lobe", "p1", ["p1", "p2"])
    good = tmp_path / "seed42/lobe/fold_p1/last.keras"
    bad = tmp_path / "seed43/lobe/fold_p1/last.keras"
    assert ensemble.fold_test_patient(good) == "p1"
    with pytest.raises(DataError, match="seed43/lobe/fold_p1/split.json: test patient p1"):
        ensemble.fold_test_patient(bad)
    fold = tmp_path / "ens/ensemble_lobe/fold_p1"
    fold.mkdir(parents=True)
    (fold / "metrics.json").write_text(json.dumps({"members": [str(good)]}))
    assert ensemble.fold_test_patient(fold / "ensemble.keras") == "p1"
    (fold / "metrics.json").write_text(json.dumps({"members": [str(good), str(bad)]}))
    with pytest.raises(DataError, match="test patient p1 was used in training"):
        ensemble.fold_test_patient(fold / "ensemble.keras")
    with pytest.raises(DataError, match="not inside a crossval fold"):
        ensemble.fold_test_patient(tmp_path / "model.keras")
    # A member listed relative to another folder: the record is named, not a bare OSError.
    (fold / "metrics.json").write_text(json.dumps({"members": ["elsewhere/fold_p1/last.keras"]}))
    with pytest.raises(DataError, match="ensemble_lobe/fold_p1/metrics.json: member elsewhere"):
        ensemble.fold_test_patient(fold / "ensemble.keras")


def test_fold_training_patients_is_the_union_of_every_members_train_list(tmp_path):
    _fake_fold(tmp_path / "seed42", "lobe", "p1", ["p2", "phantom_002"])
    _fake_fold(tmp_path / "seed43", "lobe", "p1", ["p2", "phantom_003"])
    single = tmp_path / "seed42/lobe/fold_p1/last.keras"
    assert ensemble.fold_training_patients(single) == {"p2", "phantom_002"}
    fold = tmp_path / "ens/ensemble_lobe/fold_p1"
    fold.mkdir(parents=True)
    members = [str(single), str(tmp_path / "seed43/lobe/fold_p1/last.keras")]
    (fold / "metrics.json").write_text(json.dumps({"members": members}))
    trained = ensemble.fold_training_patients(fold / "ensemble.keras")
    assert trained == {"p2", "phantom_002", "phantom_003"}
    assert "phantom_001" not in trained  # the validation monitor is not training data
    # The test patient is still checked first.
    _fake_fold(tmp_path / "seed44", "lobe", "p1", ["p1"])
    with pytest.raises(DataError, match="test patient p1 was used in training"):
        ensemble.fold_training_patients(tmp_path / "seed44/lobe/fold_p1/last.keras")
