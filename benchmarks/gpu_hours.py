"""GPU hours of every job of the paper configuration, estimated from FLOPs: the tables of docs/cluster.md.

    PYTHONPATH=src python benchmarks/gpu_hours.py [--gpu a100|h100] [--fraction-tf32 0.40] [--fraction-bf16 0.35]

Method (every figure below except the FLOP counts is an estimate):

1. The jobs are those of ``snakemake --dry-run --forceall --printshellcmds --configfile config/config.yaml
   config/paper.yaml``, with each job's resources and its ``segbench`` command line (model, mode, iterations,
   batch size, sampling rate, validation interval, benchmark trials and modes).
2. FLOPs per image are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOP per multiply-add;
   convolutions, transposed convolutions and matmuls) on the full-width nets at the real image sizes, with
   fake tensors (shapes only, nothing computed): a forward pass, and a training step as ``segbench train``
   takes it (forward, summed cross-entropy, gradients of every parameter that learns; about 3x the forward,
   and 1x for FCN-32s-fixed, whose gradient stops at ``score_fr``). VOC: 500 x 375 (SBD's typical size; no
   image exceeds 500 x 500), NYUD 425 x 560, SIFT Flow 256 x 256.
3. A job's FLOPs: iterations x images per iteration (batch / p: loss sampling does not cut compute) x
   training step, plus its validations (every ``val_every`` iterations and at the end, 736 seg11valid images)
   x forward; evaluation 736 forwards; the benchmark (trials + warmup) x modes forwards at its size.
4. GPU hours = FLOPs / (fraction x the GPU's dense tensor-core peak): TF32 for float32 training (cuDNN runs
   float32 convolutions as TF32 by default on Ampere and later), bf16 for mixed precision. The benchmark's
   fp32 modes count at the TF32 rate, its bf16 modes at the bf16 rate, in both columns.
"""

import argparse
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from segbench import models, recipes
from segbench.data.voc import PUBLISHED_COUNTS
from segbench.models.surgery import freeze_trunk

ROOT = Path(__file__).resolve().parents[1]
# Dense tensor-core peaks in TFLOP/s (NVIDIA data sheets; the "with sparsity" figures are twice these).
GPUS = {"a100": ("NVIDIA A100 SXM4", {"tf32": 156.0, "bf16": 312.0}),
        "h100": ("NVIDIA H100 SXM5", {"tf32": 494.7, "bf16": 989.4})}
FRACTIONS = {"tf32": 0.40, "bf16": 0.35}  # assumed share of the peak achieved; see docs/cluster.md
SIZES = {"voc": (375, 500, 21), "nyud": (425, 560, 40), "siftflow": (256, 256, 33)}  # H, W, classes
VAL_IMAGES = PUBLISHED_COUNTS["val"]  # seg11valid
BENCHMARK_PRECISION = {"fp32": "tf32", "channels_last": "tf32", "bf16": "bf16", "compile": "bf16"}


@cache
def _net(model: str, num_classes: int, step: str) -> torch.nn.Module:
    net = models.build(model, num_classes)
    return freeze_trunk(net) if step == "fixed" else net


