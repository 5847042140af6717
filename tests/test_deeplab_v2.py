"""DeepLab v1 LargeFOV and v2 ASPP-L on VGG-16, v2 on ResNet-101: counts and FLOPs against the reference, map
sizes, summed ASPP branches, fc6/fc7 decimation in transplant, the rates option, recipes and published figures."""

import pytest
import torch

from segbench import models
from segbench.models import cards, deeplab_v2
from segbench.models.deeplab_v2 import ASPP_L_RATES, LARGEFOV_RATES, TWIN_RATE_SCALE, scaled_rates
from segbench.training import recipes

NAMES = ["deeplab_largefov_vgg16", "deeplab_aspp_vgg16", "deeplabv2_resnet101"]
W = 1 / 16


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: models.build(name, 5, width=W).eval() for name in NAMES}


def _meta(name, num_classes=21, **options):
    with torch.device("meta"):
        return models.build(name, num_classes, **options)


# SEEDS-REFERENCE-2 2.2 / 14 (VGG: 14,714,688 convs + 5,790,741 per branch) and SUCCESSORS-REFERENCE 4.2
# (kazuto1011/deeplab-pytorch's DeepLabV2: ResNet-101 OS8 body + four 3x3 2048 -> 21 convs with bias)
@pytest.mark.parametrize("name,reference", [("deeplab_largefov_vgg16", 20_505_429),
                                            ("deeplab_aspp_vgg16", 37_877_652),
                                            ("deeplabv2_resnet101", 44_048_532)])
def test_parameter_counts_equal_the_reference(name, reference):
    assert models.card(name, 21, width=1.0)["params"] == reference
    net = _meta(name, rates=scaled_rates(_meta(name).rates, TWIN_RATE_SCALE))
    assert sum(p.numel() for p in net.parameters()) == reference  # rates change no weight shape


# SUCCESSORS-REFERENCE 4.1-4.2 and 11: GMACs (conv multiply-accumulates) at 321 and 513
@pytest.mark.parametrize("name,size,gmacs", [("deeplab_largefov_vgg16", 321, 50.9),
                                             ("deeplab_largefov_vgg16", 513, 128.6),
                                             ("deeplabv2_resnet101", 321, 75.3),
                                             ("deeplabv2_resnet101", 513, 189.3)])
def test_flops_match_the_reference(name, size, gmacs):
    assert cards.flops(_meta(name), (size, size)) / 2e9 == pytest.approx(gmacs, abs=0.05)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (65, 97), (128, 128), (321, 321)])
def test_output_has_input_size(nets, name, size):
    with torch.no_grad():
        y = nets[name](torch.randn(2, 3, *size))
    assert y.shape == (2, 5, *size)
    assert torch.isfinite(y).all()


