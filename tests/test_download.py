"""fetch / verify / extract and the sources table, on files made here and a local HTTP server."""

import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from segbench.data import extract, fetch, sources, verify
from segbench.data.download import ChecksumError, DownloadError, ExtractError, sidecar_path

PAYLOAD = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
OTHER_MD5 = "0" * 32


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        body = srv.files.get(self.path)
        srv.log.append({"path": self.path, "range": self.headers.get("Range")})
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        srv.sent.append(len(body) - start)  # recorded before sending: the client may finish first
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.sent, srv.honour_range = {"/data.bin": PAYLOAD}, [], [], True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_verify_accepts_any_listed_md5_and_names_the_mismatch(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert verify(path, MD5) == MD5
    assert verify(path, (OTHER_MD5, MD5.upper())) == MD5
    with pytest.raises(ChecksumError) as err:
        verify(path, OTHER_MD5)
    assert str(path) in str(err.value) and MD5 in str(err.value) and OTHER_MD5 in str(err.value)
    assert "download it again" in str(err.value)
    with pytest.raises(ChecksumError, match="200000 bytes, expected 199999"):
        verify(path, MD5, size=199_999)


def test_fetch_downloads_verifies_and_records_which_md5_matched(tmp_path, server):
    dest = tmp_path / "sub" / "data.bin"
    out = fetch(f"{server.url}/data.bin", dest, (OTHER_MD5, MD5), size=len(PAYLOAD), progress=False)
    assert out == dest and dest.read_bytes() == PAYLOAD
    record = json.loads(sidecar_path(dest).read_text())
    assert record["md5"] == MD5 and record["accepted"] == [OTHER_MD5, MD5]
    assert not dest.with_name("data.bin.part").exists()
    # A verified file is not downloaded again.
    fetch(f"{server.url}/data.bin", dest, MD5, progress=False)
    assert len(server.log) == 1


def test_fetch_resumes_a_partial_download_with_range(tmp_path, server):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD[:70_000])
    fetch(f"{server.url}/data.bin", dest, MD5, size=len(PAYLOAD), progress=False)
    assert server.log[0]["range"] == "bytes=70000-"
    assert server.sent == [len(PAYLOAD) - 70_000]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_restarts_when_the_server_ignores_range(tmp_path, server):
    server.honour_range = False
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(b"garbage" * 100)
    fetch(f"{server.url}/data.bin", dest, MD5, progress=False)
    assert server.sent == [len(PAYLOAD)] and dest.read_bytes() == PAYLOAD


def test_fetch_with_a_complete_part_file_gets_416_and_finishes(tmp_path, server):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD)
    fetch(f"{server.url}/data.bin", dest, MD5, progress=False)
    assert server.sent == [] and dest.read_bytes() == PAYLOAD


def test_fetch_wrong_md5_keeps_the_file_aside_and_says_what_to_do(tmp_path, server):
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError) as err:
        fetch(f"{server.url}/data.bin", dest, OTHER_MD5, progress=False)
    msg = str(err.value)
    assert "data.bin" in msg and MD5 in msg and OTHER_MD5 in msg and "download it again" in msg
    assert not dest.exists() and not sidecar_path(dest).exists()
    assert dest.with_name("data.bin.bad").read_bytes() == PAYLOAD


def test_fetch_wrong_size_is_refused(tmp_path, server):
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError, match=f"{len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}"):
        fetch(f"{server.url}/data.bin", dest, MD5, size=len(PAYLOAD) + 1, progress=False)
    assert not dest.exists()


def test_fetch_without_published_md5_records_the_first_and_checks_it_later(tmp_path, server):
    dest = tmp_path / "data.bin"
    fetch(f"{server.url}/data.bin", dest, None, progress=False)
    record = json.loads(sidecar_path(dest).read_text())
    assert record["md5"] == MD5 and record["published"] is False
    dest.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ChecksumError, match=MD5):
        fetch(f"{server.url}/data.bin", dest, None, progress=False)
    assert not dest.exists() and dest.with_name("data.bin.bad").exists()


def test_fetch_http_404_names_the_url(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404.*data_root"):
        fetch(f"{server.url}/missing.bin", tmp_path / "m.bin", MD5, progress=False)


def _tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"hello"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("mode,suffix", [("w:gz", "tgz"), ("w:bz2", "tar.bz2"), ("w:xz", "tar.xz"), ("w", "tar")])
def test_extract_tar_any_compression(tmp_path, mode, suffix):
    archive = _tar(tmp_path / f"a.{suffix}", [_file("top/x.txt", b"abc"), _file("top/sub/y.txt", b"de")], mode)
    out = extract(archive, tmp_path / "out")
    assert (out / "top" / "x.txt").read_bytes() == b"abc" and (out / "top" / "sub" / "y.txt").read_bytes() == b"de"
    assert not (tmp_path / "out.partial").exists()


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name):
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize("member", [
    _file("/etc/evil.txt"), _file("top/../../evil.txt"), _link("top/ln", "/etc/passwd"),
    _link("top/ln", "../../outside"), _link("top/hard", "../../outside", tarfile.LNKTYPE), _device("top/null")])
