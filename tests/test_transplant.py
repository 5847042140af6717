"""Classifiers in torchvision's layout, transplant into FCNs, staged init, FCN-32s-fixed, Figure 2."""

import pytest
import torch
import torchvision

from segbench import models
from segbench.models.layers import BilinearUpsample, bilinear_kernel

W = 1 / 8
TORCHVISION = {
    "vgg16": lambda: torchvision.models.vgg16(),
    "alexnet": lambda: torchvision.models.alexnet(),
    "googlenet": lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False),
}
# backbone, a model built on it, the classifier's input size, conv1 padding of the classifier
EQUIVALENCE = [("vgg16", "fcn32s_vgg16", 224, 1), ("alexnet_caffe", "fcn32s_alexnet", 227, 0),
               ("alexnet", "fcn32s_alexnet_tv", 224, 2)]


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("backbone", sorted(TORCHVISION))
def test_classifier_has_torchvision_layout(backbone):
    with torch.device("meta"):
        ours, theirs = models.classifier(backbone, 1000), TORCHVISION[backbone]()
    assert _shapes(ours) == _shapes(theirs)


def test_vgg16_classifier_loads_torchvision_strictly():
    models.classifier("vgg16", 1000).load_state_dict(torchvision.models.vgg16().state_dict(), strict=True)


@pytest.mark.parametrize("backbone,name,size,pad", EQUIVALENCE)
def test_transplanted_fcn_reproduces_the_classifier(backbone, name, size, pad):
    """With the classifier's padding, the transplanted trunk + fc8 as score_fr give the logits at 1x1."""
    torch.manual_seed(0)
    cls = models.classifier(backbone, 7, width=W).eval()
    fcn = models.transplant(cls, models.build(name, 7, width=W)).eval()
    fc8 = cls.classifier[6]
    with torch.no_grad():
        fcn.score_fr.weight.copy_(fc8.weight[:, :, None, None])
        fcn.score_fr.bias.copy_(fc8.bias)
    getattr(fcn, fcn.trunk_names[0]).padding = (pad, pad)  # the classifier's padding instead of 100
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        h = x
        for n in fcn.trunk_names:
            h = getattr(fcn, n)(h)
        scores = fcn.score_fr(h)
        logits = cls(x)
    assert scores.shape == (2, 7, 1, 1)
    assert torch.allclose(scores.flatten(1), logits, atol=1e-4, rtol=1e-4)


def test_googlenet_trunk_transplant():
    torch.manual_seed(0)
    cls = models.classifier("googlenet", 7, width=W).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics so the copy of buffers is tested too
        for m in cls.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    fcn = models.transplant(cls.state_dict(), models.build("fcn32s_googlenet", 3, width=W)).eval()
    ours, theirs = fcn.state_dict(), cls.state_dict()
    for key, value in ours.items():
        if key.split(".")[0] in fcn.trunk_names:
            assert torch.equal(value, theirs[key]), key
    assert torch.count_nonzero(fcn.score_fr.weight) == 0
    fcn.conv1.conv.padding = (3, 3)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        h, ref = x, x
        for n in fcn.trunk_names:
            h = getattr(fcn, n)(h)
        for n in cls.names:
            ref = getattr(cls, n)(ref)
    assert torch.allclose(h, ref, atol=1e-5)


def test_torchvision_googlenet_weights_transplant_with_aux_heads():
    """GoogLeNet_Weights carry aux1/aux2/fc: they are dropped, the trunk is copied."""
    tv = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    fcn = models.transplant(tv, models.build("fcn32s_googlenet", 21))
    assert torch.equal(fcn.inception5b.branch4[1].conv.weight, tv.inception5b.branch4[1].conv.weight)


def test_transplant_mismatch_names_key_and_shapes():
    cls = models.classifier("vgg16", 7, width=W)
    with pytest.raises(ValueError, match=r"features\.0\.weight.*\(8, 3, 3, 3\).*conv1_1\.weight.*\(4, 3, 3, 3\)"):
        models.transplant(cls, models.build("fcn32s_vgg16", 7, width=W / 2))
    with pytest.raises(ValueError, match=r"features\.0\.weight.*\(8, 3, 11, 11\).*same backbone"):
        models.transplant(models.classifier("alexnet", 7, width=W), models.build("fcn32s_vgg16", 7, width=W))
    with pytest.raises(KeyError, match="unexpected classifier key 'head.weight'"):
        models.transplant({**cls.state_dict(), "head.weight": torch.zeros(1)}, models.build("fcn32s_vgg16", 7, width=W))
    with pytest.raises(KeyError, match="no value for FCN parameters"):
        state = {k: v for k, v in cls.state_dict().items() if not k.startswith("classifier.3")}
        models.transplant(state, models.build("fcn32s_vgg16", 7, width=W))


def test_transplant_into_rgbd_uses_mean_filter():
    cls = models.classifier("vgg16", 7, width=W)
    fcn = models.transplant(cls, models.build("fcn32s_vgg16", 7, width=W, in_channels=4))
    w = cls.features[0].weight
    assert torch.equal(fcn.conv1_1.weight[:, :3], w)
    assert torch.allclose(fcn.conv1_1.weight[:, 3], w.mean(1))


def test_init_from_coarser_net():
    torch.manual_seed(0)
    fcn32 = models.build("fcn32s_vgg16", 5, width=W)
    torch.nn.init.normal_(fcn32.score_fr.weight)
    fcn16 = models.init_from(models.build("fcn16s_vgg16", 5, width=W), fcn32)
    fcn8 = models.init_from(models.build("fcn8s_vgg16", 5, width=W), fcn16)
    for key, value in fcn32.state_dict().items():
        if not key.startswith("upscore"):
            assert torch.equal(fcn8.state_dict()[key], value), key
    assert torch.count_nonzero(fcn8.score_pool4.weight) == 0 and torch.count_nonzero(fcn8.score_pool3.weight) == 0
    for m in fcn8.modules():
        if isinstance(m, BilinearUpsample):
            assert torch.equal(m.weight[1, 1], bilinear_kernel(m.kernel_size[0]).float())
    with pytest.raises(ValueError, match="shape"):
        models.init_from(models.build("fcn16s_vgg16", 6, width=W), fcn32)


@pytest.mark.parametrize("name", sorted(n for n in models.MODELS if n.startswith("fcn") and "_rgbhha_" not in n and "_siftflow_" not in n))
def test_freeze_trunk_trains_only_score_fr(name):
    net = models.freeze_trunk(models.build(name, 3, width=1 / 16))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"score_fr.weight", "score_fr.bias"}
    net(torch.randn(1, 3, 24, 24)).sum().backward()
    assert net.score_fr.bias.grad is not None
