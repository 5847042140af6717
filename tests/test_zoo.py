"""The twin's model zoo (segbench.pretraining.zoo): the shipped files match their manifest and their recorded
held-out accuracies, a tampered file is refused with the command that regenerates it, and a pruned trunk is
re-estimated and fine-tuned after pruning."""

import json
import shutil

import pytest
import torch
from conftest import ROOT

from segbench import models
from segbench.data.classification import Images
from segbench.errors import ChecksumError, MissingInputError
from segbench.infra.identity import sha256sum
from segbench.pretraining import zoo
from segbench.pretraining.standins import (
    INPUT_SIZE,
    _held_out_accuracy,
    _recalibrate_batch_norm,
    finetune_pruned,
    pretrain_classifier,
)

ZOO = ROOT / "zoo"
MANIFEST = zoo.read_manifest(ZOO)


def test_the_zoo_holds_every_recipe_and_every_file_matches_the_manifest():
    assert set(zoo.held(ZOO)) == set(zoo.RECIPES)
    assert sorted(MANIFEST["files"]) == sorted(zoo.file_name(b) for b in zoo.held(ZOO))
    for backbone in zoo.held(ZOO):
        entry = zoo.verify(backbone, ZOO)
        path = ZOO / zoo.file_name(backbone)
        assert (entry["bytes"], entry["sha256"]) == (path.stat().st_size, sha256sum(path))
        assert entry["settings"] == zoo.RECIPES[backbone], (
            f"the zoo's recipe for {backbone} changed: regenerate it with `{zoo.command(backbone)}`")
        assert entry["command"] == zoo.command(backbone)
        assert entry["held_out_images"] >= 2000
        for key in ("code_identity", "machine", "wall_s", "software"):
            assert entry[key]
    assert sum(p.stat().st_size for p in ZOO.iterdir()) <= 48 * 2**20


def test_every_zoo_stand_in_clears_the_same_bar():
    entries = MANIFEST["files"].values()
    for key, bar in zoo.QUALITY.items():
        values = [e[key] for e in entries]
        assert min(values) >= bar, {e["backbone"]: e[key] for e in entries}
        assert max(values) - min(values) <= 0.02, {e["backbone"]: e[key] for e in entries}


@pytest.mark.parametrize("backbone", zoo.held(ZOO))
def test_each_zoo_stand_in_gives_its_recorded_held_out_accuracy(backbone):
    entry = zoo.verify(backbone, ZOO)
    record = torch.load(ZOO / zoo.file_name(backbone), weights_only=True)
    net = models.classifier(backbone, record["num_classes"], width=record["width"])
    net.load_state_dict(record["state_dict"])
    settings = entry["settings"]
    single, clutter = _held_out_accuracy(net, Images(entry["held_out_seed"]), size=INPUT_SIZE[backbone],
                                         n=entry["held_out_images"], dev=torch.device("cpu"), prec="fp32",
                                         jitter=settings["jitter"], clutter=settings["clutter"])
    assert single == pytest.approx(entry["accuracy"], abs=0.005)
    assert clutter == pytest.approx(entry["accuracy_clutter"], abs=0.005)


@pytest.fixture
def copied_zoo(tmp_path):
    target = tmp_path / "zoo"
    target.mkdir()
    shutil.copy(ZOO / zoo.MANIFEST, target)
    shutil.copy(ZOO / "vgg16.pt", target)
    return target


def test_a_zoo_stand_in_lands_where_the_pretrain_step_writes(copied_zoo, tmp_path):
    out = zoo.use_standin("vgg16", tmp_path / "pretrain" / "vgg16.pt", zoo=copied_zoo, width=0.125)
    assert sha256sum(out) == MANIFEST["files"]["vgg16.pt"]["sha256"]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["accuracy"] == MANIFEST["files"]["vgg16.pt"]["accuracy"]
    assert summary["settings"]["zoo"]["sha256"] == MANIFEST["files"]["vgg16.pt"]["sha256"]


