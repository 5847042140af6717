"""UNet++ (Zhou, Rahman Siddiquee, Tajbakhsh, Liang, DLMIA 2018): U-Nets of depths 1-4 nested on one encoder,
with dense skip paths and deep supervision.

Follows the authors' release (MrGiovanni/UNetPlusPlus, ``model_logic.py`` ``Nest_Net``):

    nodes : X(i, 0) the encoder (level i = 0 ... 4 at stride 2^i, 32, 64, 128, 256, 512 x width channels, 2x2 max
            pooling between levels); for j >= 1, X(i, j) = node(concat(Up(X(i+1, j-1)), X(i, 0), ..., X(i, j-1)))
            with Up a 2x2 up-convolution (stride 2, bias) to level i's width. A node is 2 x [3x3 conv + ReLU], each
            conv followed by Dropout(0.5) (the release's, also in its U-Net; ``models.dropout`` sets the rate);
            the build option ``batch_norm: true`` puts batch norm after every conv (unet_same's layout), an
            ablation of the release's net, which has none
    heads : head{j} = 1x1 conv -> classes on X(0, j), j = 1 ... 4, each trained with its own loss (deep
            supervision, equal weights: ``forward_with_aux``)
    test  : the "accurate" mode averages the four heads (their softmax probabilities; ``forward`` returns the
            log of that mean, so its argmax and cross-entropy are the average's); the evaluate option ``prune: L``
            (``Pruned``) is the "fast" mode, which computes only the nodes X(i, j) with i + j <= L and returns
            head L: exactly the UNet++ of depth L (``depth=L``) with the same weights

Deviations: softmax heads and cross-entropy for multi-class labels (the release: sigmoid heads, 0.5 x BCE - Dice,
for one class); He-normal initialisation as U-Net's (Keras ``he_normal`` is truncated); no expansive node is
narrower than the classes (``unet.expansive_channels``; never at full width on the datasets here); inputs
mirrored at the bottom/right to a multiple of 16 and cropped back, as ``unet_same``.

Inputs at unit scale (``input_norm="torchvision"``: RGB in [0, 1] minus ImageNet's mean over its standard
deviation), the scale He initialisation assumes: with no normalisation layer, Caffe's 0-255 inputs reach the
scores some 60 times too large (UNet++ started at 412 per head against a floor of 3.0 and ended its 25,600
iterations at 47.3 mean IU on the twin). The reference notes do not say how the release scales its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.blocks import mirror_pad
from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.unet import expansive_channels, he_init

CHANNELS = (32, 64, 128, 256, 512)
DEPTH = 4


def _node(c_in: int, c_out: int, batch_norm: bool = False) -> nn.Sequential:
    """The release's ``standard_unit``: 2 x [3x3 conv + ReLU + Dropout(0.5)]; with ``batch_norm`` each conv
    (then without bias) is followed by batch norm, as in ``unet_same``."""
    layers = []
    for c in (c_in, c_out):
        conv = nn.Conv2d(c, c_out, 3, padding=1, bias=not batch_norm)
        layers += [conv, nn.BatchNorm2d(c_out)] if batch_norm else [conv]
        layers += [nn.ReLU(inplace=True), nn.Dropout(0.5)]
    return nn.Sequential(*layers)


class UNetPlusPlus(nn.Module):
    """UNet++ of ``depth`` (1-4): ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores (log of the
    heads' mean probability), any H and W. Node X(i, j) is the child ``x{i}_{j}``, Up(X(i+1, j-1)) ``up{i}_{j}``."""

    backbone = None
    head_prefixes = ()  # trained from scratch

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3, depth: int = DEPTH,
                 batch_norm: bool = False):
        super().__init__()
        if depth not in range(1, DEPTH + 1):
            raise ValueError(f"depth must be 1 ... {DEPTH}, got {depth!r}")
        if not isinstance(batch_norm, bool):
            raise ValueError(f"batch_norm must be true or false, got {batch_norm!r}")
        self.depth = depth
        self.output_stride, self.max_stride = 1, 2 ** depth
        # the shallower heads' losses, each weighted as the deepest one (training objective and its floor)
        self.aux_weights = {f"head{j}": 1.0 for j in range(1, depth)}
        c = [scaled(ch, width) for ch in CHANNELS]
        e = expansive_channels(c, num_classes)
        self.pool = nn.MaxPool2d(2)
        for i in range(depth + 1):
            self.add_module(f"x{i}_0", _node(in_channels if i == 0 else c[i - 1], c[i], batch_norm))
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                below = c[i + 1] if j == 1 else e[i + 1]
                self.add_module(f"up{i}_{j}", nn.ConvTranspose2d(below, e[i], 2, stride=2))
                self.add_module(f"x{i}_{j}", _node(e[i] + c[i] + (j - 1) * e[i], e[i], batch_norm))
        for j in range(1, depth + 1):
            self.add_module(f"head{j}", nn.Conv2d(e[0], num_classes, 1))
        he_init(self)

    def head_scores(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Scores of head 1 ... ``upto`` (default: the depth), N x K x H x W each, computing only the nodes
        X(i, j) with i + j <= ``upto``."""
        upto = self.depth if upto is None else upto
        if upto not in range(1, self.depth + 1):
            raise ValueError(f"upto must be 1 ... {self.depth} (the net's depth), got {upto!r}")
        h, w = x.shape[-2:]
        pad = -h % 2 ** upto, -w % 2 ** upto
        nodes = {(0, 0): self.x0_0(mirror_pad(x, 0, pad[0], 0, pad[1]))}
        for i in range(1, upto + 1):
            nodes[i, 0] = getattr(self, f"x{i}_0")(self.pool(nodes[i - 1, 0]))
        for j in range(1, upto + 1):
            for i in range(upto + 1 - j):
                up = getattr(self, f"up{i}_{j}")(nodes[i + 1, j - 1])
                nodes[i, j] = getattr(self, f"x{i}_{j}")(torch.cat([up, *(nodes[i, k] for k in range(j))], dim=1))
        return [getattr(self, f"head{j}")(nodes[0, j])[..., :h, :w] for j in range(1, upto + 1)]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, float]]]:
        """Deep supervision: the deepest head's scores, and the others' ``{"head1": (scores, 1.0), ...}``."""
        scores = self.head_scores(x)
        return scores[-1], {f"head{j}": (s, self.aux_weights[f"head{j}"]) for j, s in enumerate(scores[:-1], start=1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([F.softmax(s.float(), dim=1) for s in self.head_scores(x)]).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class Pruned(nn.Module):
    """UNet++ in the "fast" mode: head ``level`` alone, the deeper nodes never computed."""

    def __init__(self, net: UNetPlusPlus, level: int):
        super().__init__()
        if level not in range(1, net.depth + 1):
            raise ValueError(f"prune must be 1 ... {net.depth} (the net's depth), got {level!r}")
        self.net, self.level = net, level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head_scores(x, self.level)[-1]


def _for_evaluation(model: UNetPlusPlus, rebuild, *, prune: int | None = None) -> nn.Module:
    return model if prune is None else Pruned(model, prune)


# Zhou et al. 2018 and the release: Adam, lr 3e-4 [from the paper's text as recalled by the reference notes, not
# checked against a primary source], early stopping on validation; batch size, crops and length are not stated:
# *ours*: batch 4 as the short recipe, the L2 1e-4 of every Keras layer as weight decay, 30K iterations like the
# other VOC recipes, whole images (the release trains on fixed-size patches), flips. Sigmoid/BCE-Dice is replaced
# by softmax cross-entropy (multi-class labels).
RECIPES = {"unetpp": {"batch_size": 4, "optimizer": "adam", "beta1": 0.9, "reduction": "mean", "schedule": "fixed",
                      "lr": 3e-4, "weight_decay": 1e-4, "bias_lr_mult": 1.0, "flip": True, "iterations": 30_000}}
MODELS = [
    Declared("unetpp", UNetPlusPlus, display="UNet++ (deep supervision, heads averaged)", backbone=None,
             recipe="unetpp", for_evaluation=_for_evaluation, input_norm="torchvision",
             published={"mean_iu": None, "pixel_acc": None, "split": "--", "setting": "no VOC result published",
                        "source": "Zhou et al. 2018 (recalled, unverified): IoU with deep supervision, cell nuclei "
                                  "92.52, colon polyp 32.12, liver 82.90, lung nodule 77.21 (U-Net 90.77, 30.08, "
                                  "76.62, 71.47)"},
             options={"prune": ("evaluate", "the fast mode: score with head L alone (1-4), the deeper nodes "
                                            "pruned; unset: the four heads averaged"),
                      "batch_norm": ("build", "true: batch norm after every conv of the nodes (unet_same's "
                                              "layout; an ablation, not the release's net)")}),
]
