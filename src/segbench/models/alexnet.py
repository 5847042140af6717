"""AlexNet in two flavours, each as a classifier (torchvision state-dict layout) and as an FCN trunk.

``alexnet_caffe`` is the paper's net (Caffe ``voc-fcn-alexnet``, CaffeNet base): conv1 11x11/4 with 96
channels, 3x3/2 max pooling then local response normalisation (5, 1e-4, 0.75; CaffeNet's pool-then-norm
order), conv2 5x5 in two groups, conv3 3x3, conv4 and conv5 3x3 in two groups (96-256-384-384-256).
``alexnet`` is torchvision's single-tower variant (64-192-384-256-256, no LRN), so torchvision's
``AlexNet_Weights`` transplant into ``fcn32s_alexnet_tv``.

As FCN trunks both pad conv1 by 100 (Caffe), pool with ceil rounding (Caffe), and turn fc6 into a 6x6
conv and fc7 into a 1x1 conv (ReLU, element-wise Dropout(0.5) after each). Their classifiers keep the
usual padding (Caffe: 0 at 227x227; torchvision: 2 at 224x224) and floor pooling.
``width`` multiplies every channel count (rounded to even numbers for the grouped Caffe convs).
"""

from __future__ import annotations

from torch import nn

from segbench.models.layers import scaled

FC = 4096


def _features(flavour: str, *, width: float, in_channels: int, fcn: bool) -> list[tuple[str, nn.Module]]:
    """conv1 ... pool5 in the classifier's ``features`` order with the paper's names."""
    ceil = fcn  # Caffe rounds pooled sizes up; torchvision rounds down

    def pool(name):
        return (name, nn.MaxPool2d(3, stride=2, ceil_mode=ceil))

    if flavour == "alexnet_caffe":
        c = [scaled(n, width, multiple=2) for n in (96, 256, 384, 384, 256)]
        return [
            ("conv1", nn.Conv2d(in_channels, c[0], 11, stride=4, padding=100 if fcn else 0)), ("relu1", nn.ReLU(True)),
            pool("pool1"), ("norm1", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)),
            ("conv2", nn.Conv2d(c[0], c[1], 5, padding=2, groups=2)), ("relu2", nn.ReLU(True)),
            pool("pool2"), ("norm2", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)),
            ("conv3", nn.Conv2d(c[1], c[2], 3, padding=1)), ("relu3", nn.ReLU(True)),
            ("conv4", nn.Conv2d(c[2], c[3], 3, padding=1, groups=2)), ("relu4", nn.ReLU(True)),
            ("conv5", nn.Conv2d(c[3], c[4], 3, padding=1, groups=2)), ("relu5", nn.ReLU(True)),
            pool("pool5")]
    if flavour == "alexnet":
        c = [scaled(n, width) for n in (64, 192, 384, 256, 256)]
        return [
            ("conv1", nn.Conv2d(in_channels, c[0], 11, stride=4, padding=100 if fcn else 2)), ("relu1", nn.ReLU(True)),
            pool("pool1"),
            ("conv2", nn.Conv2d(c[0], c[1], 5, padding=2)), ("relu2", nn.ReLU(True)), pool("pool2"),
            ("conv3", nn.Conv2d(c[1], c[2], 3, padding=1)), ("relu3", nn.ReLU(True)),
            ("conv4", nn.Conv2d(c[2], c[3], 3, padding=1)), ("relu4", nn.ReLU(True)),
            ("conv5", nn.Conv2d(c[3], c[4], 3, padding=1)), ("relu5", nn.ReLU(True)), pool("pool5")]
    raise ValueError(f"unknown AlexNet flavour {flavour!r}; expected 'alexnet' or 'alexnet_caffe'")


def _last_conv(layers: list[tuple[str, nn.Module]]) -> nn.Conv2d:
    return [m for _, m in layers if isinstance(m, nn.Conv2d)][-1]


def trunk(flavour: str, *, width: float = 1.0, in_channels: int = 3) -> tuple[list[tuple[str, nn.Module]], dict]:
    """The FCN-AlexNet trunk up to ``drop7`` and the channel count of its last blob."""
    layers = _features(flavour, width=width, in_channels=in_channels, fcn=True)
    c5, fc = _last_conv(layers).out_channels, scaled(FC, width)
    layers += [("fc6", nn.Conv2d(c5, fc, 6)), ("relu6", nn.ReLU(True)), ("drop6", nn.Dropout(0.5)),
               ("fc7", nn.Conv2d(fc, fc, 1)), ("relu7", nn.ReLU(True)), ("drop7", nn.Dropout(0.5))]
    return layers, {"drop7": fc}


def torchvision_keys(flavour: str) -> dict[str, tuple[str, bool]]:
    """Classifier module prefix -> (FCN module name, is a Linear to reshape into a conv); fc8 is absent."""
    feats = _features(flavour, width=1 / 64, in_channels=3, fcn=False)
    keys = {f"features.{i}": (name, False) for i, (name, m) in enumerate(feats) if isinstance(m, nn.Conv2d)}
    keys.update({"classifier.1": ("fc6", True), "classifier.4": ("fc7", True)})
    return keys


class AlexNetClassifier(nn.Module):
    """torchvision ``alexnet()`` layout (``features`` / ``avgpool(6)`` / Dropout-Linear-ReLU-Dropout-Linear-ReLU-Linear).

    Input N x 3 x 224 x 224 (``alexnet``) or 227 x 227 (``alexnet_caffe``) -> N x num_classes logits.
    """

    def __init__(self, flavour: str, num_classes: int, *, width: float = 1.0):
        super().__init__()
        feats = _features(flavour, width=width, in_channels=3, fcn=False)
        self.features = nn.Sequential(*[m for _, m in feats])
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        c5, fc = _last_conv(feats).out_channels, scaled(FC, width)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(c5 * 6 * 6, fc), nn.ReLU(True),
            nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(True),
            nn.Linear(fc, num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
