"""Building blocks shared by every FCN: the fixed bilinear upsampler, the top-left crop, channel scaling."""

from __future__ import annotations

from contextlib import nullcontext

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
    line = bilinear_line(size)
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
        self.separable = True  # the weight is the bilinear kernel: ``window`` may use its 1-D factor
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
        if self.weight.device.type != "meta":
            k = self.kernel_size[0]
            self.separable = torch.equal(self._per_class(), bilinear_kernel(k).to(self.weight).float()
                                         .expand(self.in_channels, 1, k, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _fp32(x.device.type):
            return F.conv_transpose2d(x.float(), self._per_class(), stride=self.stride, groups=self.in_channels)

    def _per_class(self) -> torch.Tensor:
        idx = torch.arange(self.in_channels, device=self.weight.device)
        return self.weight[idx, idx].unsqueeze(1).float()  # C x 1 x k x k

    def window(self, x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
        """``crop(self(x), offset, like)`` for an output of ``size`` (H, W), computing only that window.

        The bilinear kernel is the outer product of one line, so the transposed convolution is separable:
        output = A x B^T per class, with A[y, i] = line[offset + y - stride * i] (zero outside the
        kernel). The final upsampler of an FCN produces about 3 x 3 times the pixels its crop keeps (the
        padding of 100); this skips them, forward and backward. Equal to the crop of ``forward`` up to
        float32 rounding; falls back to it if a loaded state dict's kernel is not the bilinear one.
        """
        h, w = size
        k, s = self.kernel_size[0], self.stride[0]
        if x.shape[-2] * s + k - s < offset + h or x.shape[-1] * s + k - s < offset + w:
            raise ValueError(f"cannot crop {h}x{w} at offset {offset} from the {(x.shape[-2] - 1) * s + k}x"
                             f"{(x.shape[-1] - 1) * s + k} upsampled blob: the network's padding is too small "
                             "for this input size")
        if not self.separable:  # a loaded kernel that is not the bilinear one
            return self(x)[..., offset:offset + h, offset:offset + w]  # bounds checked above
        line = bilinear_line(k).to(device=x.device, dtype=torch.float32)
        with _fp32(x.device.type):
            rows = _interpolation(line, s, x.shape[-2], offset, h)  # h x h_in
            cols = _interpolation(line, s, x.shape[-1], offset, w)  # w x w_in
            return rows @ x.float() @ cols.T


def _fp32(device_type: str):
    """Autocast off: the upsamplers compute in float32 under any precision. The meta device (shapes only,
    as the FLOP count uses) has no autocast, so nothing to switch off there."""
    return nullcontext() if device_type == "meta" else torch.autocast(device_type, enabled=False)


def bilinear_line(size: int) -> torch.Tensor:
    """The 1-D factor of ``bilinear_kernel(size)`` (float64): ``bilinear_kernel = outer(line, line)``."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1.0 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor


def _interpolation(line: torch.Tensor, stride: int, n_in: int, offset: int, n_out: int) -> torch.Tensor:
    """The n_out x n_in matrix of a 1-D transposed convolution with kernel ``line`` and ``stride``, rows
    ``offset ... offset + n_out - 1`` of its output: M[y, i] = line[offset + y - stride * i] inside the kernel."""
    rows = torch.arange(offset, offset + n_out, device=line.device)
    t = rows[:, None] - stride * torch.arange(n_in, device=line.device)
    inside = (t >= 0) & (t < line.numel())
    return torch.where(inside, line[t.clamp(0, line.numel() - 1)], line.new_zeros(()))


def crop(x: torch.Tensor, offset: int | tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Caffe's ``Crop(axis=2)``: the window of ``x`` starting at ``offset`` (one for both axes, or (top, left))
    with ``like``'s spatial size."""
    h, w = like.shape[-2:]
    top, left = (offset, offset) if isinstance(offset, int) else offset
    if min(top, left) < 0 or x.shape[-2] < top + h or x.shape[-1] < left + w:
        raise ValueError(f"cannot crop {h}x{w} at offset {offset} from a {tuple(x.shape[-2:])} blob: "
                         "the network's padding is too small for this input size")
    return x[..., top:top + h, left:left + w]


def centre_crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The centre window of ``x`` with ``like``'s spatial size (U-Net's crop of its contracting path's maps)."""
    return crop(x, ((x.shape[-2] - like.shape[-2]) // 2, (x.shape[-1] - like.shape[-1]) // 2), like)


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
