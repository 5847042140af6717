"""The successor architectures: shapes at odd sizes, known geometry, identity context, ASPP, overlap-tile,
auxiliary heads, parameter counts and FLOPs against their references, ResNet classifiers and transplant."""

import pytest
import torch
import torchvision
from torch import nn

from segbench import models
from segbench.models import attention_unet, cards, deeplab, unet, unetplusplus
from segbench.models.context import ContextModule
from segbench.training import recipes

SUCCESSORS = ["unet", "unet_same", "unet_vgg16", "unetpp", "attention_unet", "dilation8_vgg16",
              "dilation8_basic_vgg16", "dilation8_large_vgg16", "pspnet_resnet50", "pspnet_resnet101",
              "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3plus_resnet50", "deeplabv3plus_resnet101",
              "icnet_resnet50"]
RESNET_BASED = [n for n in SUCCESSORS if "resnet" in n]
WITH_AUX = {"pspnet_resnet50": {"aux": 0.4}, "pspnet_resnet101": {"aux": 0.4},
            "icnet_resnet50": {"sub4": 0.4, "sub24": 0.4}}
SIZES = [(1, 1), (17, 31), (33, 20), (65, 47)]
W = 1 / 16


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: models.build(name, 5, width=W).eval() for name in SUCCESSORS}


def _hook_shapes(module: nn.Module, x: torch.Tensor, names: list[str], forward=None) -> dict[str, tuple]:
    """Output shapes of the named submodules during ``module(x)`` (or ``forward(x)``)."""
    shapes = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left alone
            shapes[name] = tuple((output[0] if isinstance(output, tuple) else output).shape)
        return hook

    handles = [module.get_submodule(name).register_forward_hook(record(name)) for name in names]
    with torch.no_grad():
        (forward or module)(x)
    for h in handles:
        h.remove()
    return shapes


def test_every_successor_is_registered():
    assert set(SUCCESSORS) <= set(models.MODELS)
    assert models.backbone_of("unet") is None and models.backbone_of("dilation8_large_vgg16") == "vgg16"
    assert models.backbone_of("deeplabv3plus_resnet101") == "resnet101"
    assert models.backbone_of("icnet_resnet50") == "resnet50_half"


@pytest.mark.parametrize("name", SUCCESSORS)
def test_output_has_input_size(nets, name):
    net = nets[name]
    assert net.backbone == models.backbone_of(name)
    for h, w in SIZES:
        with torch.no_grad():
            y = net(torch.randn(2, 3, h, w))
        assert y.shape == (2, 5, h, w), (h, w)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SUCCESSORS)
def test_forward_backward_reach_every_parameter(name):
    """Batch 2: image pooling / the 1x1 pyramid bin normalise one value per image in train mode."""
    torch.manual_seed(0)
    net = models.build(name, 3, width=W, in_channels=4).train()
    x = torch.randn(2, 4, 35, 29)
    if name in WITH_AUX:
        scores, heads = net.forward_with_aux(x)
        loss = scores.square().mean() + sum(weight * s.square().mean() for s, weight in heads.values())
    else:
        scores = net(x)
        loss = scores.square().mean()
    assert scores.shape == (2, 3, 35, 29)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", sorted(WITH_AUX))
def test_forward_with_aux_heads_and_weights(nets, name):
    net = nets[name]
    x = torch.randn(1, 3, 97, 130)
    with torch.no_grad():
        scores, heads = net.forward_with_aux(x)
        assert torch.allclose(scores, net(x), atol=1e-6)  # the main output is forward's
    assert {head: weight for head, (_, weight) in heads.items()} == WITH_AUX[name]
    for head_scores, _ in heads.values():
        assert head_scores.shape[:2] == (1, 5)
    if name.startswith("icnet"):  # guidance at 1/16 and 1/8 of the input (rounded up per stride-2 step)
        assert heads["sub4"][0].shape[-2:] == (7, 9) and heads["sub24"][0].shape[-2:] == (13, 17)
    else:  # PSPNet's aux scores are upsampled to the input, as semseg does
        assert heads["aux"][0].shape[-2:] == (97, 130)


