"""How a net runs its forward pass at inference, and which ways this machine's instruction set makes worth timing.

    allowed, excluded = candidates(torch.device("cpu"))         # e.g. ["fp32", "channels_last", "compile_fp32",
                                                                 # "int8"], {"bf16": "... emulated ...", ...}
    run = prepare(net, "int8", example, calibration=images)     # a callable: N x C x H x W -> scores (float32)
    scores = run(x)

Modes (all in eval mode, under ``torch.no_grad``):

- ``fp32``: eager float32, NCHW (the reference every other mode is compared with).
- ``channels_last``: eager float32, weights and input channels-last.
- ``bf16``: eager bfloat16 autocast, channels-last.
- ``compile``: ``torch.compile`` (inductor, ``freezing=True``: weights folded in and prepacked once), bf16
  autocast.
- ``compile_fp32``: the same in float32, channels-last.
- ``int8``: post-training static quantization through the PT2E export path (torchao's
  ``X86InductorQuantizer``: int8 weights per channel, uint8 activations per tensor, scales from calibration
  images), compiled by inductor with freezing into oneDNN int8 convolutions. Left in float32
  (``FLOAT32_LAYERS``): the bilinear upsamplers (``ConvTranspose2d``, segbench's ``BilinearUpsample``) and
  the first convolution (on the raw image: 3 input channels, 0.5% of FCN-8s's FLOPs; quantizing its input
  cost a tiny trained FCN-8s about half a point of argmax agreement with fp32).

bf16 modes pay only where the hardware has bf16 arithmetic (``precision.native_bf16``: AVX512_BF16 or AMX on
a CPU, compute capability 8.0 on a GPU); int8 only where the CPU has int8 dot products (VNNI or AMX,
``INT8_CPU_FLAGS``) and torchao is installed (the ``int8`` extra). ``candidates`` says which are allowed
and why the others are not.

Max pooling with ``ceil_mode=True`` (the FCN's VGG16 and AlexNet pools) is rewritten for int8 as an explicit
replicate pad on the bottom and right followed by floor-mode pooling (``CeilModeMaxPool``, identical
results): inductor's quantized max-pool lowering in torch 2.14 drops ``ceil_mode`` (its low-memory pattern
binds the flag to another argument), which silently shrank fc7 from 16x16 to 15x15 at 500x500. Whatever the
cause, ``prepare`` compares the compiled int8 net's output and ``score_fr`` blob shapes with float32's on the
example and raises ``UnusableMode`` when they differ.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from contextlib import nullcontext
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from segbench.errors import SegbenchError
from segbench.infra import precision
from segbench.infra.cpuinfo import cpu_flags

MODES = ("fp32", "channels_last", "bf16", "compile", "compile_fp32", "int8")
PRECISION = {"fp32": "fp32", "channels_last": "fp32", "bf16": "bf16", "compile": "bf16", "compile_fp32": "fp32",
             "int8": "int8"}
DESCRIPTIONS = {
    "fp32": "eager float32, NCHW",
    "channels_last": "eager float32, channels_last",
    "bf16": "eager bfloat16 autocast, channels_last",
    "compile": "torch.compile (inductor, freezing=True), bfloat16 autocast",
    "compile_fp32": "torch.compile (inductor, freezing=True), float32, channels_last",
    "int8": "int8 static quantization (PT2E, torchao X86InductorQuantizer), inductor with freezing; bilinear "
            "upsamplers and the first conv in float32",
}
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products: VNNI (AVX-512 or AVX2) or AMX
MIN_AGREEMENT = 0.99  # a mode whose argmax agrees with fp32's on fewer pixels is not usable
FLOAT32_LAYERS = "every ConvTranspose2d (the bilinear upsamplers) and the net's first Conv2d"
TAP = "score_fr"  # the blob whose shape the int8 check compares, besides the output (every pool is before it)


class UnusableMode(SegbenchError, RuntimeError):
    """A mode that cannot run this net correctly here; the message says why."""


def torchao_missing() -> str | None:
    """Why the int8 mode cannot be prepared (torchao not installed), or None when it can."""
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install 'segbench[int8]', torchao 0.18.0)"
    return None


def candidates(device: torch.device, flags: set[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The modes worth timing on ``device`` (in ``MODES`` order) and ``{mode: why not}`` for the others.

    ``flags`` are the CPU's instruction-set flags (/proc/cpuinfo's when None). fp32, channels_last and
    compile_fp32 are always candidates; bf16 and compile only with bf16 in hardware; int8 only on a CPU with
    one of ``INT8_CPU_FLAGS`` and torchao importable."""
    flags = cpu_flags() if flags is None and device.type == "cpu" else (flags or set())
    excluded = {}
    if not precision.native_bf16(device, flags):
        why = ("bf16 is emulated on this GPU (compute capability below 8.0)" if device.type == "cuda" else
               f"bf16 is emulated on this CPU (none of {', '.join(precision.BF16_CPU_FLAGS)} in its flags)")
        excluded.update(bf16=why, compile=why)
    if device.type != "cpu":
        excluded["int8"] = "the x86 int8 quantizer targets CPUs"
    elif not flags & set(INT8_CPU_FLAGS):
        excluded["int8"] = f"no int8 dot products on this CPU (none of {', '.join(INT8_CPU_FLAGS)} in its flags)"
    elif torchao_missing():
        excluded["int8"] = torchao_missing()
    return [m for m in MODES if m not in excluded], excluded


