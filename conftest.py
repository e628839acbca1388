"""pytest set-up shared by the unit tests and the nbval run of the notebooks.

nbval cannot pass papermill parameters, so the notebooks read the smoke profile and a
throw-away run folder from the environment (see ``liverseg_helpers.config``).

The tests run on two pytest-xdist workers (``-n 2 --dist loadfile`` in pyproject.toml; ``-n 0``
runs them in one process). Each test module stays on one worker, so its module fixtures are
computed once, and the notebooks stay together, in order, on one worker, since a chapter reads
what the one before it wrote. Each worker has its own run folder.
"""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("LIVERSEG_PROFILE", "smoke")
os.environ.setdefault("LIVERSEG_RUN_DIR", tempfile.mkdtemp(prefix="liverseg-nbval-"))
os.environ.setdefault("LIVERSEG_STATIC_VIEWER", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
# `liverseg predict` may export ONNX twins of the test models (--runtime auto): not into ~/.cache
os.environ.setdefault("LIVERSEG_ONNX_CACHE", str(Path(os.environ["LIVERSEG_RUN_DIR"]) / "onnx"))

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:  # the controller's run folder, inherited: one subfolder per worker
    _worker_dir = Path(os.environ["LIVERSEG_RUN_DIR"]) / _WORKER
    _worker_dir.mkdir(parents=True, exist_ok=True)
    os.environ["LIVERSEG_RUN_DIR"] = str(_worker_dir)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, present only with it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile``, with the notebooks one unit: run in order on one worker."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class NotebooksTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "notebooks" if scope.endswith(".ipynb") else scope

    return NotebooksTogether(config, log)