def test_icnet_branch_sizes_of_the_release():
    """At 1025 x 2049: sub4 33x65, CFFs at 65x129 and 129x257, conv6_cls 257x513 (SUCCESSORS-REFERENCE 12)."""
    net = models.build("icnet_resnet50", 2, width=1 / 32).eval()
    shapes = _hook_shapes(net, torch.zeros(1, 3, 1025, 2049), ["conv5_4_k1", "cff_sub24", "conv3_sub1", "conv6_cls"])
    assert shapes["conv5_4_k1"][-2:] == (33, 65)
    assert shapes["conv3_sub1"][-2:] == (129, 257)
    assert shapes["conv6_cls"][-2:] == (257, 513)
    with torch.device("meta"):
        full = models.build("icnet_resnet50", 19)
    assert full.layer4[0].conv3.out_channels == 1024  # the half-width ResNet-50 of the release
    assert full.layer3[0].conv2.dilation == (2, 2) and full.layer4[-1].conv2.dilation == (4, 4)


def test_pspnet_geometry():
    """473 -> 60x60 features at OS8; the pyramid has bins 1, 2, 3, 6 and outputs 4096 channels at width 1."""
    net = models.build("pspnet_resnet50", 2, width=W).eval()
    assert _hook_shapes(net, torch.zeros(1, 3, 473, 473), ["layer4"])["layer4"][-2:] == (60, 60)
    assert net.ppm.bins == (1, 2, 3, 6)
    with torch.device("meta"):
        full = models.build("pspnet_resnet101", 21)
    assert full.ppm.out_channels == 4096 and full.cls[0].in_channels == 4096 and full.aux[0].in_channels == 1024


@pytest.mark.parametrize("os,rates,layer3,layer4", [(16, (6, 12, 18), (1,) * 6, (2, 4, 8)),
                                                    (8, (12, 24, 36), (2,) * 6, (4, 8, 16))])
def test_aspp_rates_and_trunk_dilation(os, rates, layer3, layer4):
    net = models.build("deeplabv3_resnet50", 3, width=W, output_stride=os).eval()
    assert net.aspp.rates == rates
    atrous = [branch[0] for branch in net.aspp.atrous]
    assert [(c.kernel_size, c.dilation[0], c.padding[0]) for c in atrous] == [((3, 3), r, r) for r in rates]
    assert net.aspp.branch0[0].kernel_size == (1, 1)
    assert tuple(b.conv2.dilation[0] for b in net.layer3) == layer3  # every block, the first one included
    assert tuple(b.conv2.dilation[0] for b in net.layer4) == layer4  # multi-grid (1, 2, 4) x the stage rate
    assert net.aspp.project[0].in_channels == 5 * net.aspp.branch0[0].out_channels
    shapes = _hook_shapes(net, torch.zeros(1, 3, 129, 129), ["layer4", "aspp"])
    assert shapes["layer4"][-2:] == shapes["aspp"][-2:] == ((129 - 1) // os + 1,) * 2


def test_image_pooling_branch_is_spatially_constant():
    torch.manual_seed(0)
    pool = deeplab.ImagePooling(8, 4).eval()
    x = torch.randn(2, 8, 9, 13) + torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1)  # two different means
    y = pool(x)
    assert y.shape == (2, 4, 9, 13)
    assert torch.equal(y, y[..., :1, :1].expand_as(y))
    assert torch.allclose(y[..., 0, 0], pool.conv(x.mean((2, 3), keepdim=True))[..., 0, 0])
    assert not torch.allclose(y[0], y[1])  # it depends on the image


