"""Building blocks shared by every FCN: the fixed bilinear upsampler, the top-left crop, channel scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width: float, *, multiple: int = 1) -> int:
    """``channels * width`` rounded to a positive multiple of ``multiple`` (grouped convs need even counts)."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``size x size`` bilinear interpolation kernel of Caffe's ``surgery.upsample_filt`` (float64).

    ``factor = (size + 1) // 2``; the centre is ``factor - 1`` for odd sizes and ``factor - 0.5`` for even
    ones; the kernel sums to ``stride ** 2`` when ``size`` is ``2 * stride`` (or ``2 * stride - 1``).
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    line = 1.0 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(line, line)


class BilinearUpsample(nn.ConvTranspose2d):
    """A frozen per-class bilinear ``Deconvolution`` (Caffe ``lr_mult 0``, ``bias_term false``).

    The weight is the full C x C x k x k tensor of Caffe/pytorch-fcn with the bilinear kernel on the
    diagonal (``W[c, c] = bilinear_kernel(k)``, zero elsewhere), so state dicts stay interchangeable with
    pytorch-fcn. Only the diagonal is used: the forward is a per-class (grouped) transposed convolution,
    C times fewer operations than the dense C x C one and the same result, since the off-diagonal
    entries are zero (loading a state dict with non-zero ones is an error). It always runs in float32,
    also under autocast: a bf16 ConvTranspose with a 63/64-wide kernel and stride 32 is 30-130x slower
    than fp32 in oneDNN on CPU. Input N x C x h x w -> output N x C x ((h-1)s + k) x ((w-1)s + k), fp32.
    """

    def __init__(self, channels: int, *, kernel_size: int, stride: int):
        super().__init__(channels, channels, kernel_size, stride=stride, bias=False)
        self.weight.requires_grad_(False)
        self.reset_bilinear()

    @torch.no_grad()
    def reset_bilinear(self) -> None:
        """Write the diagonal bilinear kernel (``surgery.interp``)."""
        self.weight.zero_()
        kernel = bilinear_kernel(self.kernel_size[0]).to(self.weight.dtype)
        idx = torch.arange(self.in_channels)
        self.weight[idx, idx] = kernel.to(self.weight.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "weight")
        if weight is not None and weight.dim() == 4 and weight.shape[0] == weight.shape[1]:
            off = weight.clone()
            idx = torch.arange(weight.shape[0])
            off[idx, idx] = 0
            if off.count_nonzero():
                raise ValueError(f"{prefix}weight has non-zero entries off the class diagonal: a per-class "
                                 "bilinear upsampler cannot load a learned cross-class deconvolution")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(self.in_channels, device=self.weight.device)
        per_class = self.weight[idx, idx].unsqueeze(1).float()  # C x 1 x k x k
        with torch.autocast(x.device.type, enabled=False):
            return F.conv_transpose2d(x.float(), per_class, stride=self.stride, groups=self.in_channels)


def crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """Caffe's ``Crop(axis=2)``: the window of ``x`` starting at ``offset`` with ``like``'s spatial size."""
    h, w = like.shape[-2:]
    if x.shape[-2] < offset + h or x.shape[-1] < offset + w:
        raise ValueError(f"cannot crop {h}x{w} at offset {offset} from a {tuple(x.shape[-2:])} blob: "
                         "the network's padding is too small for this input size")
    return x[:, :, offset:offset + h, offset:offset + w]


def set_dropout(module: nn.Module, p: float) -> nn.Module:
    """Set the rate of every ``nn.Dropout`` in ``module`` to ``p`` (in place; returns ``module``).

    The dropout layers are part of the architecture (fc6/fc7 of VGG16 and AlexNet, 0.5 as in Caffe and
    torchvision); their rate is a training setting, so it is not stored with the weights.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = float(p)
    return module