class CeilModeMaxPool(nn.Module):
    """``nn.MaxPool2d(k, s, ceil_mode=True)`` (no padding, no dilation) as a replicate pad of the bottom and
    right edges to the ceil-mode extent, then floor-mode pooling. The same numbers: only the last window of
    each axis reaches past the input, and it contains the edge value that the pad repeats. N x C x H x W ->
    N x C x ceil((H - k) / s) + 1 x ceil((W - k) / s) + 1."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        if not self.takes(pool):
            raise ValueError(f"CeilModeMaxPool takes square, unpadded, undilated pools whose window is at least "
                             f"their stride; got {pool}")
        self.kernel_size, self.stride = pool.kernel_size, pool.stride

    @staticmethod
    def takes(pool: nn.MaxPool2d) -> bool:
        """Whether ``pool`` can be rewritten: int kernel >= int stride (so no ceil-mode window starts past the
        input, which torch would drop), no padding, no dilation."""
        k, s = pool.kernel_size, pool.stride
        return (isinstance(k, int) and isinstance(s, int) and k >= s and pool.padding in (0, (0, 0))
                and pool.dilation in (1, (1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        h, w = x.shape[-2:]
        pad_h = (-(-(h - k) // s)) * s + k - h  # the ceil-mode extent minus the input's
        pad_w = (-(-(w - k) // s)) * s + k - w
        return F.max_pool2d(F.pad(x, (0, pad_w, 0, pad_h), mode="replicate"), k, s)


def without_ceil_mode(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose ceil-mode max pools are ``CeilModeMaxPool``s (same results); pools it cannot take
    stay (the int8 shape check then tells whether they survived)."""
    net = copy.deepcopy(net)
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.MaxPool2d) and module.ceil_mode and CeilModeMaxPool.takes(module):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, CeilModeMaxPool(module))
    return net


class _Tapped(nn.Module):
    """``net`` returning ``(output, the output of its submodule `tap`)`` (the tap is None without one)."""

    def __init__(self, net: nn.Module, tap: str | None):
        super().__init__()
        self.net, self.tap = net, tap

    def forward(self, x):
        seen = {}
        handle = (self.net.get_submodule(self.tap).register_forward_hook(lambda m, i, o: seen.update(tap=o))
                  if self.tap else None)
        try:
            out = self.net(x)
        finally:
            if handle is not None:
                handle.remove()
        return out, seen.get("tap")


