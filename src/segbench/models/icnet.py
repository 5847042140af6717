"""ICNet (Zhao, Qi, Shen, Shi, Jia, ECCV 2018, arXiv:1704.08545): an image cascade over three resolutions.

Structure as in the authors' released Caffe net (hszhao/ICNet, ``icnet_cityscapes.prototxt``), for an
H x W input:

    sub1 (full image)   : conv1_sub1, conv2_sub1, conv3_sub1 = 3 x [3x3 stride-2 conv + BN + ReLU], 32-32-64 ch,  1/8
    sub2 (image x 1/2)  : ResNet-50 stem, layer1, layer2.0 ("conv3_1")                                 256 ch,  1/16
    sub4 (conv3_1 x 1/2): layer2.1-3, layer3 (dilation 2), layer4 (dilation 4), pyramid pooling
                          (bins 1, 2, 3, 6, average-pooled, upsampled and *summed*), conv5_4_k1 (1x1, 256)  256 ch, 1/32
    cff_sub24 = CFF(sub4 -> sub2), cff_sub12 = CFF(sub24 -> sub1): 128 ch at 1/16 and 1/8
    conv6_cls: x2 (to ceil(H/4) x ceil(W/4)) -> 1x1 classifier at 1/4 -> bilinear x4 to H x W

so the low and medium branches share the stem computation (the sub4 branch consumes conv3_1 features, not a
quarter-size image). A cascade feature fusion unit (CFF) upsamples the coarse map F1 x2, applies a 3x3 conv
of dilation 2 + BN, adds a 1x1 projection + BN of the finer F2, and applies ReLU; for cascade label
guidance a 1x1 classifier scores the upsampled F1 (``sub4_out`` at 1/16, ``sub24_out`` at 1/8).

Trunk: the release's "compressed PSPNet" is a **half-width** ResNet-50 (bottleneck widths 32-256), so at
``width=1`` the trunk here is ``resnet.trunk(50, width=0.5)`` with torchvision's 7x7 stem instead of the
Caffe deep stem (-0.4% parameters), and the backbone key is ``resnet50_half`` (a ResNet-50 classifier at
half the given width; torchvision's full-width weights do not fit, as in the paper, which pruned them).

Losses (``forward_with_aux``): lambda = **0.4 (sub4, 1/16), 0.4 (sub24, 1/8), 1.0 (final)**, the setting of
mmsegmentation's ``configs/_base_/models/icnet_r50-d8.py`` (also GluonCV's ICNetLoss); hellochick's
ICNet-tensorflow ``utils/config.py`` uses 0.16 / 0.4 / 1.0 instead. The paper's own values were not
verified. The release computes the final loss on the 1/4 logits against labels shrunk to 1/4; here the
main scores are the logits upsampled to H x W (the trainer's loss at full label resolution), and the two
guidance heads are returned at their own resolutions for labels resized by nearest neighbour.
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.blocks import conv_bn_relu, resize
from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.resnet import ResNetTrunk

BINS = (1, 2, 3, 6)
LOSS_WEIGHTS = {"sub4": 0.4, "sub24": 0.4}  # the final loss has weight 1.0 (mmseg icnet_r50-d8)
TRUNK_WIDTH = 0.5  # the release's half-width ResNet-50
SUB1 = (32, 32, 64)
PSP_OUT = 256
CFF_OUT = 128


def _half(x: torch.Tensor) -> torch.Tensor:
    """Bilinear shrink by 2 (odd sizes round up, as Caffe's ``Interp shrink_factor: 2`` on 2k+1 -> k+1)."""
    return resize(x, ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2))


class SumPyramidPooling(nn.Module):
    """ICNet's pyramid pooling: x + sum over bins of upsample(avgpool_bin(x)); N x C x h x w -> same shape."""

    def __init__(self, bins: tuple[int, ...] = BINS):
        super().__init__()
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(b) for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + sum(resize(pool(x), x.shape[-2:]) for pool in self.pools)


