"""Crop offsets and the model card, derived from layer geometry; receptive fields checked empirically."""

import copy
from fractions import Fraction

import pytest
import torch
import torchvision
from torch import nn

from segbench import models
from segbench.models.geometry import crop_offset, layer_geometry, path_geometry

PUBLISHED_CROPS = {
    "fcn32s_vgg16": {"upscore": 19},
    "fcn16s_vgg16": {"score_pool4": 5, "upscore16": 27},
    "fcn8s_vgg16": {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
    "fcn8s_atonce_vgg16": {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
    "fcn32s_alexnet": {"upscore": 18},
    "fcn32s_alexnet_tv": {"upscore": 18},
}
# Table 1 of the paper: conv layers, rf size, max stride, parameters (millions, rounded)
PAPER = {"fcn32s_alexnet": (8, 355, 32, 57), "fcn32s_alexnet_tv": (8, 355, 32, 57), "fcn8s_vgg16": (16, 404, 32, 134),
         "fcn32s_vgg16": (16, 404, 32, 134)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_CROPS))
def test_derived_crops_equal_published(name):
    assert models.build(name, 21, width=1 / 16).crops == PUBLISHED_CROPS[name]
    assert models.card(name)["crops"] == PUBLISHED_CROPS[name]


def test_layer_maps():
    g = layer_geometry(nn.Conv2d(3, 3, 3, padding=100))
    assert (g.scale, g.shift, g.rf, g.depth) == (1, -99, 3, 1)
    g = layer_geometry(nn.MaxPool2d(2, 2, ceil_mode=True))
    assert (g.scale, g.shift, g.rf, g.depth) == (2, Fraction(1, 2), 2, 0)
    g = layer_geometry(nn.ConvTranspose2d(1, 1, 64, stride=32))
    assert (g.scale, g.shift) == (Fraction(1, 32), Fraction(-63, 64))
    assert path_geometry([nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3)]).rf == 8
    with pytest.raises(ValueError, match="scale"):
        crop_offset([nn.MaxPool2d(2, 2)], [])
    with pytest.raises(TypeError, match="no geometry rule"):
        layer_geometry(nn.Linear(2, 2))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_card_matches_paper_exactly(name):
    card = models.card(name)
    conv_layers, rf, stride, params_m = PAPER[name]
    assert (card["conv_layers"], card["rf_size"], card["max_stride"]) == (conv_layers, rf, stride)
    assert round(card["params"] / 1e6) == params_m


def test_card_counts_learnable_parameters_only():
    net = models.build("fcn8s_vgg16", 21, width=1 / 16)
    learnable = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("upscore"))
    assert models.card("fcn8s_vgg16", width=1 / 16)["params"] == learnable
    assert models.card("fcn8s_vgg16", num_classes=40)["params"] - models.card("fcn8s_vgg16")["params"] == \
        19 * (4096 + 512 + 256 + 3)


def test_googlenet_card():
    """torchvision's GoogLeNet trunk (3x3 "5x5" branches, 2x2 pool4): see the googlenet module docstring."""
    card = models.card("fcn32s_googlenet")
    assert (card["conv_layers"], card["rf_size"], card["max_stride"]) == (22, 379, 32)
    with torch.device("meta"):
        tv = torchvision.models.googlenet(aux_logits=False, init_weights=False)
    trunk = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    assert card["params"] == trunk + 1024 * 21 + 21
    assert round(card["params"] / 1e6, 2) == 5.62


def _linearised(net: nn.Module) -> nn.Module:
    """``net`` with max pooling -> average pooling of the same geometry, ReLU/LRN -> identity and every
    weight positive: the gradient support then is the structural receptive field (max pooling and ReLU
    would make it depend on the data)."""
    net = copy.deepcopy(net).double().eval()
    for name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                         ceil_mode=child.ceil_mode, count_include_pad=True))
            elif isinstance(child, (nn.ReLU, nn.LocalResponseNorm)):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    return net


@pytest.mark.parametrize("name", ["fcn32s_vgg16", "fcn32s_alexnet", "fcn32s_alexnet_tv", "fcn32s_googlenet"])
def test_receptive_field_equals_gradient_support(name, monkeypatch):
    """One score_fr unit's gradient w.r.t. an input twice its field covers exactly ``rf`` pixels, at the
    position the coordinate map predicts."""
    torch.manual_seed(0)
    net = _linearised(models.build(name, 1, width=1 / 32))
    monkeypatch.setattr("torch.nn.functional.relu", lambda x, inplace=False: x)  # GoogLeNet's BasicConv2d
    geometry = path_geometry([getattr(net, n) for n in net.trunk_names] + [net.score_fr])
    size = 2 * geometry.rf + 16
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    h = x
    for n in net.trunk_names:
        h = getattr(net, n)(h)
    unit = h.shape[-1] // 2
    h[0, :, unit, unit].sum().backward()  # all channels: an Inception's 1x1 branch alone sees less
    rows = torch.nonzero(x.grad[0].abs().sum((0, 2)) > 0).flatten()
    cols = torch.nonzero(x.grad[0].abs().sum((0, 1)) > 0).flatten()
    centre = geometry.scale * unit + geometry.shift
    assert 0 < rows[0] and rows[-1] < size - 1  # the field lies inside the input
    assert len(rows) == len(cols) == geometry.rf == rows[-1] - rows[0] + 1
    assert Fraction(int(rows[0] + rows[-1]), 2) == centre
    assert models.card(name)["rf_size"] == geometry.rf


def test_googlenet_final_crop_is_half_a_pixel_off_with_64_wide_kernel():
    """All-odd trunk kernels: a 64/32 upsampler lands at offset 106.5 (rounded down), 63/32 at exactly 106."""
    net = models.build("fcn32s_googlenet", 2, width=1 / 16)
    trunk = [getattr(net, n) for n in net.trunk_names] + [net.score_fr]
    assert net.crops == {"upscore": 106}
    with pytest.raises(ValueError, match="213/2 is not a whole pixel"):
        crop_offset(trunk + [nn.ConvTranspose2d(2, 2, 64, stride=32)], [])
    assert crop_offset(trunk + [nn.ConvTranspose2d(2, 2, 63, stride=32)], []) == 106
