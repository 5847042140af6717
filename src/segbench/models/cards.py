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

CARD_SIZE = (500, 500)


def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per MAC) of one forward pass of ``net`` on ``x``, in ``net``'s current mode. The pass runs on
    the meta device (shapes only): the count equals a real pass's and costs nothing, even at full width."""
    from torch.func import functional_call  # here, not at the top: 0.1 s of every import of segbench.models
    from torch.utils.flop_counter import FlopCounterMode
    shapes_only = {name: torch.empty_like(t, device="meta")
                   for name, t in [*net.named_parameters(), *net.named_buffers()]}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        functional_call(net, shapes_only, (x.to("meta"),))
    return counter.get_total_flops()


def flops(net: nn.Module, size: tuple[int, int] = CARD_SIZE) -> int:
    """FLOPs (2 per MAC) of ``net``'s eval-mode forward on one image of ``size`` (channels: its first
    conv's)."""
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    was_training = net.training
    try:
        return count_flops(net.eval(), torch.zeros(1, first.in_channels, *size, device="meta"))
    finally:
        net.train(was_training)


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
