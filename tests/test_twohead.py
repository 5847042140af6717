"""The two-headed SIFT Flow FCN: shapes, names, each head equal to a one-headed FCN, staging, the summed loss."""

import pytest
import torch
import torch.nn.functional as F

from segbench import models
from segbench.evaluation import losses
from segbench.models.layers import BilinearUpsample, bilinear_kernel
from segbench.weights import load_model, save_model

W = 1 / 16
NAMES = {"fcn32s_siftflow_vgg16": "fcn32s_vgg16", "fcn16s_siftflow_vgg16": "fcn16s_vgg16"}  # Table 5's nets


@pytest.mark.parametrize("name", sorted(NAMES))
def test_outputs_semantic_then_geometric_scores_at_input_size(name):
    net = models.build(name, 33, width=W).eval()
    assert net.heads == {"label": 33, "label_geo": 3} and list(net.heads) == ["label", "label_geo"]
    for h, w in [(1, 1), (37, 45), (256, 256)]:
        with torch.no_grad():
            assert net(torch.randn(2, 3, h, w)).shape == (2, 36, h, w)
    assert net.crops == models.build(NAMES[name], 33, width=W).crops


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_head_is_a_one_headed_fcn_on_the_shared_trunk(name):
    """Semantic channels = the VOC-style FCN with the ``_sem`` layers, geometric = the one with ``_geo``."""
    torch.manual_seed(0)
    net = models.build(name, 7, width=W).eval()
    for key, param in net.named_parameters():
        if key.startswith("score_"):
            torch.nn.init.normal_(param, std=0.1)
    x = torch.randn(1, 3, 50, 63)
    with torch.no_grad():
        out = net(x)
    for suffix, classes, channels in (("_sem", 7, slice(0, 7)), ("_geo", 3, slice(7, 10))):
        single = models.build(NAMES[name], classes, width=W).eval()
        state = {}
        for key in single.state_dict():
            layer, _, leaf = key.partition(".")
            source = key if layer in net.trunk_names else f"{layer}{suffix}.{leaf}"
            state[key] = net.state_dict()[source]
        single.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(out[:, channels], single(x), rtol=1e-5, atol=1e-5)


def test_layer_names_follow_the_reference():
    names = {k.rsplit(".", 1)[0] for k in models.build("fcn16s_siftflow_vgg16", 33, width=W).state_dict()}
    assert {"conv1_1", "fc7", "score_fr_sem", "upscore2_sem", "score_pool4_sem", "upscore16_sem", "score_fr_geo",
            "upscore2_geo", "score_pool4_geo", "upscore16_geo"} <= names
    assert not {"score_fr", "upscore2", "score_pool4"} & names


def test_staged_init_32s_16s_with_init_from():
    torch.manual_seed(2)
    cls = models.classifier("vgg16", 7, width=W)
    net32 = models.transplant(cls, models.build("fcn32s_siftflow_vgg16", 33, width=W))
    torch.nn.init.normal_(net32.score_fr_sem.weight)
    torch.nn.init.normal_(net32.score_fr_geo.bias)
    net16 = models.init_from(models.build("fcn16s_siftflow_vgg16", 33, width=W), net32)
    assert torch.equal(net16.conv1_1.weight, cls.features[0].weight)
    for key, value in net32.state_dict().items():
        if not key.startswith("upscore"):
            assert torch.equal(net16.state_dict()[key], value), key
    for layer in ("score_pool4_sem", "score_pool4_geo"):
        assert torch.count_nonzero(getattr(net16, layer).weight) == 0
    for m in net16.modules():
        if isinstance(m, BilinearUpsample):
            assert torch.equal(m.weight[0, 0], bilinear_kernel(m.kernel_size[0]).float()) and not m.weight.requires_grad


def _targets(n, h, w, generator):
    label = torch.randint(0, 33, (n, h, w), generator=generator)
    geo = torch.randint(0, 3, (n, h, w), generator=generator)
    label[:, :3] = 255  # void rows
    geo[:, :, :2] = 255
    return {"label": label, "label_geo": geo}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_summed_loss_is_the_sum_of_the_two_head_losses(reduction):
    g = torch.Generator().manual_seed(3)
    heads = {"label": 33, "label_geo": 3}
    scores = torch.randn(2, 36, 11, 13, generator=g, requires_grad=True)
    targets = _targets(2, 11, 13, g)
    total = losses.multi_head_loss(scores, targets, heads, reduction=reduction)
    sem = F.cross_entropy(scores[:, :33], targets["label"], ignore_index=255, reduction=reduction)
    geo = F.cross_entropy(scores[:, 33:], targets["label_geo"], ignore_index=255, reduction=reduction)
    expected = (sem + geo) / 2 if reduction == "sum" else sem + geo  # "sum" is per image: divided by N = 2
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-5)
    each = sum(losses.segmentation_loss(part, targets[f], reduction=reduction)
               for f, part in losses.split_heads(scores, heads).items())
    assert torch.equal(total, each)
    total.backward()
    assert scores.grad[:, 33:].abs().sum() > 0 and scores.grad[:, :33].abs().sum() > 0


def test_summed_loss_drops_the_same_cells_in_both_heads():
    g = torch.Generator().manual_seed(4)
    heads = {"label": 33, "label_geo": 3}
    scores, targets = torch.randn(1, 36, 40, 40, generator=g), _targets(1, 40, 40, g)
    keep = losses.sampling_mask((1, 40, 40), 0.5, generator=g)
    dropped = {f: t.masked_fill(~keep, 255) for f, t in targets.items()}
    torch.testing.assert_close(losses.multi_head_loss(scores, targets, heads, keep=keep),
                               losses.multi_head_loss(scores, dropped, heads), rtol=0, atol=0)


def test_two_headed_net_trains_on_the_summed_loss():
    torch.manual_seed(5)
    net = models.build("fcn16s_siftflow_vgg16", 33, width=W).train()
    x = torch.randn(1, 3, 40, 48)
    loss = losses.multi_head_loss(net(x), _targets(1, 40, 48, torch.Generator().manual_seed(6)), net.heads)
    loss.backward()
    assert net.score_fr_sem.weight.grad.abs().sum() > 0 and net.score_fr_geo.weight.grad.abs().sum() > 0


def test_loss_errors_say_what_was_expected():
    heads = {"label": 33, "label_geo": 3}
    with pytest.raises(ValueError, match=r"expected N x 36 x H x W scores .* got \(1, 33, 4, 4\)"):
        losses.multi_head_loss(torch.zeros(1, 33, 4, 4), _targets(1, 4, 4, torch.Generator()), heads)
    with pytest.raises(ValueError, match=r"no targets for heads \['label_geo'\]"):
        losses.multi_head_loss(torch.zeros(1, 36, 4, 4), {"label": torch.zeros(1, 4, 4, dtype=torch.long)}, heads)
    with pytest.raises(ValueError, match="reduction"):
        losses.multi_head_loss(torch.zeros(1, 36, 4, 4), _targets(1, 4, 4, torch.Generator()), heads,
                               reduction="none")


def test_two_headed_net_round_trips_through_a_weights_file(tmp_path):
    net = models.build("fcn16s_siftflow_vgg16", 33, width=W).eval()
    torch.nn.init.normal_(net.score_fr_geo.weight)
    path = save_model(tmp_path / "m.pt", net, name="fcn16s_siftflow_vgg16", num_classes=33, width=W)
    again, record = load_model(path)
    x = torch.randn(1, 3, 30, 34)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), net(x)) and again.heads == net.heads
