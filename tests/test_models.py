"""Every FCN: output size for inputs 1x1..512x512, backward, frozen bilinear upsamplers, zero score layers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segbench import models
from segbench.models.layers import BilinearUpsample, bilinear_kernel

NAMES = sorted(n for n in models.MODELS if n.startswith("fcn") and "_rgbhha_" not in n and "_siftflow_" not in n)
SIZES = [(1, 1), (2, 5), (17, 31), (64, 64), (99, 100), (161, 200), (255, 256), (333, 317), (512, 512)]
WIDTH = 1 / 16


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: models.build(name, 5, width=WIDTH).eval() for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_output_has_input_size(nets, name):
    net = nets[name]
    for h, w in SIZES:
        with torch.no_grad():
            y = net(torch.randn(1, 3, h, w))
        assert y.shape == (1, 5, h, w), (h, w)


@pytest.mark.parametrize("name,size", [("fcn8s_vgg16", 64), ("fcn32s_alexnet", 50)])
def test_full_width_spot_check(name, size):
    net = models.build(name, 21).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, size, size + 7))
    assert y.shape == (2, 21, size, size + 7)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_trunk_not_upsamplers(name):
    net = models.build(name, 3, width=WIDTH).train()
    for m in net.modules():  # score layers start at zero: perturb them so gradients reach the trunk
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3:
            torch.nn.init.normal_(m.weight, std=0.1)
    net(torch.randn(2, 3, 37, 41)).square().sum().backward()
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert net.score_fr.weight.grad.abs().sum() > 0
    for m in net.modules():
        if isinstance(m, BilinearUpsample):
            assert m.weight.grad is None and not m.weight.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_upsamplers_are_diagonal_bilinear_and_scores_zero(nets, name):
    net = nets[name]
    ups = [m for m in net.modules() if isinstance(m, BilinearUpsample)]
    assert len(ups) == 1 + len(net.skips)
    for m in ups:
        k = m.kernel_size[0]
        eye = torch.eye(5).reshape(5, 5, 1, 1)
        assert torch.equal(m.weight, eye * bilinear_kernel(k).float())
    for score in ["score_fr", "score_pool4", "score_pool3"][:1 + len(net.skips)]:
        layer = getattr(net, score)
        assert layer.out_channels == 5
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0


def test_bilinear_kernel_known_values():
    line = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    assert torch.allclose(bilinear_kernel(4), torch.outer(line, line))
    assert bilinear_kernel(64).sum().item() == pytest.approx(32 ** 2)
    assert bilinear_kernel(63).sum().item() == pytest.approx(32 ** 2)
    assert bilinear_kernel(3)[1, 1] == 1.0


def test_upsampler_is_bilinear_interpolation_in_the_interior():
    """Away from the borders the 64/32 deconvolution is ``F.interpolate(bilinear)`` shifted by 16 pixels."""
    up = BilinearUpsample(3, kernel_size=64, stride=32)
    x = torch.randn(1, 3, 5, 6)
    y = up(x)
    ref = F.interpolate(x, scale_factor=32, mode="bilinear", align_corners=False)
    assert y.shape[-2:] == (4 * 32 + 64, 5 * 32 + 64)
    assert torch.allclose(y[..., 32:32 * 5, 32:32 * 6], ref[..., 16:32 * 5 - 16, 16:32 * 6 - 16], atol=1e-5)


def test_upsampler_runs_in_fp32_under_bf16_autocast():
    up = BilinearUpsample(4, kernel_size=64, stride=32)
    x = torch.randn(1, 4, 3, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = up(x)
    assert y.dtype == torch.float32
    # the per-class (grouped) forward equals the dense C x C deconvolution of Caffe / pytorch-fcn
    torch.testing.assert_close(y, F.conv_transpose2d(x.float(), up.weight, stride=32), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel, stride, size_in, offset, size_out", [
    (64, 32, (11, 12), 19, (128, 131)), (63, 32, (10, 10), 18, (100, 97)), (16, 8, (42, 42), 31, (128, 128)),
    (32, 16, (9, 7), 27, (97, 65)), (64, 32, (1, 1), 19, (1, 1))])
def test_upsampler_window_is_the_crop_of_the_whole_output_forward_and_backward(kernel, stride, size_in, offset,
                                                                               size_out):
    """The separable window (what the FCNs' final layer computes) equals crop(upscore(x)) and its gradient."""
    torch.manual_seed(0)
    up = BilinearUpsample(5, kernel_size=kernel, stride=stride)
    x = torch.randn(2, 5, *size_in, requires_grad=True)
    whole = up(x)[..., offset:offset + size_out[0], offset:offset + size_out[1]]
    window = up.window(x, offset, size_out)
    torch.testing.assert_close(window, whole, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(whole)
    torch.testing.assert_close(torch.autograd.grad(window, x, g)[0], torch.autograd.grad(whole, x, g)[0],
                               rtol=1e-5, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert up.window(x.bfloat16(), offset, size_out).dtype == torch.float32
    with pytest.raises(ValueError, match="padding is too small"):
        up.window(x, (size_in[0] - 1) * stride + kernel - size_out[0] + 1, size_out)  # one row past the blob


def test_upsampler_window_of_a_loaded_non_bilinear_kernel_falls_back_to_the_deconvolution():
    up = BilinearUpsample(2, kernel_size=4, stride=2)
    state = up.state_dict()
    state["weight"][1, 1, 0, 0] = 3.0  # still per-class, no longer separable
    up.load_state_dict(state)
    assert not up.separable
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(up.window(x, 1, (6, 7)), up(x)[..., 1:7, 1:8])


def test_upsampler_refuses_cross_class_weights():
    up = BilinearUpsample(3, kernel_size=4, stride=2)
    state = up.state_dict()
    state["weight"][0, 1, 0, 0] = 0.5
    with pytest.raises(ValueError, match="off the class diagonal"):
        up.load_state_dict(state)


def test_atonce_scales_pool_scores():
    """At-once scales pool4 by 0.01 and pool3 by 1e-4 before their (linear) score layers."""
    torch.manual_seed(1)
    staged = models.build("fcn8s_vgg16", 4, width=WIDTH).eval()
    atonce = models.build("fcn8s_atonce_vgg16", 4, width=WIDTH).eval()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(staged, name).weight)
    atonce.load_state_dict(staged.state_dict())
    with torch.no_grad():
        staged.score_pool4.weight.mul_(0.01)
        staged.score_pool3.weight.mul_(0.0001)
        x = torch.randn(1, 3, 45, 52)
        assert torch.allclose(atonce(x), staged(x), atol=1e-5, rtol=1e-5)


def test_width_scales_every_trunk_channel():
    net = models.build("fcn8s_vgg16", 21, width=0.125)
    assert [getattr(net, f"conv{i}_1").out_channels for i in range(1, 6)] == [8, 16, 32, 64, 64]
    assert net.fc6.out_channels == net.fc7.out_channels == 512
    assert net.fc6.kernel_size == (7, 7) and net.conv1_1.padding == (100, 100)
    assert net.score_pool3.out_channels == 21


def test_extra_input_channels():
    net = models.build("fcn32s_vgg16", 40, width=WIDTH, in_channels=4).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 4, 20, 30)).shape == (1, 40, 20, 30)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="fcn8s_vgg16"):
        models.build("fcn8s_resnet", 21)
    with pytest.raises(ValueError, match="googlenet"):
        models.classifier("resnet18", 10)