def test_extract_tar_refuses_unsafe_members_naming_them(tmp_path, member):
    archive = _tar(tmp_path / "bad.tgz", [_file("top/ok.txt"), member])
    with pytest.raises(ExtractError) as err:
        extract(archive, tmp_path / "out")
    assert repr(member[0].name) in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_extract_zip_and_its_guards(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("Images/a.txt", "A")
    assert (extract(good, tmp_path / "out") / "Images" / "a.txt").read_text() == "A"
    for name, attr in [("../evil.txt", 0), ("/abs.txt", 0), ("C:\\win.txt", 0), ("link", 0o120777 << 16),
                       ("dev", 0o020644 << 16)]:
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            info = zipfile.ZipInfo(name)
            info.external_attr = attr
            zf.writestr(info, "x")
        with pytest.raises(ExtractError) as err:
            extract(bad, tmp_path / "out2")
        assert repr(name) in str(err.value)
        assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("kind", ["tgz", "tar", "zip"])
def test_extract_truncated_archive_raises_and_leaves_nothing(tmp_path, kind):
    blob = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    if kind == "zip":
        archive = tmp_path / "t.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("a.bin", blob)
            zf.writestr("b.bin", blob)
    else:
        archive = _tar(tmp_path / f"t.{kind}", [_file("a.bin", blob), _file("b.bin", blob)],
                       "w:gz" if kind == "tgz" else "w")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ExtractError, match="truncated"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_sources_table_has_the_published_checksums():
    files = {s.filename: s for group in sources.SOURCES.values() for s in group}
    assert set(sources.SOURCES) == {"voc", "nyud", "siftflow", "msd_prostate"}
    assert set(files["benchmark.tgz"].md5) == {"82b4d87ceb2ed10f6038a1cba92111cb", "2b2af8a6cff7365684e002c08be823a6"}
    assert (files["nyu_depth_v2_labeled.mat"].md5, files["nyu_depth_v2_labeled.mat"].size) == \
        ("520609c519fba3ba5ac58c8fefcc3530", 2_972_037_809)
    assert files["splits.mat"].md5 == "08e3c3aea27130ac7c01ffd739a4535f"
    assert files["classMapping40.mat"].md5 == "e377c88729dd63af81205ac9a8634a19"
    assert files["SiftFlowDataset.zip"].md5 is None
    for s in files.values():
        for m in ([s.md5] if isinstance(s.md5, str) else s.md5 or []):
            assert re.fullmatch(r"[0-9a-f]{32}", m), s.filename


def _toy_sources(monkeypatch, url, md5):
    toy = (sources.Source("data.bin", url, md5), sources.Source("arch.tgz", url + "-tgz", None, extract_to="X"))
    monkeypatch.setitem(sources.SOURCES, "toy", toy)


def test_download_dataset_fetches_extracts_and_writes_the_manifest_last(tmp_path, server, monkeypatch):
    _tar(tmp_path / "arch.tgz", [_file("inner/f.txt", b"F")])
    server.files["/data.bin-tgz"] = (tmp_path / "arch.tgz").read_bytes()
    _toy_sources(monkeypatch, f"{server.url}/data.bin", (OTHER_MD5, MD5))
    manifest = sources.download_dataset("toy", tmp_path / "raw", progress=False)
    record = json.loads(manifest.read_text())
    assert [e["md5"] for e in record["files"]] == [MD5, hashlib.md5(server.files["/data.bin-tgz"]).hexdigest()]
    assert (tmp_path / "raw" / "X" / "inner" / "f.txt").read_text() == "F"


def test_download_dataset_with_data_root_only_verifies(tmp_path, server, monkeypatch):
    root = tmp_path / "cluster"
    (root / "toy").mkdir(parents=True)
    (root / "data.bin").write_bytes(PAYLOAD)
    _tar(root / "toy" / "arch.tgz", [_file("inner/f.txt", b"F")])
    _toy_sources(monkeypatch, "http://unreachable.invalid/data.bin", MD5)
    manifest = sources.download_dataset("toy", tmp_path / "raw", data_root=root)
    assert server.log == []
    assert (tmp_path / "raw" / "data.bin").resolve() == (root / "data.bin").resolve()
    assert json.loads(manifest.read_text())["files"][0]["md5"] == MD5
    (root / "data.bin").write_bytes(PAYLOAD[:-1])
    manifest.unlink()
    with pytest.raises(ChecksumError, match=str(root / "data.bin")):
        sources.download_dataset("toy", tmp_path / "raw", data_root=root)
    assert not manifest.exists()


def test_download_dataset_unknown_name_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"'nyud', 'siftflow', 'voc'"):
        sources.download_dataset("cityscapes", tmp_path)
