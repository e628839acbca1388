"""One command for several seeds (multiseed.py): each seed's runs, then their average."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from test_crossval import TINY, write_tiny_cohort  # noqa: E402

from liverseg_helpers import cli, config  # noqa: E402
from liverseg_helpers.errors import DataError  # noqa: E402
from liverseg_helpers.research import crossval, multiseed, reference  # noqa: E402
from liverseg_helpers.training import model_files  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_smoke(monkeypatch):
    """The smoke profile shrunk to seconds per run, so the CLI itself can be tested."""
    small = dataclasses.replace(
        config.PROFILES["smoke"], **TINY, phantom_patients=2, phantom_slices=12, phantom_size=48
    )
    monkeypatch.setitem(config.PROFILES, "smoke", small)


def crossval_argv(data, out, *more) -> list[str]:
    return ["crossval", "--data", str(data), "--out", str(out), "--profile", "smoke", *more]


def test_seed_dirs_one_folder_per_seed_and_no_seed_twice(tmp_path):
    assert multiseed.seed_dirs(tmp_path, [42]) == [tmp_path]
    assert multiseed.seed_dirs(tmp_path, [42, 43]) == [tmp_path / "seed_42", tmp_path / "seed_43"]
    with pytest.raises(DataError, match="seeds must differ"):
        multiseed.seed_dirs(tmp_path, [42, 42])
    with pytest.raises(DataError, match="at least one seed"):
        multiseed.seed_dirs(tmp_path, [])


def test_one_command_scores_the_average_of_the_seeds_unseen_folds(tmp_path, tiny_smoke, capsys):
    data = write_tiny_cohort(tmp_path / "data", ["pat_a", "pat_b"])
    out = tmp_path / "cv"
    argv = crossval_argv(data, out, "--variant", "baseline", "--seed", "1", "2", "--int8")
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ensemble_baseline_int8 (seeds [1, 2]):" in printed
    for seed in (1, 2):
        saved = json.loads(
            (out / f"seed_{seed}" / "baseline" / "fold_pat_a" / "config.json").read_text()
        )
        assert saved["seed"] == seed
    table = (out / "ensemble_baseline_int8" / "per_patient_metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:3]] == ["pat_a", "pat_b"]
    for test in ("pat_a", "pat_b"):
        fold = out / "ensemble_baseline_int8" / f"fold_{test}"
        members = json.loads((fold / "metrics.json").read_text())["members"]
        # One member per seed, each the fold that never saw this patient.
        assert members == [
            str(out / f"seed_{s}" / "baseline" / f"fold_{test}" / "last.keras") for s in (1, 2)
        ]
        assert model_files.read_sidecar(fold / "ensemble.keras")["weights"] == "int8"
    # Run again: the finished folds are reused, not trained again.
    trained = out / "seed_2" / "baseline" / "fold_pat_b" / "last.keras"
    before = trained.stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert trained.stat().st_mtime_ns == before
    # A finished fold of another seed is refused, not reported under this seed's name.
    with pytest.raises(DataError, match="holds another training"):
        crossval.run_leave_one_out(data, out / "seed_1", "smoke", 5, ["baseline"])


def test_one_command_ships_the_average_of_the_seeds_reference_models(tmp_path, tiny_smoke):
    data = write_tiny_cohort(tmp_path / "data", ["pat_a", "pat_b"])
    out, dest = tmp_path / "ref", tmp_path / "shipped.keras"
    argv = crossval_argv(data, out, "--reference", "baseline", "--seed", "1", "2")
    assert cli.main([*argv, "--export", str(dest)]) == 0
    references = [out / f"seed_{s}" / "reference_baseline" / "last.keras" for s in (1, 2)]
    for seed, path in zip((1, 2), references, strict=True):
        assert json.loads((path.parent / "config.json").read_text())["seed"] == seed
        used = json.loads((path.parent / "split.json").read_text())
        assert {"pat_a", "pat_b"} <= set(used["train"])  # the shipped model sees every patient
    shipped = model_files.load_model(dest, compile=False)
    x = np.random.default_rng(5).random((2, 32, 32, 1)).astype("float32")
    each = [model_files.load_model(p, compile=False).predict(x, verbose=0) for p in references]
    np.testing.assert_allclose(shipped.predict(x, verbose=0), np.mean(each, axis=0), atol=1e-5)

    # Run again: both references are reused (a 3-hour command may be stopped and rerun).
    before = [p.stat().st_mtime_ns for p in references]
    assert cli.main([*argv, "--export", str(dest)]) == 0
    assert [p.stat().st_mtime_ns for p in references] == before
    # A folder holding another seed's training is refused, neither reused nor mixed.
    with pytest.raises(DataError, match="holds another training"):
        reference.train_reference(data, out / "seed_1", "baseline", "smoke", seed=9)


def test_reference_trains_on_every_patient_of_several_sources(tmp_path, tiny_smoke):
    hosp_a = write_tiny_cohort(tmp_path / "hosp_a", ["pat_a", "pat_b"])
    hosp_b = write_tiny_cohort(tmp_path / "hosp_b", ["pat_c"], seed=8)
    out, dest = tmp_path / "ref", tmp_path / "shipped.keras"
    argv = crossval_argv(hosp_a, out, "--data", str(hosp_b), "--reference", "baseline")
    assert cli.main([*argv, "--export", str(dest)]) == 0
    used = json.loads((out / "reference_baseline" / "split.json").read_text())
    assert {"pat_a", "pat_b", "pat_c"} <= set(used["train"])
    assert used["test"] == []
    assert model_files.load_model(dest, compile=False).count_params() > 0


def test_export_without_reference_and_repeated_seeds_are_refused(tmp_path, capsys):
    argv = crossval_argv(tmp_path, tmp_path / "cv", "--variant", "baseline")
    assert cli.main([*argv, "--export", str(tmp_path / "m.keras")]) == 2
    assert "--export saves a model trained with --reference" in capsys.readouterr().err
    assert cli.main([*argv, "--seed", "1", "2", "--export", str(tmp_path / "m.keras")]) == 2
    assert "add --reference" in capsys.readouterr().err
    assert cli.main([*argv, "--seed", "1", "1"]) == 2
    assert "seeds must differ" in capsys.readouterr().err
    assert cli.main([*argv, "--seed", "1", "2", "--checkpoint", "best"]) == 2
    assert "at their last checkpoint" in capsys.readouterr().err
    # No recipe named: refused, instead of starting every recipe of the ablation table.
    assert cli.main(crossval_argv(tmp_path, tmp_path / "cv")) == 2
    assert "name the recipes: --variant V" in capsys.readouterr().err
    # --int8 with nothing exported or averaged would be silently ignored.
    assert cli.main([*argv, "--int8"]) == 2
    assert "--int8 stores the weights of an exported or averaged model" in capsys.readouterr().err
    # A typo in a profile is a one-line error, not a traceback.
    assert cli.main([*argv, "--profile", "smok"]) == 2
    assert "unknown profile 'smok'" in capsys.readouterr().err
