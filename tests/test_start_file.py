"""Where fine-tuning starts: the former shipped file (from git history) and other runs' folds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from test_crossval import TINY, write_tiny_cohort  # noqa: E402

from liverseg_helpers.errors import DataError, ModelFileError  # noqa: E402
from liverseg_helpers.research import crossval, start_file  # noqa: E402
from liverseg_helpers.research.variants import REPO_ROOT  # noqa: E402
from liverseg_helpers.training import model_files  # noqa: E402


def test_a_fold_starts_from_the_other_runs_fold_that_never_saw_its_patient(tmp_path):
    data = write_tiny_cohort(tmp_path / "data", ["pat_a", "pat_b"])
    crossval.run_leave_one_out(
        data, tmp_path / "pre", "smoke", variants=["baseline"], overrides=TINY, folds=["pat_a"]
    )
    start = tmp_path / "pre" / "baseline"
    # At a learning rate too small to move them, the tuned fold ends on its start's weights.
    frozen = {**TINY, "learning_rate": 1e-12}

    def tune(fold: str) -> None:
        crossval.run_leave_one_out(
            data,
            tmp_path / "tuned",
            "smoke",
            43,
            ["baseline"],
            overrides=frozen,
            folds=[fold],
            start_from=start,
        )

    tune("pat_a")
    fold = tmp_path / "tuned" / "baseline" / "fold_pat_a"
    assert json.loads((fold / "config.json").read_text())["init_weights"] == str(
        start / "fold_pat_a" / "last.keras"
    )
    before = model_files.load_model(start / "fold_pat_a" / "last.keras", compile=False)
    after = model_files.load_model(fold / "last.keras", compile=False)
    for old, new in zip(before.get_weights(), after.get_weights(), strict=True):
        np.testing.assert_allclose(new, old, atol=1e-6)

    # No fold testing pat_b in the start run: refused, naming the missing model.
    with pytest.raises(DataError, match=r"fold_pat_b/last.keras: missing; --start-from"):
        tune("pat_b")
    # A start fold that trained on the patient (here: pat_a's fold posing as pat_b's) leaks.
    shutil.copytree(start / "fold_pat_a", start / "fold_pat_b")
    with pytest.raises(DataError, match="test patient pat_b was used in training"):
        start_file.fold_start_weights(start, "pat_b")


def test_the_start_file_outside_a_git_clone_is_refused_with_the_command_to_get_it(tmp_path):
    with pytest.raises(ModelFileError, match=r"git could not restore it.*git show 64704e4\w+:"):
        start_file.ensure_start_file(tmp_path)
    assert not (tmp_path / start_file.START_FILE).exists()  # nothing half-written


def test_a_start_file_with_other_bytes_is_refused(tmp_path):
    wrong = tmp_path / start_file.START_FILE
    wrong.parent.mkdir(parents=True)
    wrong.write_bytes(b"not the network")
    with pytest.raises(ModelFileError, match="SHA-256 .* is not the starting file's"):
        start_file.ensure_start_file(tmp_path)


def _has_start_commit() -> bool:
    command = [
        "git",
        "-C",
        str(REPO_ROOT),
        "cat-file",
        "-e",
        f"{start_file.START_COMMIT}^{{commit}}",
    ]
    try:
        return subprocess.run(command, capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _has_start_commit(), reason="not a git clone with the course's history")
def test_the_fine_tuning_recipes_start_from_the_former_shipped_file():
    """Not from models/liver_unet.keras, which holds the networks they produced."""
    from liverseg_helpers import config
    from liverseg_helpers.research.variants import VARIANTS
    from liverseg_helpers.training import model as model_mod

    for name in ("six_tuned", "six_tuned_2", "six_tuned_3"):
        variant = VARIANTS[name]
        assert variant.init_weights.startswith(start_file.START_FILE + ":member_")
    path = start_file.ensure_start_file(REPO_ROOT)  # restored from git if missing
    variant = VARIANTS["six_tuned"]
    profile = config.get_profile("real", **variant.overrides)
    net = model_mod.model_from_profile(profile)
    model_files.load_initial_weights(net, variant.init_weights_path)
    assert model_files.read_sidecar(path)["preprocess"]["image_size"] == profile.image_size


def test_the_coronal_fine_tuning_recipe_fits_the_shipped_coronal_network():
    """Its network and slices are those of the file it starts from, so it can load it."""
    from liverseg_helpers import config
    from liverseg_helpers.inference.pipeline import REFERENCE_CORONAL_MODEL
    from liverseg_helpers.research.variants import VARIANTS
    from liverseg_helpers.training import model as model_mod

    variant = VARIANTS["six_coronal_tuned"]
    assert variant.init_weights_path == f"{REFERENCE_CORONAL_MODEL}:member_1"
    profile = config.get_profile("real", **variant.overrides)
    net = model_mod.model_from_profile(profile)
    model_files.load_initial_weights(net, variant.init_weights_path)
    sidecar = model_files.read_sidecar(REFERENCE_CORONAL_MODEL)
    assert sidecar["preprocess"]["view"] == variant.preprocess["view"] == "coronal"
    assert sidecar["preprocess"]["target_spacing_mm"] == variant.preprocess["target_spacing_mm"]
    assert sidecar["preprocess"]["image_size"] == profile.image_size
