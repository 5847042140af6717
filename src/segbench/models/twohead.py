"""The two-headed SIFT Flow FCN (Table 5): one VGG16 trunk, a semantic and a geometric head.

Each head has its own score, skip and upsampling layers, with the VOC nets' crop offsets, named as in
the reference's ``siftflow-fcn*s`` nets by a suffix: ``score_fr_sem``, ``upscore_sem`` (32s),
``upscore2_sem``, ``score_pool4_sem``, ``upscore16_sem`` (16s), ``upscore_pool4_sem``, ``score_pool3_sem``,
``upscore8_sem`` (8s), and the same with ``_geo``. ``heads`` maps the store field each head predicts to
its class count, in output-channel order; the forward concatenates the heads' scores::

    net = build("fcn16s_siftflow_vgg16", 33)      # heads == {"label": 33, "label_geo": 3}
    net(x)                                        # N x 3 x H x W -> N x 36 x H x W, semantic first

The trunk keeps the single-stream names (``conv1_1`` ... ``fc7``), so ``models.transplant`` fills it from
a classifier, and ``models.init_from`` stages 32s -> 16s -> 8s (new skip scores zero, upsamplers reset).
The reference trains it with the sum of the heads' two unnormalised losses (``losses.multi_head_loss``).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models import vgg
from segbench.models.fcn import _SKIP_NAMES, FCN
from segbench.models.layers import crop
from segbench.models.registry import Declared

HEAD_SUFFIX = {"label": "_sem", "label_geo": "_geo"}  # store field -> layer-name suffix, output order
GEO_CLASSES = 3  # sky, horizontal, vertical


class TwoHeadFCN(nn.Module):
    """``forward(x: N x C_in x H x W) -> N x (num_classes + 3) x H x W``: semantic scores, then geometric.

    Attributes: ``heads`` (``{"label": num_classes, "label_geo": 3}``), ``num_classes`` (semantic), ``skips``,
    ``trunk_names``, ``crops`` (shared by both heads), ``backbone`` ("vgg16").
    """

    def __init__(self, *, num_classes: int, skips: tuple[str, ...] = (), width: float = 1.0, in_channels: int = 3):
        super().__init__()
        layers, channels = vgg.trunk(width=width, in_channels=in_channels)
        self.backbone = "vgg16"
        self.num_classes, self.skips = num_classes, tuple(skips)
        self.trunk_names = [name for name, _ in layers]
        for name, module in layers:
            self.add_module(name, module)
        self.heads = {"label": num_classes, "label_geo": GEO_CLASSES}
        for field, n in self.heads.items():
            head = FCN(backbone="vgg16", trunk=layers, channels=channels, num_classes=n, skips=skips)
            for name, module in head.named_children():
                if name not in self.trunk_names:
                    self.add_module(name + HEAD_SUFFIX[field], module)
        self.crops = dict(head.crops)
        self.final_name = head.final_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps, h = {}, x
        for name in self.trunk_names:
            h = getattr(self, name)(h)
            if name in self.skips:
                taps[name] = h
        return torch.cat([self._head(h, taps, HEAD_SUFFIX[field], like=x) for field in self.heads], dim=1)

    def _head(self, h: torch.Tensor, taps: dict, suffix: str, like: torch.Tensor) -> torch.Tensor:
        h = getattr(self, "score_fr" + suffix)(h)
        for skip in self.skips:
            up_name, score_name = _SKIP_NAMES[skip]
            h = getattr(self, up_name + suffix)(h)
            h = h + crop(getattr(self, score_name + suffix)(taps[skip]), self.crops[score_name], like=h)
        return getattr(self, self.final_name + suffix).window(h, self.crops[self.final_name], like.shape[-2:])


def fcn_two_head(num_classes: int, *, width: float, in_channels: int, skips: tuple[str, ...] = ()) -> TwoHeadFCN:
    """The two-headed net with ``skips`` (num_classes = semantic classes)."""
    return TwoHeadFCN(num_classes=num_classes, skips=skips, width=width, in_channels=in_channels)


MODELS = [  # SIFT Flow semantic + geometric heads (Table 5)
    Declared("fcn32s_siftflow_vgg16", fcn_two_head, display="FCN-32s (two-headed)"),
    Declared("fcn16s_siftflow_vgg16", fcn_two_head, display="FCN-16s (two-headed)", fixed={"skips": ("pool4",)}),
]
