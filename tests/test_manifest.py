"""Tests of dataset cards, verification, resumable download and safe extraction."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liverseg_helpers import cli
from liverseg_helpers.data import download, manifest
from liverseg_helpers.errors import ChecksumError, DataError, OutputExistsError, UnsafeArchiveError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IRCADB = SHARED_DATA / "3Dircadb1"
needs_ircadb = pytest.mark.skipif(
    not (IRCADB / "3Dircadb1.7" / "MASKS_DICOM.zip").is_file(),
    reason=f"real 3D-IRCADb copy not found at {IRCADB}",
)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB with a known sha256
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


# ---------------------------------------------------------------- cards


def test_cards_listed_and_complete():
    names = manifest.list_cards()
    assert names == ["chaos", "hcc_tace_seg", "ircadb", "lits", "msd_task03_liver", "phantom"]
    cards_dir = manifest.find_cards_dir()
    for name in names:
        card = manifest.load_card(name)
        assert card["name"] == name
        assert card["licence"] and card["citation"] and card["layout"]["groups"]
        assert (cards_dir / f"{name}.md").is_file(), f"{name}.md: human-readable card missing"
        for entry in card["files"] + card["downloads"]:
            sha = entry.get("sha256")
            assert sha is None or (len(sha) == 64 and int(sha, 16) >= 0)


def test_card_aliases_and_unknown_name():
    assert manifest.load_card("3D-IRCADb-01")["name"] == "ircadb"
    assert manifest.load_card("Task03_Liver")["name"] == "msd_task03_liver"
    with pytest.raises(DataError, match="unknown dataset 'nope'.*ircadb"):
        manifest.load_card("nope")


def test_ircadb_card_holds_the_real_checksums():
    files = {f["path"]: f["sha256"] for f in manifest.load_card("ircadb")["files"]}
    assert files["3Dircadb1.1/MASKS_DICOM.zip"].startswith("cb88edfa83e674f4")
    assert files["3Dircadb1.7/MASKS_DICOM.zip"].startswith("041f97b1f19c884d")


def test_cards_dir_from_environment(tmp_path, monkeypatch):
    card = manifest.load_card("phantom") | {"name": "toy", "aliases": []}
    (tmp_path / "toy.json").write_text(json.dumps(card))
    monkeypatch.setenv(manifest.ENV_MANIFEST_DIR, str(tmp_path))
    assert manifest.list_cards() == ["toy"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        manifest.load_card("toy2")


# ---------------------------------------------------------------- checksums and download


def test_sha256_file_known_answer(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert manifest.sha256_file(path) == expected
    assert manifest.hash_file(path, "md5") == "900150983cd24fb0d6963f7d28e17f72"


def test_download_file_url_ok_and_checksum_mismatch_names_file(tmp_path):
    source = tmp_path / "src" / "cases.zip"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "cases.zip"
    assert manifest.download_file(source.as_uri(), dest, sha256=PAYLOAD_SHA256) == dest
    assert dest.read_bytes() == PAYLOAD
    dest.unlink()
    with pytest.raises(ChecksumError, match=r"cases\.zip.*sha256 mismatch"):
        manifest.download_file(source.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and not dest.with_name("cases.zip.part").exists()


def test_existing_wrong_file_is_replaced(tmp_path):
    source = tmp_path / "good.bin"
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "good.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"stale")
    manifest.download_file(source.as_uri(), dest, sha256=PAYLOAD_SHA256)
    assert dest.read_bytes() == PAYLOAD


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring ``Range: bytes=N-``; can cut the body short."""

    ranges: list[str | None] = []
    sent_bytes: list[int] = []
    cut_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False  # behave like a server without Range support (always 200)

    def do_GET(self):  # noqa: N802 (http.server API)
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        header = None if self.ignore_range else header
        start = int(header.split("=")[1].rstrip("-")) if header else 0
        body = PAYLOAD[start:]
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            body = body[: self.cut_after]
        type(self).sent_bytes.append(len(body))  # before writing: the client may finish first
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def http_url() -> Iterator[tuple[str, type[_RangeHandler]]]:
    handler = type(
        "Handler",
        (_RangeHandler,),
        {"ranges": [], "sent_bytes": [], "cut_after": None, "ignore_range": False},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/Task03_Liver.tar", handler
    finally:
        server.shutdown()
        server.server_close()


def test_download_resumes_from_part_file(tmp_path, http_url):
    url, handler = http_url
    dest = tmp_path / "Task03_Liver.tar"
    n_bytes = 300_000
    dest.with_name(dest.name + ".part").write_bytes(PAYLOAD[:n_bytes])  # an earlier, cut download
    manifest.download_file(url, dest, sha256=PAYLOAD_SHA256)
    assert handler.ranges == [f"bytes={n_bytes}-"]
    assert handler.sent_bytes == [len(PAYLOAD) - n_bytes]  # only the rest was transferred
    assert manifest.sha256_file(dest) == PAYLOAD_SHA256
    assert not dest.with_name(dest.name + ".part").exists()


def test_interrupted_download_keeps_part_then_resumes(tmp_path, http_url):
    url, handler = http_url
    dest = tmp_path / "Task03_Liver.tar"
    part = dest.with_name(dest.name + ".part")
    handler.cut_after = 200_000
    with pytest.raises(DataError, match="Task03_Liver.tar.*resume"):
        manifest.download_file(url, dest, sha256=PAYLOAD_SHA256)
    assert not dest.exists() and part.stat().st_size == 200_000
    handler.cut_after = None
    manifest.download_file(url, dest, sha256=PAYLOAD_SHA256)
    assert handler.ranges == [None, "bytes=200000-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_support_restarts(tmp_path, http_url):
    url, handler = http_url
    handler.ignore_range = True
    dest = tmp_path / "Task03_Liver.tar"
    dest.with_name(dest.name + ".part").write_bytes(PAYLOAD[:1000])
    manifest.download_file(url, dest, sha256=PAYLOAD_SHA256)
    assert handler.ranges == ["bytes=1000-"] and handler.sent_bytes == [len(PAYLOAD)]
    assert dest.read_bytes() == PAYLOAD  # not 1000 bytes + the whole file appended


def test_resume_false_and_oversized_part_start_again(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(PAYLOAD)
    for name, part_bytes, resume in (
        ("a.bin", PAYLOAD[:5000], False),
        ("b.bin", PAYLOAD * 2, True),
    ):
        dest = tmp_path / name
        dest.with_name(name + ".part").write_bytes(part_bytes)
        manifest.download_file(source.as_uri(), dest, resume=resume)  # no checksum to save us
        assert dest.read_bytes() == PAYLOAD


def test_resumed_download_with_wrong_checksum_deletes_part(tmp_path, http_url):
    url, _ = http_url
    dest = tmp_path / "Task03_Liver.tar"
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(b"garbage!" * 100)  # a corrupt start cannot be fixed by resuming
    with pytest.raises(ChecksumError, match="Task03_Liver.tar"):
        manifest.download_file(url, dest, sha256=PAYLOAD_SHA256)
    assert not dest.exists() and not part.exists()


# ---------------------------------------------------------------- archives


def _zip_with(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("good/ok.txt", "fine")
        for name in names:
            zf.writestr(zipfile.ZipInfo(name), "evil")  # ZipInfo keeps the name as given
    return path


def _tar_with(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("good/ok.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"fine"))
        for member in members:
            tf.addfile(member, io.BytesIO(b"evil"[: member.size]))
    return path


@pytest.mark.parametrize("member", ["../evil.txt", "good/../../evil.txt", "/evil.txt"])
def test_unsafe_zip_refused_nothing_extracted(tmp_path, member):
    archive = _zip_with(tmp_path / "bad.zip", [member])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=rf"bad\.zip: member '{member}'"):
        manifest.safe_extract(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _tar_member("../evil.txt"),
        _tar_member("/evil.txt"),
        _tar_member("good/link", tarfile.SYMTYPE, "../../etc/passwd"),
        _tar_member("good/abslink", tarfile.SYMTYPE, "/etc/passwd"),
        _tar_member("hard", tarfile.LNKTYPE, "../outside"),
        # A chain: good/a is good/ itself, so good/a/a/b -> ../.. is the folder's parent.
        [_tar_member("good/a", tarfile.SYMTYPE, "."), _tar_member("good/a/a/b")],
        [
            _tar_member("good/a", tarfile.SYMTYPE, "."),
            _tar_member("good/c", tarfile.SYMTYPE, "a/a/../.."),
        ],
    ],
    ids=[
        "dotdot",
        "absolute",
        "symlink-out",
        "symlink-abs",
        "hardlink-out",
        "via-link",
        "link-via-link",
    ],
)
def test_unsafe_tar_refused_nothing_extracted(tmp_path, member):
    members = member if isinstance(member, list) else [member]
    member = members[-1]
    archive = _tar_with(tmp_path / "bad.tar", members)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=rf"bad\.tar: member '{member.name}'"):
        manifest.safe_extract(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_zip_and_tar(tmp_path):
    inner_link = _tar_member("good/inner", tarfile.SYMTYPE, "ok.txt")  # stays inside: allowed
    for archive in (_zip_with(tmp_path / "a.zip", []), _tar_with(tmp_path / "a.tar", [inner_link])):
        dest = tmp_path / f"out_{archive.suffix[1:]}"
        assert manifest.safe_extract(archive, dest) == dest
        assert (dest / "good" / "ok.txt").read_text() == "fine"
        assert sorted(p.name for p in dest.iterdir()) == ["good"]  # temp folder removed
        with pytest.raises(OutputExistsError, match="good"):
            manifest.safe_extract(archive, dest)


def test_a_tar_that_holds_a_zip_file_is_read_as_a_tar(tmp_path):
    # zipfile.is_zipfile also finds the directory of a zip stored near the end of a tar (a
    # .keras model in a fold's archive): the tar's own members must be listed and extracted.
    model = _zip_with(tmp_path / "last.keras", [])
    archive = tmp_path / "fold.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(model, arcname="run/fold_a/last.keras")
    assert download.list_archive_members(archive) == ["run/fold_a/last.keras"]
    dest = manifest.safe_extract(archive, tmp_path / "out")
    assert (dest / "run" / "fold_a" / "last.keras").read_bytes() == model.read_bytes()


# ---------------------------------------------------------------- verify


def _make_patient(folder: Path, n_slices: int, n_masks: int | None = None) -> Path:
    """An IRCADb-layout patient with empty placeholder files (the verifier never opens them)."""
    for sub, count in (("PATIENT_DICOM", n_slices), ("MASKS_DICOM/liver", n_masks or n_slices)):
        (folder / sub).mkdir(parents=True)
        for i in range(count):
            (folder / sub / f"image_{i}").write_bytes(b"")
    return folder


def test_phantom_layout_guessed_and_checked(tmp_path):
    _make_patient(tmp_path / "phantom_001", 4)
    _make_patient(tmp_path / "phantom_002", 4, n_masks=3)
    report = manifest.verify_dataset(tmp_path)
    assert report.dataset == "phantom" and report.items_found == {"patients": 2}
    assert len(report.errors) == 1 and "phantom_002: file counts differ" in report.errors[0]
    shutil.rmtree(tmp_path / "phantom_002" / "MASKS_DICOM")
    report = manifest.verify_dataset(tmp_path, "phantom")
    assert report.errors == [f"{tmp_path / 'phantom_002'}: missing MASKS_DICOM or MASKS_DICOM.zip"]


def test_msd_layout_pairs_and_partial_copy(tmp_path):
    root = tmp_path / "Task03_Liver"
    for sub, names in (
        ("imagesTr", ["liver_0", "liver_1", "._liver_0"]),
        ("labelsTr", ["liver_0"]),
    ):
        (root / sub).mkdir(parents=True)
        for name in names:
            (root / sub / f"{name}.nii.gz").write_bytes(b"")
    report = manifest.verify_dataset(tmp_path)  # guessed, descends into Task03_Liver/
    assert report.dataset == "msd_task03_liver" and report.root == root
    assert report.items_found == {"imagesTr": 2, "labelsTr": 1, "imagesTs": 0}
    assert any("dataset.json: missing" in e for e in report.errors)
    assert any("liver_1.nii.gz: no matching file in labelsTr" in e for e in report.errors)
    assert any("2 of 131 imagesTr present, 129 missing" in n for n in report.notes)


def test_lits_layout_ok_with_note(tmp_path):
    batch = tmp_path / "Training Batch 1"
    batch.mkdir()
    for name in ("volume-0.nii", "segmentation-0.nii", "volume-10.nii", "segmentation-10.nii"):
        (batch / name).write_bytes(b"")
    report = manifest.verify_dataset(tmp_path)
    assert report.dataset == "lits" and report.ok, report.errors
    assert any("2 of 131 volumes present" in n for n in report.notes)


def test_unknown_layout_raises(tmp_path):
    with pytest.raises(DataError, match="no dataset layout recognised"):
        manifest.verify_dataset(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        manifest.verify_dataset(tmp_path / "missing")


@needs_ircadb
def test_verify_real_ircadb_partial_copy(capsys):
    report = manifest.verify_dataset(IRCADB)
    assert report.ok, report.errors
    assert report.dataset == "ircadb" and report.files_hashed == 2
    assert report.items_found == {"patients": 2} and report.items_expected == {"patients": 20}
    assert any("2 of 20 patients present, 18 missing" in n for n in report.notes)
    assert manifest.verify_dataset(SHARED_DATA, "ircadb").root == IRCADB  # descends into it
    assert cli.main(["data", "verify", str(IRCADB), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@needs_ircadb
def test_verify_detects_corrupted_mask_zip(tmp_path, capsys):
    patient = tmp_path / "3Dircadb1" / "3Dircadb1.7"
    patient.mkdir(parents=True)
    (patient / "PATIENT_DICOM").symlink_to(IRCADB / "3Dircadb1.7" / "PATIENT_DICOM")
    masks = shutil.copy(IRCADB / "3Dircadb1.7" / "MASKS_DICOM.zip", patient / "MASKS_DICOM.zip")
    assert manifest.verify_dataset(tmp_path, "ircadb").ok  # the pristine copy passes
    data = bytearray(Path(masks).read_bytes())
    data[1000] ^= 0xFF  # inside the first member's data: the zip still opens
    Path(masks).write_bytes(bytes(data))
    report = manifest.verify_dataset(tmp_path, "ircadb")
    assert len(report.errors) == 1, report.errors
    assert f"{patient / 'MASKS_DICOM.zip'}: sha256 mismatch" in report.errors[0]
    assert cli.main(["data", "verify", str(tmp_path / "3Dircadb1")]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out


@needs_ircadb
def test_verify_detects_wrong_slice_count(tmp_path):
    patient = tmp_path / "3Dircadb1.1"
    patient.mkdir()
    shutil.copy(IRCADB / "3Dircadb1.1" / "MASKS_DICOM.zip", patient / "MASKS_DICOM.zip")
    (patient / "PATIENT_DICOM").mkdir()
    for i in range(128):  # one slice short of the 129 the card expects
        (patient / "PATIENT_DICOM" / f"image_{i}").write_bytes(b"")
    errors = manifest.verify_dataset(tmp_path).errors
    assert any("PATIENT_DICOM/image_*: 128 files, the card expects 129" in e for e in errors)


# ---------------------------------------------------------------- fetch


def test_fetch_cli_from_file_url(tmp_path, capsys):
    source = tmp_path / "src"
    _make_patient(source / "phantom_001", 3)
    archive = shutil.make_archive(str(tmp_path / "phantom_cohort"), "zip", source)
    out = tmp_path / "out"
    argv = ["data", "fetch", "phantom", "--out", str(out), "--url", Path(archive).as_uri()]
    assert cli.main(argv) == 0
    assert len(list((out / "phantom_001" / "PATIENT_DICOM").iterdir())) == 3
    assert cli.main(argv) == 0  # second run: reuses the download, does not unpack again
    assert "already unpacked" in capsys.readouterr().out


def test_fetch_without_direct_download_explains(capsys):
    assert cli.main(["data", "fetch", "lits", "--out", "/nonexistent/never"]) == 2
    assert "codalab" in capsys.readouterr().err.lower()
