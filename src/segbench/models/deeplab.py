"""DeepLabv3 (Chen et al. 2017, arXiv:1706.05587) and DeepLabv3+ (Chen et al., ECCV 2018, arXiv:1802.02611).

    DeepLabv3 : ResNet (OS 16 or 8, multi-grid (1, 2, 4) in layer4) -> aspp -> cls (1x1) -> bilinear to H x W
    DeepLabv3+: ... aspp -> upsample to layer1's size (stride 4) ++ project(layer1) (1x1, 48 + BN + ReLU)
                -> decoder: two 3x3 convs 256 + BN + ReLU -> cls (1x1) -> bilinear (x4) to H x W

ASPP (the final v3 model): five 256-channel branches on layer4, each with BN + ReLU -- a 1x1 conv, three 3x3
convs at rates (6, 12, 18) x 16 / output_stride (so (12, 24, 36) at OS8), and image pooling (global average
-> 1x1 conv + BN + ReLU -> upsampled, i.e. spatially constant) -- concatenated (1280 channels) and projected
by a 1x1 conv 256 + BN + ReLU, then dropout 0.1 (TF's keep_prob 0.9; torchvision and jfzhang95 use 0.5).

Choices: the image pooling is adaptive (over the actual input, not TF's fixed crop-sized window); resizing
uses ``align_corners=False`` (TF uses True); no extra 3x3 conv after the ASPP (torchvision adds one: 590,336
more parameters); layer4 multi-grid (1, 2, 4), the paper's best setting. **Separable convolutions**: the v3+
paper uses atrous depthwise-separable convs in the ASPP and the decoder of its Xception models ("SC");
its ResNet-101 results use regular convs, as does jfzhang95/pytorch-deeplab-xception, whose parameter count
(59,344,309 for ResNet-101, 21 classes) ours matches exactly. So ``separable=False`` is the default and
``separable=True`` builds the SC variant: every 3x3 conv of the ASPP and decoder becomes a depthwise 3x3 at
the same rate + BN + ReLU, then a pointwise 1x1 + BN + ReLU (TF's ``_split_separable_conv2d``).

The image-pooling branch normalises one value per image and channel: training it with BN in train mode
needs at least 2 images per batch (PyTorch raises "Expected more than 1 value per channel" otherwise).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.blocks import conv_bn_relu, resize
from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.resnet import ResNetTrunk

RATES_OS16 = (6, 12, 18)
MULTI_GRID = (1, 2, 4)
ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


def separable_conv_bn_relu(c_in: int, c_out: int, *, dilation: int = 1) -> nn.Sequential:
    """Atrous separable conv: depthwise 3x3 (rate ``dilation``) + BN + ReLU, pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=dilation, dilation=dilation, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), *conv_bn_relu(c_in, c_out))


def _conv3x3(c_in: int, c_out: int, dilation: int, separable: bool) -> nn.Sequential:
    if separable:
        return separable_conv_bn_relu(c_in, c_out, dilation=dilation)
    return conv_bn_relu(c_in, c_out, 3, dilation=dilation)


class ImagePooling(nn.Module):
    """Image-level features: N x C x h x w -> global average -> 1x1 conv + BN + ReLU -> N x C' x h x w
    (the same vector at every position)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x)).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: N x c_in x h x w -> N x channels x h x w.

    ``branch0`` is the 1x1 conv, ``atrous`` the 3x3 convs (rates in ``rates``), ``image_pool`` the
    image-level branch; ``project`` fuses the 5 x ``channels`` concatenation.
    """

    def __init__(self, c_in: int, channels: int, rates: tuple[int, ...], *, separable: bool = False):
        super().__init__()
        self.rates = tuple(rates)
        self.branch0 = conv_bn_relu(c_in, channels)
        self.atrous = nn.ModuleList(_conv3x3(c_in, channels, r, separable) for r in self.rates)
        self.image_pool = ImagePooling(c_in, channels)
        self.project = nn.Sequential(*conv_bn_relu((len(self.rates) + 2) * channels, channels), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch0(x)] + [conv(x) for conv in self.atrous] + [self.image_pool(x)]
        return self.project(torch.cat(branches, dim=1))


