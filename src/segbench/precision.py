"""Numeric precision of training and evaluation: float32, or bfloat16 autocast with channels-last tensors.

    prec = resolve("auto", torch.device("cpu"))      # "bf16" on CPUs with AVX512_BF16 or AMX, else "fp32"
    model = to_layout(model, channels_last=True); x = to_layout(x, channels_last=True)
    with autocast(prec, device):
        scores = model(x)

Channels-last is a separate switch: oneDNN's fast layout for both precisions on CPU (a training step of
the 1/8-width VGG16 FCN at 160 x 160 took 0.59 s in channels-last against 0.92 s in the default layout, fp32,
AMD EPYC, one thread) and cuDNN's for bf16. bf16 autocast runs the convolutions in bfloat16 and keeps reductions (the loss, batch-norm statistics) and
the large bilinear upsamplers in float32. On CPUs it pays only where the hardware has bf16 arithmetic
(AVX512_BF16: about 1.3-2x a training step here; AMX: more); elsewhere it is emulated and slower, which is
why ``auto`` looks at the CPU flags. The resolved choice is recorded in every run's metadata, since results
differ (slightly) between the two.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo is unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: ``auto`` is bf16 on a CUDA GPU that supports it or a CPU with bf16
    instructions (``BF16_CPU_FLAGS``), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_flags() & set(BF16_CPU_FLAGS) else "fp32"


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_layout(obj, *, channels_last: bool):
    """A module or a 4-d tensor in channels-last memory format if ``channels_last``, else unchanged."""
    if not channels_last or (isinstance(obj, torch.Tensor) and obj.dim() != 4):
        return obj
    return obj.to(memory_format=torch.channels_last)
