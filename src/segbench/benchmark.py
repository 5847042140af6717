"""Forward-time benchmark (Table 1's "forward time": mean of 20 trials on a 500x500 input, batch 1).

Modes, all under ``torch.no_grad`` in eval mode on the same random input:

- ``fp32``: eager, NCHW, float32 (the baseline; always measured).
- ``channels_last``: eager float32 with weights and input in channels-last memory format.
- ``bf16``: eager bfloat16 autocast, channels-last (the fast oneDNN/AMX layout on CPU).
- ``compile``: ``torch.compile`` (inductor) with ``torch._inductor.config.freezing=True`` (weights folded
  into the graph as constants and prepacked once), under bfloat16 autocast.

Trials are interleaved round-robin across modes so that contention on a shared machine hits every mode
alike. Weights are random (the score layers too, so predictions are not trivially all-zero); each mode's
argmax prediction is compared with fp32's. The large upsamplers run in float32 in every mode
(``BilinearUpsample``).
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from segbench import models, runtime
from segbench.atomic import write_json

MODES = ("fp32", "channels_last", "bf16", "compile")
DESCRIPTIONS = {
    "fp32": "eager float32, NCHW",
    "channels_last": "eager float32, channels_last",
    "bf16": "eager bfloat16 autocast, channels_last",
    "compile": "torch.compile (inductor, freezing=True), bfloat16 autocast",
}


def device_name(device: torch.device) -> str:
    """A human-readable name of ``device`` (GPU model, or the CPU model from /proc/cpuinfo)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def _frozen_bf16(dev: str):
    """bf16 autocast with inductor freezing switched on only for this call (no global side effect)."""
    import torch._inductor.config as inductor_config
    with inductor_config.patch(freezing=True), torch.autocast(dev, dtype=torch.bfloat16):
        yield


def _runner(mode: str, net: torch.nn.Module, x: torch.Tensor):
    """A zero-argument callable running one forward pass in ``mode``, and the first call's seconds."""
    dev = x.device.type
    if mode == "fp32":
        fn, inp, ctx = net, x, nullcontext
    elif mode in ("channels_last", "bf16"):
        fn = copy.deepcopy(net).to(memory_format=torch.channels_last)
        inp = x.contiguous(memory_format=torch.channels_last)
        ctx = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if mode == "bf16" else nullcontext
    elif mode == "compile":
        fn, inp = torch.compile(net), x
        ctx = lambda: _frozen_bf16(dev)  # noqa: E731
    else:
        raise ValueError(f"unknown benchmark mode {mode!r}; expected one of {MODES}")

    def run():
        with torch.no_grad(), ctx():
            out = fn(inp)
        if dev == "cuda":
            torch.cuda.synchronize()
        return out
    return run


def _flops(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return float(counter.get_total_flops())


def run_benchmark(model_name: str, *, num_classes: int = 21, width: float = 1.0, size: int = 500, trials: int = 20,
                  warmup: int = 2, modes: tuple[str, ...] = MODES, device: str = "auto", seed: int = 0,
                  progress: bool = True) -> dict:
    """Time ``trials`` forward passes of ``model_name`` on one 1 x 3 x size x size input per mode.

    Returns ``{"model", "num_classes", "width", "size", "batch", "trials", "warmup", "device",
    "device_type", "torch_version", "threads", "gflop", "fastest_mode", "modes": {mode: {"description",
    "mean_ms", "median_ms", "min_ms", "std_ms", "times_ms", "first_call_s", "speedup_vs_fp32" (fp32
    median / mode median), "argmax_agreement" (fraction of pixels whose argmax equals fp32's)}}}``.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or trials < 1 or warmup < 0 or size < 1:
        raise ValueError(f"need modes among {MODES}, trials >= 1, warmup >= 0, size >= 1; got modes={modes}, "
                         f"trials={trials}, warmup={warmup}, size={size}")
    modes = ("fp32",) + tuple(m for m in modes if m != "fp32")
    dev = runtime.resolve_device(device)
    torch.manual_seed(seed)
    net = models.build(model_name, num_classes, width=width)
    with torch.no_grad():  # random score layers, so that the argmax comparison is not between all-zero maps
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(net, name):
                torch.nn.init.normal_(getattr(net, name).weight, std=0.01)
    net = net.eval().to(dev)
    x = (torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255 - 128).to(dev)

    runners, first_call, predictions = {}, {}, {}
    for mode in modes:
        runners[mode] = _runner(mode, net, x)
        start = time.perf_counter()
        out = runners[mode]()
        first_call[mode] = time.perf_counter() - start
        predictions[mode] = out.float().argmax(1)
        for _ in range(max(0, warmup - 1)):
            runners[mode]()
    times = {mode: [] for mode in modes}
    for _ in tqdm(range(trials), desc=f"benchmark {model_name}", disable=not progress):
        for mode in modes:
            start = time.perf_counter()
            runners[mode]()
            times[mode].append(1000 * (time.perf_counter() - start))

    base = statistics.median(times["fp32"])
    results = {}
    for mode in modes:
        t = times[mode]
        results[mode] = {
            "description": DESCRIPTIONS[mode], "mean_ms": statistics.fmean(t), "median_ms": statistics.median(t),
            "min_ms": min(t), "std_ms": statistics.stdev(t) if len(t) > 1 else 0.0, "times_ms": t,
            "first_call_s": first_call[mode], "speedup_vs_fp32": base / statistics.median(t),
            "argmax_agreement": (predictions[mode] == predictions["fp32"]).double().mean().item(),
        }
    return {"model": model_name, "num_classes": num_classes, "width": width, "size": size, "batch": 1,
            "trials": trials, "warmup": warmup, "device": device_name(dev), "device_type": dev.type,
            "torch_version": torch.__version__, "threads": torch.get_num_threads(), "gflop": _flops(net, x) / 1e9,
            "fastest_mode": min(results, key=lambda m: results[m]["median_ms"]), "modes": results}


def write_benchmark_json(result: dict, path: str | os.PathLike) -> Path:
    """Atomically write ``result`` as indented JSON to ``path`` (parents created); returns the path."""
    return write_json(path, result, indent=2)
