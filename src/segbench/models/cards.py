"""Model cards of the successor architectures: parameters, GFLOPs, strides and receptive field.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one eval-mode forward of a single
image (on the meta device, so nothing is computed): convolutions (transposed ones included), matrix
products and linear layers at 2 FLOP per multiply-accumulate. Batch norm, ReLU, pooling, padding and
interpolation are not counted, nor are auxiliary heads, which ``forward`` does not run. Most papers and
tools (mmcv, fvcore, torchvision's ``_ops``) report half of this number (multiply-accumulates) as "FLOPs".
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

CARD_SIZE = (500, 500)


def flops(net: nn.Module, size: tuple[int, int] = CARD_SIZE) -> int:
    """FLOPs (2 per MAC) of ``net``'s forward on one image of ``size`` (channels: its first conv's), on
    ``net``'s device."""
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    x = torch.zeros(1, first.in_channels, *size, device=first.weight.device)
    was_training = net.training
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(x)
    net.train(was_training)
    return counter.get_total_flops()


def _aux_parameter(name: str, aux_modules: tuple[str, ...]) -> bool:
    return any(name.startswith(module + ".") for module in aux_modules)


def card(name: str, net: nn.Module, backbone: str | None, *, size: tuple[int, int] = CARD_SIZE) -> dict:
    """The card of a successor model ``net`` (built as model ``name``, best on the meta device).

    Returns ``{"name", "backbone", "params", "params_with_aux", "gflops", "output_stride", "max_stride",
    "rf_size"}``: learnable parameters without and with the training-only auxiliary heads, GFLOPs (2 per
    MAC) of one forward at ``size`` (500 x 500), the stride of the map the final classifier sees, the
    coarsest feature stride, and the receptive field of one output unit in input pixels (None where
    global pooling makes every output depend on the whole image).
    """
    aux = getattr(net, "aux_modules", ())
    learnable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    rf = net.receptive_field() if hasattr(net, "receptive_field") else None
    return {"name": name, "backbone": backbone,
            "params": sum(p.numel() for n, p in learnable if not _aux_parameter(n, aux)),
            "params_with_aux": sum(p.numel() for _, p in learnable),
            "gflops": flops(net, size) / 1e9, "output_stride": net.output_stride, "max_stride": net.max_stride,
            "rf_size": rf}