def test_deeplabv3plus_decoder():
    net = models.build("deeplabv3plus_resnet101", 4, width=W).eval()
    shapes = _hook_shapes(net, torch.zeros(1, 3, 65, 67), ["layer1", "project", "decoder"])
    assert shapes["layer1"][-2:] == shapes["decoder"][-2:] == (17, 17)  # stride 4
    with torch.device("meta"):
        full = models.build("deeplabv3plus_resnet101", 21)
        separable = models.build("deeplabv3plus_resnet101", 21, separable=True)
    assert full.project[0].out_channels == 48 and full.decoder[0].in_channels == 304
    assert [c.kernel_size for c in full.decoder if isinstance(c, nn.Conv2d)] == [(3, 3), (3, 3)]
    depthwise = [branch[0] for branch in separable.aspp.atrous] + [separable.decoder[0]]
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert [c.dilation[0] for c in depthwise] == [6, 12, 18, 1]


@pytest.mark.parametrize("kind", ["basic", "large"])
def test_identity_initialised_context_module_is_identity(kind):
    """Eq. 4-5 without noise: the module is ReLU(x), i.e. the identity on non-negative score maps."""
    torch.manual_seed(0)
    module = ContextModule(21, kind, noise_std=0.0)
    x = torch.randn(2, 21, 33, 40)
    with torch.no_grad():
        y, y_pos = module(x), module(x.relu())
    if kind == "basic":
        assert torch.equal(y, x.relu()) and torch.equal(y_pos, x.relu())
    else:
        torch.testing.assert_close(y, x.relu(), rtol=0, atol=1e-5)
    convs = [m for m in module.children()]
    assert [c.dilation[0] for c in convs] == [1, 1, 2, 4, 8, 16, 1, 1]
    assert convs[-1].kernel_size == (1, 1)
    expected = [21] * 8 if kind == "basic" else [42, 42, 84, 168, 336, 672, 672, 21]
    assert [c.out_channels for c in convs] == expected
    for conv in convs:  # Eq. 5: centre taps C / c_out between matching groups (c_out / 21 maps per group)
        k = conv.kernel_size[0] // 2
        centre = conv.weight[:, :, k, k]
        assert set(centre.unique().tolist()) == {0.0, 21 / conv.out_channels}
        assert (centre != 0).sum() == conv.in_channels * conv.out_channels // 21
        assert conv.weight.count_nonzero() == (centre != 0).sum() and conv.bias.count_nonzero() == 0


def test_large_context_module_default_noise_breaks_symmetry():
    torch.manual_seed(0)
    module = ContextModule(21, "large")
    w = module.ctx_conv1_1.weight  # output maps 0 and 1 copy input map 0 at init: noise must tell them apart
    assert not torch.equal(w[0], w[1])
    assert (w[0, 0, 1, 1] - 0.5).abs() < 0.1 and w[0, 1].abs().max() < 0.1


def test_dilated_front_end_geometry():
    """Unpadded, pool4/pool5 removed: a 900 tile gives 66 x 66 scores; rf 380 (908 with a context module)."""
    net = models.build("dilation8_vgg16", 3, width=W).eval()
    trunk = nn.Sequential(*[getattr(net, n) for n in net.trunk_names], net.final)
    with torch.no_grad():
        assert trunk(torch.zeros(1, 3, 900, 900)).shape[-2:] == (66, 66)
    assert net.conv5_1.dilation == (2, 2) and net.fc6.dilation == (4, 4) and net.fc6.kernel_size == (7, 7)
    assert not hasattr(net, "pool4") and not hasattr(net, "pool5")
    assert models.card("dilation8_vgg16")["rf_size"] == 380
    assert models.card("dilation8_large_vgg16")["rf_size"] == 908