def quantize_int8(net: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor], *,
                  dynamic: bool = False) -> nn.Module:
    """``net`` (eval mode, CPU) quantized to int8 through PT2E: ``torch.export`` (input sizes free if
    ``dynamic``, else ``example``'s), ``prepare_pt2e`` with the default ``X86InductorQuantizer`` config
    (``FLOAT32_LAYERS`` left out), one forward pass per calibration batch, ``convert_pt2e``. Ceil-mode
    pools become ``CeilModeMaxPool``s first. The result returns ``(scores, score_fr blob or None)``; compile it
    with freezing (``prepare`` does)."""
    missing = torchao_missing()
    if missing:
        raise UnusableMode(missing)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    tapped = _Tapped(without_ceil_mode(net).eval(), TAP if hasattr(net, TAP) else None)
    dims, sample = None, example
    if dynamic:  # batch 1 and equal sizes would be specialised (0/1 and duck sizing): export on 2 x H x (W - 1)
        dims = {"x": {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
        sample = example[:1].repeat(2, 1, 1, 1)
        sample = (sample[..., :-1] if sample.shape[-1] == sample.shape[-2] else sample).contiguous()
    with torch.no_grad():
        exported = torch.export.export(tapped, (sample,), dynamic_shapes=dims).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    first = next(name for name, module in tapped.named_modules() if isinstance(module, nn.Conv2d))
    for name, module in tapped.named_modules():
        if isinstance(module, nn.ConvTranspose2d) or name == first:  # see FLOAT32_LAYERS
            quantizer.set_module_name_qconfig(name, None)
    with warnings.catch_warnings():  # the pools after an explicit pad stay float32, as intended
        warnings.filterwarnings("ignore", message="The input of maxpool2d is not quantized")
        prepared = prepare_pt2e(exported, quantizer)
    batches = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
            batches += 1
    if not batches:
        raise ValueError("int8 needs at least one calibration batch (images like those it will score), got none")
    return convert_pt2e(prepared)


def _compiled(module, *, dynamic: bool = False):
    """``module`` compiled by inductor with ``freezing=True`` switched on for its calls only."""
    import torch._inductor.config as inductor_config
    compiled = torch.compile(module, dynamic=dynamic or None)

    def run(x):
        with inductor_config.patch(freezing=True):
            return compiled(x)
    return run


def _reference_shapes(net: nn.Module, x: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The float32 net's output shape and ``TAP`` blob shape for input ``x``, from a pass on the meta device."""
    from torch.func import functional_call
    shapes_only = {name: torch.empty_like(t, device="meta") for name, t in [*net.named_parameters(),
                                                                            *net.named_buffers()]}
    tapped = _Tapped(net, TAP if hasattr(net, TAP) else None)
    with torch.no_grad():
        out, tap = functional_call(tapped, {f"net.{k}": v for k, v in shapes_only.items()}, (x.to("meta"),))
    return tuple(out.shape), None if tap is None else tuple(tap.shape)


def check_shapes(net: nn.Module, x: torch.Tensor, out: torch.Tensor, tap: torch.Tensor | None) -> None:
    """Raise ``UnusableMode`` unless the output and ``TAP`` blob that a transformed ``net`` produced on ``x`` have
    the float32 net's shapes."""
    want_out, want_tap = _reference_shapes(net, x)
    got = (tuple(out.shape), None if tap is None else tuple(tap.shape))
    if got != (want_out, want_tap):
        raise UnusableMode(f"int8 net changed shapes on input {tuple(x.shape)}: output {got[0]} and {TAP} {got[1]}, "
                           f"expected float32's {want_out} and {want_tap} (a pooling or padding changed)")


def prepare(net: nn.Module, mode: str, example: torch.Tensor, *, calibration: Iterable[torch.Tensor] = (),
            dynamic: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running ``net`` (put in eval mode) in ``mode`` under ``torch.no_grad``: N x C x H x W ->
    N x K x H x W scores (float32 for int8, the mode's dtype otherwise). Compiled modes compile on their first
    call (seconds to minutes). int8 is exported on ``example`` and calibrated here on ``calibration`` (batches
    like those it will score: training images, not the evaluated ones); its first call on each input shape
    checks the shapes (``check_shapes``). With ``dynamic`` it takes any input size, otherwise ``example``'s
    alone. Raises ``UnusableMode`` for an int8 net that cannot run correctly and
    ValueError for an unknown mode."""
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; expected one of {MODES}")
    net = net.eval()
    dev = example.device.type
    channels_last = mode in ("channels_last", "bf16", "compile_fp32")
    fn = copy.deepcopy(net).to(memory_format=torch.channels_last) if channels_last else net
    ctx = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if mode in ("bf16", "compile") else nullcontext
    if mode in ("compile", "compile_fp32"):
        fn = _compiled(fn)
    elif mode == "int8":
        if dev != "cpu":
            raise UnusableMode(f"int8 runs on the CPU only, got an example on {dev}")
        compiled = _compiled(quantize_int8(net, example, calibration, dynamic=dynamic), dynamic=dynamic)
        checked = set()

        def fn(x):
            if not dynamic and x.shape != example.shape:
                raise ValueError(f"this int8 net was exported for inputs of shape {tuple(example.shape)}, got "
                                 f"{tuple(x.shape)}; prepare it with dynamic=True for varying sizes")
            out, tap = compiled(x)
            if tuple(x.shape) not in checked:
                check_shapes(net, x, out, tap)
                checked.add(tuple(x.shape))
            return out

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), ctx():
            return fn(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return run


def usable(agreement: float) -> bool:
    """Whether a mode whose argmax agrees with fp32's on a fraction ``agreement`` of pixels may be chosen."""
    return agreement >= MIN_AGREEMENT


class Prepared(nn.Module):
    """A prepared mode as a module, for code that calls ``model.eval()`` and ``model(x)`` (``evaluate_model``):
    forwards to ``prepare(net, mode, example, calibration=..., dynamic=True)``, so any input size works; keeps
    ``net``'s ``heads`` (several-head nets). ``net`` stays a submodule (``.net``) for its state dict."""

    def __init__(self, net: nn.Module, mode: str, example: torch.Tensor, *,
                 calibration: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.net, self.mode = net, mode
        if getattr(net, "heads", None):
            self.heads = net.heads
        self._run = prepare(net, mode, example, calibration=calibration, dynamic=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)
