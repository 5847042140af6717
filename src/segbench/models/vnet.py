"""V-Net (Milletari, Navab, Ahmadi, 3DV 2016), the topology of the authors' released prototxt.

Follows ``faustomilletari/VNet`` ``Prototxt/train_noPooling_ResNet_cinque.prototxt`` (SEEDS-REFERENCE-2 §9.1):
residual stages of 5x5x5 convolutions (padding 2), no pooling, no batch norm, PReLU (per channel):

    in   : conv 5x5x5 C -> 16, added to the input tiled to 16 channels, PReLU
    down{k}, k = 1..4: down{k}.conv = 2x2x2 conv stride 2 doubling the channels (32, 64, 128, 256) + PReLU,
           then 1 / 2 / 3 / 3 convs 5x5x5 (PReLU after each but the last), added to the down-conv's output, PReLU
    up{k}, k = 4..1: up{k}.deconv = 2x2x2 transposed conv stride 2 to half the stage's channels (128, 64, 32, 16)
           + PReLU, concatenated with the skip of the same resolution (down3, down2, down1, in) -> 256 / 128 /
           64 / 32 channels, then 3 / 2 / 1 / 1 convs 5x5x5, added to the concatenation, PReLU
    out  : conv 5x5x5 32 -> K + PReLU, conv 1x1x1 K -> K (the prototxt's softmax is the loss's, not ``forward``'s)

The paper's figure has 2 / 3 / 3 / 3 convs down and 3 / 3 / 2 / 1 up; the release's counts are used here. At
width 1 with 1 input channel and 2 outputs the net has 61,979,512 conv + 3,170 PReLU = 61,982,682 parameters,
the reference's count [SEEDS-REFERENCE-2 §14, computed from the prototxt]. MSRA (He) initialisation as in the
prototxt; PReLU slopes start at 0.25 (Caffe's default).

Ports differ (§9.5): mattmacy/vnet.pytorch adds batch norm and dropout and tiles the input along the batch axis;
MONAI's ``VNet`` uses ELU, batch norm and 2 convs in the deepest stages. ``width`` multiplies every channel count
(the output convs keep K). With C input channels the residual of the input stage repeats the channels cyclically
to 16 x width (the prototxt has C = 1, tiled 16 times). ``forward`` mirrors the far end of each axis up to a
multiple of 16 (four down-convolutions) and crops the scores back, so any D x H x W works.
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.unet import he_init
from segbench.models.unet3d import crop_to, mirror_pad_end

CHANNELS = (16, 32, 64, 128, 256)  # input stage, down 1 .. down 4
DOWN_CONVS = (1, 2, 3, 3)  # 5x5x5 convs of down 1 .. down 4 (the release's prototxt)
UP_CONVS = (3, 2, 1, 1)  # of up 4 .. up 1
STRIDE = 16  # four 2x2x2 stride-2 down-convolutions
PROTOTXT_PARAMS = 61_982_682  # in 1, out 2, width 1 (SEEDS-REFERENCE-2 §9.1 / §14)
PRELU_INIT = 0.25


def _conv5(c: int) -> nn.Conv3d:
    return nn.Conv3d(c, c, 5, padding=2)


class ResidualConvs(nn.Module):
    """``n`` 5x5x5 convs (PReLU between them), their output added to the input, then PReLU: C -> C channels."""

    def __init__(self, channels: int, n: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(_conv5(channels))
            if i < n - 1:
                layers.append(nn.PReLU(channels, init=PRELU_INIT))
        self.convs = nn.Sequential(*layers)
        self.act = nn.PReLU(channels, init=PRELU_INIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + x)


class Down(nn.Module):
    """Down-conv 2x2x2 / 2 (C -> 2C) + PReLU, then ``ResidualConvs``: N x C x D x H x W -> N x 2C x D/2 x ..."""

    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 2, stride=2)
        self.act = nn.PReLU(c_out, init=PRELU_INIT)
        self.residual = ResidualConvs(c_out, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(self.act(self.conv(x)))


class Up(nn.Module):
    """Deconv 2x2x2 / 2 (C_in -> C_half) + PReLU, concatenated with the skip (C_skip), then ``ResidualConvs``
    over C_half + C_skip channels."""

    def __init__(self, c_in: int, c_half: int, c_skip: int, n: int):
        super().__init__()
        self.deconv = nn.ConvTranspose3d(c_in, c_half, 2, stride=2)
        self.act = nn.PReLU(c_half, init=PRELU_INIT)
        self.residual = ResidualConvs(c_half + c_skip, n)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.residual(torch.cat([self.act(self.deconv(x)), skip], dim=1))


class VNet(nn.Module):
    """V-Net: ``forward(x: N x C x D x H x W) -> N x num_classes x D x H x W`` scores (before softmax)."""

    backbone = None
    head_prefixes = ()  # trained from scratch: no layer is a "new head"
    dims = 3

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 1):
        super().__init__()
        self.output_stride, self.max_stride = 1, STRIDE
        c = [scaled(ch, width) for ch in CHANNELS]
        self.register_buffer("tile", torch.arange(c[0]) % in_channels, persistent=False)
        self.in_conv = nn.Conv3d(in_channels, c[0], 5, padding=2)
        self.in_act = nn.PReLU(c[0], init=PRELU_INIT)
        for k in range(1, 5):
            self.add_module(f"down{k}", Down(c[k - 1], c[k], DOWN_CONVS[k - 1]))
        # up4: 256 -> 128 (+ down3's 128); up3: 256 -> 64 (+ 64); up2: 128 -> 32 (+ 32); up1: 64 -> 16 (+ 16)
        c_in = c[4]
        for k, n in zip((4, 3, 2, 1), UP_CONVS):
            self.add_module(f"up{k}", Up(c_in, c[k - 1], c[k - 1], n))  # deconv to the skip's channels
            c_in = 2 * c[k - 1]
        self.out_conv = nn.Conv3d(c_in, num_classes, 5, padding=2)
        self.out_act = nn.PReLU(num_classes, init=PRELU_INIT)
        self.score = nn.Conv3d(num_classes, num_classes, 1)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"V-Net takes N x C x D x H x W volumes, got a tensor of shape {tuple(x.shape)}")
        h = mirror_pad_end(x, STRIDE)
        skips = [self.in_act(self.in_conv(h) + h.index_select(1, self.tile))]
        for k in range(1, 5):
            skips.append(getattr(self, f"down{k}")(skips[-1]))
        h = skips.pop()
        for k in (4, 3, 2, 1):
            h = getattr(self, f"up{k}")(h, skips.pop())
        return crop_to(self.score(self.out_act(self.out_conv(h))), x)


# faustomilletari/VNet VNet.py / main.py (SEEDS-REFERENCE-2 §9.3; a fork-era commit, 3D-IRCADb paths): SGD momentum
# 0.99, base lr 1e-4, weight decay 5e-4, batch 2, 100,000 iterations, volumes resampled to 1 x 1 x 1.5 mm and
# cropped/padded to 128 x 128 x 64, z-scored (voxels > 0), histogram matching and (p 0.5) a B-spline deformation;
# Dice loss (segbench.evaluation.volumetric_losses.dice_loss, form "squared"), the lr x0.1 every 20,000
# iterations (Caffe's step policy). *Ours*: bias multiplier 1 (the reference gives none);
# ``elastic`` off: the release's B-spline deformation (2 control points, sigma 15) is not U-Net's 3x3-grid one that
# the field names, and neither is implemented for volumes; no crop (the nets take whole 128 x 128 x 64 volumes).
RECIPES = {"vnet": {"batch_size": 2, "momentum": 0.99, "reduction": "mean", "optimizer": "sgd", "schedule": "step",
                    "step_size": 20_000, "lr": 1e-4, "weight_decay": 5e-4, "bias_lr_mult": 1.0, "iterations": 100_000}}
# The paper's PROMISE12 figures (recalled, unverified: SEEDS-REFERENCE-2 §9.4, §16)
PUBLISHED_VOLUMETRIC = {"metric": "Dice", "value": 0.869, "std": 0.033, "dataset": "PROMISE12 prostate MRI (test)",
                        "setting": "Dice loss; Hausdorff 5.71 +- 1.20 mm, score 82.39 (logistic loss: Dice 0.739 +- "
                                   "0.088)", "verified": False,
                        "source": "Milletari et al. 2016, Table 1 (recalled, unverified)"}
MODELS = [
    Declared("vnet", VNet, display="V-Net", backbone=None, recipe="vnet", dims=3,
             published={"mean_iu": None, "pixel_acc": None, "split": "--",
                        "setting": "volumetric: PROMISE12 test Dice 0.869 +- 0.033 [unverified]",
                        "source": PUBLISHED_VOLUMETRIC["source"]}),
]
