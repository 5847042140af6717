"""Where a forward pass's time goes, layer by layer, for the reference and each inference mode (issue 26).

    .venv/bin/python benchmarks/bench_layers.py --size 500 --threads 2 --modes compile int8 \
        --out results/benchmark/bench_layers_fcn8s_vgg16.json

FCN-8s VGG16 at full width on one 1 x 3 x size x size input, random weights as in ``bench_forward.py``. Per
mode, ``torch.profiler`` records ``--passes`` forward passes after two untimed ones; every convolution (eager
ATen, inductor's oneDNN calls, oneDNN's int8 ones) and matrix product is named after the layer it computes:
the layers in execution order, matched by the input blob's shape (compiled graphs run them in the same
order; the final upsampler's crop window is two matrix products, counted as "unmatched"). Per layer: its
GFLOP (2 per multiply-add), milliseconds per pass, GFLOP/s and the share of the practical peak of the mode's
precision on this machine (``measure_peak``, the same threads). The rest (pooling, ReLU where not fused,
crops, copies and reorders, Python) is one line.

The bound: a mode cannot beat ``total GFLOP / peak``; the largest ratio to the reference that a precision
allows on this machine is ``reference ms / (GFLOP / peak)``, printed beside the goal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from segbench import models
from segbench.evaluation import inference
from segbench.evaluation.benchmark import CALIBRATION_INPUTS, count_flops, measure_peak
from segbench.infra import runtime
from segbench.infra.atomic import write_json
from segbench.infra.provenance import cpu_info

# Profiler op names that compute a layer: eager ATen, inductor's extern oneDNN calls, oneDNN's int8 ones.
LAYER_OPS = ("aten::mkldnn_convolution", "aten::convolution", "mkldnn::_convolution_pointwise",
             "mkldnn::_convolution_transpose_pointwise", "onednn::qconv2d_pointwise", "onednn::qconv_pointwise",
             "aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise")


def layer_table(net: nn.Module, x: torch.Tensor) -> list[dict]:
    """The net's convolutions in execution order: name, input shape (C, H, W), GFLOP of one pass."""
    rows, hooks = [], []

    def hook(name):
        def record(module, inputs, output):
            n, c, h, w = inputs[0].shape
            k = module.kernel_size[0] * module.kernel_size[1]
            pixels = output.shape[-2] * output.shape[-1] if isinstance(module, nn.Conv2d) else h * w
            flops = 2 * n * pixels * k * module.in_channels // module.groups * module.out_channels
            rows.append({"layer": name, "input": (c, h, w), "gflop": flops / 1e9})
        return record

    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(module.register_forward_hook(hook(name)))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return rows


def _events(prof) -> list:
    """Top-level layer ops (not one nested in another), in start order."""
    chosen = [e for e in prof.events() if e.name in LAYER_OPS]
    top = [e for e in chosen if not _inside(e, LAYER_OPS)]
    return sorted(top, key=lambda e: e.time_range.start)


def _inside(event, names) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def _shape(event) -> tuple | None:
    for shape in event.input_shapes:
        if len(shape) == 4:
            return tuple(shape[1:])
    return None


