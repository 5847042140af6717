"""GoogLeNet as a classifier (torchvision's state-dict layout) and as the FCN-GoogLeNet trunk.

The authors never released FCN-GoogLeNet; the paper says only that it keeps the final loss layer,
drops the final average pooling, and scores the last inception output (stride 32). Choices made here:

- **torchvision's definition**: ``BasicConv2d`` and ``Inception`` below are built like torchvision's blocks,
  with the same module names, argument order and construction order (hence the same initial weights for a
  seed), so ``GoogLeNet_Weights`` (and the synthetic stand-in) transplant key for key; defining them here
  spares every job the ~1.3 s import of ``torchvision.models``. This
  inherits torchvision's two deviations from the 2014 paper: the "5x5" branch uses a **3x3** conv (a
  known torchvision bug kept for its weights) and **pool4 is 2x2/2** (the paper's is 3x3/2).
- **Batch norm kept** (torchvision's ``BasicConv2d`` = conv without bias + BN(eps 1e-3) + ReLU); the
  2014 net had none. BN weights/biases count as learnable parameters. In training, every FCN recipe keeps it
  frozen (``training.recipes``, "Batch norm"): eval mode, the classifier's running statistics, a fixed
  per-channel affine map as close as BN gets to the 2014 net, its scale and shift still learning. Batch
  statistics of 1-20 whole images padded by 100 pixels are dominated by the padding.
- **No auxiliary heads**, no final average pooling and no dropout (the classifier's dropout sat after
  the pooling the FCN removes); ``fc`` (the classifier) is dropped like fc8 and replaced by the zero
  ``score_fr`` on inception5b (1024 channels).
- **conv1 padded by 100 instead of 3**, as Caffe's FCNs pad their first layer, so every input size
  (1x1 upward) is covered by the upsampled output after the top-left crop.
- **64/32 bilinear upsampling**, FCN-32s VGG16's upsampler, with a half-pixel misalignment: every trunk layer has
  an odd kernel, so the trunk's coordinate map is whole-pixel and an even 64-wide kernel puts the final
  crop offset at 106.5 (with the padding of 100). Caffe's ``coord_map.crop`` would refuse that
  ("cannot crop noninteger offset"); here it is rounded down to 106 (``allow_half_crop``). A 63/32
  kernel, as FCN-AlexNet uses for the same reason, would align exactly (``final_kernel=63``).

Consequences for the Table 1 card (paper: 22 conv layers, 6M parameters, rf 907): 22 conv layers
(conv1, conv2, conv3, 9 inception modules x 2 deep, score_fr) match. Parameters are 5.62M (5.60M
trunk + score_fr) against ~6M: with true 5x5 branches the trunk would have 5.98M. The receptive field
is 379 against 907: 3x3 instead of 5x5 branches and the 2x2 pool4 shrink it (the published layout gives
715 at inception5b), and the paper's 907 = 715 + 6 x 32 also counts the 7x7 average pooling of the
classification net, which the FCN drops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.layers import scaled

# (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) per module, as in torchvision's GoogLeNet
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128), "inception5b": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = {"inception3b": ("maxpool3", 3), "inception4e": ("maxpool4", 2)}
DROPPED = ("aux1", "aux2", "fc")  # classifier-only modules that transplant skips


class BasicConv2d(nn.Module):
    """torchvision's GoogLeNet unit: ``conv`` (no bias) + ``bn`` (eps 1e-3) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_args):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_args)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """torchvision's inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" (a 3x3, torchvision's kept bug) |
    3x3/1 max pool (ceil mode) -> 1x1, concatenated in that order (``branch1`` .. ``branch4``)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def _init(module: nn.Module) -> None:
    """torchvision's GoogLeNet initialisation."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _layers(*, width: float, in_channels: int, conv1_padding: int) -> tuple[list[tuple[str, nn.Module]], int]:
    """conv1 ... inception5b with torchvision's names; returns the layers and the output channel count."""
    c64, c192 = scaled(64, width), scaled(192, width)
    layers = [("conv1", BasicConv2d(in_channels, c64, kernel_size=7, stride=2, padding=conv1_padding)),
              ("maxpool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
              ("conv2", BasicConv2d(c64, c64, kernel_size=1)),
              ("conv3", BasicConv2d(c64, c192, kernel_size=3, padding=1)),
              ("maxpool2", nn.MaxPool2d(3, stride=2, ceil_mode=True))]
    c_in = c192
    for name, cfg in INCEPTIONS.items():
        b1, r3, b3, r5, b5, bp = (scaled(c, width) for c in cfg)
        layers.append((name, Inception(c_in, b1, r3, b3, r5, b5, bp)))
        c_in = b1 + b3 + b5 + bp
        if name in POOL_AFTER:
            pool_name, k = POOL_AFTER[name]
            layers.append((pool_name, nn.MaxPool2d(k, stride=2, ceil_mode=True)))
    for _, m in layers:
        _init(m)
    return layers, c_in


def trunk(*, width: float = 1.0, in_channels: int = 3) -> tuple[list[tuple[str, nn.Module]], dict[str, int]]:
    """The FCN-GoogLeNet trunk up to inception5b and its output channel count."""
    layers, channels = _layers(width=width, in_channels=in_channels, conv1_padding=100)
    return layers, {"inception5b": channels}


class GoogLeNetClassifier(nn.Module):
    """torchvision ``googlenet(aux_logits=False)`` layout: conv1 ... inception5b, avgpool, dropout(0.2), fc.

    Input N x 3 x H x W (224 usually) -> N x num_classes logits.
    """

    def __init__(self, num_classes: int, *, width: float = 1.0):
        super().__init__()
        layers, channels = _layers(width=width, in_channels=3, conv1_padding=3)
        for name, module in layers:
            self.add_module(name, module)
        self.names = [name for name, _ in layers]
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(channels, num_classes)
        _init(self.fc)

    def forward(self, x):
        for name in self.names:
            x = getattr(self, name)(x)
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))