class CascadeFeatureFusion(nn.Module):
    """CFF: (F1: N x c_low x h x w, F2: N x c_high x H' x W') -> (N x c_out x H' x W' fused, N x K x H' x W'
    guidance scores of the upsampled F1). H' x W' is about 2h x 2w; F1 is resized to exactly F2's size."""

    def __init__(self, c_low: int, c_high: int, c_out: int, num_classes: int):
        super().__init__()
        self.conv_low = conv_bn_relu(c_low, c_out, 3, dilation=2, relu=False)
        self.conv_high = conv_bn_relu(c_high, c_out, 1, relu=False)
        self.cls = nn.Conv2d(c_low, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = resize(low, high.shape[-2:])
        return self.relu(self.conv_low(low) + self.conv_high(high)), self.cls(low)


class ICNet(ResNetTrunk):
    """ICNet: ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores; ``forward_with_aux`` adds the
    cascade label guidance ``{"sub4": (N x K x ~H/16 x ~W/16, 0.4), "sub24": (N x K x ~H/8 x ~W/8, 0.4)}``.

    ``width`` scales every channel count (trunk at ``width / 2`` of ResNet-50; sub1 32-32-64; 256; 128).
    """

    aux_modules = ("cff_sub24.cls", "cff_sub12.cls")
    # the layers no classifier provides: the full-resolution branch, the pyramid's projection, the cascade
    head_prefixes = ("conv1_sub1", "conv2_sub1", "conv3_sub1", "conv5_4_k1", "cff_sub24", "cff_sub12", "conv6_cls")
    aux_weights = LOSS_WEIGHTS  # the guidance losses' weights in the training objective

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3):
        super().__init__(backbone="resnet50_half", depth=50, width=width * TRUNK_WIDTH, in_channels=in_channels,
                         output_stride=8)  # layer3/layer4 dilated 2/4 on the 1/32 sub4 map
        self.output_stride, self.max_stride = 4, 32
        c1 = [scaled(c, width) for c in SUB1]
        self.conv1_sub1 = conv_bn_relu(in_channels, c1[0], 3, stride=2)
        self.conv2_sub1 = conv_bn_relu(c1[0], c1[1], 3, stride=2)
        self.conv3_sub1 = conv_bn_relu(c1[1], c1[2], 3, stride=2)
        self.ppm = SumPyramidPooling()
        psp, cff = scaled(PSP_OUT, width), scaled(CFF_OUT, width)
        self.conv5_4_k1 = conv_bn_relu(self.channels["layer4"], psp)
        self.cff_sub24 = CascadeFeatureFusion(psp, self.channels["layer2"], cff, num_classes)
        self.cff_sub12 = CascadeFeatureFusion(cff, c1[2], cff, num_classes)
        self.conv6_cls = nn.Conv2d(cff, num_classes, 1)

    def _cascade(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        conv3_1 = self.layer2[:1](self.layer1(self.stem(_half(x))))
        h = self.layer4(self.layer3(self.layer2[1:](_half(conv3_1))))
        sub4 = self.conv5_4_k1(self.ppm(h))
        sub1 = self.conv3_sub1(self.conv2_sub1(self.conv1_sub1(x)))
        sub24, sub4_out = self.cff_sub24(sub4, conv3_1)
        sub12, sub24_out = self.cff_sub12(sub24, sub1)
        # conv6_cls at 1/4 of the input: 257 x 513 for 1025 x 2049, as in the release
        logits = self.conv6_cls(resize(sub12, ((x.shape[-2] + 3) // 4, (x.shape[-1] + 3) // 4)))
        return resize(logits, x.shape[-2:]), sub4_out, sub24_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._cascade(x)[0]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, float]]]:
        """Main scores N x K x H x W and the two guidance heads (scores, loss weight) at 1/16 and 1/8."""
        scores, sub4_out, sub24_out = self._cascade(x)
        return scores, {"sub4": (sub4_out, LOSS_WEIGHTS["sub4"]), "sub24": (sub24_out, LOSS_WEIGHTS["sub24"])}


# Zhao et al. 2018: the paper's recipe was not verified (recalled: batch 16, poly base 0.01, momentum 0.9, weight
# decay 1e-4, mirror and resize 0.5-2); 30K iterations as the release's Cityscapes model (train set). *Ours*:
# crop 473 (PSPNet's VOC crop; the paper's is not known), no head multiplier.
RECIPES = {"icnet": {"batch_size": 16, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "poly",
                     "lr": 0.01, "weight_decay": 1e-4, "bias_lr_mult": 1.0, "crop": 473, "scale_range": (0.5, 2.0),
                     "flip": True, "iterations": 30_000}}
MODELS = [
    Declared("icnet_resnet50", ICNet, display="ICNet (ResNet-50, half width)", backbone="resnet50_half",
             recipe="icnet",
             published={"mean_iu": None, "pixel_acc": None, "split": "--",
                        "setting": "no VOC result published; Cityscapes val 67.7 (train set, 30K iterations), "
                                   "test 69.5 (train + val)",
                        "source": "hszhao/ICNet README (the authors' release)"}),
]
