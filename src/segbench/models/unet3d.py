"""3D U-Net (Çiçek, Abdulkadir, Lienkamp, Brox, Ronneberger, MICCAI 2016), with padded convolutions.

    analysis : enc{i} = 2 x [3x3x3 conv + BN + ReLU], channels doubled *before* each 2x2x2 max pooling:
               enc1 C -> 32 -> 64, enc2 64 -> 64 -> 128, enc3 128 -> 128 -> 256, bottom 256 -> 256 -> 512
    synthesis: upconv{i} = 2x2x2 up-convolution (stride 2) keeping the channels, concatenated with enc{i},
               then dec{i} = 2 x [3x3x3 conv + BN + ReLU]: 512 + 256 -> 256 -> 256, 256 + 128 -> 128 -> 128,
               128 + 64 -> 64 -> 64; score = 1x1x1 conv -> classes

"The architecture has 19069955 parameters in total" (in 3, out 3): the layer list reproduces it exactly when
the three up-convolutions have no bias and batch norm is not counted (SEEDS-REFERENCE-2 §10.1); the nets here
are built that way (convolutions with a bias, up-convolutions without), so ``paper_parameter_count`` is exact.

Deviation: the paper's convolutions are **valid** (a 132x132x116 tile -> 44x44x28 scores, centre-cropped skips;
an axis must be 8k + 4 >= 92 long). Here every 3x3x3 conv is padded by 1, so the scores have the input's size and
no crop is needed (as in most ports, e.g. wolny/pytorch-3dunet); ``forward`` mirrors the far end of each axis up
to a multiple of 8 (three poolings) and crops back, so any D x H x W works. The receptive field and the border
behaviour differ from the paper's tiles; the parameter count does not. Initialisation: He-normal (U-Net's).
``width`` multiplies every channel count; no synthesis stage is narrower than the classes
(``unet.expansive_channels``).
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.blocks import _reflect_index
from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.unet import expansive_channels, he_init

# (first conv, second conv) channels of the analysis levels, the last the bottom
LEVELS = ((32, 64), (64, 128), (128, 256), (256, 512))
STRIDE = 8  # three 2x2x2 poolings
PAPER_PARAMS = 19_069_955  # in 3, out 3, up-convs without bias, batch norm not counted


def mirror_pad_end(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """N x C x D x H x W -> each spatial axis mirrored at its far end (reflect-101, folding as often as needed)
    up to the next multiple of ``multiple``. Crop with ``[..., :D, :H, :W]`` to undo."""
    for axis in (-3, -2, -1):
        n = x.shape[axis]
        if n % multiple:
            x = x.index_select(axis, _reflect_index(n, 0, -n % multiple, x.device))
    return x


def crop_to(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The first D x H x W voxels of ``y``, D x H x W being ``like``'s spatial size."""
    return y[..., :like.shape[-3], :like.shape[-2], :like.shape[-1]]


def _double_conv(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_mid, 3, padding=1), nn.BatchNorm3d(c_mid), nn.ReLU(inplace=True),
                         nn.Conv3d(c_mid, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class UNet3D(nn.Module):
    """3D U-Net: ``forward(x: N x C x D x H x W) -> N x num_classes x D x H x W`` scores (before softmax)."""

    backbone = None
    head_prefixes = ()  # trained from scratch: no layer is a "new head"
    dims = 3

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.output_stride, self.max_stride = 1, STRIDE
        c = [(scaled(a, width), scaled(b, width)) for a, b in LEVELS]
        outs = [b for _, b in c]  # 64, 128, 256, 512 at width 1
        e = expansive_channels(outs, num_classes)
        for i, (mid, out) in enumerate(c[:3]):
            self.add_module(f"enc{i + 1}", _double_conv(in_channels if i == 0 else outs[i - 1], mid, out))
        self.bottom = _double_conv(outs[2], *c[3])
        self.pool = nn.MaxPool3d(2)
        for i in (3, 2, 1):  # upconv keeps the channels of the map below (512 -> 512, 256 -> 256, 128 -> 128)
            below = e[i]
            self.add_module(f"upconv{i}", nn.ConvTranspose3d(below, below, 2, stride=2, bias=False))
            self.add_module(f"dec{i}", _double_conv(below + outs[i - 1], e[i - 1], e[i - 1]))
        self.score = nn.Conv3d(e[0], num_classes, 1)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"3D U-Net takes N x C x D x H x W volumes, got a tensor of shape {tuple(x.shape)}")
        h = mirror_pad_end(x, STRIDE)
        skips = []
        for i in (1, 2, 3):
            h = getattr(self, f"enc{i}")(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for i in (3, 2, 1):
            h = getattr(self, f"dec{i}")(torch.cat([skips[i - 1], getattr(self, f"upconv{i}")(h)], dim=1))
        return crop_to(self.score(h), x)


def paper_parameter_count(net: nn.Module) -> int:
    """Parameters counted as the paper counts them: every parameter outside batch norm (19,069,955 for
    ``UNet3D(3, in_channels=3)``)."""
    bn = {id(p) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    return sum(p.numel() for p in net.parameters() if id(p) not in bn)


# Çiçek et al. 2016 (via SEEDS-REFERENCE-2 §10, partly recalled): Caffe, one 132x132x116 tile per step (batch 1),
# about 70,000 iterations [unverified], weighted softmax cross-entropy with unlabelled voxels at weight 0
# (segbench.evaluation.volumetric_losses.sparse_cross_entropy), rotation, scaling, grey-value and smooth dense
# elastic augmentation. The optimizer and its settings are not in the reference. *Ours*: SGD with U-Net's
# momentum 0.99 and lr 1e-3 (the unet recipe's reasoning: lr / (1 - momentum) = 0.1), weight decay 5e-4, a
# fixed lr; rotation and scaling ranges are not stated and stay off; elastic on.
RECIPES = {"unet3d": {"batch_size": 1, "momentum": 0.99, "reduction": "mean", "optimizer": "sgd", "schedule": "fixed",
                      "lr": 1e-3, "weight_decay": 5e-4, "bias_lr_mult": 1.0, "elastic": True,
                      "iterations": 70_000}}
# The paper's figures on its Xenopus kidney confocal volumes (IoU, not Dice; recalled via a review: unverified).
PUBLISHED_VOLUMETRIC = {"metric": "IoU", "value": 0.863, "std": None, "dataset": "Xenopus kidney (3 volumes)",
                        "setting": "semi-automated (sparse annotation of the same volumes), 3D with BN; 2D 0.796",
                        "verified": False, "source": "Çiçek et al. 2016, Table 1 (recalled via a review, unverified)"}
MODELS = [
    Declared("unet3d", UNet3D, display="3D U-Net (padded)", backbone=None, recipe="unet3d", dims=3,
             published={"mean_iu": None, "pixel_acc": None, "split": "--",
                        "setting": "volumetric: Xenopus kidney, semi-automated IoU 0.863 (3D, BN) [unverified]",
                        "source": PUBLISHED_VOLUMETRIC["source"]}),
]
