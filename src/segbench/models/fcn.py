"""The FCN head shared by every backbone: score, skip fusion, bilinear upsampling and top-left crops.

A trunk is an ordered list of ``(paper_name, module)`` pairs from the input to the last feature blob
(``fc7`` for VGG/AlexNet, ``inception5b`` for GoogLeNet); its modules become attributes of the FCN under
those names, so state dicts read like the Caffe prototxt (``conv1_1.weight``, ``fc6.weight``,
``score_fr.weight``, ``upscore.weight``). Skip nets fuse the scores of earlier trunk blobs
(``pool4``, ``pool3``) by element-wise sum, as in Figure 3 of the paper:

    FCN-32s: score_fr -> upscore (64/32) -> crop
    FCN-16s: score_fr -> upscore2 (4/2) + crop(score_pool4) = fuse_pool4 -> upscore16 (32/16) -> crop
    FCN-8s : ... fuse_pool4 -> upscore_pool4 (4/2) + crop(score_pool3) = fuse_pool3 -> upscore8 (16/8) -> crop

Every crop offset is derived from the modules' own geometry (``segbench.models.geometry``).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models import alexnet, googlenet, vgg
from segbench.models.geometry import crop_offset
from segbench.models.layers import BilinearUpsample, crop
from segbench.models.registry import Declared

# Per skip stage: (upsampler feeding the fusion, score layer of the skip blob); the final upsampler by count.
_SKIP_NAMES = {"pool4": ("upscore2", "score_pool4"), "pool3": ("upscore_pool4", "score_pool3")}
_FINAL_NAMES = {0: "upscore", 1: "upscore16", 2: "upscore8"}


class FCN(nn.Module):
    """A fully convolutional net: ``forward(x: N x C_in x H x W) -> N x num_classes x H x W`` scores.

    Attributes beyond the trunk's: ``score_fr``, optionally ``score_pool4``/``score_pool3`` (1x1 convs,
    zero-initialised as Caffe does without a filler), frozen bilinear upsamplers, and ``crops``
    (``{"score_pool4": 5, "score_pool3": 9, "upscore8": 31}`` for FCN-8s VGG16). ``allow_half_crop``
    accepts a final crop that is half a pixel off (rounded down; see the GoogLeNet module).
    """

    def __init__(self, *, backbone: str, trunk: list[tuple[str, nn.Module]], channels: dict[str, int],
                 num_classes: int, skips: tuple[str, ...] = (), skip_scales: dict[str, float] | None = None,
                 final_kernel: int | None = None, stride: int = 32, allow_half_crop: bool = False):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.trunk_names = [name for name, _ in trunk]
        for name, module in trunk:
            self.add_module(name, module)
        missing = [s for s in skips if s not in self.trunk_names]
        if missing or any(s not in _SKIP_NAMES for s in skips):
            raise ValueError(f"skips {skips} must name trunk blobs among {sorted(_SKIP_NAMES)}")
        self.skips = tuple(skips)
        self.skip_scales = dict(skip_scales or {})
        self.score_fr = nn.Conv2d(channels[self.trunk_names[-1]], num_classes, 1)
        nn.init.zeros_(self.score_fr.weight)
        nn.init.zeros_(self.score_fr.bias)
        path = [m for _, m in trunk] + [self.score_fr]  # the modules from the input to the current blob
        self.crops: dict[str, int] = {}
        for skip in self.skips:
            up_name, score_name = _SKIP_NAMES[skip]
            up = BilinearUpsample(num_classes, kernel_size=4, stride=2)
            score = nn.Conv2d(channels[skip], num_classes, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.add_module(up_name, up)
            self.add_module(score_name, score)
            path = path + [up]
            skip_path = [m for _, m in trunk[:self.trunk_names.index(skip) + 1]] + [score]
            self.crops[score_name] = crop_offset(skip_path, path)
        final_stride = stride // 2 ** len(self.skips)
        self.final_name = _FINAL_NAMES[len(self.skips)]
        final = BilinearUpsample(num_classes, kernel_size=final_kernel or 2 * final_stride, stride=final_stride)
        self.add_module(self.final_name, final)
        self.crops[self.final_name] = crop_offset(path + [final], [], allow_half=allow_half_crop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = {}
        h = x
        for name in self.trunk_names:
            h = getattr(self, name)(h)
            if name in self.skips:
                taps[name] = h
        h = self.score_fr(h)
        for skip in self.skips:
            up_name, score_name = _SKIP_NAMES[skip]
            h = getattr(self, up_name)(h)
            tap = taps[skip] * self.skip_scales[skip] if skip in self.skip_scales else taps[skip]
            h = h + crop(getattr(self, score_name)(tap), self.crops[score_name], like=h)  # fuse_<skip>
        return getattr(self, self.final_name).window(h, self.crops[self.final_name], x.shape[-2:])  # upscore + crop


AT_ONCE_SCALES = {"pool4": 0.01, "pool3": 0.0001}  # Caffe Scale layers of voc-fcn8s-atonce (lr 0)


def fcn_vgg16(num_classes: int, *, width: float, in_channels: int, skips: tuple[str, ...] = (),
              skip_scales: dict[str, float] | None = None) -> FCN:
    layers, channels = vgg.trunk(width=width, in_channels=in_channels)
    return FCN(backbone="vgg16", trunk=layers, channels=channels, num_classes=num_classes, skips=skips,
               skip_scales=skip_scales)


def fcn_alexnet(num_classes: int, *, width: float, in_channels: int, flavour: str) -> FCN:
    layers, channels = alexnet.trunk(flavour, width=width, in_channels=in_channels)
    return FCN(backbone=flavour, trunk=layers, channels=channels, num_classes=num_classes, final_kernel=63)


def fcn_googlenet(num_classes: int, *, width: float, in_channels: int) -> FCN:
    layers, channels = googlenet.trunk(width=width, in_channels=in_channels)
    return FCN(backbone="googlenet", trunk=layers, channels=channels, num_classes=num_classes, allow_half_crop=True)


# The paper's nets (Tables 1 and 2); FCN-8s is also the first row of the successors table. Their recipes
# (heavy, paper, short) are segbench.training.recipes' own.
MODELS = [
    Declared("fcn32s_vgg16", fcn_vgg16, display="FCN-32s"),
    Declared("fcn16s_vgg16", fcn_vgg16, display="FCN-16s", fixed={"skips": ("pool4",)}),
    Declared("fcn8s_vgg16", fcn_vgg16, display="FCN-8s", fixed={"skips": ("pool4", "pool3")},
             published={"mean_iu": 62.7, "pixel_acc": 90.3, "split": "VOC2011 seg11valid",
                        "setting": "VGG16, SBD train, single scale (62.2 on VOC2012 test, Table 3)",
                        "source": "Long et al. 2015, Table 2"}),
    Declared("fcn8s_atonce_vgg16", fcn_vgg16, display="FCN-8s at-once",
             fixed={"skips": ("pool4", "pool3"), "skip_scales": AT_ONCE_SCALES}),
    Declared("fcn32s_alexnet", fcn_alexnet, display="FCN-AlexNet", backbone="alexnet_caffe",
             fixed={"flavour": "alexnet_caffe"}),
    Declared("fcn32s_alexnet_tv", fcn_alexnet, display="FCN-AlexNet (torchvision)", backbone="alexnet",
             fixed={"flavour": "alexnet"}),
    Declared("fcn32s_googlenet", fcn_googlenet, display="FCN-GoogLeNet", backbone="googlenet"),
]
