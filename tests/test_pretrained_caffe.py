"""Caffe's VGG16 (pytorch-fcn's vgg16_from_caffe.pth) as the FCNs' starting point: a file of the published layout
converts to a net that computes what torchvision's VGG16 computes from the same tensors on Caffe-convention input;
the download is md5-checked (a local server plays Google Drive); the record makes training feed Caffe's input;
pretrain.weights picks the source per backbone."""

import copy
import functools
import hashlib
import io
import math
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from conftest import ROOT
from torch import nn

from segbench import models, runs
from segbench.data import tensors
from segbench.data.download import ChecksumError
from segbench.pretraining import imagenet
from segbench.training.train import initialise

WIDTH = 1 / 8  # 8-16-32-64-64 channels, fc 512: the published layout's keys at a size a test can run
CFG = [8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 64, 64, 64, "M", 64, 64, 64, "M"]
FC, CLASSES = 512, 10


def _torchvision_vgg(seed: int = 0) -> nn.Module:
    """torchvision's VGG (its class, features and forward) at WIDTH, with random Caffe-scale weights."""
    torch.manual_seed(seed)
    net = torchvision.models.vgg.VGG(torchvision.models.vgg.make_layers(CFG), num_classes=CLASSES, init_weights=False)
    net.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, FC), nn.ReLU(True), nn.Dropout(), nn.Linear(FC, FC),
                                   nn.ReLU(True), nn.Dropout(), nn.Linear(FC, CLASSES))
    with torch.no_grad():
        for name, p in net.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.normal_(0, math.sqrt(2 / fan_in) if p.dim() > 1 else 0.1)
        net.features[0].weight /= 58.0  # a Caffe net's first layer sees pixels 58x the scale torchvision's does
    return net.eval()


def _pth(tmp_path, net: nn.Module, *, legacy: bool = True):
    """The state dict as pytorch-fcn published it (2017: torch.save's legacy format)."""
    path = tmp_path / "vgg16_from_caffe.pth"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    return path


