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

How close to the machine's limit: the forward pass's FLOPs are counted once (:func:`count_flops`), each
mode's median time turns them into achieved GFLOP/s, and that is divided by the practical peak of the same
device in the mode's precision (fp32 for ``fp32``/``channels_last``, bf16 for ``bf16``/``compile``), which
the benchmark measures itself with a large convolution and a large matmul (:func:`measure_peak`, well under
a second each). On CUDA "fp32" convolutions run as TF32 when cuDNN allows it (PyTorch's default), and so
does the convolution probe, so the fraction compares like with like. bf16 modes keep the upsamplers in
fp32, so their fraction slightly understates the bf16 trunk's.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from segbench import models
from segbench.infra import cpuinfo, runtime
from segbench.infra.atomic import write_json
from segbench.infra.cpuinfo import CPU_FLAGS
from segbench.infra.progress import progress_bar
from segbench.models.cards import count_flops

MODES = ("fp32", "channels_last", "bf16", "compile")
PRECISION = {"fp32": "fp32", "channels_last": "fp32", "bf16": "bf16", "compile": "bf16"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FLOPS_COUNTED = ("torch.utils.flop_counter.FlopCounterMode on the fp32 model and the timed input, one forward "
                 "pass on the meta device: convolutions (grouped and transposed ones too, so the bilinear "
                 "upsamplers) and matrix products at 2 FLOP per multiply-add; ReLU, pooling, dropout, crops and "
                 "additions not counted")
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
    return cpuinfo.read()[0]


def instruction_sets(device: torch.device, proc_cpuinfo: str | None = None) -> list[str]:
    """What decides the peak of ``device``: its CUDA compute capability (``sm_90``), or the ``CPU_FLAGS``
    found in ``proc_cpuinfo`` (the text of /proc/cpuinfo, read when None; empty where there is none)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return [f"sm_{major}{minor}"]
    flags = cpuinfo.cpu_flags() if proc_cpuinfo is None else cpuinfo.parse(proc_cpuinfo)[1]
    return [flag for flag in CPU_FLAGS if flag in flags]


def _probes(device: torch.device, dtype: torch.dtype) -> dict:
    """The peak probes: name -> (description, zero-argument callable, FLOPs per call). Sized to keep a GPU busy
    for about a millisecond per call and a 2-core CPU for tens of milliseconds."""
    n, batch = (8192, 16) if device.type == "cuda" else (2048, 1)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    conv = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 512, 64, 64, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    name = str(dtype).removeprefix("torch.")
    return {
        "matmul": (f"{name} matmul {n}x{n}x{n}", lambda: torch.mm(a, b), 2.0 * n ** 3),
        "conv3x3": (f"{name} Conv2d 512->512 3x3 on {batch}x512x64x64, channels_last", lambda: conv(x),
                    2.0 * batch * 512 * 512 * 9 * 64 * 64),
    }


def measure_peak(device: torch.device, precision: str, *, seconds: float = 0.4) -> dict:
    """The practical peak of ``device`` in ``precision`` ("fp32" or "bf16"): the best of a large matmul and a
    large 3x3 convolution (512 channels at 64x64, channels_last), each run once untimed, then for about
    ``seconds`` (at least twice), its fastest call kept. Returns ``{"gflops_per_s", "probes": {name:
    {"description", "gflop", "best_ms", "gflops_per_s", "calls"}}}``."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    probes = {}
    with torch.no_grad():
        for name, (description, fn, flops) in _probes(device, DTYPES[precision]).items():
            times = []
            fn()
            deadline = time.perf_counter() + seconds
            while len(times) < 2 or time.perf_counter() < deadline:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            probes[name] = {"description": description, "gflop": flops / 1e9, "best_ms": 1000 * min(times),
                            "calls": len(times), "gflops_per_s": flops / 1e9 / min(times)}
    return {"gflops_per_s": max(p["gflops_per_s"] for p in probes.values()), "probes": probes}


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


def argmax_agreement(prediction: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of pixels where two N x H x W argmax maps agree."""
    if prediction.shape != reference.shape:
        raise ValueError(f"argmax maps differ in shape: {tuple(prediction.shape)} vs {tuple(reference.shape)}")
    return (prediction == reference).double().mean().item()


def run_benchmark(model_name: str, *, num_classes: int = 21, width: float = 1.0, size: int = 500, trials: int = 20,
                  warmup: int = 2, modes: tuple[str, ...] = MODES, device: str = "auto", seed: int = 0,
                  probe_seconds: float = 0.4, progress: bool = True) -> dict:
    """Time ``trials`` forward passes of ``model_name`` on one 1 x 3 x size x size input per mode, after
    ``warmup`` untimed ones (with 0, the first call is the first trial).

    Returns ``{"model", "num_classes", "width", "size", "batch", "trials", "warmup", "device",
    "device_type", "torch_version", "threads", "gflop", "flops_counted", "instruction_sets", "peak":
    {precision: measure_peak(...)}, "fastest_mode", "modes": {mode: {"description", "mean_ms", "median_ms",
    "min_ms", "std_ms", "times_ms", "first_call_s", "speedup_vs_fp32" (fp32 median / mode median),
    "argmax_agreement" (fraction of pixels whose argmax equals fp32's), "precision", "gflops_per_s" (gflop
    / median), "peak_fraction" (gflops_per_s / the peak of its precision)}}}``. The peaks are measured after
    the timed trials, for the precisions of ``modes``, about ``probe_seconds`` per probe.
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
    first_timed = warmup == 0  # no warm-up: the first call is the first trial
    times = {mode: [1000 * first_call[mode]] if first_timed else [] for mode in modes}
    for _ in progress_bar(range(trials - first_timed), desc=f"benchmark {model_name}", disable=not progress):
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
            "argmax_agreement": argmax_agreement(predictions[mode], predictions["fp32"]),
        }
    gflop = count_flops(net, x) / 1e9
    peak = {precision: measure_peak(dev, precision, seconds=probe_seconds)
            for precision in dict.fromkeys(PRECISION[mode] for mode in modes)}
    for mode, stats in results.items():
        achieved = gflop / (stats["median_ms"] / 1000)
        stats.update(precision=PRECISION[mode], gflops_per_s=achieved,
                     peak_fraction=achieved / peak[PRECISION[mode]]["gflops_per_s"])
    extra = {"cuda_tf32_conv": torch.backends.cudnn.allow_tf32} if dev.type == "cuda" else {}
    return {"model": model_name, "num_classes": num_classes, "width": width, "size": size, "batch": 1,
            "trials": trials, "warmup": warmup, "device": device_name(dev), "device_type": dev.type,
            "torch_version": torch.__version__, "threads": torch.get_num_threads(), "gflop": gflop,
            "flops_counted": FLOPS_COUNTED, "instruction_sets": instruction_sets(dev), **extra, "peak": peak,
            "fastest_mode": min(results, key=lambda m: results[m]["median_ms"]), "modes": results}


def write_benchmark_json(result: dict, path: str | os.PathLike) -> Path:
    """Atomically write ``result`` as indented JSON to ``path`` (parents created); returns the path."""
    return write_json(path, result, indent=2)