def test_unet_on_vgg16_takes_fcns_trunk_and_its_skips_from_conv1_to_conv4():
    net = models.build("unet_vgg16", 5, width=W)
    classifier = models.classifier("vgg16", 20, width=W)
    models.transplant(classifier, net)  # fc6, fc7 and fc8 unused: the trunk stops at conv5_3
    assert torch.equal(net.conv3_2.weight, classifier.features[12].weight)
    assert torch.equal(net.conv5_3.bias, classifier.features[28].bias)
    assert not hasattr(net, "fc6") and "pool5" not in net.trunk_names
    shapes = _hook_shapes(net, torch.randn(1, 3, 64, 48), [*net.skip_names, "relu5_3", "u0"])
    assert [shapes[n][-2:] for n in (*net.skip_names, "relu5_3")] == [(64 // s, 48 // s) for s in (1, 2, 4, 8, 16)]
    assert shapes["u0"] == (1, 5, 64, 48)  # conv1_2's 64 channels at 1/16 (4), widened to the 5 classes
    decoder = {n for n, _ in net.named_parameters() if recipes.head_parameter(net, n)}
    assert decoder and all(n.split(".")[0] not in net.trunk_names for n in decoder)
    assert {n.split(".")[0] for n in decoder} == {"upconv3", "upconv2", "upconv1", "upconv0", "u3", "u2", "u1", "u0",
                                                  "score"}


def test_unet_expansive_stages_are_never_narrower_than_the_classes():
    """Width 1/8 makes U-Net's last stages 8 and 16 channels wide, below VOC's 21 classes, which must all pass
    through them to the classifier: they are widened to 21; the bottom and every stage at full width keep
    the paper's counts."""
    assert unet.expansive_channels([8, 16, 32, 64, 128], 21) == [21, 21, 32, 64, 128]
    assert unet.expansive_channels([8, 16, 32, 64, 64], 80) == [80, 80, 80, 80, 64]
    assert unet.expansive_channels([64, 128, 256, 512, 1024], 40) == [64, 128, 256, 512, 1024]
    for name in ("unet_vgg16", "unet_same", "unet"):
        narrow = models.build(name, 21, width=0.125)
        assert narrow.score.in_channels == 21 and narrow.u1[0].out_channels == 21
        assert narrow.u0[0].in_channels == 21 + 8  # the up-convolution's 21 beside the skip's 8
        assert narrow.u2[0].out_channels == 32
        full = models.build(name, 21)
        assert full.score.in_channels == 64 and full.u0[0].in_channels == 128 and full.u3[0].out_channels == 512


@pytest.mark.parametrize("gates,reference", [(0, 5_888_004), (1, 6_214_151), (2, 6_473_322)])
def test_attention_unet_counts_match_the_release(gates, reference):
    """ozan-oktay/Attention-Gated-Networks' CT nets (3D, 1 channel in, 4 classes, feature_scale 4 = width 1/4):
    the deep-supervised U-Net baseline, unet_CT_single_att_dsv_3D and unet_CT_multi_att_dsv_3D."""
    with torch.device("meta"):
        net = attention_unet.AttentionUNet(4, width=0.25, in_channels=1, gates=gates, dims=3)
    assert sum(p.numel() for p in net.parameters()) == reference


def test_attention_gate_coefficients_scale_the_skip():
    torch.manual_seed(0)
    gate = attention_unet.AttentionGate(6, 10, 6).eval()
    x, g = torch.randn(2, 6, 16, 12), torch.randn(2, 10, 8, 6)
    with torch.no_grad():
        out, alpha = gate(x, g)
        assert alpha.shape == (2, 1, 16, 12) and out.shape == x.shape
        assert 0 <= alpha.min() and alpha.max() <= 1 and alpha.std() > 0
        gate.psi.weight.zero_()
        gate.psi.bias.fill_(0.7)
        out, alpha = gate(x, g)
        assert torch.allclose(alpha, torch.full_like(alpha, torch.sigmoid(torch.tensor(0.7)).item()))
        assert torch.allclose(out, gate.W(torch.sigmoid(torch.tensor(0.7)) * x), atol=1e-6)


def test_attention_unet_gates_the_three_coarser_skips_and_fuses_four_heads():
    net = models.build("attention_unet", 5, width=W).eval()
    with torch.no_grad():
        maps = net.attention(torch.randn(1, 3, 64, 48))
    assert {k: v.shape[-2:] for k, v in maps.items()} == {"att4": (8, 6), "att3": (16, 12), "att2": (32, 24)}
    assert net.final.in_channels == 4 * 5 and not hasattr(net, "att1")
    plain = models.build("attention_unet", 5, width=W, gates=0)
    assert not hasattr(plain, "gating") and not hasattr(plain, "att2")
    with pytest.raises(ValueError, match="gates must be one of"):
        models.build("attention_unet", 5, width=W, gates=3)


def test_unetpp_nodes_take_every_earlier_node_of_their_level():
    """X(i, j) reads Up(X(i+1, j-1)) and X(i, 0 ... j-1): (j + 1) x f_i channels at full width."""
    with torch.device("meta"):
        net = models.build("unetpp", 21)
    for i, j in [(0, 1), (0, 4), (1, 2), (2, 2), (3, 1)]:
        assert getattr(net, f"x{i}_{j}")[0].in_channels == (j + 1) * unetplusplus.CHANNELS[i]
    assert not hasattr(net, "x1_4") and not hasattr(net, "x4_1")


def test_unetpp_deep_supervision_trains_four_heads_and_averages_them_at_test():
    torch.manual_seed(0)
    net = models.build("unetpp", 5, width=W).eval()
    x = torch.randn(2, 3, 37, 21)
    with torch.no_grad():
        scores, aux = net.forward_with_aux(x)
        heads = net.head_scores(x)
        assert len(heads) == 4 and torch.equal(scores, heads[3])
        assert {k: w for k, (_, w) in aux.items()} == {"head1": 1.0, "head2": 1.0, "head3": 1.0}
        assert net.aux_weights == {"head1": 1.0, "head2": 1.0, "head3": 1.0}  # the floor counts four losses
        mean = torch.stack([h.softmax(1) for h in heads]).mean(0)
        assert torch.allclose(net(x).exp(), mean, atol=1e-6)
        assert not torch.allclose(mean, heads[3].softmax(1), atol=1e-3)  # the heads differ


@pytest.mark.parametrize("level", [1, 2, 3])
def test_unetpp_pruned_inference_equals_the_subnetwork(level):
    torch.manual_seed(0)
    full = models.build("unetpp", 5, width=W).eval()
    sub = unetplusplus.UNetPlusPlus(5, width=W, depth=level).eval()
    sub.load_state_dict({k: v for k, v in full.state_dict().items() if k in sub.state_dict()})
    pruned = models.for_evaluation(full, {"name": "unetpp", "num_classes": 5, "width": W}, {"prune": level})
    x = torch.randn(1, 3, 45, 30)
    with torch.no_grad():
        assert torch.equal(pruned(x), sub.head_scores(x)[-1])
        assert pruned(x).shape == (1, 5, 45, 30)
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError, match="prune must be 1 ... 4"):
        models.for_evaluation(full, {"name": "unetpp", "num_classes": 5, "width": W}, {"prune": 5})


def test_unetpp_batch_norm_option_adds_a_batch_norm_after_every_node_conv_and_keeps_the_subnetworks():
    plain = models.build("unetpp", 5, width=W)
    normed = models.build("unetpp", 5, width=W, batch_norm=True)
    convs = [m for name, m in normed.named_modules() if isinstance(m, torch.nn.Conv2d) and name.startswith("x")]
    bns = [m for m in normed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 30 and len(bns) == 30 and all(c.bias is None for c in convs)  # 15 nodes x 2 convs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    # each conv trades its bias for the batch norm's weight and bias: one extra parameter per channel
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(normed) - count(plain) == sum(c.out_channels for c in convs)
    torch.manual_seed(0)
    normed.eval()
    sub = unetplusplus.UNetPlusPlus(5, width=W, depth=2, batch_norm=True).eval()
    sub.load_state_dict({k: v for k, v in normed.state_dict().items() if k in sub.state_dict()})
    pruned = models.for_evaluation(normed, {"name": "unetpp", "num_classes": 5, "width": W,
                                            "options": {"batch_norm": True}}, {"prune": 2})
    x = torch.randn(1, 3, 23, 41)
    with torch.no_grad():
        assert torch.equal(pruned(x), sub.head_scores(x)[-1]) and normed(x).shape == (1, 5, 23, 41)
    with pytest.raises(ValueError, match="batch_norm must be true or false, got 'yes'"):
        models.build("unetpp", 5, width=W, batch_norm="yes")


def test_unet_valid_geometry():
    assert unet.unet_output_size(572) == 388 and unet.valid_input_size(388) == 572
    assert unet.valid_input_size(1) == 188
    for bad in (571, 172):
        with pytest.raises(ValueError, match="16k \\+ 60"):
            unet.unet_output_size(bad)
    net = models.build("unet", 2, width=1 / 32, in_channels=1).eval()
    names = ["d0", "d1", "d2", "d3", "upconv3", "upconv2", "upconv1", "upconv0", "score"]
    shapes = _hook_shapes(net, torch.zeros(1, 1, 572, 572), names, forward=net.forward_valid)
    assert [shapes[f"d{i}"][-1] for i in range(4)] == [568, 280, 136, 64]
    assert [shapes[f"upconv{i}"][-1] for i in (3, 2, 1, 0)] == [56, 104, 200, 392]
    assert shapes["score"][-2:] == (388, 388)
    assert [(s - u) // 2 for s, u in zip([568, 280, 136, 64], [392, 200, 104, 56])] == list(unet.CROPS)



def test_overlap_tile_equals_whole_image_inference():
    """Tiles starting every 16 pixels pool on the whole-image grid: the stitched outputs equal model(x)."""
    torch.manual_seed(0)
    net = models.build("unet", 3, width=1 / 32).eval()
    x = torch.randn(1, 3, 40, 37)
    with torch.no_grad():
        whole = net(x)
        tiled = unet.predict_tiled(net, x, tile=204)  # 20-pixel outputs, step 16: 3 x 3 tiles
        paper_step = unet.predict_tiled(net, x, tile=204, step=20)  # the paper's non-overlapping outputs
    assert tiled.shape == whole.shape == paper_step.shape == (1, 3, 40, 37)
    torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-4 * whole.abs().max().item())
    assert not torch.allclose(paper_step, whole, rtol=1e-4, atol=1e-4 * whole.abs().max().item())
    with pytest.raises(ValueError, match="step"):
        unet.predict_tiled(net, x, tile=188)  # 4-pixel outputs: no multiple of 16 fits
    with pytest.raises(ValueError, match="valid-convolution"):
        unet.predict_tiled(models.build("unet_same", 3, width=1 / 32), x)


def test_unet_support_equals_gradient_support():
    """The receptive field (204; 188 at a quarter of the positions) is the gradient support of one output
    pixel in the linearised net (max pooling -> average, ReLU -> identity, positive weights)."""
    net = models.build("unet", 1, width=1 / 32, in_channels=1).double().eval()
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(2))
            elif isinstance(child, nn.ReLU):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.fill_(1.0)
    x = torch.randn(1, 1, 252, 188, dtype=torch.float64, requires_grad=True)
    y = net.forward_valid(x)
    for p in (16, 20):
        x.grad = None
        y[0, 0, p, 0].backward(retain_graph=True)
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1) > 0).flatten()
        assert (int(rows[0]), int(rows[-1])) == net.support(p)
    assert net.receptive_field() == 204 == models.card("unet")["rf_size"]


