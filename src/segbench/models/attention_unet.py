"""Attention U-Net (Oktay et al., MIDL 2018): U-Net whose skips pass through attention gates, with deep supervision.

Follows the authors' release (ozan-oktay/Attention-Gated-Networks, ``unet_CT_single_att_dsv_3D`` and its
``multi`` variant; ``grid_attention_layer.py``, mode ``concatenation``), in 2D by default (``dims=3`` builds
the released volumetric net, which the parameter counts are checked against):

    contracting: conv1 ... conv4 = 2 x [3x3 conv + BN + ReLU] (64, 128, 256, 512 x width), 2x2 max pooling,
                 center (1024 x width); gating = 1x1 conv + BN + ReLU on center (not in the baseline)
    gates      : att4 (skip conv4, gated by ``gating``), att3 (conv3, by up4), att2 (conv2, by up3); conv1's skip
                 is not gated. A gate: theta = 2x2 conv stride 2 (no bias) of the skip x, phi = 1x1 conv of the
                 gating signal g resized to theta's grid, alpha = sigmoid(psi(ReLU(theta + phi))) resized to x,
                 W = 1x1 conv + BN of alpha * x; then combine = 1x1 conv + BN + ReLU (of two gates'
                 concatenation in the ``gates=2`` variant)
    expansive  : up{i} = 2x bilinear upsampling, concatenated with the (gated) skip, 2 x [3x3 conv + BN + ReLU]
    supervision: dsv{i} = 1x1 conv -> classes on up4 ... up1, upsampled x8 / x4 / x2 / x1, **concatenated** and
                 fused by ``final`` (1x1 conv 4K -> K): one loss on the fused output (not four losses)

``gates=0`` is the paper's baseline, the same net without gates. Widths: the release's ``feature_scale`` 4
(16 ... 256 channels) is ``width=0.25``; as U-Net's, no expansive stage is narrower than the classes
(``unet.expansive_channels``). Deviations: He-normal initialisation (the release: Kaiming, BN weights from
N(1, 0.02)); bilinear resizing with ``align_corners=False`` (the release's ``nn.Upsample`` default); 2D
inputs are mirrored at the bottom/right to a multiple of 16 and cropped back, as ``unet_same``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.blocks import mirror_pad
from segbench.models.layers import scaled
from segbench.models.registry import Declared
from segbench.models.unet import CHANNELS, STRIDE, expansive_channels, he_init

GATES = (0, 1, 2)


def _conv(dims: int):
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def _bn(dims: int):
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def _double_conv(c_in: int, c_out: int, dims: int) -> nn.Sequential:
    """The release's ``UnetConv3``: 2 x [3x3 conv (bias) + BN + ReLU]."""
    conv, bn = _conv(dims), _bn(dims)
    return nn.Sequential(conv(c_in, c_out, 3, padding=1), bn(c_out), nn.ReLU(inplace=True),
                         conv(c_out, c_out, 3, padding=1), bn(c_out), nn.ReLU(inplace=True))


def _conv_bn_relu(c_in: int, c_out: int, dims: int) -> nn.Sequential:
    return nn.Sequential(_conv(dims)(c_in, c_out, 1), _bn(dims)(c_out), nn.ReLU(inplace=True))


class AttentionGate(nn.Module):
    """``forward(x, g) -> (W(alpha * x), alpha)``: x N x C_x x (spatial), g the coarser gating signal, alpha
    N x 1 x (x's spatial) in [0, 1]. Inter channels = C_x (the release's ``inter_size=in_size``)."""

    def __init__(self, c_x: int, c_g: int, c_inter: int, dims: int = 2):
        super().__init__()
        conv = _conv(dims)
        self.theta = conv(c_x, c_inter, 2, stride=2, bias=False)
        self.phi = conv(c_g, c_inter, 1)
        self.psi = conv(c_inter, 1, 1)
        self.W = nn.Sequential(conv(c_x, c_x, 1), _bn(dims)(c_x))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.theta(x)
        f = F.relu(theta + _resize(self.phi(g), theta.shape[2:]))
        alpha = _resize(torch.sigmoid(self.psi(f)), x.shape[2:])
        return self.W(alpha * x), alpha


class GatedSkip(nn.Module):
    """The release's ``MultiAttentionBlock``: one or two gates on a skip, then 1x1 conv + BN + ReLU."""

    def __init__(self, c_x: int, c_g: int, gates: int, dims: int = 2):
        super().__init__()
        self.gates = nn.ModuleList(AttentionGate(c_x, c_g, c_x, dims) for _ in range(gates))
        self.combine = _conv_bn_relu(gates * c_x, c_x, dims)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.combine(torch.cat([gate(x, g)[0] for gate in self.gates], dim=1))