def _caffe_input(size: int, seed: int = 1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return tensors.to_input([image], mean_bgr=(104.00698793, 116.66876762, 122.67891434), norm="caffe")


def test_published_file_and_layout():
    spec = imagenet.CAFFE["vgg16"]
    assert (spec.file, spec.drive_id, spec.md5) == ("vgg16_from_caffe.pth", "1adDBTGY3GcEB_47dvcibajyzi872RAs3",
                                                    "aa75b158f4181e7f6230029eb96c1b13")
    assert spec.url == "https://drive.google.com/uc?export=download&id=1adDBTGY3GcEB_47dvcibajyzi872RAs3"
    with torch.device("meta"):  # the published file is torchvision's vgg16() state dict: 32 tensors, 138M values
        full = torchvision.models.vgg16().state_dict()
    checked = imagenet._checked_layout("vgg16", full, what="vgg16_from_caffe.pth")
    assert list(checked) == list(full) and len(full) == 32
    assert sum(v.numel() for v in full.values()) == 138_357_544


@pytest.mark.parametrize("legacy", [True, False])
def test_converted_classifier_matches_torchvision_vgg16_on_caffe_input(tmp_path, legacy):
    reference = _torchvision_vgg()
    out = imagenet.convert_caffe("vgg16", _pth(tmp_path, reference, legacy=legacy), tmp_path / "vgg16.pt")
    record = torch.load(out, weights_only=True)
    assert {k: record[k] for k in ("backbone", "width", "num_classes", "input_norm", "weights")} == {
        "backbone": "vgg16", "width": WIDTH, "num_classes": CLASSES, "input_norm": "caffe", "weights": "caffe"}
    assert record["source"] == imagenet.CAFFE["vgg16"].url and record["md5"] == imagenet.CAFFE["vgg16"].md5
    ours = models.classifier("vgg16", CLASSES, width=WIDTH)
    ours.load_state_dict(record["state_dict"])
    x = _caffe_input(224)
    with torch.no_grad():
        expected = reference(x)
        assert expected.abs().max() > 1e-3  # the random net does not collapse to zeros
        torch.testing.assert_close(ours.eval()(x), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_fcn_from_the_converted_file_computes_torchvision_vgg16s_fc7_and_trains_in_caffe_norm(tmp_path):
    """The FCN's fc6/fc7 are torchvision's Linear layers as convolutions: on an input whose padded pool5 is 7 x 7
    (Caffe's ceil pooling, conv1_1 padded by 100), fc7 is torchvision's classifier[:5] on that pool5."""
    reference = _torchvision_vgg(seed=3)
    out = imagenet.convert_caffe("vgg16", _pth(tmp_path, reference), tmp_path / "vgg16.pt")
    fcn, norm = initialise("fcn32s_vgg16", 21, width=WIDTH, init=out)
    assert norm == "caffe"  # the training loop and evaluation feed BGR 0-255 minus the mean colour
    padded = copy.deepcopy(reference)
    padded.features[0].padding = (100, 100)
    for m in padded.features:
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = True
    x = _caffe_input(20, seed=2)  # 20 + 200 px -> pool5 ceil(220 / 32) = 7
    with torch.no_grad():
        pool5 = padded.features(x)
        assert pool5.shape[-2:] == (7, 7)
        expected = padded.classifier[:5](pool5.flatten(1))
        h = x
        for name in fcn.eval().trunk_names[:fcn.trunk_names.index("relu7") + 1]:
            h = getattr(fcn, name)(h)
    assert h.shape == (1, FC, 1, 1) and expected.abs().max() > 1e-3
    torch.testing.assert_close(h.flatten(1), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_a_file_of_another_layout_is_refused(tmp_path):
    net = models.build("fcn32s_vgg16", 21, width=WIDTH)  # pytorch-fcn's FCN names (conv1_1 ...), not torchvision's
    torch.save(net.state_dict(), tmp_path / "fcn32s.pth")
    with pytest.raises(ValueError, match=r"fcn32s.pth is not a vgg16 state dict in torchvision's layout: "
                                         r"features.0.weight or classifier.6.weight missing"):
        imagenet.convert_caffe("vgg16", tmp_path / "fcn32s.pth", tmp_path / "out.pt")
    state = _torchvision_vgg().state_dict()
    state["features.2.weight"] = state["features.2.weight"][:, :4]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"wrong shapes \['features.2.weight: \(8, 4, 3, 3\) \(expected "
                                         r"\(8, 8, 3, 3\)\)'\]"):
        imagenet.convert_caffe("vgg16", tmp_path / "cut.pth", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    with pytest.raises(ValueError, match=r"no caffe weights for backbone 'googlenet'; caffe has \['vgg16'\]"):
        imagenet.fetch_weights("googlenet", tmp_path / "g.pt", cache=tmp_path, source="caffe")


@pytest.fixture
def drive(tmp_path, monkeypatch):
    """A local server standing in for Google Drive: DRIVE_URL points at its folder, one file per drive id."""
    folder = tmp_path / "drive"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setattr(imagenet, "DRIVE_URL", f"http://127.0.0.1:{srv.server_address[1]}/{{}}")
    yield folder
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_checks_the_md5_and_converts(tmp_path, drive, monkeypatch):
    buf = io.BytesIO()
    torch.save(_torchvision_vgg().state_dict(), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    (drive / "ID").write_bytes(data)
    monkeypatch.setitem(imagenet.CAFFE, "vgg16", imagenet.DriveFile("vgg16_from_caffe.pth", "ID",
                                                                     hashlib.md5(data).hexdigest()))
    cache = tmp_path / "cache"
    out = imagenet.fetch_weights("vgg16", tmp_path / "vgg16.pt", cache=cache, source="caffe")
    assert (cache / "vgg16_from_caffe.pth").read_bytes() == data
    assert torch.load(out, weights_only=True)["input_norm"] == "caffe"
    # a file whose md5 is not the published one is moved aside, never converted
    monkeypatch.setitem(imagenet.CAFFE, "vgg16", imagenet.DriveFile("vgg16_from_caffe.pth", "ID", "0" * 32))
    (cache / "vgg16_from_caffe.pth").unlink()
    with pytest.raises(ChecksumError, match=f"has md5 {hashlib.md5(data).hexdigest()}, expected {'0' * 32}"):
        imagenet.fetch_weights("vgg16", tmp_path / "again.pt", cache=cache, source="caffe")
    assert not (tmp_path / "again.pt").exists() and not (cache / "vgg16_from_caffe.pth").exists()


def _merged(base: dict, layer: dict) -> dict:
    """``layer`` on ``base``, nested mappings merged key by key (as Snakemake layers config files)."""
    out = copy.deepcopy(base)
    for key, value in layer.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _config(*files):
    config = {}
    for name in files:
        config = _merged(config, yaml.safe_load((ROOT / name).read_text()))
    return config


def test_pretrain_weights_choose_the_source_per_backbone():
    paper = _config("config/config.yaml", "config/paper.yaml")
    assert {b: runs.weight_source(paper, b) for b in ("vgg16", "alexnet", "googlenet", "resnet50")} == {
        "vgg16": "caffe", "alexnet": "torchvision", "googlenet": "torchvision", "resnet50": "torchvision"}
    table = runs.run_table(paper)
    assert table["fcn32s-alexnet"].model == "fcn32s_alexnet_tv" and table["fcn32s"].init == runs.Init("pretrained",
                                                                                                       "vgg16")
    default = _config("config/config.yaml")
    assert runs.weight_source(default, "vgg16") == "synthetic"  # the embedded default: stand-ins, as before
    assert runs.run_table(default)["fcn32s-alexnet"].model == "fcn32s_alexnet"
    bad = {**paper, "pretrain": {**paper["pretrain"], "weights": {"googlenet": "caffe"}}}
    with pytest.raises(ValueError, match=r"pretrain.weights.googlenet is 'caffe', but caffe weights exist only for "
                                         r"\['vgg16'\]"):
        runs.run_table(bad)
    assert {k: sorted(v) for k, v in runs.WEIGHT_SOURCES.items()} == {k: sorted(v) for k, v in imagenet.SOURCES.items()}


def test_first_conv_lr_mult_makes_caffe_and_torchvision_scale_training_the_same():
    """The recipes' derivation: a net on inputs k times smaller, its first conv k times larger, trained with the
    first conv's lr x k^2 (SGD with momentum) or x k (Adam), follows the Caffe-scale net step for step."""
    k = tensors.caffe_scale("torchvision")
    assert k == pytest.approx(57.63, abs=0.01) and tensors.caffe_scale("caffe") == 1.0
    torch.manual_seed(0)
    caffe = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64) * k  # Caffe-scale pixels
    target = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    for optimizer, lr in (("sgd", 1e-7), ("adam", 1e-3)):
        mult = tensors.first_conv_lr_mult("torchvision", optimizer)
        nets = {"caffe": copy.deepcopy(caffe), "torchvision": copy.deepcopy(caffe), "naive": copy.deepcopy(caffe)}
        for name in ("torchvision", "naive"):
            with torch.no_grad():
                nets[name][0].weight *= k  # the same function on inputs k times smaller
        mults = {"caffe": 1.0, "torchvision": mult, "naive": 1.0}
        opts = {}
        for name, net in nets.items():
            groups = [{"params": [net[0].weight], "lr": lr * mults[name]},
                      {"params": [p for n, p in net.named_parameters() if n != "0.weight"], "lr": lr}]
            opts[name] = (torch.optim.SGD(groups, lr=lr, momentum=0.99) if optimizer == "sgd"
                          else torch.optim.Adam(groups, lr=lr, eps=1e-30))
        for _ in range(5):
            for name, net in nets.items():
                loss = F.mse_loss(net(x if name == "caffe" else x / k), target, reduction="sum")
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
        moved = nets["caffe"][0].weight.detach() - caffe[0].weight
        torch.testing.assert_close(nets["torchvision"][0].weight.detach(), k * nets["caffe"][0].weight.detach())
        torch.testing.assert_close(nets["torchvision"][2].weight, nets["caffe"][2].weight)
        naive_moved = nets["naive"][0].weight.detach() / k - caffe[0].weight
        assert naive_moved.abs().max() < moved.abs().max() / (k / 2 if optimizer == "adam" else k * k / 2)