def _params(name, num_classes, in_channels, with_aux):
    with torch.device("meta"):
        net = models.build(name, num_classes, in_channels=in_channels)
    aux = () if with_aux else getattr(net, "aux_modules", ())
    return sum(p.numel() for n, p in net.named_parameters() if not any(n.startswith(a + ".") for a in aux))


# name, classes, input channels, aux heads counted, reference count, exact, the reference
REFERENCE_PARAMS = [
    ("unet", 2, 1, False, 31_030_658, True, "U-Net paper Fig. 1 (valid convs, 1 channel in, 2 classes)"),
    ("unet_same", 2, 3, False, 31_037_698, True, "milesial/Pytorch-UNet UNet(3, 2, bilinear=False)"),
    ("unetpp", 1, 1, False, 9_041_700, True, "MrGiovanni/UNetPlusPlus Nest_Net (32-512) with its four heads"),
    ("unetpp", 20, 3, False, 9_044_784, True, "Nest_Net, four heads, 3 channels in, 20 classes (SEEDS-REFERENCE 8.3)"),
    ("dilation8_vgg16", 21, 3, False, 134_346_581, True, "Yu & Koltun front end, fyu/dilation (C = 21)"),
    ("dilation8_basic_vgg16", 21, 3, False, 134_346_581 + 28_392, True, "front end + basic module, fyu/dilation"),
    ("dilation8_large_vgg16", 21, 3, False, 134_346_581 + 6_803_139, True,
     "front end + large module (dilation8_pascal_voc), fyu/dilation"),
    # semseg's deep stem (112,832 params, 128 channels into layer1) vs torchvision's 7x7 stem: -123,776
    ("pspnet_resnet50", 21, 3, True, 49_081_578, False, "hszhao/semseg PSPNet50 incl. aux"),
    ("pspnet_resnet101", 21, 3, True, 68_073_706, False, "hszhao/semseg PSPNet101 incl. aux"),
    # torchvision's head adds a 3x3 conv 256 -> 256 + BN (590,336) after the ASPP that the paper does not have
    ("deeplabv3_resnet50", 21, 3, False, 39_638_869, False, "torchvision deeplabv3_resnet50, aux off"),
    ("deeplabv3_resnet101", 21, 3, False, 58_630_997, False, "torchvision deeplabv3_resnet101, aux off"),
    ("deeplabv3plus_resnet101", 21, 3, False, 59_344_309, True, "jfzhang95/pytorch-deeplab-xception ResNet-101"),
    # the same head on ResNet-50: 59,344,309 - (42,500,160 - 23,508,032) backbone parameters
    ("deeplabv3plus_resnet50", 21, 3, False, 40_352_181, True, "jfzhang95 head on torchvision's ResNet-50 trunk"),
    # Caffe deep stem 32-32-64 vs a 7x7 stem of 32 (and 32 channels into layer1): -29,120
    ("icnet_resnet50", 19, 3, False, 6_699_987, False, "hszhao/ICNet Caffe release (icnet_cityscapes, 19 classes)"),
]