class DeepLab(ResNetTrunk):
    """DeepLabv3 (``decoder=False``) or v3+ (``decoder=True``) on ResNet-``depth``:
    ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores.

    ``output_stride`` 16 (train, the paper's default) or 8 (the paper's evaluation setting; rates double).
    ``width`` scales the trunk and every head channel count (256, 48).
    """

    head_prefixes = ("aspp", "project", "decoder", "cls")  # the layers no classifier provides

    def __init__(self, num_classes: int, *, depth: int = 101, width: float = 1.0, in_channels: int = 3,
                 output_stride: int = 16, decoder: bool = False, separable: bool = False,
                 multi_grid: tuple[int, ...] = MULTI_GRID):
        if output_stride not in (8, 16):
            raise ValueError(f"DeepLab's output_stride must be 16 or 8, got {output_stride}")
        super().__init__(backbone=f"resnet{depth}", depth=depth, width=width, in_channels=in_channels,
                         output_stride=output_stride, multi_grid=multi_grid)
        self.max_stride = output_stride
        self.output_stride = 4 if decoder else output_stride
        channels = scaled(ASPP_CHANNELS, width)
        self.aspp = ASPP(self.channels["layer4"], channels, tuple(r * 16 // output_stride for r in RATES_OS16),
                         separable=separable)
        self.has_decoder = decoder
        if decoder:
            low = scaled(LOW_LEVEL_CHANNELS, width)
            self.project = conv_bn_relu(self.channels["layer1"], low)
            self.decoder = nn.Sequential(*_conv3x3(channels + low, channels, 1, separable),
                                         *_conv3x3(channels, channels, 1, separable))
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        h = self.aspp(f["layer4"])
        if self.has_decoder:
            low = self.project(f["layer1"])
            h = self.decoder(torch.cat([resize(h, low.shape[-2:]), low], dim=1))
        return resize(self.cls(h), x.shape[-2:])


def _for_evaluation(model: DeepLab, rebuild, *, eval_output_stride: int | None = None) -> nn.Module:
    return model if eval_output_stride is None else rebuild(output_stride=eval_output_stride)


# Chen et al. 2017, section 4.1 (v3) and 2018, section 4 (v3+, trained "as DeepLabv3"): poly base 0.007, batch
# 16, crop 513, 30K iterations, random scale 0.5-2 and left-right flip, output stride 16 (the model's default);
# momentum 0.9 and weight decay 1e-4 for ResNets from tensorflow/models ``research/deeplab`` (v3+'s 4e-5 is
# Xception's). No head multiplier (none is reported for the authors' TensorFlow code; jfzhang95's PyTorch port
# uses 10x).
_RECIPE = {"batch_size": 16, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "poly",
           "lr": 0.007, "weight_decay": 1e-4, "bias_lr_mult": 1.0, "crop": 513, "scale_range": (0.5, 2.0),
           "flip": True, "iterations": 30_000}
RECIPES = {"deeplabv3": _RECIPE, "deeplabv3plus": dict(_RECIPE)}
_OPTIONS = {"output_stride": ("build", "16 (the papers' training setting) or 8 (dilated layer3 too)"),
            "separable": ("build", "true: atrous depthwise-separable convs in the ASPP and decoder (Xception's SC)"),
            "multi_grid": ("build", "unit rates of layer4's three blocks (default [1, 2, 4])"),
            "eval_output_stride": ("evaluate", "score with this output stride (the papers evaluate at 8 a net "
                                               "trained at 16; same weights)")}
_V3 = {"mean_iu": 77.21, "pixel_acc": None, "split": "VOC2012 val",
       "setting": "ResNet-101, ASPP + image pooling, multi-grid (1, 2, 4), OS 16, single scale, trainaug, no COCO",
       "source": "Chen et al. 2017 (arXiv:1706.05587), section 4"}
_V3P = {"mean_iu": 78.85, "pixel_acc": None, "split": "VOC2012 val",
        "setting": "ResNet-101 + decoder, train and eval OS 16, single scale, trainaug, no COCO",
        "source": "Chen et al. 2018 (arXiv:1802.02611), Table 3"}
MODELS = [  # min_batch 2: the image pooling branch has batch norm
    Declared(f"deeplabv3{plus}_resnet{depth}", DeepLab, display=f"DeepLabv3{'+' if plus else ''} (ResNet-{depth})",
             backbone=f"resnet{depth}", recipe=f"deeplabv3{plus}", published=_V3P if plus else _V3,
             fixed={"depth": depth, "decoder": bool(plus)}, options=_OPTIONS, min_batch=2,
             for_evaluation=_for_evaluation)
    for plus in ("", "plus") for depth in (50, 101)
]
