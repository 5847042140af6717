"""PSPNet (Zhao, Shi, Qi, Wang, Jia, CVPR 2017): pyramid pooling on a dilated ResNet, auxiliary loss on layer3.

    layer4 (2048 ch, 1/8) -> ppm: [avg-pool to 1x1, 2x2, 3x3, 6x6 -> 1x1 conv 512 + BN + ReLU -> upsample]
                             concatenated with layer4 (4096 ch)
                          -> cls: 3x3 conv 512 + BN + ReLU, Dropout2d(0.1), 1x1 -> classes -> bilinear to H x W
    layer3 (1024 ch, 1/8) -> aux: 3x3 conv 256 + BN + ReLU, Dropout2d(0.1), 1x1 -> classes (training only)

Facts from the paper (bins 1, 2, 3, 6; average pooling; reduction to 1/N of the channels with N = 4 levels;
dilated ResNet at output stride 8; deep supervision after res4b22 with weight 0.4); head layout and the
``ppm`` / ``cls`` / ``aux`` names from semseg (hszhao/semseg, the authors' PyTorch code). Deviations:
torchvision's 7x7 stem instead of the deep stem (so its ImageNet weights transplant; parameters differ by
0.2%), adaptive pooling (the Caffe nets fixed the pooling windows for the training size), and bilinear
resizing with ``align_corners=False`` at any input size (semseg needs (H - 1) % 8 == 0).

The pyramid's 1x1-bin branch normalises over one value per image and channel: training with BN in train
mode needs at least 2 images per batch (PyTorch raises otherwise), as for DeepLab's image pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.blocks import conv_bn_relu, resize
from segbench.models.registry import Declared
from segbench.models.resnet import ResNetTrunk

BINS = (1, 2, 3, 6)
AUX_WEIGHT = 0.4


class PyramidPooling(nn.Module):
    """The pyramid pooling module: N x C x h x w -> N x (C + len(bins) * C / len(bins)) x h x w."""

    def __init__(self, channels: int, bins: tuple[int, ...] = BINS):
        super().__init__()
        reduced = max(1, channels // len(bins))
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), *conv_bn_relu(channels, reduced))
                                    for b in self.bins)
        self.out_channels = channels + reduced * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [resize(stage(x), x.shape[-2:]) for stage in self.stages], dim=1)


def _classifier(c_in: int, c_mid: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(c_in, c_mid, 3), nn.Dropout2d(0.1), nn.Conv2d(c_mid, num_classes, 1))


class PSPNet(ResNetTrunk):
    """PSPNet on ResNet-``depth``: ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores.

    ``forward_with_aux`` also returns ``{"aux": (scores N x num_classes x H x W from layer3, 0.4)}``
    (upsampled to the input size as semseg does). ``width`` scales the trunk and the head (512 / 256).
    """

    aux_modules = ("aux",)
    head_prefixes = ("ppm", "cls", "aux")  # the layers no classifier provides (semseg trains them at 10x lr)
    aux_weights = {"aux": AUX_WEIGHT}  # the auxiliary loss's weight in the training objective

    def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, in_channels: int = 3):
        super().__init__(backbone=f"resnet{depth}", depth=depth, width=width, in_channels=in_channels,
                         output_stride=8)
        self.output_stride = self.max_stride = 8
        c4, c3 = self.channels["layer4"], self.channels["layer3"]
        self.ppm = PyramidPooling(c4)
        self.cls = _classifier(self.ppm.out_channels, max(1, c4 // 4), num_classes)
        self.aux = _classifier(c3, max(1, c3 // 4), num_classes)

    def _scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return resize(self.cls(self.ppm(f["layer4"])), x.shape[-2:]), f["layer3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scores(x)[0]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, float]]]:
        """Main scores N x K x H x W and ``{"aux": (N x K x H x W, 0.4)}`` (deep supervision on layer3)."""
        scores, layer3 = self._scores(x)
        return scores, {"aux": (resize(self.aux(layer3), x.shape[-2:]), self.aux_weights["aux"])}


# Zhao et al. 2017, section 5.1 (hszhao/semseg ``config/voc2012``): poly base 0.01, momentum 0.9, weight decay
# 1e-4, batch 16, 30K iterations on VOC, random mirror, resize 0.5-2, rotation -10..10 degrees and Gaussian
# blur; crop 473 and the 10x lr of the pyramid pooling, classifier and auxiliary head, blur with p 0.5 from
# semseg. Auxiliary loss 0.4 (the model's).
RECIPES = {"pspnet": {"batch_size": 16, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "poly",
                      "lr": 0.01, "weight_decay": 1e-4, "head_lr_mult": 10.0, "bias_lr_mult": 1.0, "crop": 473,
                      "scale_range": (0.5, 2.0), "flip": True, "rotate": 10.0, "blur": 0.5, "iterations": 30_000}}
_TEST = "paper: 82.6 VOC2012 test, ResNet-101, VOC data only, multi-scale (Zhao et al. 2017)"
_SOURCE = "hszhao/semseg README (the authors' PyTorch code)"
MODELS = [  # min_batch 2: the pyramid pooling's 1 x 1 bin has batch norm
    Declared("pspnet_resnet50", PSPNet, display="PSPNet (ResNet-50)", backbone="resnet50", recipe="pspnet",
             fixed={"depth": 50}, min_batch=2,
             published={"mean_iu": 77.05, "pixel_acc": None, "split": "VOC2012 val",
                        "setting": "PSPNet50, trainaug, single scale; " + _TEST, "source": _SOURCE}),
    Declared("pspnet_resnet101", PSPNet, display="PSPNet (ResNet-101)", backbone="resnet101", recipe="pspnet",
             fixed={"depth": 101}, min_batch=2,
             published={"mean_iu": 79.07, "pixel_acc": None, "split": "VOC2012 val",
                        "setting": "PSPNet101, trainaug, single scale; " + _TEST, "source": _SOURCE}),
]
