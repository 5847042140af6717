"""ICNet's half-width trunk pruned from a ResNet-50 classifier (segbench.models.prune, pretrain.prune_classifier)."""

import re

import pytest
import torch

from segbench import models
from segbench.models.prune import prune_resnet
from segbench.pretraining.standins import pretrain_classifier, prune_classifier

WIDTH = 0.25


def _spaces(key):
    """The channel sets a parameter's rows and columns belong to (None: not pruned)."""
    if key.startswith(("conv1.", "bn1.")):
        return "stem", None
    if key.startswith("fc."):
        return None, ("layer4" if key.endswith("weight") else None)
    stage, block, part = re.match(r"(layer\d)\.(\d+)\.(conv\d|bn\d|downsample\.\d)\.", key).groups()
    before = {"layer1": "stem", "layer2": "layer1", "layer3": "layer2", "layer4": "layer3"}[stage]
    block_in = before if block == "0" else stage
    mid1, mid2 = f"{stage}.{block}.1", f"{stage}.{block}.2"
    return {"conv1": (mid1, block_in), "bn1": (mid1, None), "conv2": (mid2, mid1), "bn2": (mid2, None),
            "conv3": (stage, mid2), "bn3": (stage, None), "downsample.0": (stage, block_in),
            "downsample.1": (stage, None)}[part]


def _embedded(half: dict, full: dict, seed=0) -> dict:
    """``half`` placed at random channels of a ``full``-shaped state dict whose other channels are dead (zero
    filters, zero batch-norm scale and shift): the net the pruning should give back exactly."""
    g = torch.Generator().manual_seed(seed)
    keep = {}

    def chosen(space, n_full, n_half):
        if space not in keep:
            keep[space] = torch.randperm(n_full, generator=g)[:n_half].sort().values
        return keep[space]

    out = {}
    for key, value in half.items():
        if value.ndim == 0:
            out[key] = value.clone()
            continue
        rows, cols = _spaces(key)
        big = torch.ones_like(full[key]) if key.endswith("running_var") else torch.zeros_like(full[key])
        r = chosen(rows, full[key].shape[0], value.shape[0]) if rows else torch.arange(value.shape[0])
        if value.ndim > 1:
            c = chosen(cols, full[key].shape[1], value.shape[1]) if cols else torch.arange(value.shape[1])
            big[r[:, None], c] = value
        else:
            big[r] = value
        out[key] = big
    return out


def _randomised(net):
    g = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=g)
            module.running_var.uniform_(0.5, 2.0, generator=g)
            module.weight.data.uniform_(0.5, 1.5, generator=g)
            module.bias.data.normal_(0, 0.1, generator=g)
    return net.eval()


def test_pruning_gives_back_the_half_width_net_hidden_in_a_full_one():
    half = _randomised(models.classifier("resnet50_half", 20, width=WIDTH))
    full = models.classifier("resnet50", 20, width=WIDTH).eval()
    full.load_state_dict(_embedded(half.state_dict(), full.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(x), half(x), rtol=1e-4, atol=1e-4)  # the dead channels add nothing
    pruned = prune_resnet(full.state_dict(), half.state_dict())
    assert pruned.keys() == half.state_dict().keys()
    for key, value in half.state_dict().items():
        assert torch.equal(pruned[key], value), key


def test_pruning_keeps_the_largest_filters_of_a_trained_looking_net():
    full = models.classifier("resnet50", 20, width=WIDTH)
    target = models.classifier("resnet50_half", 20, width=WIDTH).state_dict()
    pruned = prune_resnet(full.state_dict(), target)
    norms = full.conv1.weight.detach().abs().flatten(1).sum(1)
    kept = norms >= norms.sort(descending=True).values[target["conv1.weight"].shape[0] - 1]
    assert torch.equal(pruned["conv1.weight"], full.conv1.weight.detach()[kept])  # in their original order
    models.classifier("resnet50_half", 20, width=WIDTH).load_state_dict(pruned)  # strict


def test_pruning_refuses_another_layout():
    with pytest.raises(ValueError, match="differ in layout"):
        prune_resnet(models.classifier("resnet101", 20, width=WIDTH).state_dict(),
                     models.classifier("resnet50_half", 20, width=WIDTH).state_dict())


def test_a_pruned_stand_in_keeps_its_source_record_and_reports_its_accuracy(tmp_path):
    source = pretrain_classifier(tmp_path / "resnet50.pt", backbone="resnet50", width=1 / 16, crop_size=48,
                                 crop_iterations=1, iterations=1, batch_size=2, eval_images=4, threads=1,
                                 progress=False)
    out = prune_classifier(source, tmp_path / "resnet50_half.pt", threads=1)
    record = torch.load(out, weights_only=True)
    assert (record["backbone"], record["width"], record["pruned_from"]) == ("resnet50_half", 1 / 16, "resnet50")
    assert 0.0 <= record["accuracy"] <= 1.0 and record["image_size"] == 224
    assert (tmp_path / "resnet50_half.json").exists()
    icnet = models.build("icnet_resnet50", 21, width=1 / 16)
    models.transplant(record["state_dict"], icnet)  # fills ICNet's trunk
    with pytest.raises(ValueError, match=r"holds a 'resnet50_half' classifier, but resnet50_half is pruned from "
                                         r"'resnet50'"):
        prune_classifier(out, tmp_path / "again.pt")
    with pytest.raises(FileNotFoundError, match=r"missing.pt does not exist: run the pretrain \(or fetch-weights\) "
                                                r"step for resnet50"):
        prune_classifier(tmp_path / "missing.pt", tmp_path / "again.pt")