def test_a_tampered_zoo_file_is_refused_with_the_command_that_regenerates_it(copied_zoo, tmp_path):
    path = copied_zoo / "vgg16.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"vgg16.pt does not match .*MANIFEST.json.*segbench zoo-train vgg16"):
        zoo.use_standin("vgg16", tmp_path / "vgg16.pt", zoo=copied_zoo)
    assert not (tmp_path / "vgg16.pt").exists()
    path.unlink()
    with pytest.raises(MissingInputError, match=r"vgg16.pt is missing: restore it with `git checkout"):
        zoo.use_standin("vgg16", tmp_path / "vgg16.pt", zoo=copied_zoo)
    manifest = json.loads((copied_zoo / zoo.MANIFEST).read_text())
    del manifest["files"]["vgg16.pt"]
    (copied_zoo / zoo.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(MissingInputError, match=r"lists no vgg16.pt: regenerate it with `segbench zoo-train vgg16"):
        zoo.use_standin("vgg16", tmp_path / "vgg16.pt", zoo=copied_zoo)


def test_a_width_the_zoo_does_not_hold_is_refused(copied_zoo, tmp_path):
    with pytest.raises(ValueError, match=r"the zoo's vgg16 stand-in is 0.125 wide, but models.width asks for 0.25: "
                                         r".*pretrain.source: synthetic"):
        zoo.use_standin("vgg16", tmp_path / "vgg16.pt", zoo=copied_zoo, width=0.25)


def test_a_stand_in_below_the_bar_is_not_recorded(tmp_path, monkeypatch):
    def trained(out, **settings):  # what pretrain_classifier writes, at 91% with clutter
        torch.save({"state_dict": {}}, out)
        out.with_suffix(".json").write_text(json.dumps({"width": settings["width"], "image_size": 224, "chance": 0.05,
                                                        "accuracy": 0.99, "accuracy_clutter": 0.91,
                                                        "settings": {"precision": "fp32"}}))
        return out

    monkeypatch.setattr("segbench.pretraining.standins.pretrain_classifier", trained)
    with pytest.raises(ValueError, match=r"vgg16's stand-in reached held-out accuracy 0.9900 on single objects and "
                                         r"0.9100 with clutter, below the zoo's bar .*: not recorded; lengthen its "
                                         r"recipe .*`segbench zoo-train vgg16 --zoo "):
        zoo.train_standin("vgg16", zoo=tmp_path, progress=False)
    assert not (tmp_path / "vgg16.pt").exists() and zoo.held(tmp_path) == []


class _Batches:
    """A stand-in image source: ``next`` returns the given batches in turn."""

    def __init__(self, batches):
        self.batches = list(batches)

    def next(self, stream, size, n, *, jitter, clutter):
        return self.batches.pop(0), torch.zeros(n, dtype=torch.long)


def test_batch_norm_re_estimation_averages_the_batches_and_keeps_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(2, 3, 5, 5) * (k + 1) + k for k in range(3)]
    with torch.no_grad():
        features = [net[0](b) for b in batches]
    _recalibrate_batch_norm(net, _Batches(batches), batches=3, size=5, batch_size=2, jitter=0, clutter=0,
                            dev=torch.device("cpu"), prec="fp32")
    bn = net[1]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in features]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.1
    for k, v in weights.items():
        torch.testing.assert_close(net.state_dict()[k], v)


def test_a_pruned_stand_in_is_re_estimated_and_fine_tuned(tmp_path):
    source = pretrain_classifier(tmp_path / "resnet50.pt", backbone="resnet50", width=1 / 16, crop_size=48,
                                 crop_iterations=1, iterations=1, batch_size=2, eval_images=4, threads=1,
                                 progress=False)
    out = finetune_pruned(source, tmp_path / "resnet50_half.pt", recalibrate_batches=1, iterations=2, batch_size=2,
                          eval_images=4, threads=1, eval_precision="fp32", progress=False)
    record = torch.load(out, weights_only=True)
    assert (record["backbone"], record["width"], record["pruned_from"]) == ("resnet50_half", 1 / 16, "resnet50")
    assert set(record["before_finetuning"]) == {"pruned", "recalibrated"}
    assert record["settings"]["iterations"] == 2 and record["settings"]["eval_precision"] == "fp32"
    net = models.classifier("resnet50_half", record["num_classes"], width=1 / 16)
    net.load_state_dict(record["state_dict"])
    assert json.loads(out.with_suffix(".json").read_text())["accuracy"] == record["accuracy"]
    with pytest.raises(ValueError, match=r"holds ImageNet weights, not a stand-in"):
        torch.save({k: v for k, v in torch.load(source, weights_only=True).items() if k != "settings"},
                   tmp_path / "imagenet.pt")
        finetune_pruned(tmp_path / "imagenet.pt", tmp_path / "x.pt")
