"""The paper's FCNs and their successors by name, their classifiers, net surgery and the model cards.

    net = build("fcn8s_vgg16", 21, width=0.125)        # N x 3 x H x W -> N x 21 x H x W
    cls = classifier("vgg16", 20, width=0.125)          # torchvision state-dict layout
    transplant(cls, build("fcn32s_vgg16", 21, width=0.125))
    net = build("deeplabv3plus_resnet101", 21, width=0.25, output_stride=8)   # extra keyword options

Models: see ``MODELS``. Backbones: ``BACKBONES`` (``backbone_of(name)`` says which a model uses; None for
U-Net). Every model maps N x C x H x W to N x num_classes x H x W scores; PSPNet and ICNet also have
``forward_with_aux(x) -> (scores, {head: (head scores, loss weight)})``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from segbench.models import alexnet, cards, googlenet, registry, resnet, vgg
from segbench.models.context import freeze_front_end
from segbench.models.fcn import FCN
from segbench.models.geometry import path_geometry
from segbench.models.icnet import TRUNK_WIDTH as ICNET_TRUNK_WIDTH
from segbench.models.layers import set_dropout
from segbench.models.registry import Declared
from segbench.models.surgery import freeze_trunk, init_from, transplant

__all__ = ["MODELS", "RECIPES", "BACKBONES", "FCN", "Declared", "build", "declared", "classifier", "backbone_of",
           "card", "transplant", "init_from", "freeze_trunk", "freeze_front_end", "set_dropout", "family_of",
           "for_evaluation", "FAMILIES", "PRUNED_FROM"]

# The architecture families, one module each: its MODELS list declares its models (name, display name, trunk,
# recipe, published figure, options; segbench.models.registry) and its RECIPES its papers' recipes. This line
# registers them: a new family file is added here and nowhere else.
FAMILY_MODULES = ("fcn", "fusion", "twohead", "unet", "unetplusplus", "attention_unet", "unet3d", "vnet", "context",
                  "pspnet", "deeplab", "deeplab_v2", "icnet", "dilated_fcn", "glore", "ginet", "hdnet")
MODELS, RECIPES = registry.collect(FAMILY_MODULES)  # model name -> Declared; recipe name -> its settings

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "vgg16": lambda num_classes, width: vgg.VGG16Classifier(num_classes, width=width),
    "alexnet": lambda num_classes, width: alexnet.AlexNetClassifier("alexnet", num_classes, width=width),
    "alexnet_caffe": lambda num_classes, width: alexnet.AlexNetClassifier("alexnet_caffe", num_classes, width=width),
    "googlenet": lambda num_classes, width: googlenet.GoogLeNetClassifier(num_classes, width=width),
    "resnet50": lambda num_classes, width: resnet.ResNetClassifier(50, num_classes, width=width),
    "resnet101": lambda num_classes, width: resnet.ResNetClassifier(101, num_classes, width=width),
    # ICNet's trunk: ResNet-50 at half the given width (the release's "compressed PSPNet")
    "resnet50_half": lambda num_classes, width: resnet.ResNetClassifier(
        50, num_classes, width=width * ICNET_TRUNK_WIDTH, backbone="resnet50_half"),
}

# Backbone -> the classifier it is pruned from (``segbench.models.prune``) instead of trained or downloaded:
# ICNet's half-width trunk, as its authors compressed their trained PSPNet's ResNet-50
PRUNED_FROM = {"resnet50_half": "resnet50"}

# Backbone -> the family whose channel width the configuration sets (config models.width); U-Net's is "unet".
FAMILIES = {"vgg16": "vgg16", "alexnet": "alexnet", "alexnet_caffe": "alexnet", "googlenet": "googlenet",
            "resnet50": "resnet", "resnet101": "resnet", "resnet50_half": "resnet"}


def family_of(name: str) -> str:
    """The width family of model ``name``: its backbone's entry in ``FAMILIES``, or "unet"."""
    backbone = backbone_of(name)
    return "unet" if backbone is None else FAMILIES[backbone]


def _check(name: str, table: dict, what: str) -> None:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")


def declared(name: str) -> Declared:
    """Model ``name``'s declaration (``MODELS``); raises for an unknown name, listing the known ones."""
    _check(name, MODELS, "model")
    return MODELS[name]