@pytest.mark.parametrize("name,classes,in_channels,with_aux,reference,exact,source", REFERENCE_PARAMS,
                         ids=[f"{r[0]}-{r[1]}" for r in REFERENCE_PARAMS])
def test_parameter_count_matches_reference(name, classes, in_channels, with_aux, reference, exact, source):
    ours = _params(name, classes, in_channels, with_aux)
    assert abs(ours - reference) / reference < 0.02, (ours, reference, source)
    if exact:
        assert ours == reference, source


def test_known_differences_from_references_are_the_documented_ones():
    assert _params("deeplabv3_resnet101", 21, 3, False) == 58_630_997 - 590_336
    assert _params("pspnet_resnet101", 21, 3, True) == 68_073_706 - 123_776
    assert _params("icnet_resnet50", 19, 3, False) == 6_699_987 - 29_120
    assert _params("pspnet_resnet50", 21, 3, False) == 46_592_597  # semseg: 46.72M without aux


@pytest.mark.parametrize("name,classes,in_channels,size,gmacs", [
    ("dilation8_vgg16", 21, 3, 528, 791.6),  # a 900 tile (66 x 66 out), fyu/dilation front end
    ("unet", 2, 1, 388, 150.4),  # a 572 tile, U-Net paper
    ("deeplabv3plus_resnet101", 21, 3, 513, 92.8),  # jfzhang95 ResNet-101, OS16
    ("unetpp", 20, 3, 128, 7.46),  # SEEDS-REFERENCE-2 8.3, a closed-form sum over the release's layers
])
def test_flops_match_reference_counts(name, classes, in_channels, size, gmacs):
    with torch.device("meta"):
        net = models.build(name, classes, in_channels=in_channels)
    # UNet++: 7.49 counted here (its 16 up-convolutions and four heads included) against the notes' 7.46
    assert cards.flops(net, (size, size)) / 2e9 == pytest.approx(gmacs, rel=1e-3 if name != "unetpp" else 5e-3)