def test_build_accepts_the_documented_positional_signature():
    net = models.build("fcn8s_vgg16", 21, 0.0625, 4)  # build(name, num_classes, width=1.0, in_channels=3)
    assert net(torch.zeros(1, 4, 16, 16)).shape == (1, 21, 16, 16)


@pytest.mark.parametrize("block", ["inception", "bottleneck", "bottleneck_dilated"])
def test_torchvision_blocks_made_here_equal_torchvision(block):
    """GoogLeNet's BasicConv2d/Inception and ResNet's Bottleneck are defined in segbench (no torchvision import
    per job): for one seed they start from the same weights, under the same names, and compute the same
    forward and backward as torchvision's."""
    import importlib

    ours_g, theirs_g = map(importlib.import_module, ("segbench.models.googlenet", "torchvision.models.googlenet"))
    ours_r, theirs_r = map(importlib.import_module, ("segbench.models.resnet", "torchvision.models.resnet"))

    def make(g, r):
        torch.manual_seed(3)
        if block == "inception":
            return g.Inception(24, 8, 6, 10, 4, 6, 5)
        down = nn.Sequential(nn.Conv2d(24, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        if block == "bottleneck":
            return r.Bottleneck(24, 8, 2, down)
        return r.Bottleneck(32, 8, dilation=2)

    ours, theirs = make(ours_g, ours_r), make(theirs_g, theirs_r)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[key]), key
    x = torch.randn(2, 32 if block == "bottleneck_dilated" else 24, 13, 11)
    outs, grads = [], []
    for net in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = net.train()(xi)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
