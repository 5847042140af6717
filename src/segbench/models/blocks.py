"""Small pieces shared by the successor architectures: conv + BN + ReLU, bilinear resizing, mirror padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 1, *, dilation: int = 1, stride: int = 1,
                 relu: bool = True) -> nn.Sequential:
    """``kernel_size`` conv (no bias: BN follows) + BN (+ ReLU), padded to keep the size at stride 1.

    Children ``0`` (conv), ``1`` (BN) and ``2`` (ReLU) as in torchvision's segmentation heads.
    """
    layers = [nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=dilation * (kernel_size // 2),
                        dilation=dilation, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of N x C x h x w to N x C x size, ``align_corners=False`` (torchvision's convention;
    TF DeepLab, semseg and the ICNet release use ``True``, which shifts by up to half a feature cell)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis extended by ``before``/``after`` mirrored entries (edge not repeated,
    OpenCV's BORDER_REFLECT_101), folding as often as needed, so any pad works on any size (even 1)."""
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """N x C x H x W -> N x C x (top + H + bottom) x (left + W + right), borders mirrored (reflect-101).

    Unlike ``F.pad(mode="reflect")`` the pads may exceed the image: the mirror folds back and forth.
    """
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"pads must be >= 0, got top={top}, bottom={bottom}, left={left}, right={right}")
    h, w = x.shape[-2:]
    rows = _reflect_index(h, top, bottom, x.device)
    cols = _reflect_index(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)