def build(name: str, num_classes: int, width: float = 1.0, in_channels: int = 3, **options) -> nn.Module:
    """The model ``name`` (see ``MODELS``): input N x in_channels x H x W -> scores N x num_classes x H x W.

    ``width`` multiplies every trunk and fc channel count (score layers keep ``num_classes``). FCN score
    layers start at zero, upsamplers are frozen bilinear; the trunk is randomly initialised until
    ``transplant`` fills it. ``options`` are the model's build options (its declaration's ``options`` of stage
    "build": ``output_stride`` (8 or 16), ``separable`` and ``multi_grid`` for DeepLab, ``noise_std`` for the
    context modules); an option it does not declare, or one of another stage, raises.
    """
    model = declared(name)
    if width <= 0 or num_classes < 1 or in_channels < 1:
        raise ValueError(f"need width > 0, num_classes >= 1 and in_channels >= 1; got width={width}, "
                         f"num_classes={num_classes}, in_channels={in_channels}")
    stages = model.split_options(options)
    other = {k: v for stage in ("train", "evaluate") for k, v in stages[stage].items()}
    if other:
        raise ValueError(f"{sorted(other)} of model {name} are not build options (they apply in training or "
                         "evaluation; see its declaration's options)")
    return model.make(num_classes, width=width, in_channels=in_channels, **options)


def for_evaluation(model: nn.Module, record: dict, options: dict | None) -> nn.Module:
    """The net that scores ``model`` (rebuilt from weights ``record``, ``segbench.weights``) under the
    evaluate-stage ``options`` of its declaration (U-Net's overlap tiles, DeepLab's evaluation output
    stride); ``model`` itself when there are none."""
    entry = declared(record["name"])
    evaluate = entry.split_options(options)["evaluate"]
    if not evaluate:
        return model

    def rebuild(**overrides) -> nn.Module:
        net = build(record["name"], record["num_classes"], width=record["width"],
                    in_channels=record.get("in_channels", 3), **{**record.get("options", {}), **overrides})
        net.load_state_dict(model.state_dict())
        return net.to(next(model.parameters()).device).train(model.training)

    return entry.for_evaluation(model, rebuild, **evaluate)


def backbone_of(name: str) -> str | None:
    """The classifier backbone (a ``BACKBONES`` key) that model ``name`` is transplanted from (None: U-Net)."""
    return declared(name).backbone


def classifier(backbone: str, num_classes: int, *, width: float = 1.0) -> nn.Module:
    """A classification net in torchvision's state-dict layout for ``backbone`` (see ``BACKBONES``).

    At ``width=1`` the state dict loads strictly into torchvision's ``vgg16()``, ``alexnet()``,
    ``googlenet(aux_logits=False)``, ``resnet50()`` or ``resnet101()`` (``alexnet_caffe`` has the same layout
    with the grouped Caffe AlexNet; ``resnet50_half``, ICNet's trunk, is ResNet-50 at half of ``width``).
    Input N x 3 x 224 x 224 (227 for ``alexnet_caffe``) -> N x num_classes logits.
    """
    _check(backbone, BACKBONES, "backbone")
    return BACKBONES[backbone](num_classes, width)


def card(name: str, num_classes: int = 21, *, width: float = 1.0) -> dict:
    """Table 1's structural figures of model ``name``, derived from its modules.

    For an FCN returns ``{"name", "backbone", "conv_layers", "params", "rf_size", "max_stride", "crops"}``:
    conv layers on the deepest path up to ``score_fr`` (fc6/fc7/score counted as convs), learnable
    parameters (the frozen upsamplers excluded), the receptive field and stride of one ``score_fr`` unit,
    and the derived crop offsets. For a successor model returns ``cards.card``'s ``{"name", "backbone",
    "params", "params_with_aux", "gflops", "output_stride", "max_stride", "rf_size"}`` (GFLOPs at 500x500).
    """
    with torch.device("meta"):  # only shapes are needed: no memory, no initialisation cost
        net = build(name, num_classes, width=width)
    if not isinstance(net, FCN):
        return cards.card(name, net, backbone_of(name))
    score_path = [getattr(net, n) for n in net.trunk_names] + [net.score_fr]
    geometry = path_geometry(score_path)
    return {"name": name, "backbone": backbone_of(name), "conv_layers": geometry.depth,
            "params": sum(p.numel() for p in net.parameters() if p.requires_grad), "rf_size": geometry.rf,
            "max_stride": int(geometry.jump), "crops": dict(net.crops)}
