"""Numeric precision and speed switches of training: float32, bfloat16 or float16 autocast, channels-last
tensors, ``torch.compile``.

    prec = resolve("auto", torch.device("cpu"))      # "bf16" on CPUs with AVX512_BF16 or AMX, else "fp32"
    model = to_layout(model, channels_last=True); x = to_layout(x, channels_last=True)
    scaler = grad_scaler(prec, device)               # a pass-through except for fp16
    with autocast(prec, device):
        scores = model(x)
    scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()

Channels-last is a separate switch: oneDNN's fast layout for both precisions on CPU (a training step of
the 1/8-width VGG16 FCN at 160 x 160 took 0.59 s in channels-last against 0.92 s in the default layout, fp32,
AMD EPYC, one thread) and cuDNN's for bf16 and fp16. Autocast runs the convolutions in the low precision and
keeps reductions (the loss, batch-norm statistics) and the large bilinear upsamplers in float32. On CPUs
bf16 pays only where the hardware has bf16 arithmetic (AVX512_BF16: about 1.3-2x a training step here;
AMX: more); elsewhere it is emulated and slower, which is why ``auto`` looks at the CPU flags. The resolved
choice is recorded in every run's metadata, since results differ (slightly) between them.

float16 (``fp16``, for GPUs without bf16 such as V100 and T4; never chosen by ``auto``) has 5 exponent bits:
small gradients underflow to zero unless the loss is scaled up before the backward pass and the gradients
scaled back before the step. ``grad_scaler`` does that (``torch.amp.GradScaler``, dynamic scale: halved and
the step skipped when a gradient overflows, doubled after 2000 clean steps); its state belongs in the
checkpoint. Only training has it: pretraining and the benchmark take ``PRECISIONS``, without fp16.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from segbench.infra.cpuinfo import cpu_flags

PRECISIONS = ("auto", "fp32", "bf16")
TRAINING_PRECISIONS = (*PRECISIONS, "fp16")  # fp16 needs the gradient scaler of the training loop
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve(precision: str, device: torch.device) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: ``auto`` is bf16 on a CUDA GPU with bf16 in hardware (Ampere and
    later, not the emulation of V100 or T4) or a CPU with bf16 instructions (``BF16_CPU_FLAGS``), else fp32
    (never fp16, whose loss scaling is a choice to make knowingly). fp16 is refused on any device but CUDA (a
    ValueError)."""
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAINING_PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 (float16 autocast with loss scaling) needs a CUDA GPU, got device "
                         f"{device.type!r}; use bf16 or fp32 on the CPU (auto picks bf16 where the CPU has it)")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether ``device`` does bf16 arithmetic in hardware: a CUDA GPU of compute capability 8.0 or later
    (``cuda_has_native_bf16``), or a CPU with one of ``BF16_CPU_FLAGS`` among ``flags`` (this CPU's
    /proc/cpuinfo flags when None). Elsewhere bf16 is emulated and slower than fp32: ``precision: auto``, the
    benchmark's ``auto`` and the inference modes never pick it there."""
    if device.type == "cuda":
        return cuda_has_native_bf16()
    return bool((cpu_flags() if flags is None else flags) & set(BF16_CPU_FLAGS))


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA GPU does bf16 arithmetic in hardware (compute capability 8.0 and later, and ROCm).

    ``torch.cuda.is_bf16_supported()`` is also true where bf16 tensors merely work, emulated in float32 (V100,
    T4: capability 7.x), which makes a step slower than fp32 and less exact; ``including_emulation=False``
    counts the hardware alone."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision in DTYPES:
        return torch.autocast(device.type, dtype=DTYPES[precision])
    return nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a resolved precision: dynamic for fp16, a pass-through otherwise (``scale`` returns
    the loss unchanged, ``step`` is ``optimizer.step()``, ``update`` does nothing)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` compiled by TorchInductor (``torch.compile``): the first training step compiles the forward and
    backward graphs (a minute or more for a small net on a 2-core CPU, with a C++ compiler; Triton
    kernels on a GPU), later steps run the fused kernels. Each new image size compiles again (the graphs
    are marked dynamic after the second one). The result shares ``module``'s parameters: save and evaluate
    ``module`` itself, whose ``state_dict`` keys are the usual ones. Results differ from the uncompiled
    net's in the last bits (fused kernels sum in another order)."""
    return torch.compile(module)


def to_layout(obj, *, channels_last: bool):
    """A module or a 4-d tensor in channels-last memory format if ``channels_last``, else unchanged."""
    if not channels_last or (isinstance(obj, torch.Tensor) and obj.dim() != 4):
        return obj
    return obj.to(memory_format=torch.channels_last)