@cache
def _count(model: str, height: int, width: int, num_classes: int, step: str) -> tuple[float, int, int]:
    """(FLOPs, bytes kept for the backward pass, bytes of parameters) of one image; ``step`` is "forward",
    "train" (every parameter learns) or "fixed" (only score_fr learns)."""
    net = _net(model, num_classes, "fixed" if step == "fixed" else "train")
    mode = FakeTensorMode()
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    fake = {k: mode.from_tensor(v).requires_grad_(v.requires_grad) if v.is_floating_point() else mode.from_tensor(v)
            for k, v in state.items()}
    own = {p.untyped_storage()._cdata for p in fake.values()}
    kept: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:  # every tensor autograd saves, once per storage, parameters aside
        if t.untyped_storage()._cdata not in own:
            kept[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    with mode, FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        x = torch.zeros(1, 3, height, width)
        if step == "forward":
            with torch.no_grad():
                torch.func.functional_call(net.eval(), fake, (x,))
        else:
            out = torch.func.functional_call(net.train(), fake, (x,))
            loss = F.cross_entropy(out, torch.zeros(1, height, width, dtype=torch.long), reduction="sum")
            torch.autograd.grad(loss, [p for p in fake.values() if p.requires_grad])
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    return float(counter.get_total_flops()), sum(kept.values()), params


def flops(model: str, height: int, width: int, num_classes: int, step: str) -> float:
    """FLOPs of one image (see :func:`_count`)."""
    return _count(model, height, width, num_classes, step)[0]


def train_memory_gb(model: str, step: str, images: int) -> float:
    """Estimated GPU memory of a float32 training step on ``images`` VOC images of one size: weights, gradients
    and momentum (3x the parameters; 1x with a frozen trunk) plus what autograd keeps per image. Leaves out
    cuDNN workspaces, transient gradient buffers and allocator slack (add about a fifth)."""
    _, kept, params = _count(model, *SIZES["voc"], step)
    return ((3 if step == "train" else 1) * params + images * kept) / 1e9


def dry_run_jobs(configfiles: list[str]) -> list[dict]:
    """Every job of the configuration: {"rule", "wildcards", "resources": {key: value}, "command": [args]}."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--forceall", "--printshellcmds", "--nolock",
                          "--cores", "1", "--configfile", *configfiles], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"snakemake --dry-run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", out.stdout):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head or head.group(1) == "all":
            continue
        resources = dict(item.split("=", 1) for item in re.search(r"resources: (.*)", block).group(1).split(", "))
        wildcards = re.search(r"wildcards: (.*)", block)
        command = re.search(r"Shell command: (.*)", block)
        jobs.append({"rule": head.group(1), "wildcards": wildcards.group(1) if wildcards else "",
                     "resources": resources, "command": shlex.split(command.group(1)) if command else []})
    return jobs


def _flags(command: list[str]) -> dict[str, str]:
    return {arg[2:]: value for arg, value in zip(command, command[1:]) if arg.startswith("--")}


def images_per_iteration(flags: dict[str, str]) -> int:
    """What ``segbench train`` feeds per iteration: the recipe's (or the given) batch over the sampling rate."""
    batch = recipes.recipe(flags["recipe"], model_name=flags["model"],
                           batch_size=int(flags["batch-size"]) if "batch-size" in flags else None).batch_size
    return max(1, round(batch / float(flags["sample-p"])))


def job_flops(job: dict, run_models: dict[str, str]) -> dict[str, float]:
    """FLOPs of one job by precision class: {"train": at the training precision, "tf32"/"bf16": fixed ones}."""
    flags = _flags(job["command"])
    h, w, classes = SIZES["voc"]
    if job["rule"] == "train":
        model, iterations = flags["model"], int(flags["iterations"])
        val_every = int(flags.get("val-every", 0))
        validations = iterations // val_every + (iterations % val_every != 0) if val_every else 0
        step = "fixed" if flags["mode"] == "fixed" else "train"
        return {"train": iterations * images_per_iteration(flags) * flops(model, h, w, classes, step)
                + validations * VAL_IMAGES * flops(model, h, w, classes, "forward")}
    if job["rule"] == "evaluate":
        model = run_models[Path(flags["weights"]).parent.name]
        return {"train": VAL_IMAGES * flops(model, h, w, classes, "forward")}
    if job["rule"] == "benchmark":
        model, size = job["command"][2], int(flags["size"])
        passes = int(flags["trials"]) + int(flags["warmup"])
        out = {"tf32": 0.0, "bf16": 0.0}
        for mode in flags["modes"].split(","):
            out[BENCHMARK_PRECISION[mode]] += passes * flops(model, size, size, classes, "forward")
        return out
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", choices=sorted(GPUS), default="a100")
    parser.add_argument("--fraction-tf32", type=float, default=FRACTIONS["tf32"])
    parser.add_argument("--fraction-bf16", type=float, default=FRACTIONS["bf16"])
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/paper.yaml"])
    args = parser.parse_args()
    gpu, peaks = GPUS[args.gpu]
    rate = {"tf32": args.fraction_tf32 * peaks["tf32"] * 1e12, "bf16": args.fraction_bf16 * peaks["bf16"] * 1e12}

    print("GFLOP per image (FlopCounterMode; forward, training step, FCN-32s-fixed step)\n")
    print("| net | dataset (H x W) | forward | train step | step / forward | kept for backward, GB |")
    print("|---|---|---:|---:|---:|---:|")
    for model in ("fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn32s_alexnet_tv", "fcn32s_googlenet"):
        for dataset, (h, w, classes) in SIZES.items():
            if dataset != "voc" and not model.endswith("vgg16"):
                continue
            fwd = flops(model, h, w, classes, "forward")
            step, kept, _ = _count(model, h, w, classes, "train")
            print(f"| {model} | {dataset} ({h} x {w}) | {fwd / 1e9:.1f} | {step / 1e9:.1f} | {step / fwd:.2f} | "
                  f"{kept / 1e9:.2f} |")
    h, w, classes = SIZES["voc"]
    step, kept, _ = _count("fcn32s_vgg16", h, w, classes, "fixed")
    print(f"| fcn32s_vgg16, fixed | voc ({h} x {w}) | | {step / 1e9:.1f} | | {kept / 1e9:.3f} |")
    print(f"\nCheck: fcn8s_vgg16 forward at 500 x 500: {flops('fcn8s_vgg16', 500, 500, 21, 'forward') / 1e9:.1f} GFLOP")

    jobs = dry_run_jobs(args.configfile)
    run_models = {job["wildcards"].removeprefix("run="): _flags(job["command"])["model"]
                  for job in jobs if job["rule"] == "train"}
    print(f"\nGPU hours on one {gpu}, estimated at {args.fraction_tf32:.0%} of its dense TF32 peak "
          f"({peaks['tf32']:g} TFLOP/s) for float32 and {args.fraction_bf16:.0%} of its bf16 peak "
          f"({peaks['bf16']:g} TFLOP/s) for mixed precision\n")
    print("| rule | job | gpu | mem_mb | runtime (min) | images / iteration | GPU memory, GB (est.) | PFLOP "
          "| GPU h, fp32 (TF32) | GPU h, bf16 AMP |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = {"tf32": 0.0, "bf16": 0.0}
    for job in sorted(jobs, key=lambda j: (j["rule"] not in ("train", "evaluate", "benchmark"), j["rule"],
                                           j["wildcards"])):
        parts = job_flops(job, run_models)
        hours = {p: sum(f / rate[p if k == "train" else k] for k, f in parts.items()) / 3600 for p in totals}
        for p in totals:
            totals[p] += hours[p]
        res, flags = job["resources"], _flags(job["command"])
        per_iteration, memory = "", ""
        if job["rule"] == "train":
            per_iteration = images_per_iteration(flags)
            step = "fixed" if flags["mode"] == "fixed" else "train"
            memory = f"{train_memory_gb(flags['model'], step, per_iteration):.1f}"
        gpu_hours = " | ".join(("0 (CPU)" if not parts else f"{hours[p]:.2f}" if hours[p] >= 0.005 else "< 0.01")
                               for p in totals)
        print(f"| {job['rule']} | {job['wildcards'] or '-'} | {res.get('gpu', '-')} | {res.get('mem_mb', '-')} | "
              f"{res.get('runtime', '-')} | {per_iteration} | {memory} | {sum(parts.values()) / 1e15:.3g} | "
              f"{gpu_hours} |")
    print(f"| **total** | {len(jobs)} jobs | | | | | | | **{totals['tf32']:.1f}** | **{totals['bf16']:.1f}** |")


if __name__ == "__main__":
    main()