def test_successor_card():
    card = models.card("pspnet_resnet50")
    assert set(card) == {"name", "backbone", "params", "params_with_aux", "gflops", "output_stride", "max_stride",
                         "rf_size"}
    assert card["params_with_aux"] - card["params"] == 2_365_205  # semseg's aux head
    assert (card["output_stride"], card["max_stride"], card["rf_size"]) == (8, 8, None)
    assert card["gflops"] == pytest.approx(343.0, rel=0.01)
    strides = {n: (models.card(n)["output_stride"], models.card(n)["max_stride"]) for n in
               ("unet", "deeplabv3_resnet50", "deeplabv3plus_resnet50", "icnet_resnet50")}
    assert strides == {"unet": (1, 16), "deeplabv3_resnet50": (16, 16), "deeplabv3plus_resnet50": (4, 16),
                       "icnet_resnet50": (4, 32)}


@pytest.mark.parametrize("depth", [50, 101])
def test_resnet_classifier_has_torchvision_layout(depth):
    with torch.device("meta"):
        ours = models.classifier(f"resnet{depth}", 1000)
        theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_resnet50_classifier_loads_torchvision_strictly_and_scales_with_width():
    models.classifier("resnet50", 1000).load_state_dict(torchvision.models.resnet50().state_dict(), strict=True)
    small = models.classifier("resnet50", 20, width=0.25)
    assert small.conv1.out_channels == 16 and small.fc.in_features == 512
    assert models.classifier("resnet50_half", 20, width=0.5).fc.in_features == 512
    assert small(torch.randn(2, 3, 112, 112)).shape == (2, 20)