class AttentionUNet(nn.Module):
    """Attention U-Net: ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores (the fused deep
    supervision), any H and W (2D). ``attention(x)`` gives the gates' coefficients ``{"att2", "att3", "att4"}``.
    """

    backbone = None
    head_prefixes = ()  # trained from scratch: no layer is a "new head"

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3, gates: int = 1, dims: int = 2):
        super().__init__()
        if gates not in GATES:
            raise ValueError(f"gates must be one of {GATES} (0: the paper's U-Net baseline), got {gates!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        self.dims, self.n_gates = dims, gates
        self.output_stride, self.max_stride = 1, STRIDE
        c = [scaled(ch, width) for ch in CHANNELS]
        e = expansive_channels(c, num_classes)
        self.pool = (nn.MaxPool2d if dims == 2 else nn.MaxPool3d)(2)
        for i in range(4):
            self.add_module(f"conv{i + 1}", _double_conv(in_channels if i == 0 else c[i - 1], c[i], dims))
        self.center = _double_conv(c[3], c[4], dims)
        if gates:  # the baseline has neither the gating signal nor the gates
            self.gating = _conv_bn_relu(c[4], c[4], dims)
            for i in (3, 2, 1):  # att4 gated by the bottom, att3 by up4, att2 by up3
                self.add_module(f"att{i + 1}", GatedSkip(c[i], e[i + 1], gates, dims))
        for i in (3, 2, 1, 0):
            self.add_module(f"up{i + 1}", _double_conv(e[i + 1] + c[i], e[i], dims))
        conv = _conv(dims)
        for i in (3, 2, 1, 0):
            self.add_module(f"dsv{i + 1}", conv(e[i], num_classes, 1))
        self.final = conv(4 * num_classes, num_classes, 1)
        he_init(self)

    def _net(self, x: torch.Tensor, attention: dict | None = None) -> torch.Tensor:
        skips = [self.conv1(x)]
        for i in (2, 3, 4):
            skips.append(getattr(self, f"conv{i}")(self.pool(skips[-1])))
        h = self.center(self.pool(skips[-1]))
        g, ups = (self.gating(h) if self.n_gates else None), {}
        for i in (4, 3, 2, 1):
            skip = skips[i - 1]
            if self.n_gates and i > 1:
                block = getattr(self, f"att{i}")
                if attention is not None:
                    attention[f"att{i}"] = block.gates[0](skip, g)[1]
                skip = block(skip, g)
            h = getattr(self, f"up{i}")(torch.cat([skip, _resize(h, skip.shape[2:])], dim=1))
            ups[i], g = h, h
        size = x.shape[2:]
        heads = [_resize(getattr(self, f"dsv{i}")(ups[i]), size) if i > 1 else self.dsv1(ups[1]) for i in (1, 2, 3, 4)]
        return self.final(torch.cat(heads, dim=1))

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:
            if any(n % STRIDE for n in x.shape[2:]):
                raise ValueError(f"the volumetric net needs sides that are multiples of {STRIDE}, got "
                                 f"{tuple(x.shape[2:])}")
            return x
        h, w = x.shape[-2:]
        return mirror_pad(x, 0, -h % STRIDE, 0, -w % STRIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._net(self._padded(x))
        return out[(...,) + tuple(slice(0, n) for n in x.shape[2:])]

    def attention(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The first gate's coefficients at each gated skip, N x 1 x (the skip's size), for the padded input."""
        maps: dict[str, torch.Tensor] = {}
        self._net(self._padded(x), maps)
        return maps


# The release's config_unet_ct_multi_att_dsv.json: Adam, lr 1e-4, L2 1e-6, batch 2, patches 160 x 160 x 96,
# augmentation shift 0.1, rotation 15 degrees, scale 0.7-1.3, flips, 1,000 epochs with an lr step every 250, Dice
# loss. *Ours*: 160 x 160 crops of the 2D images; the L2 as (decoupled) weight decay; 30K iterations at a fixed lr
# like the other VOC recipes (the epochs and the step's factor are for the CT volumes); no shift; cross-entropy,
# as every other row (the Dice loss is for the volumetric rows).
RECIPES = {"attention_unet": {"batch_size": 2, "optimizer": "adam", "beta1": 0.9, "reduction": "mean",
                              "schedule": "fixed", "lr": 1e-4, "weight_decay": 1e-6, "bias_lr_mult": 1.0,
                              "crop": 160, "scale_range": (0.7, 1.3), "rotate": 15.0, "flip": True,
                              "iterations": 30_000}}
_PUBLISHED = {"mean_iu": None, "pixel_acc": None, "split": "--", "setting": "no VOC result published",
              "source": "Oktay et al. 2018 (recalled, unverified): CT-150 pancreas Dice 0.840 +- 0.087 (U-Net 0.814 "
                        "+- 0.116); 6.40M parameters (U-Net 5.88M)"}
MODELS = [
    Declared("attention_unet", AttentionUNet, display="Attention U-Net", backbone=None, recipe="attention_unet",
             published=_PUBLISHED, fixed={"dims": 2},
             options={"gates": ("build", "attention gates per gated skip: 1 (the paper's single-gate net, default), "
                                         "2 (the release's multi variant) or 0 (the paper's U-Net baseline)")}),
]
