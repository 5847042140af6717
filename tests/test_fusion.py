"""NYUDv2 fusion nets: early fusion (RGB-D, 4 input channels) and late fusion (RGB-HHA, two streams)."""

import pytest
import torch

from segbench import models
from segbench.models import fusion
from segbench.models.layers import BilinearUpsample, bilinear_kernel
from segbench.weights import load_model, load_record, save_model

W = 1 / 16
C = 5


def _randomise_scores(net):
    for name, module in net.named_modules():
        if name.startswith("score_"):
            torch.nn.init.normal_(module.weight, std=0.1)
            torch.nn.init.normal_(module.bias, std=0.1)
    return net


def _score_fr(net, x):
    """The stride-32 ``score_fr`` blob of a single-stream FCN, before upsampling."""
    h = x
    for name in net.trunk_names:
        h = getattr(net, name)(h)
    return net.score_fr(h)


def test_early_fusion_depth_filter_is_the_mean_of_the_rgb_filters():
    torch.manual_seed(0)
    cls = models.classifier("vgg16", 7, width=W)
    rgb = models.transplant(cls, models.build("fcn32s_vgg16", C, width=W))
    rgbd = models.transplant(cls, models.build("fcn32s_vgg16", C, width=W, in_channels=4))
    w = cls.features[0].weight
    assert rgbd.conv1_1.weight.shape == (w.shape[0], 4, 3, 3)
    assert torch.equal(rgbd.conv1_1.weight[:, :3], w)
    assert torch.equal(rgbd.conv1_1.weight[:, 3], w.mean(dim=1))
    assert torch.equal(rgbd.conv1_1.bias, cls.features[0].bias)
    for key, value in rgb.state_dict().items():
        if key != "conv1_1.weight":
            assert torch.equal(rgbd.state_dict()[key], value), key
    # so a depth channel of zeros leaves the transplanted colour net's output unchanged
    _randomise_scores(rgb)
    rgbd.score_fr.load_state_dict(rgb.score_fr.state_dict())
    x = torch.randn(2, 3, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(rgbd.eval()(torch.cat([x, torch.zeros(2, 1, 40, 52)], 1)), rgb.eval()(x))


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    """Two trained-looking FCN-32s and FCN-16s single-stream nets (random trunks and scores), saved to disk."""
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("streams")
    out = {}
    for name in ("fcn32s_vgg16", "fcn16s_vgg16"):
        for modality in ("color", "hha"):
            net = _randomise_scores(models.build(name, C, width=W)).eval()
            path = save_model(root / f"{name}-{modality}.pt", net, name=name, num_classes=C, width=W)
            out[name, modality] = (net, path)
    return out


@pytest.mark.parametrize("name,stream", [("fcn32s_rgbhha_vgg16", "fcn32s_vgg16"),
                                         ("fcn16s_rgbhha_vgg16", "fcn16s_vgg16")])
def test_late_fusion_is_the_mean_of_the_two_streams(streams, name, stream):
    (color, color_path), (hha, hha_path) = streams[stream, "color"], streams[stream, "hha"]
    fused = models.build(name, C, width=W, in_channels=6)
    fusion.init_from_streams(fused, color=load_record(color_path), hha=load_record(hha_path))
    fused.eval()
    x = torch.randn(2, 6, 45, 61)
    with torch.no_grad():
        before = fused.fused_scores(x)["score_fr"]
        assert torch.equal(before, 0.5 * (_score_fr(color, x[:, :3]) + _score_fr(hha, x[:, 3:])))
        expected = 0.5 * (color(x[:, :3]) + hha(x[:, 3:]))
        out = fused(x)
    assert out.shape == (2, C, 45, 61)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_late_fusion_uses_the_reference_layer_names():
    net = models.build("fcn16s_rgbhha_vgg16", 40, width=W, in_channels=6)
    names = {k.rsplit(".", 1)[0] for k in net.state_dict()}
    for modality in ("color", "hha"):
        assert {f"conv1_1{modality}", f"conv5_3{modality}", f"fc6{modality}", f"fc7{modality}",
                f"score_fr{modality}", f"score_pool4{modality}"} <= names
    assert {"upscore2", "upscore16"} <= names
    assert not {"score_fr", "conv1_1", "upscore2color", "upscore2hha"} & names
    assert net.crops == models.build("fcn16s_vgg16", 40, width=W).crops == {"score_pool4": 5, "upscore16": 27}
    assert models.build("fcn32s_rgbhha_vgg16", 40, width=W, in_channels=6).crops == {"upscore": 19}
    assert net.score_frcolor.in_channels == net.fc7hha.out_channels and net.conv1_1hha.in_channels == 3


def test_late_fusion_starts_with_zero_scores_and_frozen_bilinear_upsamplers():
    net = models.build("fcn16s_rgbhha_vgg16", C, width=W, in_channels=6)
    for name in ("score_frcolor", "score_frhha", "score_pool4color", "score_pool4hha"):
        assert torch.count_nonzero(getattr(net, name).weight) == 0
    ups = [m for m in net.modules() if isinstance(m, BilinearUpsample)]
    assert len(ups) == 2 and all(not m.weight.requires_grad for m in ups)
    assert torch.equal(net.upscore16.weight[1, 1], bilinear_kernel(32).float())
    _randomise_scores(net).train()
    net(torch.randn(1, 6, 33, 35)).square().sum().backward()
    assert net.conv1_1color.weight.grad.abs().sum() > 0 and net.conv1_1hha.weight.grad.abs().sum() > 0


def test_fcn16s_fusion_is_staged_from_the_fcn32s_fusion(streams):
    fused32 = fusion.init_from_streams(models.build("fcn32s_rgbhha_vgg16", C, width=W, in_channels=6),
                                       color=load_record(streams["fcn32s_vgg16", "color"][1]),
                                       hha=load_record(streams["fcn32s_vgg16", "hha"][1]))
    fused16 = models.init_from(models.build("fcn16s_rgbhha_vgg16", C, width=W, in_channels=6), fused32)
    for key, value in fused32.state_dict().items():
        if not key.startswith("upscore"):
            assert torch.equal(fused16.state_dict()[key], value), key
    assert torch.count_nonzero(fused16.score_pool4color.weight) == 0
    assert torch.count_nonzero(fused16.score_pool4hha.bias) == 0


def test_fusion_errors_name_what_was_expected(streams, tmp_path):
    with pytest.raises(ValueError, match="takes 6 input channels .* got in_channels=3"):
        models.build("fcn32s_rgbhha_vgg16", C, width=W)
    net = models.build("fcn32s_rgbhha_vgg16", C, width=W, in_channels=6)
    with pytest.raises(ValueError, match=r"N x 6 x H x W .* got \(1, 3, 20, 20\)"):
        net(torch.zeros(1, 3, 20, 20))
    color = load_record(streams["fcn32s_vgg16", "color"][1])
    with pytest.raises(ValueError, match=r"hha stream's weights: .*expected \('fcn32s_vgg16', 5, 0.0625, 3\)"):
        fusion.init_from_streams(net, color=color, hha=load_record(streams["fcn16s_vgg16", "hha"][1]))
    other = save_model(tmp_path / "c.pt", models.build("fcn32s_vgg16", 6, width=W), name="fcn32s_vgg16",
                       num_classes=6, width=W)
    with pytest.raises(ValueError, match="color stream"):
        fusion.init_from_streams(net, color=load_record(other), hha=color)


def test_fusion_round_trips_through_a_weights_file(tmp_path):
    """Saved with in_channels=6 (what ``models.build`` needs to rebuild it), the fusion loads back exactly."""
    net = _randomise_scores(models.build("fcn16s_rgbhha_vgg16", C, width=W, in_channels=6)).eval()
    path = save_model(tmp_path / "m.pt", net, name="fcn16s_rgbhha_vgg16", num_classes=C, width=W, in_channels=6)
    again, record = load_model(path)
    x = torch.randn(1, 6, 30, 34)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), net(x))
