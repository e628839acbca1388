"""The networks fine-tuning starts from: the former shipped file, and other runs' fold models.

The ``six_tuned`` recipes fine-tune the axial file shipped until 2026-12-07: three
``aligned_wide`` networks trained on the two 3D-IRCADb patients and 8 phantoms. The networks
they produced took its place in ``models/liver_unet.keras`` (the liver files must stay within
35 MB together), so the starting file lives on in git history, and :func:`ensure_start_file`
writes it (with its sidecar) under ``runs/start/`` the first time a recipe needs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from liverseg_helpers.atomic import atomic_file
from liverseg_helpers.data.download import hash_file
from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.preparation.split import read_split_without

#: Where the starting file is written, relative to the repository root.
START_FILE = "runs/start/liver_unet_aligned_wide.keras"
#: The commit whose ``models/liver_unet.keras`` (and sidecar) it is.
START_COMMIT = "64704e4458a3534acb4c4e76e3c9f722b0cf240c"
#: Its SHA-256, so that a wrong or damaged file is refused instead of trained on.
START_SHA256 = "659d1d62b7845a457bf653e1e795b6e7f5016aba37879c680307324cbc481fb2"


def _git_show(repo_root: Path, path_in_repo: str, dest: Path) -> None:
    """Write ``START_COMMIT:path_in_repo`` to ``dest`` atomically (ModelFileError if git fails)."""
    command = ["git", "-C", str(repo_root), "show", f"{START_COMMIT}:{path_in_repo}"]
    try:
        blob = subprocess.run(command, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", b"") or str(err).encode()
        raise ModelFileError(
            f"{dest}: missing, and git could not restore it ({detail.decode().strip()}); in a "
            f"clone of the course run: git show {START_COMMIT}:{path_in_repo} > {dest}"
        ) from err
    with atomic_file(dest) as tmp:
        tmp.write_bytes(blob)


def ensure_start_file(repo_root: Path) -> Path:
    """The starting file's path, written from git history first if it is not there yet.

    Raises:
        ModelFileError: git cannot restore it (no clone, history cut short), or the file on
            disk is not the one the recipes were defined with (SHA-256 differs).
    """
    path = repo_root / START_FILE
    if not path.is_file():
        _git_show(repo_root, "models/liver_unet.keras.json", path.with_name(path.name + ".json"))
        _git_show(repo_root, "models/liver_unet.keras", path)
    digest = hash_file(path, "sha256", progress=False)
    if digest != START_SHA256:
        raise ModelFileError(
            f"{path}: SHA-256 {digest[:12]}... is not the starting file's {START_SHA256[:12]}...; "
            f"delete it and it is restored from commit {START_COMMIT}"
        )
    return path


def fold_start_weights(start_from: str | os.PathLike, test_id: str) -> str:
    """The network a leave-one-out fold starts from with ``crossval --start-from``.

    It is the last model of the fold of another run (``start_from``, e.g.
    ``runs/ircad_start/aligned_wide``) that tests the same patient, so the whole recipe,
    first training and fine-tuning, never sees that patient.

    Raises:
        DataError: That fold has no finished model, or its split trained or validated on the
            test patient (the fine-tuned fold would have seen it).
    """
    run_dir = Path(start_from) / f"fold_{test_id}"
    model = run_dir / "last.keras"
    if not model.is_file():
        raise DataError(f"{model}: missing; --start-from needs a finished fold testing {test_id}")
    read_split_without(run_dir / "split.json", test_id)
    return str(model)
