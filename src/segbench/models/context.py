"""Dilated convolutions (Yu & Koltun, ICLR 2016): the dilated VGG16 front end and the context module.

Front end (section 4; names of the released ``dilation8_pascal_voc`` net): VGG16 with pool4 and pool5 removed,
``conv5_1..3`` dilated by 2, ``fc6`` a 7x7 conv dilated by 4 (4096), ``fc7`` 1x1 (4096), each with ReLU and
Dropout(0.5) after fc6/fc7, and ``final`` a 1x1 conv to the classes (Gaussian std 0.001, bias 0). No conv is
padded: the image is mirrored instead (186 pixels, the release's margin), so a 900 tile gives 66 x 66 scores
and one score unit sees 380 pixels centred on its 8 x 8 cell; output stride 8. ``forward`` pads the
bottom/right border up to a multiple of 8 as well and upsamples the scores x8 bilinearly, which maps every
cell's centre onto its unit exactly, then crops to H x W. (The release trains against labels subsampled by 8;
here the upsampled scores meet full-resolution labels, like the other models.)

Context module (Table 1): eight layers on C score maps, 3x3 convs with dilation 1, 1, 2, 4, 8, 16, 1 and ReLU,
then a 1x1 conv without ReLU (``ctx_conv1_1``, ``ctx_conv1_2``, ``ctx_conv2_1`` ... ``ctx_conv5_1``, ``ctx_fc1``,
``ctx_final``); receptive field 67 units. Basic: C channels throughout; large: 2C, 2C, 4C, 8C, 16C, 32C, 32C, C.
Each layer is padded by its dilation (as the release's Cityscapes net; the paper pads the input by 33 once).
Identity initialisation (Eq. 4-5): the centre tap from input map a to output map b is C / c_out when
``floor(a C / c_in) == floor(b C / c_out)``, everything else 0 plus N(0, noise_std^2), biases 0. With no noise
the module computes ``ReLU(x)`` exactly (each layer copies group means scaled by C / c_out, the last one sums
them back). The large module needs the noise to break the symmetry between the copies of a group: 0.01 as in
the release's ``network.py`` (which adds it to the basic module too; the paper's Eq. 4 does not).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segbench.models import vgg
from segbench.models.blocks import mirror_pad, resize
from segbench.models.geometry import path_geometry
from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.surgery import train_only

MARGIN = 186  # the release's reflection margin: (380 - 8) / 2
STRIDE = 8
DILATIONS = (1, 1, 2, 4, 8, 16, 1)
NAMES = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1", "ctx_conv5_1", "ctx_fc1")
MULTIPLIERS = {"basic": (1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32)}
NOISE_STD = {"basic": 0.0, "large": 0.01}


def front_end(*, width: float = 1.0, in_channels: int = 3) -> tuple[list[tuple[str, nn.Module]], int]:
    """The dilated VGG16 trunk, ``conv1_1`` ... ``drop7``, as ``(name, module)`` pairs, and fc7's channels.

    N x C x (8n + 372) x (8m + 372) -> N x fc7 x n x m.
    """
    layers, c_in = [], in_channels
    for i, stage in enumerate(vgg.STAGES, start=1):
        dilation = 2 if i == 5 else 1
        for j, c in enumerate(stage, start=1):
            c_out = scaled(c, width)
            layers += [(f"conv{i}_{j}", nn.Conv2d(c_in, c_out, 3, dilation=dilation)),
                       (f"relu{i}_{j}", nn.ReLU(inplace=True))]
            c_in = c_out
        if i <= 3:  # pool4 and pool5 are removed, their striding replaced by dilation
            layers.append((f"pool{i}", nn.MaxPool2d(2, stride=2)))
    fc = scaled(vgg.FC, width)
    layers += [("fc6", nn.Conv2d(c_in, fc, 7, dilation=4)), ("relu6", nn.ReLU(inplace=True)),
               ("drop6", nn.Dropout(0.5)), ("fc7", nn.Conv2d(fc, fc, 1)), ("relu7", nn.ReLU(inplace=True)),
               ("drop7", nn.Dropout(0.5))]
    for _, m in layers:
        vgg._init(m)
    return layers, fc


@torch.no_grad()
def identity_init_(conv: nn.Conv2d, classes: int, noise_std: float = 0.0) -> None:
    """Yu & Koltun's Eq. 4-5 in place: centre taps C / c_out between matching groups, noise elsewhere."""
    c_out, c_in, kh, kw = conv.weight.shape
    if c_in % classes or c_out % classes:
        raise ValueError(f"identity initialisation needs {classes} classes to divide both channel counts, "
                         f"got {c_in} -> {c_out}")
    if noise_std > 0:
        conv.weight.normal_(0.0, noise_std)
    else:
        conv.weight.zero_()
    groups_in = torch.arange(c_in, device=conv.weight.device) * classes // c_in
    groups_out = torch.arange(c_out, device=conv.weight.device) * classes // c_out
    match = groups_out[:, None] == groups_in[None, :]
    conv.weight[:, :, kh // 2, kw // 2][match] = classes / c_out
    conv.bias.zero_()


class ContextModule(nn.Module):
    """The context module on C maps: N x C x h x w -> N x C x h x w; ``kind`` "basic" or "large".

    ``noise_std`` defaults to 0 (basic) / 0.01 (large); with 0 the module is ``ReLU`` at initialisation.
    """

    def __init__(self, classes: int, kind: str = "basic", *, noise_std: float | None = None):
        super().__init__()
        if kind not in MULTIPLIERS:
            raise ValueError(f"context module kind must be one of {sorted(MULTIPLIERS)}, got {kind!r}")
        noise = NOISE_STD[kind] if noise_std is None else noise_std
        c_in = classes
        for name, dilation, mult in zip(NAMES, DILATIONS, MULTIPLIERS[kind]):
            conv = nn.Conv2d(c_in, mult * classes, 3, padding=dilation, dilation=dilation)
            identity_init_(conv, classes, noise)
            self.add_module(name, conv)
            c_in = mult * classes
        self.ctx_final = nn.Conv2d(c_in, classes, 1)
        identity_init_(self.ctx_final, classes, noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in NAMES:
            x = torch.relu(getattr(self, name)(x))
        return self.ctx_final(x)


def freeze_front_end(net: "DilatedNet") -> "DilatedNet":
    """The paper's second stage, in place: only the context module learns (``requires_grad`` False elsewhere).

    Yu & Koltun train the module on the front end's precomputed output maps, so the front end also computes
    them without dropout here (its Dropout layers get rate 0).
    """
    if net.context is None:
        raise ValueError("freeze_front_end needs a net with a context module (dilation8_basic_vgg16 or "
                         "dilation8_large_vgg16); this one is the front end alone")
    train_only(net, "context.")
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return net


class DilatedNet(nn.Module):
    """Front end (+ context module): ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores.

    ``context`` None (front end alone), "basic" or "large". ``backbone`` "vgg16": ``transplant`` fills
    ``trunk_names`` from a VGG16 classifier (fc6 reshaped into the dilated 7x7 conv).
    """

    # The new layer that starts from random weights, for the recipes' head lr multiplier. The context module is
    # new as well but starts as a working map (identity initialisation) and trains at the base lr, as in the
    # paper (1e-3, the front end's).
    head_prefixes = ("final",)

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3, context: str | None = None,
                 noise_std: float | None = None):
        super().__init__()
        layers, fc = front_end(width=width, in_channels=in_channels)
        self.backbone = "vgg16"
        self.output_stride = self.max_stride = STRIDE
        self.trunk_names = [name for name, _ in layers]
        for name, module in layers:
            self.add_module(name, module)
        self.final = nn.Conv2d(fc, num_classes, 1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        self.context = None if context is None else ContextModule(num_classes, context, noise_std=noise_std)

    def receptive_field(self) -> int:
        """Input pixels (one axis) seen by one score unit: 380 (front end), 908 (with a context module)."""
        modules = [getattr(self, n) for n in self.trunk_names] + [self.final]
        return path_geometry(modules + ([] if self.context is None else list(self.context.children()))).rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        cells_h, cells_w = math.ceil(h / STRIDE), math.ceil(w / STRIDE)
        y = mirror_pad(x, MARGIN, MARGIN + STRIDE * cells_h - h, MARGIN, MARGIN + STRIDE * cells_w - w)
        for name in self.trunk_names:
            y = getattr(self, name)(y)
        y = self.final(y)
        if self.context is not None:
            y = self.context(y)
        return resize(y, (STRIDE * cells_h, STRIDE * cells_w))[..., :h, :w]


# Yu & Koltun 2016, section 4, VOC model of Table 2 (fyu/dilation ``train.py``): lr 1e-3, momentum 0.9, batch 14,
# 60K iterations; the code's weight decay 5e-4, 500-pixel crops, random mirror, step policy x0.1 every 100K
# iterations (so constant within 60K), Caffe's bias 2x. The release crops 500 pixels from the image after
# padding it by 186 (so the central 128 x 128 is supervised); ours crops 500 pixels of the image and the model
# mirrors the 186-pixel margin around the crop. The paper trains the context module on its own afterwards
# (batch 60 on stored front-end maps); here it is a second run on images with the same recipe, on the trained
# front end held frozen (``front_end``; segbench.runs trains both stages).
RECIPES = {"dilation": {"batch_size": 14, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd",
                        "schedule": "fixed", "lr": 1e-3, "weight_decay": 5e-4, "crop": 500, "flip": True,
                        "iterations": 60_000}}
_NOISE = {"noise_std": ("build", "std of the Gaussian noise added to the identity initialisation (default 0 "
                                 "basic, 0.01 large)")}
MODELS = [
    Declared("dilation8_vgg16", DilatedNet, display="Dilation8 front end", recipe="dilation",
             published={"mean_iu": 67.6, "pixel_acc": None, "split": "VOC2012 test",
                        "setting": "front end, VOC + SBD training, no CRF", "source": "Yu & Koltun 2016, Table 2"}),
    Declared("dilation8_basic_vgg16", DilatedNet, display="Dilation8 + basic context", recipe="dilation",
             fixed={"context": "basic"}, options=_NOISE, front_end="dilation8_vgg16",
             published={"mean_iu": 71.3, "pixel_acc": None, "split": "VOC2012 val",
                        "setting": "front end + basic context, VOC + SBD + COCO training, no CRF",
                        "source": "Yu & Koltun 2016, Table 3"}),
    Declared("dilation8_large_vgg16", DilatedNet, display="Dilation8 + large context", recipe="dilation",
             fixed={"context": "large"}, options=_NOISE, front_end="dilation8_vgg16",
             published={"mean_iu": 72.1, "pixel_acc": None, "split": "VOC2012 val",
                        "setting": "front end + large context, VOC + SBD + COCO training, no CRF "
                                   "(73.5 on VOC2012 test, Table 4)",
                        "source": "Yu & Koltun 2016, Table 3"}),
]
