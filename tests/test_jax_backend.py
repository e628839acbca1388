"""The course's commands with ``KERAS_BACKEND=jax`` and no TensorFlow at all.

A lent GPU machine has JAX but no TensorFlow, so ``liverseg train``, ``predict`` and
``evaluate`` must work there through ``keras.ops`` and a ``PyDataset``. The backend is fixed
when Keras is first imported, so the commands run in a child process in which any import of
TensorFlow fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax", reason="JAX is installed with the dev extra: pip install -e '.[dev]'")

CHILD = """
import contextlib, io, json, sys
sys.modules["tensorflow"] = None  # from here on, `import tensorflow` raises ImportError
import keras
from liverseg_helpers.training import train
from liverseg_helpers.cli import main

def run(argv):
    with contextlib.redirect_stdout(io.StringIO()):
        if main(argv) != 0:
            sys.exit(f"liverseg {argv[0]} failed")

run(["train", "--profile", "smoke", "--epochs", "4", "--run-dir", "runs/smoke"])
split = json.load(open("runs/smoke/split.json"))
case = f"{split['data_dir']}/{split['test'][0]}"  # the smoke split's test patient
run(["predict", case, "--model", "runs/smoke/last.keras", "-o", "pred.nii.gz"])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["evaluate", "pred.nii.gz", case, "--json"])
print(json.dumps({
    "rc": rc,
    "backend": keras.backend.backend(),
    "split": split,
    "model_backend": json.load(open("runs/smoke/last.keras.json"))["backend"],
    "loss": train.read_history("runs/smoke")["loss"],
    "metrics": json.loads(out.getvalue()),
    "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
}))
"""


@pytest.mark.slow
def test_train_predict_evaluate_with_jax_and_without_tensorflow(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIVERSEG_RUN_DIR"}  # conftest's, for nbval
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    assert result["model_backend"] == "jax"
    assert not result["tensorflow_loaded"]
    assert len(result["loss"]) == 4
    assert result["loss"][-1] < result["loss"][0]
    assert result["rc"] == 0
    # Four smoke epochs learn a rough liver: 0.60 with JAX on a 2-core CPU (an empty mask: 0).
    assert result["metrics"]["dice"] > 0.3, result["metrics"]