def profile_layers(run, x: torch.Tensor, layers: list[dict], passes: int) -> dict:
    """Milliseconds per pass of each layer and of the rest, from ``passes`` profiled calls of ``run``."""
    for _ in range(2):
        run(x)
    walls = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(passes):
            start = time.perf_counter()
            run(x)
            walls.append(time.perf_counter() - start)
    events = _events(prof)
    per_pass = len(events) // passes
    times = {row["layer"]: 0.0 for row in layers}
    unmatched = {}  # op name -> ms: a layer op whose input is not a layer's, e.g. the final upsampler's matmuls
    i = 0
    for event in events[:per_pass * passes]:
        shape = _shape(event)
        while i < len(layers) and shape is not None and tuple(layers[i]["input"]) != shape:
            i += 1
        if shape is None or i >= len(layers):
            unmatched[event.name] = unmatched.get(event.name, 0.0) + event.cpu_time_total / 1000 / passes
            i = 0 if i >= len(layers) else i
            continue
        times[layers[i]["layer"]] += event.cpu_time_total / 1000 / passes
        i = (i + 1) % len(layers)
    wall_ms = 1000 * statistics.median(walls)
    unmatched_ms = sum(unmatched.values())
    return {"wall_ms": wall_ms, "layers_ms": times, "unmatched_ms": unmatched_ms, "unmatched_ops": unmatched,
            "rest_ms": wall_ms - sum(times.values()) - unmatched_ms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["compile", "int8"], choices=inference.MODES)
    p.add_argument("--goal", type=float, default=None, help="the ratio to the reference to compare with")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    runtime.setup(threads=a.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    from reference_fcn8s import reference
    torch.manual_seed(0)
    net = models.build("fcn8s_vgg16", 21, width=1.0)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            torch.nn.init.normal_(getattr(net, name).weight, std=0.01)
    net.eval()
    ref_name, ref_class = reference()
    ref = ref_class(21)
    ref.load_state_dict(net.state_dict())
    ref.eval()
    inputs = [torch.rand(1, 3, a.size, a.size, generator=torch.Generator().manual_seed(k)) * 255 - 128
              for k in range(CALIBRATION_INPUTS + 1)]
    x, calibration = inputs[0], inputs[1:]
    gflop = count_flops(net, x) / 1e9
    cpu = cpu_info()
    print(f"CPU: {cpu['name']}; flags {' '.join(cpu['cpu_flags'])}; {torch.get_num_threads()} threads; FCN-8s VGG16 "
          f"full width at {a.size}x{a.size}: {gflop:.1f} GFLOP (ours), reference: {ref_name}", flush=True)
    runs = {"reference fp32": (inference.prepare(ref, "fp32", x), layer_table(ref, x), "fp32")}
    for mode in a.modes:
        runs[mode] = (inference.prepare(net, mode, x, calibration=calibration), layer_table(net, x),
                      inference.PRECISION[mode])
    peaks = {prec: measure_peak(torch.device("cpu"), prec)["gflops_per_s"]
             for prec in dict.fromkeys(r[2] for r in runs.values())}
    print("practical peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    results = {}
    for key, (run, layers, prec) in runs.items():
        with torch.no_grad():
            measured = profile_layers(run, x, layers, a.passes)
        results[key] = {"precision": prec, "peak_gflops_per_s": peaks[prec], **measured,
                        "layers": [{**row, "ms": measured["layers_ms"][row["layer"]]} for row in layers]}
        print(f"{key}: {measured['wall_ms']:.0f} ms per pass (profiled)", flush=True)
    ref_ms = results["reference fp32"]["wall_ms"]
    print(f"\n{'layer':<16}{'GFLOP':>7}" + "".join(f"{k[:14]:>16}{'GF/s':>6}{'%pk':>5}" for k in results))
    names = list(dict.fromkeys(r["layer"] for res in results.values() for r in res["layers"]))
    for name in names:
        line = f"{name:<16}"
        first = next(r for res in results.values() for r in res["layers"] if r["layer"] == name)
        line += f"{first['gflop']:>7.2f}"
        for res in results.values():
            row = next((r for r in res["layers"] if r["layer"] == name), None)
            if row is None or row["ms"] == 0:
                line += f"{'-':>16}{'':>6}{'':>5}"
                continue
            rate = row["gflop"] / row["ms"] * 1000
            line += f"{row['ms']:>14.1f}ms{rate:>6.0f}{100 * rate / res['peak_gflops_per_s']:>4.0f}%"
        print(line)
    for what in ("unmatched_ms", "rest_ms", "wall_ms"):
        print(f"{what[:-3]:<23}" + "".join(f"{res[what]:>14.1f}ms{'':>11}" for res in results.values()))
    print()
    for key, res in results.items():
        bound = gflop / res["peak_gflops_per_s"] * 1000
        res.update(ratio_vs_reference=ref_ms / res["wall_ms"], bound_ms=bound, bound_ratio=ref_ms / bound)
        print(f"{key}: {ref_ms / res['wall_ms']:.2f}x the reference; at its precision's peak "
              f"({res['peak_gflops_per_s']:.0f} GFLOP/s) {gflop:.1f} GFLOP take at least {bound:.0f} ms, "
              f"so at most {ref_ms / bound:.2f}x" + (f" (goal {a.goal}x)" if a.goal else ""))
    if a.out:
        print("wrote", write_json(a.out, {"cpu": cpu["name"], "cpu_flags": cpu["cpu_flags"], "size": a.size,
                                          "threads": torch.get_num_threads(), "gflop": gflop,
                                          "reference": ref_name, "modes": results}, indent=2))


if __name__ == "__main__":
    main()
