"""GINet (Wu, Lu, Zhu, Zhang, Wu, Ma, Guo, ECCV 2020): a visual graph and a class graph that interact, in a
dilated FCN head, with the semantic context (SC) loss.

    layer4 (2048, 1/8) -> head.conv5: 3x3 conv 512 + BN + ReLU -> head.gi: graph interaction unit
                       -> head.cls: Dropout(0.1), 1x1 -> classes -> bilinear to H x W
    class table (K x 300, fixed) -> head.fc1: Linear 128 + BN + ReLU -> head.fc2: Linear 256 + BN + ReLU
                                 -> class nodes (256 x K) into the unit
    layer3 (1024, 1/8) -> aux: FCNHead (3x3 conv 256 + BN + ReLU, Dropout(0.1), 1x1), loss weight 0.4
    class nodes out (256 x K) -> sc: K logits -> BCE with the image-level class presence (training only)

The head follows PaddleSeg's ``GIHead`` (paddleseg/models/ginet.py; SEEDS-REFERENCE-2 5.1), whose parameter count
SEEDS-REFERENCE-2 14 gives (K = 60: 10,187,216 trainable + 18,000 frozen; tests/test_graph_heads.py). The unit:
visual nodes V = B . states^T / (h w) with B a 1x1 conv to 84 nodes and states a 1x1 conv to 256; a GloRe GCN
(``glore.GraphConv``) on each graph; the transfer (query from class nodes, key from visual nodes, both 256 -> 128;
softmax over visual nodes -> class nodes, over class nodes -> visual nodes); new visual nodes = GCN(V) + gamma_vis
x transfer, new class nodes = transfer + gamma_word x GCN(class nodes), both gammas learnable and 0 at start;
reverse projection B^T, 1x1 256 -> 512 (no bias), BN, plus the input.

Choices and deviations:
- Class embeddings: the twin's classes have no names, so there is no word-vector table (the PyTorch-Encoding-based
  GINet head of SEEDS-REFERENCE-2 5.1, repository unidentified, loads PASCAL-Context's; PaddleSeg's is a frozen
  zero tensor). ``class_embedding="one_hot"`` (default) fixes row k of the K x 300 table to the unit vector e_k,
  ``"random"`` to a fixed Gaussian draw (seed 0, rows of norm ~1), either way a frozen buffer in the 300-wide
  layout; the linguistic prior of the paper is then untested (SEEDS-REFERENCE-2 11). K = the number of classes
  (20 class nodes on the twin).
- SC loss (``sc_loss_weight``, default 0.2 as PyTorch-Encoding's ``se_weight`` and PaddleSeg's scloss config;
  0 turns it off and removes ``sc``): that PyTorch-Encoding-based head's form, the output class nodes (256 x K)
  times a learnable K x 256 weight summed over the states gives K logits, trained with binary cross-entropy
  against the image's class-presence vector (labels 255 and >= K ignored); PaddleSeg's ``sc_loss.py`` is
  commented out and the paper's exact formula was not read. It is an auxiliary output of ``forward_with_aux``
  (a loss, not scores).
- No JPU: PaddleSeg's configs add one (``jpu=True``) on the OS 8 trunk; the published figures below used it.
- The unit's output BN keeps weight 1 at start (PaddleSeg; the PyTorch-Encoding-based head zeroes it).
- ``width`` scales the 512 channels, the 256 states and the 128-wide class embedding layer; the 84 visual nodes
  (``nodes``) and the 300-wide table do not scale.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.blocks import conv_bn_relu
from segbench.models.dilated_fcn import AuxOutput, DilatedHeadNet
from segbench.models.glore import GraphConv
from segbench.models.layers import scaled
from segbench.models.registry import Declared

STATES = 256
NODES = 84
EMBEDDING = 300  # word-vector width of the class table
HIDDEN = 128  # fc1's width
SC_WEIGHT = 0.2
EMBEDDINGS = ("one_hot", "random")
IGNORE = 255


def class_table(num_classes: int, kind: str) -> torch.Tensor:
    """The fixed K x 300 class table: one-hot rows e_k, or a Gaussian draw (seed 0) of rows with norm ~1."""
    if kind == "one_hot":
        if num_classes > EMBEDDING:
            raise ValueError(f"one-hot class embeddings need at most {EMBEDDING} classes, got {num_classes}")
        return torch.eye(num_classes, EMBEDDING)
    if kind == "random":  # drawn on the CPU (the same numbers everywhere), then put where the net is built
        g = torch.Generator(device="cpu").manual_seed(0)
        table = torch.randn(num_classes, EMBEDDING, generator=g, device="cpu") / EMBEDDING ** 0.5
        return table.to(torch.empty(0).device)
    raise ValueError(f"class_embedding must be one of {EMBEDDINGS}, got {kind!r}")


class GraphTransfer(nn.Module):
    """Attention between class nodes (N x S x K) and visual nodes (N x S x M): returns the visual-to-class
    transfer (N x S x K) and the class-to-visual transfer (N x S x M)."""

    def __init__(self, states: int):
        super().__init__()
        self.query_conv = nn.Conv1d(states, max(1, states // 2), 1)
        self.key_conv = nn.Conv1d(states, max(1, states // 2), 1)
        self.value_conv_vis = nn.Conv1d(states, states, 1)
        self.value_conv_word = nn.Conv1d(states, states, 1)

    def forward(self, word: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        energy = self.query_conv(word).transpose(1, 2) @ self.key_conv(vis)  # N x K x M
        to_class = energy.softmax(dim=-1).transpose(1, 2)  # N x M x K: each class node's weights over visual nodes
        to_vis = energy.softmax(dim=-2)  # N x K x M: each visual node's weights over class nodes
        return self.value_conv_vis(vis) @ to_class, self.value_conv_word(word) @ to_vis


class GraphInteraction(nn.Module):
    """The graph interaction unit: features N x C x h x w and class nodes N x S x K -> features N x C x h x w
    and output class nodes N x S x K."""

    def __init__(self, channels: int, states: int, nodes: int, num_classes: int):
        super().__init__()
        self.conv_theta = nn.Conv2d(channels, nodes, 1)
        self.conv_phi = nn.Conv2d(channels, states, 1)
        self.vis_gcn = GraphConv(states, nodes)
        self.word_gcn = GraphConv(states, num_classes)
        self.transfer = GraphTransfer(states)
        self.gamma_vis = nn.Parameter(torch.zeros(nodes))
        self.gamma_word = nn.Parameter(torch.zeros(num_classes))
        self.extend_dim = nn.Conv2d(states, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def interact(self, word: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class nodes N x S x K and visual nodes N x S x M -> (new class nodes, new visual nodes)."""
        word, vis = self.word_gcn(word), self.vis_gcn(vis)
        to_class, to_vis = self.transfer(word, vis)
        return to_class + self.gamma_word * word, vis + self.gamma_vis * to_vis

    def forward(self, x: torch.Tensor, word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        proj = self.conv_theta(x).flatten(2)  # N x M x P
        vis = (self.conv_phi(x).flatten(2) @ proj.transpose(1, 2)) / (h * w)  # N x S x M
        class_nodes, vis = self.interact(word, vis)
        y = (vis @ proj).view(n, -1, h, w)
        return x + self.bn(self.extend_dim(y)), class_nodes


class GIHead(nn.Module):
    """PaddleSeg's ``GIHead``: layer4 N x C x h x w -> (scores N x K x h x w, class nodes N x S x K)."""

    def __init__(self, c_in: int, num_classes: int, *, states: int, hidden: int, nodes: int, class_embedding: str):
        super().__init__()
        channels = max(1, c_in // 4)
        self.register_buffer("class_table", class_table(num_classes, class_embedding))  # frozen: not a parameter
        self.fc1 = nn.Sequential(nn.Linear(EMBEDDING, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
        self.fc2 = nn.Sequential(nn.Linear(hidden, states), nn.BatchNorm1d(states), nn.ReLU(inplace=True))
        self.conv5 = conv_bn_relu(c_in, channels, 3)
        self.gi = GraphInteraction(channels, states, nodes, num_classes)
        self.cls = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        word = self.fc2(self.fc1(self.class_table)).t().expand(x.shape[0], -1, -1)  # N x S x K
        features, class_nodes = self.gi(self.conv5(x), word)
        return self.cls(features), class_nodes


class SemanticContext(nn.Module):
    """The SC classifier: class nodes N x S x K -> K presence logits, sum_s nodes[n, s, k] x weight[k, s]."""

    def __init__(self, states: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, states).uniform_(-states ** -0.5, states ** -0.5))

    def forward(self, class_nodes: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nsk,ks->nk", class_nodes, self.weight)


def class_presence(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float N x K: 1 where class k labels at least one pixel of image n (255 and labels >= K ignored)."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    valid = (flat >= 0) & (flat < num_classes)
    rows = torch.arange(n, device=labels.device)[:, None].expand_as(flat)[valid]
    present = torch.zeros(n, num_classes, device=labels.device)
    present[rows, flat[valid]] = 1.0
    return present


def sc_loss(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str) -> torch.Tensor:
    """Binary cross-entropy of presence logits N x K against the presence of each class in labels N x H x W:
    the mean over images and classes ("mean"), or the sum over classes averaged over images ("sum")."""
    target = class_presence(labels, logits.shape[1])
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction=reduction)
    return loss / logits.shape[0] if reduction == "sum" else loss


class GINet(DilatedHeadNet):
    """GINet on ResNet-``depth``: N x C x H x W -> N x K x H x W; ``forward_with_aux`` adds the aux FCN head on
    layer3 (0.4) and, unless ``sc_loss_weight`` is 0, ``"sc"``: (the SC loss of the labels, its weight)."""

    aux_modules = ("aux", "sc")  # training only: not in the card's parameters
    head_prefixes = ("head", "aux", "sc")  # the layers no classifier provides

    def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, in_channels: int = 3,
                 nodes: int = NODES, class_embedding: str = "one_hot", sc_loss_weight: float = SC_WEIGHT):
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"GINet's nodes must be a positive integer (paper configuration {NODES}), got {nodes!r}")
        if not sc_loss_weight >= 0:
            raise ValueError(f"sc_loss_weight must be >= 0 (0: no SC loss), got {sc_loss_weight!r}")
        super().__init__(num_classes, depth=depth, width=width, in_channels=in_channels)
        states = scaled(STATES, width)
        self.head = GIHead(self.channels["layer4"], num_classes, states=states, hidden=scaled(HIDDEN, width),
                           nodes=nodes, class_embedding=class_embedding)
        self.sc_loss_weight = float(sc_loss_weight)
        if self.sc_loss_weight > 0:
            self.sc = SemanticContext(states, num_classes)

    def _decode(self, layer4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(layer4)

    def _extra_losses(self, class_nodes: torch.Tensor) -> dict[str, AuxOutput]:
        if self.sc_loss_weight == 0:
            return {}
        return {"sc": (functools.partial(sc_loss, self.sc(class_nodes)), self.sc_loss_weight)}


# PaddleSeg's GINet VOC config (configs/ginet/ginet_resnet50_os8_voc12aug_512x512_40k.yml, on the same
# configs/_base_/pascal_voc12.yml as GloRe's), the setting of the figures below: SGD momentum 0.9, weight decay
# 4e-5, poly 0.9 from 0.01, 40K iterations, batch 4 (per card), 512 crops, rescale 0.5-2.0, flip; no head or bias
# multiplier; aux weight 0.4 (the model's). Its colour distortion has no field here. Chosen: no rotation, blur or
# elastic deformation. (Its PASCAL-Context config: lr 0.001, weight decay 1e-4, 80K, crop 480.)
RECIPES = {"ginet": {"batch_size": 4, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "poly",
                     "lr": 0.01, "weight_decay": 4e-5, "head_lr_mult": 1.0, "bias_lr_mult": 1.0, "crop": 512,
                     "scale_range": (0.5, 2.0), "flip": True, "iterations": 40_000}}
_OPTIONS = {
    "nodes": ("build", f"visual graph nodes (default {NODES}, the paper configuration's)"),
    "class_embedding": ("build", "the fixed class table: one_hot (default) or random (no class names on the twin)"),
    "sc_loss_weight": ("build", f"weight of the semantic context loss in training (default {SC_WEIGHT}; 0: off)"),
}
_SETTING = ("PaddleSeg's reproduction (not the paper's): ResNet{depth}_vd OS 8 with JPU, trainaug, 512 crops, 40K "
            "iterations, single scale, no SC loss; the paper reports PASCAL-Context, COCO-Stuff and ADE20K only")
MODELS = [
    Declared(f"ginet_resnet{depth}", GINet, display=f"GINet (ResNet-{depth})", backbone=f"resnet{depth}",
             recipe="ginet", fixed={"depth": depth}, options=_OPTIONS,
             published={"mean_iu": figure, "pixel_acc": None, "split": "VOC2012 val",
                        "setting": _SETTING.format(depth=depth), "source": "PaddleSeg configs/ginet/README.md"})
    for depth, figure in ((50, 81.97), (101, 79.79))
]
