"""Forward-time benchmark (Table 1's "forward time": mean of 20 trials on a 500x500 input, batch 1).

The modes are ``segbench.evaluation.inference``'s, all under ``torch.no_grad`` in eval mode on the same random
input: ``fp32`` (eager, NCHW: the baseline, always measured), ``channels_last``, ``bf16`` (autocast,
channels-last), ``compile`` (inductor with frozen weights, bf16 autocast), ``compile_fp32`` (the same in
float32, channels-last) and ``int8`` (static post-training quantization through PT2E and torchao's x86
quantizer, compiled with freezing; calibrated on a few random inputs like the timed one, since the weights
are random too). ``auto`` stands for the modes this device's instruction set makes worth timing
(``inference.candidates``: no bf16 where it is emulated, int8 only with VNNI or AMX); the result's
``chosen_mode`` is the fastest measured candidate whose argmax agrees with fp32's on at least 99% of the
pixels, and ``why`` records the CPU flags, the candidates' median times and why the other modes were left out.

Trials are interleaved round-robin across modes so that contention on a shared machine hits every mode
alike. Weights are random (the score layers too, so predictions are not trivially all-zero); each mode's
argmax prediction is compared with fp32's (random weights give many near ties, so agreement is lower than on
a trained net). The large upsamplers run in float32 in every mode (``BilinearUpsample``). A reference
implementation (``reference``: a builder of, say, pytorch-fcn's FCN8s) is timed in the same round-robin in
eager fp32 with the benchmarked net's weights, and every mode's ``ratio_vs_reference`` is its median over
the mode's.

How close to the machine's limit: the forward pass's FLOPs are counted once (:func:`count_flops`), each
mode's median time turns them into achieved GFLOP/s, and that is divided by the practical peak of the same
device in the mode's precision (fp32 for ``fp32``/``channels_last``/``compile_fp32``, bf16 for
``bf16``/``compile``, int8 for ``int8``), which the benchmark measures itself with a large convolution and a
large matmul (:func:`measure_peak`, well under a second each; the int8 ones are oneDNN's uint8 x int8
convolution and ``torch._int_mm``). On CUDA "fp32" convolutions run as TF32 when cuDNN allows it
(PyTorch's default), and so does the convolution probe, so the fraction compares like with like. Modes below
fp32 keep the upsamplers in fp32, so their fraction slightly understates their trunk's.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from segbench import models
from segbench.evaluation import inference
from segbench.evaluation.inference import DESCRIPTIONS, MODES, PRECISION
from segbench.infra import cpuinfo, runtime
from segbench.infra.atomic import write_json
from segbench.infra.cpuinfo import CPU_FLAGS
from segbench.infra.progress import progress_bar
from segbench.models.cards import count_flops

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
FLOPS_COUNTED = ("torch.utils.flop_counter.FlopCounterMode on the fp32 model and the timed input, one forward "
                 "pass on the meta device: convolutions (grouped and transposed ones too, so the bilinear "
                 "upsamplers) and matrix products at 2 FLOP per multiply-add; ReLU, pooling, dropout, crops and "
                 "additions not counted")
SELECTIONS = (*MODES, "auto")  # what ``modes`` may name
CALIBRATION_INPUTS = 4  # random inputs like the timed one that calibrate int8's activation scales


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
    for about a millisecond per call and a 2-core CPU for tens of milliseconds. int8 (CPU only): ``torch._int_mm``
    and oneDNN's quantized convolution (uint8 activations, int8 weights, the kernels of the int8 mode)."""
    n, batch = (8192, 16) if device.type == "cuda" else (2048, 1)
    conv_flops = 2.0 * batch * 512 * 512 * 9 * 64 * 64
    if dtype == torch.int8:
        return _int8_probes(n, conv_flops)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    conv = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 512, 64, 64, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    name = str(dtype).removeprefix("torch.")
    return {
        "matmul": (f"{name} matmul {n}x{n}x{n}", lambda: torch.mm(a, b), 2.0 * n ** 3),
        "conv3x3": (f"{name} Conv2d 512->512 3x3 on {batch}x512x64x64, channels_last", lambda: conv(x), conv_flops),
    }


