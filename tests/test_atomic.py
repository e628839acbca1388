"""Atomic writes: the target holds the old content or the new one, never a partial one."""

import json

import pytest

from liverseg_helpers import atomic
from liverseg_helpers.errors import OutputExistsError


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    atomic.write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_temporary_name_keeps_the_suffixes(tmp_path):
    with atomic.atomic_file(tmp_path / "mask.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    with atomic.atomic_file(tmp_path / "model.keras", suffix=".keras") as tmp:
        assert tmp.suffix == ".keras"
        tmp.write_bytes(b"y")
    assert (tmp_path / "mask.nii.gz").read_bytes() == b"x"


def test_atomic_folder_keeps_the_old_folder_when_interrupted(tmp_path):
    target = tmp_path / "pngs"
    with atomic.atomic_folder(target) as tmp:
        (tmp / "a.png").write_bytes(b"1")
    with pytest.raises(RuntimeError), atomic.atomic_folder(target) as tmp:
        (tmp / "b.png").write_bytes(b"2")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs"]
    with atomic.atomic_folder(target) as tmp:
        (tmp / "c.png").write_bytes(b"3")
    assert sorted(p.name for p in target.iterdir()) == ["c.png"]


def test_json_and_output_checks(tmp_path):
    path = atomic.write_json_atomic({"a": 1}, tmp_path / "x.json")
    assert json.loads(path.read_text()) == {"a": 1}
    atomic.check_output_path(tmp_path / "new.nii.gz", overwrite=False)
    atomic.check_output_path(path, overwrite=True)
    with pytest.raises(OutputExistsError, match="x.json"):
        atomic.check_output_path(path, overwrite=False)
