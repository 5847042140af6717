"""ResNet-50/101 (He et al. 2016) as a classifier and as the dilated trunk of PSPNet, DeepLab and ICNet.

The layout is torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ..., ``fc``),
built from a ``Bottleneck`` made like torchvision's (same names and construction order; stride on the 3x3
conv, "ResNet v1.5"; defined here to spare every job the import of ``torchvision.models``), so at ``width=1``
``ResNet50_Weights`` / ``ResNet101_Weights`` load with ``strict=True`` and, fc dropped, transplant key for
key into every segmentation net here (their trunk modules carry the same names at the top level).

- ``width`` multiplies the stem (64) and the bottleneck widths (64, 128, 256, 512; outputs 4x those).
- ``output_stride`` 32 is the classifier; 16 replaces the stride of ``layer4`` by dilation 2 (DeepLabv3's
  OS16), 8 also that of ``layer3`` (dilation 2, ``layer4`` 4: PSPNet, DeepLab at OS8). The strided 1x1
  ``downsample`` conv of the stage loses its stride too, so weights keep their shapes.
- **Every** block of a dilated stage uses the stage's rate, the first one included, as semseg's PSPNet and
  jfzhang95's DeepLab do; torchvision gives the first block the previous stage's rate instead (same
  parameters, slightly different outputs).
- ``multi_grid`` (DeepLabv3's unit rates) multiplies the rates of ``layer4``'s three blocks: (1, 2, 4) gives
  (2, 4, 8) at OS16 and (4, 8, 16) at OS8.
- The stem is torchvision's single 7x7/2 conv, not the three-3x3 "deep stem" of PSPNet/ICNet's Caffe nets,
  so that torchvision's weights fit (pitfall 6).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.layers import scaled

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STEM = 64
WIDTHS = (64, 128, 256, 512)  # bottleneck widths of layer1..layer4; each block outputs 4x its width
# output stride -> (stride, dilation) of layer1..layer4
STAGES = {32: ((1, 1), (2, 1), (2, 1), (2, 1)), 16: ((1, 1), (2, 1), (2, 1), (1, 2)),
          8: ((1, 1), (2, 1), (1, 2), (1, 4))}
DROPPED = ("fc",)  # classifier-only module that transplant skips


class Bottleneck(nn.Module):
    """torchvision's bottleneck block: 1x1 (``conv1``, ``bn1``), 3x3 with the stride and dilation (``conv2``,
    ``bn2``), 1x1 to ``expansion`` x ``planes`` (``conv3``, ``bn3``), plus the shortcut (``downsample`` or
    identity), then ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _init(module: nn.Module) -> None:
    """torchvision's ResNet initialisation (``zero_init_residual=False``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _stage(inplanes: int, planes: int, stride: int, dilations: list[int]) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * Bottleneck.expansion))
    blocks = [Bottleneck(inplanes, planes, stride, downsample, dilation=dilations[0])]
    blocks += [Bottleneck(planes * Bottleneck.expansion, planes, dilation=d) for d in dilations[1:]]
    return nn.Sequential(*blocks)


def trunk(depth: int, *, width: float = 1.0, in_channels: int = 3, output_stride: int = 32,
          multi_grid: tuple[int, ...] = (1,)) -> tuple[list[tuple[str, nn.Module]], dict[str, int]]:
    """The ResNet-``depth`` trunk as ``(name, module)`` pairs, ``conv1`` ... ``layer4``, and the output
    channels of each stage (``{"layer1": 256, ..., "layer4": 2048}`` at width 1).

    Input N x in_channels x H x W; ``layer1`` is at stride 4, ``layer2`` 8, ``layer3`` 16 (8 at OS8) and
    ``layer4`` ``output_stride``, each of size ``ceil(H / stride)`` (odd sizes round up).
    """
    if depth not in BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
    if output_stride not in STAGES:
        raise ValueError(f"output_stride must be one of {sorted(STAGES)}, got {output_stride}")
    if not multi_grid or min(multi_grid) < 1:
        raise ValueError(f"multi_grid must be positive unit rates such as (1, 2, 4), got {multi_grid}")
    stem = scaled(STEM, width)
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)), ("bn1", nn.BatchNorm2d(stem)),
        ("relu", nn.ReLU(inplace=True)), ("maxpool", nn.MaxPool2d(3, stride=2, padding=1))]
    channels, inplanes = {}, stem
    for i, (blocks, (stride, rate)) in enumerate(zip(BLOCKS[depth], STAGES[output_stride]), start=1):
        planes = scaled(WIDTHS[i - 1], width)
        grid = multi_grid if i == 4 else (1,)
        dilations = [rate * grid[j % len(grid)] for j in range(blocks)]
        layers.append((f"layer{i}", _stage(inplanes, planes, stride, dilations)))
        inplanes = channels[f"layer{i}"] = planes * Bottleneck.expansion
    for _, m in layers:
        _init(m)
    return layers, channels


class ResNetTrunk(nn.Module):
    """Base of the ResNet-based nets: the trunk's modules are its first children, under torchvision's names.

    ``backbone`` is the ``BACKBONES`` key it transplants from; ``trunk_names`` lists the trunk modules
    (what ``transplant`` must fill); ``channels`` the output channels per stage.
    """

    def __init__(self, *, backbone: str, depth: int, width: float, in_channels: int, output_stride: int,
                 multi_grid: tuple[int, ...] = (1,)):
        super().__init__()
        layers, self.channels = trunk(depth, width=width, in_channels=in_channels, output_stride=output_stride,
                                      multi_grid=multi_grid)
        self.backbone = backbone
        self.trunk_names = [name for name, _ in layers]
        for name, module in layers:
            self.add_module(name, module)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> the max-pooled stem output at stride 4."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The outputs of ``layer1`` ... ``layer4`` for input N x C x H x W."""
        out, h = {}, self.stem(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = out[name] = getattr(self, name)(h)
        return out


class ResNetClassifier(ResNetTrunk):
    """torchvision ``resnet50()`` / ``resnet101()`` with ``width``: the trunk, ``avgpool`` and ``fc``.

    Input N x in_channels x H x W (224 for ImageNet; any size >= 32 works) -> N x num_classes logits.
    """

    def __init__(self, depth: int, num_classes: int, *, width: float = 1.0, in_channels: int = 3,
                 backbone: str | None = None):
        super().__init__(backbone=backbone or f"resnet{depth}", depth=depth, width=width, in_channels=in_channels,
                         output_stride=32)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.channels["layer4"], num_classes)  # torchvision keeps nn.Linear's own init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.avgpool(self.features(x)["layer4"]).flatten(1))
