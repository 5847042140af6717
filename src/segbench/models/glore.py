"""GloRe (Chen, Rohrbach, Yan, Yan, Feng, Kalantidis, CVPR 2019): one global reasoning unit in a dilated FCN head.

    layer4 (2048 ch, 1/8) -> reduce: 1x1 conv 512 + BN + ReLU -> glore: GloRe unit (128 states, 64 nodes)
                          -> cls: Dropout(0.1), 1x1 -> classes -> bilinear to H x W
    layer3 (1024 ch, 1/8) -> aux: FCNHead (3x3 conv 256 + BN + ReLU, Dropout(0.1), 1x1), loss weight 0.4

The unit is the authors' (facebookresearch/GloRe ``global_reasoning_unit.py``): states S = 1x1 conv C -> S,
projection B = 1x1 conv C -> N; V = states . B^T (S x N); GCN: a Conv1d over the nodes (the learned
adjacency, with bias) plus the identity, ReLU, a Conv1d over the states (no bias); Y = GCN(V) . B (the same
B projects back); out = x + BN(1x1 conv S -> C (no bias)), BN eps 1e-4. The BN ("blocker") starts with weight
0, so the unit is the identity at initialisation: the authors' network constructor zeroes every
``*.blocker.weight``; here the unit does it. ``normalize`` (V / positions) stays off, as in both codes.

Placement: the segmentation model ("FCN + 1 GloRe unit", GloRe README) ships only inside the model tarballs,
so the layout is PaddleSeg's ``GloReHead`` (paddleseg/models/glore.py; SEEDS-REFERENCE-2 4.2): the 1x1
reduction 2048 -> 512, one unit with 128 states and 64 nodes (its code default; its docstring says 128), dropout,
the classifier, and the aux FCN head on layer3 with weights (1, 0.4). Two PaddleSeg deviations from the official
unit are not copied: its ReLU after the state conv (official: between node and state convs) and its BN weight 1
at initialisation. Options: ``nodes`` (default 64; SEEDS-REFERENCE-2 11 suggests 32-64 on the twin's 16 x 16
maps, i.e. well below the 256 positions, which 64 already is). ``width`` scales the 512 channels and the 128
states; the node count does not scale (it is tied to the positions, not to the channels).

Unit parameters (official, states 2m, nodes m): 5mC + 5m^2 + 4m + 2C; PaddleSeg's head unit (C 512, 128 states,
64 nodes) has 185,600, the 1x1 reduction 1,049,600 (SEEDS-REFERENCE-2 14; tests/test_graph_heads.py).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.blocks import conv_bn_relu
from segbench.models.dilated_fcn import DilatedHeadNet
from segbench.models.layers import scaled
from segbench.models.registry import Declared

STATES = 128  # PaddleSeg's gru_num_state at width 1
NODES = 64  # PaddleSeg's gru_num_node (code default)
BLOCKER_EPS = 1e-4


class GraphConv(nn.Module):
    """GloRe's GCN on node states V (N x S x nodes): ``conv2(relu(V + conv1 over the nodes))``.

    ``conv1`` (nodes -> nodes, bias) is an input-independent learned adjacency; ``conv2`` (S -> S, no bias)
    updates the states.
    """

    def __init__(self, states: int, nodes: int):
        super().__init__()
        self.conv1 = nn.Conv1d(nodes, nodes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(states, states, 1, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.conv1(v.transpose(1, 2)).transpose(1, 2) + v
        return self.conv2(self.relu(h))


class GloReUnit(nn.Module):
    """The global reasoning unit: N x C x h x w -> N x C x h x w (the identity at initialisation).

    ``states`` S and ``nodes`` of the interaction graph; the authors' nets use S = 2 x nodes = C / 2.
    ``normalize`` divides V by the number of positions (the authors' option for varying input sizes).
    """

    def __init__(self, channels: int, states: int, nodes: int, *, normalize: bool = False):
        super().__init__()
        self.normalize = normalize
        self.conv_state = nn.Conv2d(channels, states, 1)
        self.conv_proj = nn.Conv2d(channels, nodes, 1)
        self.gcn = GraphConv(states, nodes)
        self.conv_extend = nn.Conv2d(states, channels, 1, bias=False)
        self.blocker = nn.BatchNorm2d(channels, eps=BLOCKER_EPS)
        nn.init.zeros_(self.blocker.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        state = self.conv_state(x).flatten(2)  # N x S x P
        proj = self.conv_proj(x).flatten(2)  # N x nodes x P
        v = state @ proj.transpose(1, 2)  # N x S x nodes: the positions' states projected onto the nodes
        if self.normalize:
            v = v / (h * w)
        y = (self.gcn(v) @ proj).view(n, -1, h, w)  # back to the positions with the same projection
        return x + self.blocker(self.conv_extend(y))


class GloRe(DilatedHeadNet):
    """FCN + 1 GloRe unit on ResNet-``depth`` (PaddleSeg's head layout): N x C x H x W -> N x K x H x W."""

    head_prefixes = ("reduce", "glore", "cls", "aux")  # the layers no classifier provides

    def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, in_channels: int = 3,
                 nodes: int = NODES):
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"GloRe's nodes must be a positive integer (paper configuration {NODES}), got {nodes!r}")
        super().__init__(num_classes, depth=depth, width=width, in_channels=in_channels)
        channels = max(1, self.channels["layer4"] // 4)
        self.reduce = conv_bn_relu(self.channels["layer4"], channels)
        self.glore = GloReUnit(channels, scaled(STATES, width), nodes)
        self.cls = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(channels, num_classes, 1))

    def _decode(self, layer4: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.cls(self.glore(self.reduce(layer4))), None


# PaddleSeg's GloRe VOC config (configs/glore/glore_resnet50_os8_voc12aug_512x512_40k.yml on
# configs/_base_/pascal_voc12.yml), the setting of the VOC figure below: SGD momentum 0.9, weight decay 4e-5,
# poly 0.9 from 0.01 to 0, 40K iterations, batch 4 (per card; the card count is not stated), 512 crops, rescale
# 0.5-2.0 (in steps of 0.25), horizontal flip; no head or bias multiplier. Its colour distortion (brightness,
# contrast, saturation 0.4) has no field here. Chosen: no rotation, blur or elastic deformation.
RECIPES = {"glore": {"batch_size": 4, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "poly",
                     "lr": 0.01, "weight_decay": 4e-5, "head_lr_mult": 1.0, "bias_lr_mult": 1.0, "crop": 512,
                     "scale_range": (0.5, 2.0), "flip": True, "iterations": 40_000}}
_OPTIONS = {"nodes": ("build", f"graph nodes of the GloRe unit (default {NODES}, PaddleSeg's; SEEDS-REFERENCE-2 "
                               "section 11: 32-64 on 16 x 16 maps)")}
_VOC = {"mean_iu": 80.16, "pixel_acc": None, "split": "VOC2012 val",
        "setting": "PaddleSeg's reproduction (not the paper's): ResNet50_vd OS 8, trainaug, 512 crops, 40K "
                   "iterations, single scale; the paper gives no VOC figure",
        "source": "PaddleSeg configs/glore/README.md"}
_CITY = {"mean_iu": 80.9, "pixel_acc": None, "split": "Cityscapes test",
         "setting": "FCN + 1 GloRe unit, ResNet-101, fine annotations only, class IoU (not VOC); no VOC figure "
                    "is published for ResNet-101",
         "source": "facebookresearch/GloRe README (the authors)"}
MODELS = [
    Declared(f"glore_resnet{depth}", GloRe, display=f"GloRe (ResNet-{depth})", backbone=f"resnet{depth}",
             recipe="glore", fixed={"depth": depth}, options=_OPTIONS, published=figure)
    for depth, figure in ((50, _VOC), (101, _CITY))
]