def _shapes(net, x, names):
    shapes, handles = {}, []
    for name in names:
        def hook(module, inputs, output, name=name):
            shapes[name] = tuple(output.shape[-2:])
        handles.append(net.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return shapes


@pytest.mark.parametrize("n,maps", [(321, (161, 81, 41)), (513, (257, 129, 65)), (128, (65, 33, 17))])
def test_vgg_maps_follow_the_release_alignment_rule(nets, n, maps):
    """n = 32k - 31 gives 161 / 81 / 41 after pool1-pool3 for 321 (Caffe's ceil rounding); the twin's 128 -> 17."""
    names = ["pool1", "pool2", "pool3", "pool4", "pool5", "fc6_1", "fc8_4"]
    shapes = _shapes(nets["deeplab_aspp_vgg16"], torch.randn(1, 3, n, n), names)
    assert [shapes[k] for k in names] == [(m, m) for m in maps] + [(maps[-1],) * 2] * 4
    fov = _shapes(nets["deeplab_largefov_vgg16"], torch.randn(1, 3, n, n), ["pool3", "pool5a", "fc8"])
    assert set(fov.values()) == {(maps[-1], maps[-1])}


def test_resnet_aspp_works_at_output_stride_8(nets):
    net = nets["deeplabv2_resnet101"]
    shapes = _shapes(net, torch.randn(1, 3, 321, 321), ["layer2", "layer3", "layer4", "aspp"])
    assert set(shapes.values()) == {(41, 41)}
    assert [net.layer3[0].conv2.dilation, net.layer4[0].conv2.dilation] == [(2, 2), (4, 4)]
    assert [net.aspp.get_submodule(f"c{i}").dilation[0] for i in range(4)] == list(ASPP_L_RATES)


def test_pool5a_is_the_releases_average_pooling_counting_the_padding(nets):
    pool = nets["deeplab_largefov_vgg16"].pool5a
    y = pool(torch.ones(1, 1, 4, 4))
    assert y[0, 0, 0, 0].item() == pytest.approx(4 / 9) and y[0, 0, 0, 1].item() == pytest.approx(6 / 9)
    assert not hasattr(nets["deeplab_aspp_vgg16"], "pool5a")


@pytest.mark.parametrize("name,finals", [("deeplab_aspp_vgg16", ["fc8_1", "fc8_2", "fc8_3", "fc8_4"]),
                                         ("deeplabv2_resnet101", ["aspp.c0", "aspp.c1", "aspp.c2", "aspp.c3"])])
def test_aspp_branches_are_summed(name, finals):
    """Each branch alone (the others' final layers zeroed) gives one term; the four terms add up to the net."""
    torch.manual_seed(0)
    net = models.build(name, 3, width=W).double().eval()  # float64: the sum is exact to rounding
    x = torch.randn(1, 3, 49, 37, dtype=torch.float64)
    with torch.no_grad():
        full = net(x)
        saved = {k: v.clone() for k, v in net.state_dict().items()}
        terms = []
        for keep in finals:
            for other in finals:
                if other != keep:
                    net.get_submodule(other).weight.zero_()
                    net.get_submodule(other).bias.zero_()
            terms.append(net(x))
            net.load_state_dict(saved)
    torch.testing.assert_close(sum(terms), full, rtol=1e-9, atol=1e-9)
    assert all((t - full).abs().max() > 1e-3 for t in terms)  # every branch contributes
    if name == "deeplab_aspp_vgg16":  # branch 1 alone is fc6_1 -> fc7_1 -> fc8_1 on pool5, upsampled
        with torch.no_grad():
            h = x
            for n in net.body_names:
                h = getattr(net, n)(h)
            h = net.fc8_1(torch.relu(net.fc7_1(torch.relu(net.fc6_1(h)))))
        torch.testing.assert_close(terms[0], torch.nn.functional.interpolate(h, size=(49, 37), mode="bilinear"))


@pytest.mark.parametrize("name", ["deeplab_largefov_vgg16", "deeplab_aspp_vgg16"])
def test_transplant_copies_the_convs_and_decimates_fc6_fc7(name):
    torch.manual_seed(0)
    cls = models.classifier("vgg16", 7, width=1 / 8)
    net = models.build(name, 5, width=1 / 8)
    fc8 = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("fc8")}
    models.transplant(cls, net)
    ours, theirs = net.state_dict(), cls.state_dict()
    conv_keys = {f"features.{i}": n for i, n in zip(
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
        [f"conv{s}_{j}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)])}
    for key, layer in conv_keys.items():
        for leaf in ("weight", "bias"):
            assert torch.equal(ours[f"{layer}.{leaf}"], theirs[f"{key}.{leaf}"]), layer
    fc6 = theirs["classifier.0.weight"].reshape(512, 64, 7, 7)  # width 1/8: 4096 -> 512, conv5 64
    suffixes = [""] if "largefov" in name else ["_1", "_2", "_3", "_4"]
    for s in suffixes:  # every 4th output channel, taps 0, 3, 6; fc7 every 4th output and input channel
        assert ours[f"fc6{s}.weight"].shape == (128, 64, 3, 3)
        assert torch.equal(ours[f"fc6{s}.weight"], fc6[::4, :, ::3, ::3])
        assert torch.equal(ours[f"fc6{s}.bias"], theirs["classifier.0.bias"][::4])
        assert torch.equal(ours[f"fc7{s}.weight"][:, :, 0, 0], theirs["classifier.3.weight"][::4, ::4])
        assert torch.equal(ours[f"fc7{s}.bias"], theirs["classifier.3.bias"][::4])
    assert ours["fc6" + suffixes[0] + ".weight"][3, 5, 1, 1] == fc6[12, 5, 3, 3]  # the 7x7 centre stays the centre
    assert all(torch.equal(ours[k], v) for k, v in fc8.items())  # fc8 keeps its own init


def test_transplant_into_the_resnet_model_copies_every_trunk_key():
    torch.manual_seed(0)
    cls = models.classifier("resnet101", 7, width=W)
    net = models.transplant(cls, models.build("deeplabv2_resnet101", 5, width=W))
    ours = net.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in cls.state_dict().items() if not k.startswith("fc."))


def test_transplant_refuses_a_classifier_of_another_width():
    with pytest.raises(ValueError, match=r"\(4, 3, 3, 3\) but FCN parameter 'conv1_1\.weight' expects \(8, 3, 3, 3\)"):
        models.transplant(models.classifier("vgg16", 7, width=1 / 16),
                          models.build("deeplab_aspp_vgg16", 5, width=1 / 8))
    state = models.classifier("vgg16", 7, width=1 / 8).state_dict()
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :64 * 5 * 5]  # a 5x5 pool5, not VGG16's 7x7
    with pytest.raises(ValueError, match=r"fc6\.weight has shape \(512, 1600\); expected \(fc, 64 x 7 x 7 = 3136\)"):
        models.transplant(state, models.build("deeplab_largefov_vgg16", 5, width=1 / 8))


def test_rates_option_sets_the_dilation_and_the_receptive_field():
    fov = _meta("deeplab_largefov_vgg16", 5, width=W)
    twin = _meta("deeplab_largefov_vgg16", 5, width=W, rates=[5])
    assert (fov.fc6.dilation, fov.fc6.padding, twin.fc6.dilation, twin.fc6.padding) == ((12, 12),) * 2 + ((5, 5),) * 2
    assert fov.receptive_field() - twin.receptive_field() == 2 * (12 - 5) * 8  # 3x3 taps 2 x rate apart, stride 8
    aspp = _meta("deeplab_aspp_vgg16", 5, width=W, rates=[2, 5, 7, 10])
    assert [getattr(aspp, f"fc6_{i}").dilation[0] for i in range(1, 5)] == [2, 5, 7, 10]
    resnet = _meta("deeplabv2_resnet101", 5, width=W, rates=(2, 5, 7, 10))
    assert [resnet.aspp.get_submodule(f"c{i}").padding[0] for i in range(4)] == [2, 5, 7, 10]
    assert scaled_rates(LARGEFOV_RATES, TWIN_RATE_SCALE) == (5,)
    assert scaled_rates(ASPP_L_RATES, TWIN_RATE_SCALE) == (2, 5, 7, 10)
    assert scaled_rates(ASPP_L_RATES, 128 / 500) == (2, 3, 5, 6) and scaled_rates((1,), 0.1) == (1,)


@pytest.mark.parametrize("name,bad,expected", [
    ("deeplab_largefov_vgg16", [5, 6], r"list of 1 positive integer.*\(published: \[12\]\); got \[5, 6\]"),
    ("deeplab_largefov_vgg16", 5, r"got 5$"),
    ("deeplab_aspp_vgg16", [2, 5, 7], r"list of 4 .*published: \[6, 12, 18, 24\]\); got \[2, 5, 7\]"),
    ("deeplab_aspp_vgg16", [2, 5, 0, 10], r"got \[2, 5, 0, 10\]"),
    ("deeplabv2_resnet101", [2.5, 5, 7, 10], r"got \[2\.5, 5, 7, 10\]"),
    ("deeplabv2_resnet101", [True, 5, 7, 10], r"got \[True, 5, 7, 10\]"),
])
def test_rates_option_rejects_bad_values(name, bad, expected):
    with pytest.raises(ValueError, match=f"{name}'s rates must be a .*{expected}"):
        _meta(name, 5, width=W, rates=bad)
    with pytest.raises(ValueError, match="the rate scale must be > 0, got 0"):
        scaled_rates(ASPP_L_RATES, 0)


@pytest.mark.parametrize("name", NAMES)
def test_rates_is_a_declared_build_option(name):
    assert models.declared(name).split_options({"rates": [3] * len(_meta(name).rates)})["build"]
    with pytest.raises(ValueError, match=f"model {name} has no option 'rate'; its options: rates"):
        models.declared(name).split_options({"rate": 3})


def test_recipes_keep_the_published_values():
    v1 = recipes.recipe("deeplab_v1", model_name="deeplab_largefov_vgg16")
    assert (v1.lr, v1.momentum, v1.weight_decay, v1.batch_size, v1.iterations, v1.crop, v1.head_lr_mult,
            v1.bias_lr_mult) == (1e-3, 0.9, 5e-4, 20, 6_000, 321, 10.0, 2.0)
    v2 = recipes.recipe("deeplab_v2", model_name="deeplabv2_resnet101")
    assert (v2.lr, v2.schedule, v2.momentum, v2.weight_decay, v2.batch_size, v2.iterations, v2.crop,
            v2.scale_range, v2.flip, v2.bn) == (2.5e-4, "poly", 0.9, 5e-4, 10, 20_000, 321, (0.5, 1.5), True, "frozen")
    assert {models.declared(n).recipe for n in NAMES} == {"deeplab_v1", "deeplab_v2"}


@pytest.mark.parametrize("name,head", [("deeplab_largefov_vgg16", "fc8."), ("deeplab_aspp_vgg16", "fc8_"),
                                       ("deeplabv2_resnet101", "aspp.")])
def test_only_the_final_classifier_trains_at_10x_weights_and_20x_biases(name, head):
    net = models.build(name, 3, width=W)
    rec = recipes.recipe(models.declared(name).recipe, model_name=name)
    groups = {g["name"]: g for g in recipes.make_optimizer(net, rec).param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == pytest.approx(
        {"weights": rec.lr, "biases": 2 * rec.lr, "head weights": 10 * rec.lr, "head biases": 20 * rec.lr})
    heads = {id(p) for k in ("head weights", "head biases") for p in groups[k]["params"]}
    assert heads == {id(p) for n, p in net.named_parameters() if n.startswith(head)}
    classifier = [m for n, m in net.named_modules() if n.startswith(head.rstrip(".")) and hasattr(m, "weight")]
    assert all(m.bias.abs().max() == 0 and m.weight.std().item() == pytest.approx(0.01, rel=0.2) for m in classifier)


def test_published_figures_name_the_crf_values_and_their_sources():
    figures = {n: models.declared(n).published for n in NAMES}
    assert {n: (f["mean_iu"], f["mean_iu_crf"], f["split"]) for n, f in figures.items()} == {
        "deeplab_largefov_vgg16": (62.25, 67.64, "VOC2012 val"), "deeplab_aspp_vgg16": (68.96, 71.57, "VOC2012 val"),
        "deeplabv2_resnet101": (76.35, 77.69, "VOC2012 val")}
    assert all("CRF" in f["setting"] and "arXiv" in f["source"] for f in figures.values())


def test_family_declares_three_models_on_their_backbones():
    assert [m.name for m in deeplab_v2.MODELS] == NAMES
    assert [models.backbone_of(n) for n in NAMES] == ["vgg16", "vgg16", "resnet101"]
    with pytest.raises(ValueError, match="variant must be 'largefov' or 'aspp', got 'asppl'"):
        deeplab_v2.DeepLabVGG(5, variant="asppl")
