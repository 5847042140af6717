"""A training step of each net of the embedded default against the core's measured peak, and the fixed cost
of a training job, on one thread as the workflow's training jobs run.

    python benchmarks/bench_train_step.py [--steps 6] [--size 128] [--batch 4] [--out results/benchmark/train_step.json]

Per net (its default width, the configuration's dropout rate as the workflow's training jobs set it,
``--size``-pixel images, batch ``--batch``, channels-last, the precision that ``precision: auto`` resolves to on
this CPU): the FLOPs of one step (forward, backward and the auxiliary
heads, counted by ``torch.utils.flop_counter`` on the same step; 2 per multiply-add), the median seconds of
``--steps`` steps after one untimed step, the achieved GFLOP/s and its share of the core's practical peak in
that precision (``segbench.evaluation.benchmark.measure_peak``: the best of a large matmul and a large 3x3
convolution, measured in this process on one thread). The first step's extra seconds over the median (oneDNN
primitive creation, allocator warm-up) are the in-process part of a job's fixed cost.

The rest of the fixed cost is paid before the first step, in a fresh interpreter: starting Python, importing
torch, importing segbench's training code. Those are timed in subprocesses (the median of three), so that
nothing this process already imported hides them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from segbench import models
from segbench.evaluation import objective
from segbench.evaluation.benchmark import measure_peak
from segbench.infra import precision, runtime
from segbench.infra.atomic import write_json
from segbench.infra.provenance import cpu_info
from segbench.training import optimizers

# The architectures the embedded default trains (Tables 1-5, Figure 5 and its successors' rows); the NYUDv2 and
# SIFT Flow nets are these with other inputs and heads.
NETS = ("fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn32s_alexnet", "fcn32s_googlenet", "unet_vgg16",
        "deeplab_largefov_vgg16", "deeplab_aspp_vgg16", "icnet_resnet50")
_FIRST_STEP = ("import torch{imp}\nnet = torch.nn.Linear(3, 2)\nopt = {cls}(net.parameters(), lr=0.1, momentum=0.9)\n"
               "net(torch.ones(1, 3)).sum().backward()\nopt.step()")
FIXED_COST_STEPS = {
    "interpreter": "pass",
    "import torch": "import torch",
    "import segbench training": "import segbench.training.train, segbench.models",
    # torch.optim imports TorchDynamo at the first step (segbench.training.optimizers avoids it)
    "import torch, torch.optim.SGD's first step": _FIRST_STEP.format(imp="", cls="torch.optim.SGD"),
    "import torch, segbench's SGD's first step": _FIRST_STEP.format(
        imp="\nfrom segbench.training import optimizers", cls="optimizers.SGD"),
}


def default_widths(config: Path) -> dict[str, float]:
    """``models.width`` of the configuration: width family -> channel multiplier."""
    return yaml.safe_load(config.read_text())["models"]["width"]


def default_dropout(config: Path) -> float | None:
    """``models.dropout`` of the configuration: the rate the training jobs give every dropout layer (None: the
    architecture's own)."""
    return yaml.safe_load(config.read_text())["models"].get("dropout")


def _net(name: str, width: float, num_classes: int, dropout: float | None = None) -> torch.nn.Module:
    """``name`` as a training job builds it: in training mode, with ``dropout`` set as ``train.initialise`` sets
    it (dropout's random masks cost as much as a convolution in some nets: UNet++ at the default's width spends a
    quarter of its step drawing them at the architecture's 0.5), channels-last."""
    net = models.build(name, num_classes, width=width).train()
    if dropout is not None:
        models.set_dropout(net, dropout)
    return net.to(memory_format=torch.channels_last)


def _step(net, optimizer, x, y, heads, ctx) -> None:
    loss = objective.training_loss(net, x, y, heads, reduction="mean", autocast=ctx)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_flops(name: str, width: float, *, size: int, batch: int, num_classes: int = 21) -> int:
    """FLOPs of one training step (forward with the auxiliary heads, loss, backward) of ``name``."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    net = _net(name, width, num_classes)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = {"label": torch.randint(0, num_classes, (batch, size, size))}
    with FlopCounterMode(display=False) as counter:
        loss = objective.training_loss(net, x, y, {"label": num_classes}, reduction="mean")
        loss.backward()
    return counter.get_total_flops()


def time_steps(name: str, width: float, prec: str, *, size: int, batch: int, steps: int,
               num_classes: int = 21, dropout: float | None = None) -> dict:
    """Build seconds, first-step seconds and the median of ``steps`` later steps of ``name`` (``dropout``: the
    rate of its dropout layers, None keeps the architecture's)."""
    torch.manual_seed(0)
    start = time.perf_counter()
    net = _net(name, width, num_classes, dropout)
    build_s = time.perf_counter() - start
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = optimizers.SGD(params, lr=1e-6, momentum=0.9)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = {"label": torch.randint(0, num_classes, (batch, size, size))}
    heads = {"label": num_classes}
    ctx = precision.autocast(prec, torch.device("cpu"))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        _step(net, optimizer, x, y, heads, ctx)
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    return {"build_s": build_s, "first_step_s": times[0], "median_step_s": median,
            "first_step_extra_s": times[0] - median}


def subprocess_seconds(code: str, repeats: int = 3) -> float:
    """Median wall seconds of ``python -c code`` in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--precision", default="auto", choices=precision.PRECISIONS)
    p.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=sorted(models.MODELS), metavar="NET")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    a = p.parse_args()
    runtime.setup(threads=1)
    prec = precision.resolve(a.precision, torch.device("cpu"))
    cpu = cpu_info()
    widths, dropout = default_widths(a.config), default_dropout(a.config)
    rate = "the architecture's" if dropout is None else dropout
    print(f"CPU: {cpu['name']}; flags {' '.join(cpu['cpu_flags']) or 'none of interest'}; precision {a.precision} "
          f"-> {prec}; 1 thread; {a.size} px, batch {a.batch}; dropout {rate}", flush=True)
    peak = measure_peak(torch.device("cpu"), "bf16" if prec == "bf16" else "fp32")
    print(f"practical peak of one core in {prec}: {peak['gflops_per_s']:.1f} GFLOP/s", flush=True)
    rows = {}
    print(f"{'net':<26}{'width':>6}{'GFLOP':>8}{'step s':>8}{'GFLOP/s':>9}{'of peak':>9}{'build s':>9}"
          f"{'1st extra s':>12}")
    for name in a.nets:
        width = widths[models.family_of(name)]
        gflop = step_flops(name, width, size=a.size, batch=a.batch) / 1e9
        t = time_steps(name, width, prec, size=a.size, batch=a.batch, steps=a.steps, dropout=dropout)
        achieved = gflop / t["median_step_s"]
        rows[name] = {"width": width, "gflop_per_step": gflop, **t, "gflops_per_s": achieved,
                      "peak_fraction": achieved / peak["gflops_per_s"]}
        print(f"{name:<26}{width:>6}{gflop:>8.2f}{t['median_step_s']:>8.3f}{achieved:>9.1f}"
              f"{100 * rows[name]['peak_fraction']:>8.0f}%{t['build_s']:>9.2f}{t['first_step_extra_s']:>12.2f}",
              flush=True)
    fixed = {what: subprocess_seconds(code) for what, code in FIXED_COST_STEPS.items()}
    print("fixed cost before the first step (fresh interpreter, median of 3): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in fixed.items()))
    result = {"cpu": cpu["name"], "cpu_flags": cpu["cpu_flags"], "precision": prec, "threads": 1, "size": a.size,
              "batch": a.batch, "steps": a.steps, "dropout": dropout, "peak": peak, "nets": rows, "fixed_cost_s": fixed}
    if a.out:
        print("wrote", write_json(a.out, result, indent=2))


if __name__ == "__main__":
    main()
