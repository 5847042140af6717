"""The dilated FCN: the control that GloRe, GINet and HDNet (and PSPNet's ablation) compare their heads against.

    layer4 (2048 ch, 1/8) -> cls: 3x3 conv 512 + BN + ReLU, Dropout(0.1), 1x1 -> classes -> bilinear to H x W
    layer3 (1024 ch, 1/8) -> aux: 3x3 conv 256 + BN + ReLU, Dropout(0.1), 1x1 -> classes (training only, 0.4)

The head is PyTorch-Encoding's ``FCNHead`` (the same layout as torchvision's ``FCNHead`` and PaddleSeg's
``AuxLayer``: a 3x3 conv to a quarter of the channels, no bias, BN, ReLU, element-wise dropout 0.1, a 1x1
classifier with bias). The auxiliary head is the same block on layer3 with PSPNet's weight 0.4 (PaddleSeg's
GloRe and GINet configs use 0.4 too; torchvision uses 0.5, PyTorch-Encoding 0.2). Both score maps are resized
bilinearly to the input, as PaddleSeg and semseg do. The trunk is ``ResNetTrunk`` at output stride 8, PSPNet's
and DeepLab's: torchvision's 7x7 stem (the encoding and PaddleSeg backbones have a deep stem), every block of a
dilated stage at its stage's rate.

``DilatedHeadNet`` is the shared frame of the graph heads (``segbench.models.glore``, ``ginet``, ``hdnet``): the
trunk, the optional layer3 auxiliary head, ``forward`` and ``forward_with_aux``. A subclass supplies
``_decode(layer4) -> (scores at 1/8, context)`` and may turn the context into losses of its own
(``_extra_losses``): an auxiliary entry ``(loss(labels, *, reduction) -> scalar, weight)``, which
``segbench.evaluation.objective.training_loss`` adds beside the auxiliary score maps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from segbench.models.blocks import conv_bn_relu, resize
from segbench.models.registry import Declared
from segbench.models.resnet import ResNetTrunk

AUX_WEIGHT = 0.4

# An auxiliary output: scores (N x K x h x w) with their weight, or a loss of its own with its weight
AuxOutput = tuple[torch.Tensor | Callable[..., torch.Tensor], float]


def fcn_head(c_in: int, num_classes: int) -> nn.Sequential:
    """PyTorch-Encoding's ``FCNHead``: N x c_in x h x w -> 3x3 conv c_in / 4 (no bias) + BN + ReLU,
    Dropout(0.1), 1x1 conv -> N x num_classes x h x w."""
    c_mid = max(1, c_in // 4)
    return nn.Sequential(*conv_bn_relu(c_in, c_mid, 3), nn.Dropout(0.1), nn.Conv2d(c_mid, num_classes, 1))


class DilatedHeadNet(ResNetTrunk):
    """A head on the dilated ResNet-``depth`` (output stride 8): ``forward(x: N x C x H x W) -> N x K x H x W``.

    ``forward_with_aux`` also returns ``{"aux": (layer3 scores N x K x H x W, 0.4)}`` when ``aux`` is set, and
    the subclass's extra losses. ``width`` scales the trunk and the heads.
    """

    aux_modules: tuple[str, ...] = ("aux",)

    def __init__(self, num_classes: int, *, depth: int, width: float, in_channels: int, aux: bool = True):
        super().__init__(backbone=f"resnet{depth}", depth=depth, width=width, in_channels=in_channels,
                         output_stride=8)
        self.output_stride = self.max_stride = 8
        self.num_classes = num_classes
        # only the weights of score-map heads, whose constant-prediction floor is the main head's (train._finish)
        self.aux_weights = {"aux": AUX_WEIGHT} if aux else {}
        if aux:
            self.aux = fcn_head(self.channels["layer3"], num_classes)

    def _decode(self, layer4: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Scores N x K x h x w at 1/8 from layer4, and what the extra losses need (None: nothing)."""
        raise NotImplementedError

    def _extra_losses(self, context: Any) -> dict[str, AuxOutput]:
        """``{name: (loss(labels N x H x W, *, reduction) -> scalar, weight)}`` from ``_decode``'s context."""
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(self._decode(self.features(x)["layer4"])[0], x.shape[-2:])

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, AuxOutput]]:
        """Main scores N x K x H x W, and ``{"aux": (N x K x H x W, 0.4), extra loss name: (loss, weight)}``."""
        f = self.features(x)
        scores, context = self._decode(f["layer4"])
        aux: dict[str, AuxOutput] = {}
        if "aux" in self.aux_weights:
            aux["aux"] = (resize(self.aux(f["layer3"]), x.shape[-2:]), self.aux_weights["aux"])
        aux.update(self._extra_losses(context))
        return resize(scores, x.shape[-2:]), aux


class DilatedFCN(DilatedHeadNet):
    """The dilated FCN on ResNet-``depth``: layer4 -> ``cls`` (FCNHead) -> bilinear to H x W; ``aux`` on layer3."""

    head_prefixes = ("cls", "aux")  # the layers no classifier provides

    def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, in_channels: int = 3):
        super().__init__(num_classes, depth=depth, width=width, in_channels=in_channels)
        self.cls = fcn_head(self.channels["layer4"], num_classes)

    def _decode(self, layer4: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.cls(layer4), None


# The control trains with PSPNet's recipe: PSPNet's ablation trained its dilated FCN baseline with it, and the
# figure of dilated_fcn_resnet50 below is that baseline's.
_ADE = {"mean_iu": 37.23, "pixel_acc": 78.01, "split": "ADE20K val",
        "setting": "ResNet-50 dilated FCN (OS 8) + augmentation + auxiliary loss, single scale: PSPNet's ablation "
                   "baseline, ADE20K's 150 classes (not VOC)",
        "source": "Zhao et al. 2017 (PSPNet, arXiv:1612.01105), section 5 ablation"}
_TV = {"mean_iu": 63.7, "pixel_acc": 91.9, "split": "COCO val2017, the 20 VOC classes",
       "setting": "torchvision fcn_resnet101: dilated ResNet-101 (OS 8) + FCNHead, aux head weight 0.5, trained on "
                  "the COCO subset with VOC's classes, images and labels resized to short side 520 (not VOC)",
       "source": "torchvision model documentation (FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1)"}
MODELS = [
    Declared(f"dilated_fcn_resnet{depth}", DilatedFCN, display=f"Dilated FCN (ResNet-{depth})",
             backbone=f"resnet{depth}", recipe="pspnet", fixed={"depth": depth}, published=figure)
    for depth, figure in ((50, _ADE), (101, _TV))
]