@pytest.mark.parametrize("name", RESNET_BASED + ["dilation8_basic_vgg16"])
def test_transplant_from_the_classifier(name):
    torch.manual_seed(0)
    cls = models.classifier(models.backbone_of(name), 7, width=W).eval()
    net = models.build(name, 5, width=W)
    heads = {k: v.clone() for k, v in net.state_dict().items() if k.split(".")[0] not in net.trunk_names}
    models.transplant(cls, net)
    ours, theirs = net.state_dict(), cls.state_dict()
    if name.startswith("dilation8"):
        assert torch.equal(ours["fc6.weight"], theirs["classifier.0.weight"].reshape(ours["fc6.weight"].shape))
        assert torch.equal(ours["conv5_3.weight"], theirs["features.28.weight"])
    else:  # identical keys; layer1/layer2 are undilated, so they compute what the classifier computes
        for key, value in theirs.items():
            if not key.startswith("fc."):
                assert torch.equal(ours[key], value), key
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(net.eval().features(x)["layer2"], cls.features(x)["layer2"])
    for key, value in heads.items():  # heads and context modules keep their own initialisation
        assert torch.equal(net.state_dict()[key], value), key


def test_transplant_errors_name_the_key():
    cls = models.classifier("resnet50", 7, width=W)
    with pytest.raises(KeyError, match="unexpected classifier key 'head.weight'"):
        models.transplant({**cls.state_dict(), "head.weight": torch.zeros(1)},
                          models.build("pspnet_resnet50", 3, width=W))
    with pytest.raises(KeyError, match="no value for FCN parameters.*layer4"):
        state = {k: v for k, v in cls.state_dict().items() if not k.startswith("layer4.")}
        models.transplant(state, models.build("deeplabv3_resnet50", 3, width=W))
    with pytest.raises(ValueError, match=r"conv1\.weight.*\(4, 3, 7, 7\).*\(2, 3, 7, 7\)"):
        models.transplant(cls, models.build("deeplabv3_resnet50", 3, width=W / 2))
    with pytest.raises(ValueError, match="no transplant rule for backbone None"):
        models.transplant(cls, models.build("unet", 3, width=W))


def test_transplant_into_rgbd_resnet_uses_mean_filter():
    cls = models.classifier("resnet101", 7, width=W)
    net = models.transplant(cls, models.build("deeplabv3plus_resnet101", 3, width=W, in_channels=4))
    assert torch.equal(net.conv1.weight[:, :3], cls.conv1.weight)
    assert torch.allclose(net.conv1.weight[:, 3], cls.conv1.weight.mean(1))
