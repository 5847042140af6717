"""VGG16 as a classifier (torchvision's state-dict layout) and as the FCN trunk (Caffe/pytorch-fcn names).

The FCN trunk follows ``voc-fcn*/net.py``: ``conv1_1`` padded by 100 (so any input size, 1x1 upward,
reaches fc6's 7x7 window and the published crop offsets hold), every other 3x3 conv padded by 1, 2x2
max pooling rounding up (Caffe; ``ceil_mode=True``), ``fc6`` a 7x7 conv and ``fc7`` a 1x1 conv, each
followed by ReLU and element-wise ``Dropout(0.5)`` (Caffe's; pytorch-fcn uses channel-wise Dropout2d).
``width`` multiplies every conv and fc channel count (0.125 -> 8-16-32-64-64, fc 512).
"""

from __future__ import annotations

from torch import nn

from segbench.models.layers import scaled

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC = 4096


def _init(module: nn.Module) -> None:
    """torchvision's VGG initialisation (used when no pretrained classifier is transplanted)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _features(width: float, in_channels: int, first_padding: int, ceil_mode: bool) -> list[tuple[str, nn.Module]]:
    """conv1_1 ... pool5 in torchvision's ``features`` order, with the paper's names."""
    layers, c_in = [], in_channels
    for i, stage in enumerate(STAGES, start=1):
        for j, c in enumerate(stage, start=1):
            c_out = scaled(c, width)
            pad = first_padding if (i, j) == (1, 1) else 1
            layers += [(f"conv{i}_{j}", nn.Conv2d(c_in, c_out, 3, padding=pad)), (f"relu{i}_{j}", nn.ReLU(inplace=True))]
            c_in = c_out
        layers.append((f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=ceil_mode)))
    return layers


def trunk(*, width: float = 1.0, in_channels: int = 3) -> tuple[list[tuple[str, nn.Module]], dict[str, int]]:
    """The FCN-VGG16 trunk up to ``drop7`` and the channel count of each tappable blob."""
    layers = _features(width, in_channels, first_padding=100, ceil_mode=True)
    c5, fc = scaled(STAGES[-1][-1], width), scaled(FC, width)
    layers += [("fc6", nn.Conv2d(c5, fc, 7)), ("relu6", nn.ReLU(inplace=True)), ("drop6", nn.Dropout(0.5)),
               ("fc7", nn.Conv2d(fc, fc, 1)), ("relu7", nn.ReLU(inplace=True)), ("drop7", nn.Dropout(0.5))]
    for _, m in layers:
        _init(m)
    channels = {"pool3": scaled(STAGES[2][-1], width), "pool4": scaled(STAGES[3][-1], width), "drop7": fc}
    return layers, channels


def torchvision_keys() -> dict[str, tuple[str, bool]]:
    """torchvision module prefix -> (FCN module name, is a Linear to reshape into a conv); fc8 is absent."""
    keys, index = {}, 0
    for i, stage in enumerate(STAGES, start=1):
        for j, _ in enumerate(stage, start=1):
            keys[f"features.{index}"] = (f"conv{i}_{j}", False)
            index += 2  # conv, relu
        index += 1  # pool
    keys["classifier.0"] = ("fc6", True)
    keys["classifier.3"] = ("fc7", True)
    return keys


class VGG16Classifier(nn.Module):
    """torchvision ``vgg16()`` (no batch norm), with ``width``: ``features`` / ``avgpool`` / ``classifier``.

    Input N x 3 x H x W (224 for the 7x7 pool5 the classifier expects) -> N x num_classes logits.
    """

    def __init__(self, num_classes: int, *, width: float = 1.0):
        super().__init__()
        self.features = nn.Sequential(*[m for _, m in _features(width, 3, first_padding=1, ceil_mode=False)])
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        c5, fc = scaled(STAGES[-1][-1], width), scaled(FC, width)
        self.classifier = nn.Sequential(
            nn.Linear(c5 * 7 * 7, fc), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(fc, num_classes))
        _init(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
