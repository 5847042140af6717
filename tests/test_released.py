"""The released models: name mapping, conversion to identical outputs, Google Drive confirmation pages
(served from 127.0.0.1), and the table beside the published scores."""

import csv
import hashlib
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from segbench import models
from segbench.data.download import ChecksumError, DownloadError
from segbench.evaluation.released import (
    HEAD_KEYS,
    KEY_MAPS,
    RELEASED,
    VGG16_TRUNK_KEYS,
    convert_released,
    fetch_drive,
    released_table,
    resolve_drive,
    to_released,
    to_segbench,
)
from segbench.weights import load_model

WIDTH = 1 / 16


def _random_net(variant, seed=0):
    """Our net for ``variant`` with every parameter random (score layers too), in eval mode."""
    torch.manual_seed(seed)
    net = models.build(RELEASED[variant].model, 21, width=WIDTH)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not name.startswith("upscore"):  # upsamplers stay per-class bilinear, as in the released files
                p.normal_(0, 0.1)
    return net.eval()


def _released_bytes(net, variant):
    buf = io.BytesIO()
    torch.save(to_released(net.state_dict(), variant), buf)
    return buf.getvalue()


@pytest.mark.parametrize("variant", sorted(RELEASED))
def test_mapping_is_complete_for_our_models(variant):
    net = models.build(RELEASED[variant].model, 21, width=WIDTH)
    assert set(KEY_MAPS[variant].values()) == set(net.state_dict())
    assert len(KEY_MAPS[variant]) == len(net.state_dict())
    assert len(VGG16_TRUNK_KEYS) == 30  # 13 convs and fc6 / fc7, weight and bias each
    assert not any("scale" in key for key in KEY_MAPS[variant])  # at-once: constants, no parameters


def test_head_names_of_the_released_files():
    assert sorted(HEAD_KEYS["fcn32s"]) == ["score_fr.bias", "score_fr.weight", "upscore.weight"]
    assert sorted(HEAD_KEYS["fcn16s"]) == ["score_fr.bias", "score_fr.weight", "score_pool4.bias",
                                           "score_pool4.weight", "upscore16.weight", "upscore2.weight"]
    assert HEAD_KEYS["fcn8s-atonce"] == HEAD_KEYS["fcn8s"]
    assert sorted(HEAD_KEYS["fcn8s"]) == ["score_fr.bias", "score_fr.weight", "score_pool3.bias", "score_pool3.weight",
                                          "score_pool4.bias", "score_pool4.weight", "upscore2.weight",
                                          "upscore8.weight", "upscore_pool4.weight"]


def test_mapping_round_trips_and_names_bad_keys():
    state = _random_net("fcn8s").state_dict()
    theirs = to_released(state, "fcn8s")
    back = to_segbench(theirs, "fcn8s")
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match=r"unknown keys \['scale_pool4.weight'\] and missing keys \[\]"):
        to_segbench({**theirs, "scale_pool4.weight": torch.ones(1)}, "fcn8s-atonce")
    without = {k: v for k, v in theirs.items() if k != "score_pool3.bias"}
    with pytest.raises(ValueError, match=r"unknown keys \[\] and missing keys \['score_pool3.bias'\]"):
        to_segbench(without, "fcn8s")
    with pytest.raises(ValueError, match=r"unknown keys \['score_pool3.bias', 'score_pool3.weight', "
                                         r"'upscore8.weight', 'upscore_pool4.weight'\] and missing keys "
                                         r"\['upscore16.weight'\]"):
        to_segbench(theirs, "fcn16s")
    with pytest.raises(ValueError, match=r"missing keys \['fc7.bias'\]"):
        to_released({k: v for k, v in state.items() if k != "fc7.bias"}, "fcn8s")
    with pytest.raises(ValueError, match="unknown released model 'fcn4s'"):
        to_segbench(theirs, "fcn4s")


@pytest.mark.parametrize("variant", sorted(RELEASED))
def test_converted_model_gives_identical_outputs(tmp_path, variant):
    net = _random_net(variant, seed=len(variant))
    pth = tmp_path / RELEASED[variant].file
    pth.write_bytes(_released_bytes(net, variant))
    out = convert_released(variant, pth, tmp_path / f"{variant}.pt")
    converted, record = load_model(out)
    assert record["name"] == RELEASED[variant].model and record["num_classes"] == 21 and record["width"] == WIDTH
    assert record["meta"]["input_norm"] == "caffe" and record["meta"]["released"] == variant
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        assert torch.equal(converted.eval()(x), net(x))
    if variant == "fcn8s-atonce":
        assert converted.skip_scales == {"pool4": 0.01, "pool3": 0.0001}