def _int8_probes(n: int, conv_flops: float) -> dict:
    a, b = (torch.randint(-128, 128, (n, n), dtype=torch.int8) for _ in range(2))
    x = torch.randint(0, 256, (1, 512, 64, 64), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    w = torch.randint(-127, 128, (512, 512, 3, 3), dtype=torch.int8)
    w_scale, w_zero = torch.full((512,), 0.01), torch.zeros(512, dtype=torch.int64)
    packed = torch.ops.onednn.qconv_prepack(w, w_scale, 0.1, 0, [1, 1], [1, 1], [1, 1], 1, (1, 512, 64, 64))

    def conv():
        return torch.ops.onednn.qconv_pointwise(x, 0.1, 0, packed, w_scale, w_zero, None, [1, 1], [1, 1], [1, 1], 1,
                                                 0.1, 0, torch.uint8, "none", [], "")
    return {
        "matmul": (f"int8 matmul {n}x{n}x{n} (torch._int_mm, int32 accumulation)", lambda: torch._int_mm(a, b),
                   2.0 * n ** 3),
        "conv3x3": ("int8 oneDNN qconv 512->512 3x3 on 1x512x64x64 uint8, channels_last", conv, conv_flops),
    }


def measure_peak(device: torch.device, precision: str, *, seconds: float = 0.4) -> dict:
    """The practical peak of ``device`` in ``precision`` ("fp32", "bf16", or "int8" on a CPU): the best of a large
    matmul and a large 3x3 convolution (512 channels at 64x64, channels_last), each run once untimed, then for about
    ``seconds`` (at least twice), its fastest call kept. Returns ``{"gflops_per_s", "probes": {name:
    {"description", "gflop", "best_ms", "gflops_per_s", "calls"}}}``."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"the int8 peak is measured on a CPU only, got device {device.type!r}")
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


def argmax_agreement(prediction: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of pixels where two N x H x W argmax maps agree."""
    if prediction.shape != reference.shape:
        raise ValueError(f"argmax maps differ in shape: {tuple(prediction.shape)} vs {tuple(reference.shape)}")
    return (prediction == reference).double().mean().item()


def choose_mode(modes: dict, allowed: list[str], excluded: dict[str, str] | None = None,
                flags: list[str] | None = None) -> tuple[str, dict]:
    """The fastest of the measured ``modes`` (``{mode: {"median_ms", "argmax_agreement"}}``, or ``{"error"}``
    for one that could not run) that ``allowed`` names and whose agreement is usable (``inference.usable``), and
    why: ``{"rule", "flags", "candidates": {mode: median ms}, "excluded": {mode: reason}}``; ``excluded`` starts
    from the instruction set's exclusions (``inference.candidates``). fp32 is always measured and usable, so
    there is always a choice."""
    excluded = dict(excluded or {})  # left out by the instruction set, measured or not
    timed = {}
    for mode, stats in modes.items():
        if mode not in allowed:
            excluded.setdefault(mode, "not a candidate on this device")
        elif "error" in stats:
            excluded[mode] = stats["error"]
        elif not inference.usable(stats["argmax_agreement"]):
            excluded[mode] = (f"argmax agreement with fp32 {stats['argmax_agreement']:.4f} below "
                              f"{inference.MIN_AGREEMENT}")
        else:
            timed[mode] = stats["median_ms"]
    chosen = min(timed, key=timed.get)
    return chosen, {"rule": f"fastest median among the measured candidates whose argmax agrees with fp32's on at "
                            f"least {inference.MIN_AGREEMENT:.0%} of the pixels",
                    "flags": list(flags or []), "candidates": timed, "excluded": excluded}


def _failure(mode: str, error: Exception) -> str:
    """Why ``mode`` could not run: an ``UnusableMode`` of any mode, or any error of int8 (whose export,
    quantization and compilation are young); other errors propagate."""
    if isinstance(error, inference.UnusableMode):
        return str(error)
    if mode != "int8":
        raise error
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:500]


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_benchmark(model_name: str, *, num_classes: int = 21, width: float = 1.0, size: int = 500, trials: int = 20,
                  warmup: int = 2, modes: tuple[str, ...] = MODES, device: str = "auto", seed: int = 0,
                  probe_seconds: float = 0.4, progress: bool = True,
                  reference: tuple[str, Callable[[int], torch.nn.Module]] | None = None,
                  flags: set[str] | None = None, model_options: dict | None = None) -> dict:
    """Time ``trials`` forward passes of ``model_name`` on one 1 x 3 x size x size input per mode, after
    ``warmup`` untimed ones (with 0, the first call is the first trial). ``modes`` among ``SELECTIONS``;
    ``auto`` adds every candidate of the device (``inference.candidates``, from the CPU ``flags``, this CPU's
    when None). ``reference``: (name, builder of an nn.Module from the class count) timed alike in eager fp32
    with this net's weights (its state dict keys must match). ``model_options``: the model's declared options,
    those of stage "build" given to ``models.build`` and those of stage "evaluate" applied as evaluation applies
    them (``models.for_evaluation``: UNet++'s ``prune``, say); the result records them.

    Returns ``{"model", "num_classes", "width", "size", "batch", "trials", "warmup", "device",
    "device_type", "torch_version", "threads", "gflop", "flops_counted", "instruction_sets", "peak":
    {precision: measure_peak(...)}, "fastest_mode", "chosen_mode", "why" (``choose_mode``), "reference"
    (None, or its name, times and argmax agreement), "modes": {mode: {"description", "mean_ms", "median_ms",
    "min_ms", "std_ms", "times_ms", "prepare_s" (export and calibration), "first_call_s" (with compilation),
    "speedup_vs_fp32" (fp32 median / mode median), "ratio_vs_reference" (reference median / mode median, None
    without one), "argmax_agreement" (fraction of pixels whose argmax equals fp32's), "usable" (agreement at
    least 99%), "precision", "gflops_per_s" (gflop / median), "peak_fraction" (gflops_per_s / the peak of its
    precision)}}}`` and, with ``model_options``, "model_options"; a mode that could not run (an int8 net whose
    shapes changed, say) has only ``description``, ``precision``, ``usable`` (False) and ``error``. The peaks
    are measured after the timed trials, for the precisions of the timed modes, about ``probe_seconds`` per
    probe.
    """
    unknown = [m for m in modes if m not in SELECTIONS]
    if unknown or trials < 1 or warmup < 0 or size < 1:
        raise ValueError(f"need modes among {SELECTIONS}, trials >= 1, warmup >= 0, size >= 1; got modes={modes}, "
                         f"trials={trials}, warmup={warmup}, size={size}")
    dev = runtime.resolve_device(device)
    given, flags = flags, (cpuinfo.cpu_flags() if flags is None else set(flags)) if dev.type == "cpu" else set()
    allowed, excluded = inference.candidates(dev, flags)
    wanted = [m for m in modes if m != "auto"] + (allowed if "auto" in modes else [])
    modes = ("fp32",) + tuple(dict.fromkeys(m for m in wanted if m != "fp32"))
    torch.manual_seed(seed)
    options = dict(model_options or {})
    build_options = models.declared(model_name).split_options(options)["build"]
    built = models.build(model_name, num_classes, width=width, **build_options)
    with torch.no_grad():  # random score layers, so that the argmax comparison is not between all-zero maps
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(built, name):
                torch.nn.init.normal_(getattr(built, name).weight, std=0.01)
    built = built.eval().to(dev)
    record = {"name": model_name, "num_classes": num_classes, "width": width, "options": build_options}
    net = models.for_evaluation(built, record, options).eval()
    inputs = [(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed + k)) * 255 - 128).to(dev)
              for k in range(CALIBRATION_INPUTS + 1)]
    x, calibration = inputs[0], inputs[1:]

    runners, prepare_s, first_call, predictions, failed = {}, {}, {}, {}, {}
    if reference is not None:
        ref_net = reference[1](num_classes)
        ref_net.load_state_dict(built.state_dict())
        ref_net = ref_net.eval().to(dev)
        ref_run = inference.prepare(ref_net, "fp32", x)
        runners["reference"] = lambda: ref_run(x)
    for mode in modes:
        try:
            run, prepare_s[mode] = _timed(lambda: inference.prepare(net, mode, x, calibration=calibration))
        except Exception as e:  # noqa: BLE001 - an int8 net torch cannot export or quantize is reported, not fatal
            failed[mode] = _failure(mode, e)
            continue
        runners[mode] = lambda run=run: run(x)
    for key in list(runners):
        try:
            out, first_call[key] = _timed(runners[key])
        except Exception as e:  # noqa: BLE001 - as above: the first int8 call compiles and checks the shapes
            failed[key] = _failure(key, e)
            del runners[key]
            continue
        if dev.type == "cuda":
            torch.cuda.synchronize()
        predictions[key] = out.float().argmax(1)
        for _ in range(max(0, warmup - 1)):
            runners[key]()
    first_timed = warmup == 0  # no warm-up: the first call is the first trial
    times = {key: [1000 * first_call[key]] if first_timed else [] for key in runners}
    for _ in progress_bar(range(trials - first_timed), desc=f"benchmark {model_name}", disable=not progress):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(1000 * (time.perf_counter() - start))

    base = statistics.median(times["fp32"])
    ref_ms = statistics.median(times["reference"]) if reference is not None else None
    results = {}
    for mode in modes:
        if mode in failed:
            results[mode] = {"description": DESCRIPTIONS[mode], "precision": PRECISION[mode], "usable": False,
                             "error": failed[mode]}
            continue
        t = times[mode]
        agreement = argmax_agreement(predictions[mode], predictions["fp32"])
        results[mode] = {
            "description": DESCRIPTIONS[mode], "mean_ms": statistics.fmean(t), "median_ms": statistics.median(t),
            "min_ms": min(t), "std_ms": statistics.stdev(t) if len(t) > 1 else 0.0, "times_ms": t,
            "prepare_s": prepare_s[mode], "first_call_s": first_call[mode],
            "speedup_vs_fp32": base / statistics.median(t),
            "ratio_vs_reference": ref_ms / statistics.median(t) if ref_ms else None,
            "argmax_agreement": agreement, "usable": inference.usable(agreement),
        }
    gflop = count_flops(net, x) / 1e9
    timed = [m for m in modes if m not in failed]
    peak = {precision: measure_peak(dev, precision, seconds=probe_seconds)
            for precision in dict.fromkeys(PRECISION[mode] for mode in timed)}
    for mode in timed:
        stats = results[mode]
        achieved = gflop / (stats["median_ms"] / 1000)
        stats.update(precision=PRECISION[mode], gflops_per_s=achieved,
                     peak_fraction=achieved / peak[PRECISION[mode]]["gflops_per_s"])
    sets = instruction_sets(dev) if given is None or dev.type != "cpu" else [f for f in CPU_FLAGS if f in flags]
    shown = sets + sorted((set(inference.INT8_CPU_FLAGS) & flags) - set(sets))
    chosen, why = choose_mode(results, allowed, excluded, shown)
    ref = None
    if reference is not None:
        t = times["reference"]
        ref = {"name": reference[0], "description": "eager float32, NCHW, the benchmarked net's weights",
               "mean_ms": statistics.fmean(t), "median_ms": ref_ms, "min_ms": min(t), "times_ms": t,
               "first_call_s": first_call["reference"], "speedup_vs_fp32": base / ref_ms,
               "argmax_agreement": argmax_agreement(predictions["reference"], predictions["fp32"])}
    extra = {"cuda_tf32_conv": torch.backends.cudnn.allow_tf32} if dev.type == "cuda" else {}
    return {"model": model_name, "num_classes": num_classes, "width": width, "size": size, "batch": 1,
            "trials": trials, "warmup": warmup, "device": device_name(dev), "device_type": dev.type,
            "torch_version": torch.__version__, "threads": torch.get_num_threads(), "gflop": gflop,
            "flops_counted": FLOPS_COUNTED, "instruction_sets": sets, **extra, "peak": peak,
            "fastest_mode": min(timed, key=lambda m: results[m]["median_ms"]), "chosen_mode": chosen, "why": why,
            "calibration": f"int8: {CALIBRATION_INPUTS} random inputs like the timed one" if "int8" in modes else None,
            "reference": ref, "modes": results, **({"model_options": options} if options else {})}


def write_benchmark_json(result: dict, path: str | os.PathLike) -> Path:
    """Atomically write ``result`` as indented JSON to ``path`` (parents created); returns the path."""
    return write_json(path, result, indent=2)
