"""The dilated FCN control and the graph heads on its trunk (GloRe, GINet, HDNet): parameter counts against
SEEDS-REFERENCE-2 14 and torchvision, sizes, the shared trunk, the identity-initialised GloRe unit, GINet's graph
interaction and semantic context loss, HDNet's attention and its feature-distance loss with its centre update,
and how the training objective adds losses of their own."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import write_mixed_store

from segbench import models
from segbench.evaluation import objective
from segbench.evaluation.evaluate import evaluate
from segbench.models import cards, ginet, glore, hdnet
from segbench.models.dilated_fcn import DilatedFCN
from segbench.training.train import train

FAMILIES = ("dilated_fcn", "glore", "ginet", "hdnet")
NAMES = [f"{family}_resnet{depth}" for family in FAMILIES for depth in (50, 101)]
W = 1 / 16


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: models.build(name, 5, width=W).eval() for name in NAMES}


# --- parameter counts and FLOPs at full width --------------------------------------------------------------

@pytest.mark.parametrize("channels,nodes,reference", [(512, 128, 411_136), (1024, 256, 1_641_472),
                                                      (2048, 512, 6_559_744)])
def test_glore_unit_count_is_the_reference_formula(channels, nodes, reference):
    with torch.device("meta"):
        unit = glore.GloReUnit(channels, 2 * nodes, nodes)
    formula = 5 * nodes * channels + 5 * nodes ** 2 + 4 * nodes + 2 * channels
    assert _count(unit) == formula == reference, (_count(unit), reference)


def test_glore_head_unit_and_reduction_counts_are_paddlesegs():
    with torch.device("meta"):
        net = models.build("glore_resnet50", 21)
    assert _count(net.glore) == 185_600, _count(net.glore)
    assert _count(net.reduce) == 1_049_600, _count(net.reduce)
    assert (net.glore.conv_state.out_channels, net.glore.conv_proj.out_channels) == (128, 64)


def test_ginet_head_count_is_paddlesegs_with_a_frozen_class_table():
    with torch.device("meta"):
        head = ginet.GIHead(2048, 60, states=256, hidden=128, nodes=84, class_embedding="one_hot")
        net = models.build("ginet_resnet101", 60)
    assert _count(head) == 10_187_216, _count(head)
    assert head.class_table.shape == (60, 300) and "class_table" not in dict(head.named_parameters())
    assert _count(net.head) == 10_187_216  # the model's head is that head at width 1


@pytest.mark.parametrize("classes", [20, 21, 60])
def test_hdnet_head_count_is_the_releases(classes):
    with torch.device("meta"):
        net = models.build("hdnet_resnet50", classes)
    assert _count(net.head) == 23_925_506 + 513 * classes, _count(net.head)
    assert net.centres.shape == (classes, 512) and not net.centres.requires_grad


@pytest.mark.parametrize("depth,without_aux,with_aux,gmacs_512", [(50, 32_957_013, 35_322_218, 138.4),
                                                                  (101, 51_949_141, 54_314_346, 215.9)])
def test_control_matches_torchvisions_fcn_resnet(depth, without_aux, with_aux, gmacs_512):
    """torchvision's fcn_resnet50/101 (21 classes) has the same trunk, FCNHead and aux FCNHead
    (SUCCESSORS-REFERENCE 5.6)."""
    card = models.card(f"dilated_fcn_resnet{depth}", 21)
    assert (card["params"], card["params_with_aux"]) == (without_aux, with_aux)
    assert (card["output_stride"], card["max_stride"]) == (8, 8)
    with torch.device("meta"):
        net = models.build(f"dilated_fcn_resnet{depth}", 21)
    assert cards.flops(net, (512, 512)) / 2e9 == pytest.approx(gmacs_512, rel=1e-3)


@pytest.mark.parametrize("depth", [50, 101])
def test_cards_count_the_graph_heads_on_the_control_trunk(depth):
    control = models.card(f"dilated_fcn_resnet{depth}", 21)
    trunk = control["params"] - (2048 * 512 * 9 + 1024 + 512 * 21 + 21)  # minus the FCNHead
    aux = control["params_with_aux"] - control["params"]
    cards_ = {f: models.card(f"{f}_resnet{depth}", 21) for f in ("glore", "ginet", "hdnet")}
    assert cards_["glore"]["params"] == trunk + 1_049_600 + 185_600 + 512 * 21 + 21
    # GINet's K-dependent parameters: the class GCN's node conv K(K + 1), gamma_word K, the classifier 513 K
    assert cards_["ginet"]["params"] == trunk + 10_187_216 - (60 * 61 + 60 + 513 * 60) + (21 * 22 + 21 + 513 * 21)
    assert cards_["hdnet"]["params"] == cards_["hdnet"]["params_with_aux"] == trunk + 23_925_506 + 513 * 21
    assert cards_["glore"]["params_with_aux"] - cards_["glore"]["params"] == aux
    assert cards_["ginet"]["params_with_aux"] - cards_["ginet"]["params"] == aux + 21 * 256  # aux + SC classifier
    assert all(c["gflops"] > 0 and c["output_stride"] == 8 for c in cards_.values())


# --- shapes, trunk, options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_output_has_input_size_at_odd_sizes(nets, name):
    net = nets[name]
    for h, w in [(1, 1), (17, 31), (33, 20)]:
        with torch.no_grad():
            y = net(torch.randn(2, 3, h, w))
        assert y.shape == (2, 5, h, w), (name, h, w, tuple(y.shape))
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_trains_on_one_image_and_reaches_every_parameter(name):
    torch.manual_seed(0)
    net = models.build(name, 4, width=W).train()
    scores, aux = net.forward_with_aux(torch.randn(1, 3, 35, 29))
    labels = torch.randint(0, 4, (1, 35, 29))
    loss = scores.square().mean()
    for output, weight in aux.values():
        loss = loss + weight * (output(labels, reduction="mean") if callable(output) else output.square().mean())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert models.declared(name).min_batch == 1


@pytest.mark.parametrize("depth", [50, 101])
def test_every_family_has_the_control_trunk_and_takes_the_resnet_transplant(depth):
    torch.manual_seed(0)
    classifier = models.classifier(f"resnet{depth}", 10, width=W)
    expected = {k: v.shape for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    for family in FAMILIES:
        net = models.build(f"{family}_resnet{depth}", 5, width=W)
        trunk = {k: v.shape for k, v in net.state_dict().items() if k.split(".", 1)[0] in net.trunk_names}
        assert trunk == expected, family
        models.transplant(classifier, net)
        assert all(torch.equal(net.state_dict()[k], classifier.state_dict()[k]) for k in expected), family


def test_heads_and_aux_weights_of_each_family(nets):
    assert {n: nets[n].aux_weights for n in NAMES if n.endswith("50")} == {
        "dilated_fcn_resnet50": {"aux": 0.4}, "glore_resnet50": {"aux": 0.4}, "ginet_resnet50": {"aux": 0.4},
        "hdnet_resnet50": {}}  # only score outputs: the SC and HFD losses have no segmentation floor
    x = torch.randn(1, 3, 41, 37)
    for name in NAMES:
        with torch.no_grad():
            scores, aux = nets[name].forward_with_aux(x)
            assert torch.allclose(scores, nets[name](x), atol=1e-6), name
        weights = {k: w for k, (_, w) in aux.items()}
        family = name.rsplit("_", 1)[0]
        assert weights == {"dilated_fcn": {"aux": 0.4}, "glore": {"aux": 0.4}, "ginet": {"aux": 0.4, "sc": 0.2},
                           "hdnet": {"hfd": 0.1}}[family], name
        if "aux" in aux:
            assert aux["aux"][0].shape == (1, 5, 41, 37)


def test_build_options_reach_the_heads_and_bad_values_are_named():
    net = models.build("glore_resnet50", 5, width=W, nodes=32)
    assert net.glore.conv_proj.out_channels == 32 and net.glore.gcn.conv1.in_channels == 32
    assert models.build("ginet_resnet50", 5, width=W, nodes=16).head.gi.conv_theta.out_channels == 16
    assert models.build("hdnet_resnet50", 5, width=W, windows=[3, 5, 7, 9]).head.sa.fuse[0].in_channels == 8
    assert models.build("hdnet_resnet50", 5, width=W).head.sa.windows == (3, 5, 7, 9, 11, 15, 19)
    with pytest.raises(ValueError, match=r"windows must be odd positive integers .* got \(3, 4\)"):
        models.build("hdnet_resnet50", 5, width=W, windows=[3, 4])
    with pytest.raises(ValueError, match="nodes must be a positive integer .* got 0"):
        models.build("glore_resnet50", 5, width=W, nodes=0)
    with pytest.raises(ValueError, match="class_embedding must be one of .* got 'words'"):
        models.build("ginet_resnet50", 5, width=W, class_embedding="words")
    with pytest.raises(ValueError, match="has no option 'nodes'"):
        models.build("dilated_fcn_resnet50", 5, width=W, nodes=8)


# --- GloRe --------------------------------------------------------------------------------------------------

def test_glore_unit_is_the_identity_at_initialisation_until_the_blocker_learns():
    torch.manual_seed(0)
    unit = glore.GloReUnit(16, 8, 4)
    x = torch.randn(2, 16, 7, 5)
    assert torch.equal(unit.blocker.weight, torch.zeros(16)) and unit.blocker.eps == 1e-4
    for mode in (True, False):
        assert torch.equal(unit.train(mode)(x), x), mode
    with torch.no_grad():
        unit.blocker.weight.fill_(1.0)
    assert (unit.eval()(x) - x).abs().max() > 1e-3


def test_glore_model_at_initialisation_is_the_reduction_and_classifier():
    torch.manual_seed(0)
    net = models.build("glore_resnet50", 5, width=W).eval()
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        layer4 = net.features(x)["layer4"]
        direct = F.interpolate(net.cls(net.reduce(layer4)), size=(33, 33), mode="bilinear", align_corners=False)
        assert torch.equal(net(x), direct)


def test_glore_normalized_unit_is_invariant_to_tiling_the_input():
    torch.manual_seed(0)
    unit = glore.GloReUnit(8, 6, 3, normalize=True).eval()
    with torch.no_grad():
        unit.blocker.weight.fill_(1.0)
        x = torch.randn(1, 8, 5, 4)
        tiled = x.repeat(1, 1, 2, 2)
        assert torch.allclose(unit(tiled), unit(x).repeat(1, 1, 2, 2), atol=1e-5)
        unit.normalize = False  # without it, V grows with the number of positions
        assert not torch.allclose(unit(tiled), unit(x).repeat(1, 1, 2, 2), atol=1e-3)


def test_graph_conv_is_node_conv_plus_identity_relu_then_state_conv():
    torch.manual_seed(0)
    gcn = glore.GraphConv(states=3, nodes=4)
    v = torch.randn(2, 3, 4)
    h = torch.einsum("mn,bsn->bsm", gcn.conv1.weight[:, :, 0], v) + gcn.conv1.bias + v
    expected = torch.einsum("ts,bsn->btn", gcn.conv2.weight[:, :, 0], h.relu())
    assert torch.allclose(gcn(v), expected, atol=1e-6) and gcn.conv2.bias is None


# --- GINet ---------------------------------------------------------------------------------------------------

def test_ginet_class_tables_are_fixed_one_hot_or_seeded_random():
    one_hot = models.build("ginet_resnet50", 20, width=W).head.class_table
    assert torch.equal(one_hot, torch.eye(20, 300))
    first = models.build("ginet_resnet50", 20, width=W, class_embedding="random").head.class_table
    torch.manual_seed(123)
    again = models.build("ginet_resnet50", 20, width=W, class_embedding="random").head.class_table
    assert torch.equal(first, again) and first.shape == (20, 300)  # independent of the global seed
    assert first.norm(dim=1).mean().item() == pytest.approx(1.0, abs=0.1)
    assert "head.class_table" in models.build("ginet_resnet50", 20, width=W).state_dict()


def test_ginet_visual_nodes_ignore_the_class_graph_while_gamma_vis_is_zero():
    torch.manual_seed(0)
    unit = ginet.GraphInteraction(channels=16, states=8, nodes=6, num_classes=5)
    word, vis = torch.randn(2, 8, 5), torch.randn(2, 8, 6)
    assert torch.equal(unit.gamma_vis, torch.zeros(6)) and torch.equal(unit.gamma_word, torch.zeros(5))
    class_nodes, new_vis = unit.interact(word, vis)
    assert torch.equal(new_vis, unit.vis_gcn(vis))
    assert torch.equal(class_nodes, unit.transfer(unit.word_gcn(word), unit.vis_gcn(vis))[0])
    with torch.no_grad():
        unit.gamma_vis.fill_(1.0)
    assert not torch.allclose(unit.interact(word, vis)[1], unit.vis_gcn(vis))


def test_ginet_class_presence_ignores_255_and_out_of_range_labels():
    labels = torch.tensor([[[0, 0], [2, 255]], [[255, 255], [255, 255]], [[4, 1], [1, 7]]])
    assert torch.equal(ginet.class_presence(labels, 5), torch.tensor(
        [[1., 0., 1., 0., 0.], [0., 0., 0., 0., 0.], [0., 1., 0., 0., 1.]]))


def test_ginet_sc_loss_is_binary_cross_entropy_of_presence():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[[0, 2]], [[1, 255]]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    expected = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    assert ginet.sc_loss(logits, labels, reduction="mean").item() == pytest.approx(expected.mean().item(), rel=1e-6)
    assert ginet.sc_loss(logits, labels, reduction="sum").item() == pytest.approx(expected.sum().item() / 2, rel=1e-6)


def test_ginet_sc_loss_is_absent_when_off():
    net = models.build("ginet_resnet50", 5, width=W, sc_loss_weight=0)
    _, aux = net.forward_with_aux(torch.randn(1, 3, 33, 33))
    assert set(aux) == {"aux"} and not hasattr(net, "sc")
    with pytest.raises(ValueError, match="sc_loss_weight must be >= 0 .* got -1"):
        models.build("ginet_resnet50", 5, width=W, sc_loss_weight=-1)


# --- HDNet ---------------------------------------------------------------------------------------------------

def test_location_aware_attention_is_a_non_negative_map_and_gates_a_residual():
    torch.manual_seed(0)
    laa = hdnet.LocationAwareAttention(16, 4, (3, 5)).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        a = laa.attention(x)
        assert a.shape == (2, 1, 6, 7) and (a >= 0).all()
        assert torch.allclose(laa(x), x + laa.out_conv(x * a), atol=1e-6)
        laa.out_conv.weight.zero_()
        assert torch.equal(laa(x), x)  # out_conv's bias is 0 at start, as the release's init_para


def test_channel_attention_is_the_identity_while_gamma_is_zero():
    cam = hdnet.ChannelAttention()
    x = torch.randn(2, 4, 3, 5)
    assert torch.equal(cam(x), x)
    with torch.no_grad():
        cam.gamma.fill_(1.0)
    q = x.flatten(2)
    energy = q @ q.transpose(1, 2)
    attention = (energy.max(-1, keepdim=True)[0] - energy).softmax(-1)
    assert torch.allclose(cam(x), (attention @ q).view_as(x) + x, atol=1e-5)


def _hdnet(momentum=0.5, classes=4):
    torch.manual_seed(0)
    return models.build("hdnet_resnet50", classes, width=W, centre_momentum=momentum)


def test_hdnet_centre_update_with_momentum_zero_is_the_normalised_class_mean():
    net = _hdnet(momentum=0.0)
    before = net.centres.clone()
    f = torch.randn(2, net.centres.shape[1], 3, 4)
    labels = torch.full((2, 3, 4), 255)
    labels[0, 0, :2] = 1
    labels[1, 2, 3] = 1
    labels[1, 1, 1] = 3
    net.update_centres(f, labels)
    mean1 = torch.stack([f[0, :, 0, 0], f[0, :, 0, 1], f[1, :, 2, 3]]).mean(0)
    assert torch.allclose(net.centres[1], mean1 / mean1.norm(), atol=1e-6)
    assert torch.allclose(net.centres[3], f[1, :, 1, 1] / f[1, :, 1, 1].norm(), atol=1e-6)
    assert torch.equal(net.centres[[0, 2]], before[[0, 2]])  # classes absent from the batch keep their centre


def test_hdnet_centre_update_weights_the_old_centre_by_m():
    net = _hdnet(momentum=0.9)
    old = net.centres[2].clone()
    f = torch.randn(1, net.centres.shape[1], 2, 2)
    labels = torch.full((1, 2, 2), 2)
    net.update_centres(f, labels)
    moved = 0.9 * old + 0.1 * f.mean(dim=(0, 2, 3))
    assert torch.allclose(net.centres[2], moved / moved.norm(), atol=1e-6)


def test_hfd_loss_uses_the_old_centres_then_updates_them_in_training_only():
    net = _hdnet()
    f = torch.randn(2, net.centres.shape[1], 4, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 32, 32))
    labels[0, :8] = 255
    old = net.centres.clone()
    grid = F.interpolate(labels[:, None].float(), size=(4, 4), mode="nearest")[:, 0].long()
    expected = F.cross_entropy(torch.einsum("nchw,kc->nkhw", f, old), grid, ignore_index=255)
    net.eval()
    assert torch.equal(net.hfd_loss(f, labels), expected) and torch.equal(net.centres, old)  # eval: no update
    net.train()
    with torch.no_grad():
        net.hfd_loss(f, labels)
    assert torch.equal(net.centres, old)  # no gradients: no update (as the release's backward)
    loss = net.hfd_loss(f, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not torch.equal(net.centres, old)  # updated once, after the loss
    (grad,) = torch.autograd.grad(loss, f)
    (want,) = torch.autograd.grad(expected, f)
    assert torch.allclose(grad, want, atol=1e-7)  # dL/dz . old centres; the centres get no gradient
    net.zero_grad()
    assert "centres" in net.state_dict() and not any(p is net.centres for p in net.parameters())


def test_hfd_loss_of_only_ignored_labels_is_zero_not_nan():
    net = _hdnet().train()
    f = torch.randn(1, net.centres.shape[1], 2, 2, requires_grad=True)
    old = net.centres.clone()
    loss = net.hfd_loss(f, torch.full((1, 16, 16), 255))
    assert loss.item() == 0.0 and torch.equal(net.centres, old)


def test_hfd_loss_is_absent_when_off():
    net = models.build("hdnet_resnet50", 5, width=W, hfd_weight=0)
    assert net.forward_with_aux(torch.randn(1, 3, 33, 33))[1] == {}


# --- the training objective ----------------------------------------------------------------------------------

def test_objective_adds_a_loss_of_its_own_with_its_weight():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)

        def forward_with_aux(self, x):
            s = self.conv(x)
            return s, {"aux": (s[..., ::2, ::2], 0.4),
                       "own": (lambda labels, *, reduction: (labels == 1).float().mean() + s.mean() * 0, 0.25)}

    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 6, 6), torch.randint(0, 4, (2, 6, 6))
    model = Toy()
    loss = objective.training_loss(model, x, {"label": y}, {"label": 4}, reduction="mean")
    s = model.conv(x)
    expected = (F.cross_entropy(s, y) + 0.4 * F.cross_entropy(s[..., ::2, ::2], y[:, ::2, ::2])
                + 0.25 * (y == 1).float().mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name,extra", [("ginet_resnet50", "sc"), ("hdnet_resnet50", "hfd")])
def test_objective_is_the_sum_of_the_models_terms(name, extra):
    torch.manual_seed(0)
    net = models.build(name, 4, width=W).eval()  # eval: deterministic, and the centres stay
    x, y = torch.randn(2, 3, 33, 29), torch.randint(0, 4, (2, 33, 29))
    with torch.no_grad():
        loss = objective.training_loss(net, x, {"label": y}, {"label": 4}, reduction="mean")
        scores, aux = net.forward_with_aux(x)
        expected = F.cross_entropy(scores, y)
        for key, (output, weight) in aux.items():
            expected = expected + weight * (output(y, reduction="mean") if key == extra else
                                            F.cross_entropy(output, y))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name,extra", [("ginet_resnet50", "sc"), ("hdnet_resnet50", "hfd")])
def test_extra_loss_is_finite_and_decreases_under_training(name, extra):
    torch.manual_seed(0)
    net = models.build(name, 4, width=W).train()
    x = torch.randn(2, 3, 33, 33)
    y = torch.zeros(2, 33, 33, dtype=torch.long)
    y[0, :, 16:] = 1
    y[1, 10:20, 10:20] = 3
    y[1, 0, 0] = 255

    def extra_loss():
        with torch.no_grad():  # no gradients: HDNet's centres stay
            output, _ = net.forward_with_aux(x)[1][extra]
            return output(y, reduction="mean").item()

    first = extra_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(8):
        optimizer.zero_grad()
        objective.training_loss(net, x, {"label": y}, {"label": 4}, reduction="mean").backward()
        optimizer.step()
    last = extra_loss()
    assert math.isfinite(first) and math.isfinite(last)
    assert last < 0.9 * first, (name, first, last)


def test_control_is_a_plain_fcn_head_net():
    net = models.build("dilated_fcn_resnet50", 5, width=W)
    assert isinstance(net, DilatedFCN) and net.head_prefixes == ("cls", "aux")
    assert [type(m).__name__ for m in net.cls] == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert net.cls[0].kernel_size == (3, 3) and net.cls[0].out_channels == net.channels["layer4"] // 4
    assert net.cls[3].p == 0.1 and net.aux[0].in_channels == net.channels["layer3"]


def test_training_keeps_the_centres_and_counts_the_extra_losses_with_floor_zero(tmp_path):
    store = write_mixed_store(tmp_path / "train.h5", sizes=((48, 48),), n=4)
    runs = {}
    for name, options in (("hdnet_resnet50", {"windows": [3, 5]}), ("ginet_resnet50", {"nodes": 8})):
        path = train(train_store=store, out_dir=tmp_path / name, model_name=name, width=W, recipe="short",
                     iterations=2, batch_size=2, seed=3, progress=False, checkpoint_every=0, model_options=options)
        runs[name] = json.loads((path.parent / "run.json").read_text())
        record = torch.load(path, weights_only=True)
        assert record["options"] == options and runs[name]["model_options"] == options
        assert evaluate(store_path=store, model_path=path, out_json=tmp_path / f"{name}.json", progress=False)
    centres = torch.load(tmp_path / "hdnet_resnet50" / "model.pt", weights_only=True)["state_dict"]["centres"]
    # every class of the store is labelled, so every centre was moved and normalised (Kaiming rows are not unit)
    assert torch.allclose(centres.norm(dim=1), torch.ones(3), atol=1e-5), centres.norm(dim=1)
    # floors: HDNet's is the main head's alone, GINet's adds its aux head (0.4) but not the SC loss
    hd, gi = (runs[n]["constant_prediction_loss"] for n in ("hdnet_resnet50", "ginet_resnet50"))
    assert gi == pytest.approx(1.4 * hd, rel=1e-9)