def test_conversion_accepts_trainer_checkpoints_and_rejects_wrong_shapes(tmp_path):
    net = _random_net("fcn32s")
    theirs = to_released(net.state_dict(), "fcn32s")
    torch.save({"model_state_dict": theirs, "epoch": 3}, tmp_path / "checkpoint.pth.tar")
    converted, _ = load_model(convert_released("fcn32s", tmp_path / "checkpoint.pth.tar", tmp_path / "a.pt"))
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(converted.eval()(x), net(x))
    theirs["fc7.weight"] = theirs["fc7.weight"][:, :-1]
    torch.save(theirs, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"fc7.weight: \(256, 255, 1, 1\) \(expected \(256, 256, 1, 1\)\)"):
        convert_released("fcn32s", tmp_path / "bad.pth", tmp_path / "b.pt")
    assert not (tmp_path / "b.pt").exists()


# --- Google Drive, played by a local server -------------------------------------------------------------

NEW_STYLE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>fcn8s_from_caffe.pth (513M) is too large for Google to scan for viruses.</p>
<form id="download-form" action="/download" method="get">
<input type="submit" value="Download anyway"/>
<input type="hidden" name="id" value="BIG"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">
</form></body></html>"""
OLD_STYLE = """<html><head><title>Google Drive - Virus scan warning</title></head><body>
<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=OLD">Download anyway</a></body></html>"""
QUOTA = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>
<body><p>Too many users have viewed or downloaded this file recently.</p></body></html>"""


class _Drive(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.log.append({"path": self.path, "range": self.headers.get("Range")})
        answer = srv.routes.get(self.path)
        if isinstance(answer, list):  # successive answers to the same URL; the last one repeats
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if answer is None:
            self.send_error(404)
            return
        content_type, body, headers = answer
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and content_type == "application/octet-stream":
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", content_type)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def weights_file():
    data = _released_bytes(_random_net("fcn8s", seed=7), "fcn8s")
    return data, hashlib.md5(data).hexdigest()


@pytest.fixture
def drive(weights_file):
    data, _ = weights_file
    binary = ("application/octet-stream", data, {})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Drive)
    srv.log = []
    srv.routes = {
        "/uc?export=download&id=BIG": ("text/html; charset=utf-8", NEW_STYLE.encode(), {}),
        "/download?id=BIG&export=download&confirm=t&uuid=u-1": binary,
        "/uc?export=download&id=OLD": ("text/html", OLD_STYLE.encode(), {}),
        "/uc?export=download&confirm=AbC1&id=OLD": binary,
        "/uc?export=download&id=COOKIE": ("text/html", b"<html><body>scan warning</body></html>",
                                          {"Set-Cookie": "download_warning_123_COOKIE=Tok9; Path=/; HttpOnly"}),
        "/uc?export=download&id=COOKIE&confirm=Tok9": binary,
        "/uc?export=download&id=SMALL": binary,
        "/uc?export=download&id=QUOTA": ("text/html", QUOTA.encode(), {}),
        # the file to a first request, then a page sent as a binary (what a changed server could do)
        "/uc?export=download&id=LIAR": [binary, ("application/octet-stream", QUOTA.encode(), {})],
    }
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("file_id,final", [
    ("BIG", "/download?id=BIG&export=download&confirm=t&uuid=u-1"),
    ("OLD", "/uc?export=download&confirm=AbC1&id=OLD"),
    ("COOKIE", "/uc?export=download&id=COOKIE&confirm=Tok9"),
    ("SMALL", "/uc?export=download&id=SMALL"),
])
def test_drive_confirmation_is_followed(tmp_path, drive, weights_file, file_id, final):
    data, md5 = weights_file
    url = f"{drive.url}/uc?export=download&id={file_id}"
    assert resolve_drive(url) == drive.url + final
    dest = fetch_drive(url, tmp_path / "fcn8s_from_caffe.pth", md5, progress=False)
    assert dest.read_bytes() == data
    assert drive.log[-1]["path"] == final
    converted, record = load_model(convert_released("fcn8s", dest, tmp_path / "fcn8s.pt"))
    assert record["name"] == "fcn8s_vgg16"


def test_drive_download_resumes_after_the_confirmation(tmp_path, drive, weights_file):
    data, md5 = weights_file
    dest = tmp_path / "fcn8s_from_caffe.pth"
    dest.with_name(dest.name + ".part").write_bytes(data[:1000])
    fetch_drive(f"{drive.url}/uc?export=download&id=BIG", dest, md5, progress=False)
    assert drive.log[-1] == {"path": "/download?id=BIG&export=download&confirm=t&uuid=u-1", "range": "bytes=1000-"}
    assert dest.read_bytes() == data
    requests = len(drive.log)
    fetch_drive(f"{drive.url}/uc?export=download&id=BIG", dest, md5, progress=False)  # verified, not fetched
    assert len(drive.log) == requests


def test_drive_html_is_never_kept_as_weights(tmp_path, drive, weights_file):
    _, md5 = weights_file
    dest = tmp_path / "fcn8s_from_caffe.pth"
    with pytest.raises(DownloadError, match="Quota exceeded"):
        fetch_drive(f"{drive.url}/uc?export=download&id=QUOTA", dest, md5, progress=False)
    assert list(tmp_path.iterdir()) == []
    # served as a binary but the body is a page: the md5 fails and the page is discarded, with a clear error
    with pytest.raises(DownloadError, match="fcn8s_from_caffe.pth from .* is a web page, not the file; it was not kept"):
        fetch_drive(f"{drive.url}/uc?export=download&id=LIAR", dest, md5, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ChecksumError):  # a binary with the wrong md5 is still the downloader's error
        fetch_drive(f"{drive.url}/uc?export=download&id=SMALL", dest, "0" * 32, progress=False)
    assert not dest.exists()
    with pytest.raises(DownloadError, match="HTTP Error 404"):
        resolve_drive(f"{drive.url}/uc?export=download&id=NOPE")


def test_released_table_beside_published(tmp_path):
    paths = {}
    for variant, mean_iu in (("fcn32s", 0.6363), ("fcn8s", 0.65)):
        paths[variant] = tmp_path / f"{variant}.json"
        paths[variant].write_text(json.dumps({"pixel_acc": 0.9, "mean_acc": 0.75, "mean_iu": mean_iu, "fw_iu": 0.8}))
    written = released_table(paths, tmp_path / "released", dataset_note="real data")
    assert [p.suffix for p in written] == [".csv", ".tex", ".md"]
    with open(written[0]) as f:
        rows = list(csv.DictReader(f))
    assert [r["net"] for r in rows] == ["FCN-32s", "FCN-8s"]
    assert float(rows[0]["mean_iu"]) == pytest.approx(63.63) and float(rows[0]["mean_iu_published"]) == 63.63
    assert float(rows[0]["mean_iu_diff"]) == pytest.approx(0.0, abs=1e-4)
    assert float(rows[1]["pixel_acc_published"]) == 91.22 and float(rows[1]["mean_iu_diff"]) == pytest.approx(-0.51)
    md = written[2].read_text()
    assert "| FCN-8s | 90.00 | 91.22 | -1.22 | 75.00 | 77.61 | -2.61 | 65.00 | 65.51 | -0.51 |" in md
    assert "real data" in md.splitlines()[0]
    with pytest.raises(ValueError, match="unknown released model 'fcn4s'"):
        released_table({"fcn4s": paths["fcn8s"]}, tmp_path / "x")


def test_cli_table_and_released_model_verification(tmp_path):
    from segbench.cli import main

    metrics = tmp_path / "fcn16s.json"
    metrics.write_text(json.dumps({"pixel_acc": 0.91, "mean_acc": 0.78, "mean_iu": 0.65, "fw_iu": 0.84}))
    assert main(["table-released", "--run", f"fcn16s={metrics}", "--out-prefix", str(tmp_path / "released")]) == 0
    assert "| FCN-16s | 91.00 | 91.00 | 0.00 |" in (tmp_path / "released.md").read_text()
    # a file already in the cache is only verified (no network): a wrong one is refused and moved aside
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fcn16s_from_caffe.pth").write_bytes(b"<html>not weights</html>")
    assert main(["released-model", "fcn16s", "--out", str(tmp_path / "fcn16s.pt"), "--cache", str(cache)]) == 1
    assert not (tmp_path / "fcn16s.pt").exists() and list(cache.iterdir()) == []  # the page is not kept either
    (cache / "fcn16s_from_caffe.pth").write_bytes(b"\x80\x02 truncated weights")
    assert main(["released-model", "fcn16s", "--out", str(tmp_path / "fcn16s.pt"), "--cache", str(cache)]) == 1
    assert [p.name for p in cache.iterdir()] == ["fcn16s_from_caffe.pth.bad"]  # a non-HTML file is kept aside
