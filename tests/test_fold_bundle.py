"""Leave-one-out folds trained elsewhere: --pack here, train from the bundle, --unpack, score.

The training side runs in a child process as on the lent GPU machine: Keras on JAX, and no
TensorFlow, pydicom, SimpleITK, nibabel or highdicom (none of them is installed there).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("jax", reason="JAX is installed with the dev extra: pip install -e '.[dev]'")

from test_crossval import TINY, write_tiny_cohort  # noqa: E402

from liverseg_helpers.errors import DataError, OutputExistsError  # noqa: E402
from liverseg_helpers.research import crossval, fold_bundle  # noqa: E402

# The lent machine's Python lacks these (device KINDS.md); the training side must not need them.
ABSENT_THERE = [
    *("tensorflow", "pydicom", "SimpleITK", "nibabel", "highdicom", "nrrd", "cc3d"),
    *("ipywidgets", "papermill", "nbformat", "IPython"),
]

CHILD = """
import sys
for name in {absent!r}:
    sys.modules[name] = None  # from here on, importing it raises ImportError
from liverseg_helpers.research import fold_bundle
sys.exit(fold_bundle.main(sys.argv[1:]))
"""


def train_there(bundle: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LIVERSEG_RUN_DIR"}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", CHILD.format(absent=ABSENT_THERE), str(bundle), "--out", str(out)]
        + list(more),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=bundle.parent,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_folds_packed_trained_without_tensorflow_unpacked_and_scored(tmp_path):
    data = write_tiny_cohort(tmp_path / "data", ["pat_a", "pat_b"])
    out, bundle, files = tmp_path / "cv", tmp_path / "bundle", tmp_path / "files"
    overrides = {**TINY, "epochs": 2}
    fold_bundle.pack_folds(data, out, ["baseline"], bundle, "smoke", overrides=overrides)
    plan = fold_bundle.read_plan(bundle)
    assert [f["run"] for f in plan["folds"]] == ["baseline/fold_pat_a", "baseline/fold_pat_b"]
    for fold in plan["folds"]:
        split = fold["config"]["split"]
        test = split["test"][0]
        assert test not in split["train"] + split["val"]
        cached = json.loads((bundle / fold["cache"] / "manifest.json").read_text())["cases"]
        assert set(split["train"] + split["val"]) <= set(cached)
    assert not list(bundle.rglob("*.dcm"))  # slices only: no CT travels

    # A budget of 0 s starts no fold.
    done = train_there(bundle, files, "--budget-s", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped before baseline/fold_pat_a" in done.stdout
    assert not list(files.glob("*.tar"))

    with pytest.raises(DataError, match="no folds of"):
        fold_bundle.train_bundle(bundle, files, variants=["six"])
    done = train_there(bundle, files, "--variant", "baseline")
    assert done.returncode == 0, done.stderr[-3000:]
    archives = sorted(p.name for p in files.glob("*.tar"))
    assert archives == ["baseline__fold_pat_a.tar", "baseline__fold_pat_b.tar"]
    with tarfile.open(files / archives[0]) as tar:
        member = tar.extractfile("baseline/fold_pat_a/config.json")
        assert json.load(member)["backend"] == "jax"

    placed = fold_bundle.unpack_folds(files, out)
    assert [p.name for p in placed] == ["fold_pat_a", "fold_pat_b"]
    fold_a = out / "baseline" / "fold_pat_a"
    model_hash, history = sha256(fold_a / "last.keras"), (fold_a / "history.csv").read_text()
    assert len(history.strip().splitlines()) == 3  # header + 2 epochs trained there

    result = crossval.run_leave_one_out(
        data, out, "smoke", variants=["baseline"], overrides=overrides
    )
    assert sorted(result.per_fold["case_id"]) == ["pat_a", "pat_b"]
    assert result.per_fold["dice"].notna().all()
    # Scored, not trained again here: the model and history are those that came back.
    assert sha256(fold_a / "last.keras") == model_hash
    assert (fold_a / "history.csv").read_text() == history
    assert (fold_a / "metrics.json").exists()

    # Every fold is finished now: nothing left to pack.
    with pytest.raises(DataError, match="nothing to pack"):
        fold_bundle.pack_folds(data, out, ["baseline"], bundle, "smoke", overrides=overrides)
    # Unpacking again would overwrite a training: refused, naming the folder.
    with pytest.raises(OutputExistsError, match="fold_pat_a"):
        fold_bundle.unpack_folds(files, out)


def test_unpack_refuses_unsafe_and_foreign_archives(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    evil = files / "six__fold_x.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        tar.addfile(info)
    with pytest.raises(DataError, match="six__fold_x.tar"):
        fold_bundle.unpack_folds(files, tmp_path / "cv")
    assert not (tmp_path / "escape.txt").exists()

    evil.unlink()
    other = files / "six__fold_y.tar"
    note = tmp_path / "note.txt"
    note.write_text("not a run folder")
    with tarfile.open(other, "w") as tar:
        tar.add(note, arcname="six/somewhere_else/note.txt")
    with pytest.raises(DataError, match="not a fold's run folder"):
        fold_bundle.unpack_folds(files, tmp_path / "cv")

    with pytest.raises(DataError, match="no fold archives"):
        fold_bundle.unpack_folds(tmp_path / "empty", tmp_path / "cv")


def test_train_bundle_needs_a_plan(tmp_path):
    with pytest.raises(DataError, match="plan.json"):
        fold_bundle.train_bundle(tmp_path, tmp_path / "out")


def test_pack_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "thesis.tex").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a fold bundle"):
        fold_bundle.pack_folds(tmp_path / "data", tmp_path / "cv", ["baseline"], keep, "smoke")
    assert (keep / "thesis.tex").exists()


@pytest.mark.parametrize(
    "more, message",
    [
        (["--pack", "b", "--unpack", "f", "--variant", "six"], "one at a time"),
        (["--pack", "b", "--variant", "six", "--seed", "1", "2"], "one seed"),
        (["--pack", "b"], "needs the recipes"),
        (["--pack", "b", "--variant", "no_such_recipe"], "unknown variants"),
    ],
)
def test_crossval_pack_options_are_checked(tmp_path, capsys, more, message):
    from liverseg_helpers import cli

    argv = ["crossval", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "cv"), *more]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_recipe_that_starts_from_a_model_file_is_not_packed(tmp_path):
    """The bundle carries slices and a plan, not the shipped model a fine-tuning recipe
    starts from: packing one would train it from random weights on the GPU."""
    with pytest.raises(DataError, match=r"\['six_tuned'\] start from a model file"):
        fold_bundle.pack_folds(tmp_path / "data", tmp_path / "out", ["six_tuned"], tmp_path / "b")
    assert not (tmp_path / "out").exists()
