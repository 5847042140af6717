"""GPU hours of every job of the paper configuration, estimated from FLOPs: the tables of docs/cluster.md.

    PYTHONPATH=src python benchmarks/gpu_hours.py [--gpu a100|h100] [--fraction-tf32 0.40] [--fraction-bf16 0.35]
        [--configfile config/config.yaml config/paper.yaml] [--per-job]
    PYTHONPATH=src python benchmarks/gpu_hours.py --configfile config/rehearsal.yaml --measured [--rehearsed ...]
        (after the rehearsal: its measured CPU steps beside the counted FLOPs, which the GPU hours divide)

Method (every figure below except the FLOP and memory counts is an estimate):

1. The jobs are those of ``snakemake --dry-run --forceall --printshellcmds --configfile config/config.yaml
   config/paper.yaml``. A job that asks for a GPU (``gpu`` or a gpu ``gres`` in its ``resources:``) has its
   ``segbench`` command line parsed by segbench's own argument parser (``segbench.cli.build_parser``); the
   commands of the other jobs are not parsed (report rules quote JSON). The subcommand says what the job
   computes: ``train`` (model, mode, modality, recipe, iterations, batch size, sampling rate, validation
   store and interval), ``evaluate`` (store, weights), ``benchmark`` (size, trials, warmup, modes),
   ``qualitative`` (store, models, count) and ``submission`` (store, weights).
2. Each net is built as ``segbench train`` builds it (``train.initialise`` on the meta device: the store's
   classes, ``in_channels`` of the modality, the width, ``mode`` fixed or context freezing all but the score
   layer or the context module). Datasets and whole-image sizes: VOC 375 x 500 (SBD's typical size; none
   larger than 500 x 500), NYUDv2 425 x 560, SIFT Flow 256 x 256; a successor recipe trains on its random
   ``crop`` x ``crop`` crops (``segbench.data.augment`` pads smaller images), so its step is counted at the
   crop. Image counts of the splits are the published ones (``segbench.data``'s constants; VOC's test sets:
   the evaluation server's lists).
3. FLOPs (2 per multiply-add; convolutions, transposed convolutions and matmuls) are counted by
   ``torch.utils.flop_counter.FlopCounterMode`` on shapes only: a forward pass in eval mode by
   ``segbench.models.cards.count_flops`` (meta device), a training step with fake tensors: the train-mode
   forward (``forward_with_aux`` where a net has auxiliary heads: PSPNet, ICNet), the summed cross-entropy of
   every head (SIFT Flow's semantic and geometric) and of every auxiliary output, and the gradients of the
   parameters that learn. It is counted on 2 images (batch norm needs more than one value per channel) and
   halved.
4. A job's FLOPs: iterations x images per iteration (batch / p: loss sampling does not cut compute) x the
   training step, plus its validations (every ``val_every`` iterations and at the end, every image of the
   validation store) x the forward; evaluation, qualitative figures and submissions: their images x the
   forward; the benchmark (trials + warmup) x modes forwards at its size.
5. GPU hours = FLOPs / (fraction x the GPU's dense tensor-core peak): TF32 for float32 (cuDNN runs float32
   convolutions as TF32 by default on Ampere and later), bf16 for mixed precision. Only training steps change
   precision between the two columns; validation, evaluation, figures and submissions run in float32 in
   both; the benchmark's fp32 modes count at the TF32 rate, its bf16 modes at the bf16 rate, in both.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from segbench import cli, models
from segbench.data import nyud, siftflow, voc
from segbench.data.tensors import MODALITIES
from segbench.evaluation import losses, objective
from segbench.evaluation.released import RELEASED
from segbench.infra.memory import PATTERN
from segbench.infra.resources import GPU_RULES
from segbench.models.cards import count_flops
from segbench.training import recipes
from segbench.training.train import initialise

ROOT = Path(__file__).resolve().parents[1]
# Dense tensor-core peaks in TFLOP/s (NVIDIA data sheets; the "with sparsity" figures are twice these).
GPUS = {"a100": ("NVIDIA A100 SXM4", {"tf32": 156.0, "bf16": 312.0}),
        "h100": ("NVIDIA H100 SXM5", {"tf32": 494.7, "bf16": 989.4})}
FRACTIONS = {"tf32": 0.40, "bf16": 0.35}  # assumed share of the peak achieved; see docs/cluster.md
SIZES = {"voc": (375, 500), "nyud": (425, 560), "siftflow": (256, 256)}  # whole images, H x W
CLASSES = {"voc": len(voc.CLASS_NAMES), "nyud": nyud.NUM_CLASSES, "siftflow": len(siftflow.CLASSES)}
# The VOC segmentation test lists of the evaluation server (segbench.data.voc has no constant for them).
VOC_TEST_IMAGES = {"test2011": 1111, "test2012": 1456}
IMAGES = {**{("voc", k): v for k, v in {**voc.PUBLISHED_COUNTS, **VOC_TEST_IMAGES}.items()},
          **{("nyud", k): v for k, v in nyud.REAL_COUNTS.items()},
          **{("siftflow", k): v for k, v in siftflow.REAL_COUNTS.items()}}
BENCHMARK_PRECISION = {"fp32": "tf32", "channels_last": "tf32", "bf16": "bf16", "compile": "bf16"}
STEP_IMAGES = 2  # a training step is counted on this many images, then divided (batch norm needs > 1 per channel)
COLUMNS = ("tf32", "bf16")  # the table's two GPU-hour columns: training in float32 / in bf16 autocast


class Net(NamedTuple):
    """A net as a job builds it: model name, classes, input channels, width, training mode, dropout rate."""

    model: str
    classes: int
    in_channels: int = 3
    width: float = 1.0
    mode: str = "full"
    dropout: float | None = None


# ---------------------------------------------------------------------------------------------------------------
# FLOP and memory counts


@cache
def _build(net: Net) -> torch.nn.Module:
    """``net`` built and frozen as ``segbench train`` does (``train.initialise`` without starting weights), on the
    meta device: shapes only, nothing allocated."""
    with torch.device("meta"):
        model, _ = initialise(net.model, net.classes, width=net.width, init=None, mode=net.mode,
                              in_channels=net.in_channels, dropout=net.dropout)
    return model


class _TrainingForward(torch.nn.Module):
    """``x -> (scores, {name: (auxiliary scores, weight)})`` as ``objective.training_loss`` calls a net."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_with_aux(x) if hasattr(self.net, "forward_with_aux") else (self.net(x), {})


def _loss(scores: torch.Tensor, aux: dict, heads: dict[str, int]) -> torch.Tensor:
    """``objective.training_loss``'s sum: every head's summed cross-entropy plus the weighted auxiliary losses,
    on all-zero labels (its ignore-label test needs values, which fake tensors do not have; the loss itself
    costs no counted FLOP)."""
    def ce(s: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(s, torch.zeros(s.shape[0], *s.shape[2:], dtype=torch.long), reduction="sum")

    loss = sum(ce(part) for part in losses.split_heads(scores, heads).values())
    for head_scores, weight in aux.values():
        loss = loss + weight * ce(head_scores)
    return loss


@cache
def _count_step(net: Net, height: int, width: int, backward: bool = True) -> tuple[float, float]:
    """(FLOPs, bytes autograd keeps for the backward pass) of one image's training step: the train-mode forward,
    the loss of every head and auxiliary output, and (``backward``) the gradients of the parameters that learn.
    Counted with fake tensors on ``STEP_IMAGES`` images and divided."""
    model = _build(net)
    heads = objective.heads_of(model, net.classes)
    wrapper = _TrainingForward(model).train()
    mode = FakeTensorMode()
    with mode:
        state = {name: torch.empty(t.shape, dtype=t.dtype).requires_grad_(t.requires_grad)
                 for name, t in [*wrapper.named_parameters(), *wrapper.named_buffers()]}
    own = {t.untyped_storage()._cdata for t in state.values()}
    kept: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:  # every tensor autograd saves, once per storage, parameters aside
        if t.untyped_storage()._cdata not in own:
            kept[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    learned = [t for t in state.values() if t.requires_grad]
    with mode, FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        x = torch.zeros(STEP_IMAGES, net.in_channels, height, width)
        scores, aux = torch.func.functional_call(wrapper, state, (x,))
        loss = _loss(scores, aux, heads)
        if backward and learned:
            torch.autograd.grad(loss, learned)
    return counter.get_total_flops() / STEP_IMAGES, sum(kept.values()) / STEP_IMAGES


@cache
def forward_flops(net: Net, height: int, width: int) -> float:
    """FLOPs of one eval-mode forward pass on one ``height`` x ``width`` image (``cards.count_flops``)."""
    return float(count_flops(_build(net).eval(), torch.zeros(1, net.in_channels, height, width, device="meta")))


def step_flops(net: Net, height: int, width: int) -> float:
    """FLOPs of one image's training step (see :func:`_count_step`)."""
    return _count_step(net, height, width)[0]


def kept_bytes(net: Net, height: int, width: int) -> float:
    """Bytes autograd keeps per image for the backward pass of a float32 training step."""
    return _count_step(net, height, width)[1]


def parameter_bytes(net: Net) -> tuple[int, int]:
    """(bytes of every parameter and buffer, bytes of the parameters that learn), float32."""
    model = _build(net)
    every = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return every, sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def train_memory_gb(net: Net, height: int, width: int, images: int, optimizer: str = "sgd") -> float:
    """Estimated GPU memory of a float32 training step on ``images`` images of one size in one backward pass:
    weights and buffers, plus gradient and optimizer state of the parameters that learn (SGD's momentum, Adam's
    two moments), plus what autograd keeps per image. Leaves out cuDNN workspaces, transient gradient buffers
    and allocator slack (add about a fifth)."""
    every, learned = parameter_bytes(net)
    states = 3 if optimizer == "adam" else 2
    return (every + states * learned + images * kept_bytes(net, height, width)) / 1e9


# ---------------------------------------------------------------------------------------------------------------
# The dry run


def _pairs(line: str) -> dict[str, str]:
    """``a=1, b=x, y, c=3`` -> {"a": "1", "b": "x, y", "c": "3"} (a value may hold ", "; quotes stripped)."""
    return {k: v.strip().strip("'\"") for k, v in re.findall(r"(\w+)=(.*?)(?=, \w+=|$)", line.strip())}


def gpu_count(resources: dict[str, str]) -> int:
    """GPUs a job asks for: its ``gpu`` resource, else the count of a ``gres`` such as ``gpu:a100:2``."""
    if "gpu" in resources:
        return int(float(resources["gpu"]))
    found = re.search(r"gpu(?::[\w.-]+)?:(\d+)", resources.get("gres", ""))
    return int(found.group(1)) if found else 0


def segbench_argv(command: str) -> list[str]:
    """The ``segbench`` arguments (subcommand first) of a shell command: ``segbench train ...`` or ``torchrun
    ... -m segbench.cli train ...``, up to the first redirection or command separator."""
    tokens = shlex.split(command)
    for i, token in enumerate(tokens):
        if token == "segbench" or token.endswith("/segbench"):
            start = i + 1
            break
        if token == "-m" and i + 1 < len(tokens) and tokens[i + 1] in ("segbench", "segbench.cli"):
            start = i + 2
            break
    else:
        raise ValueError(f"no segbench command in {command!r}")
    end = next((j for j in range(start, len(tokens))
                if tokens[j] in ("|", "||", "&&", ";") or re.match(r"\d*>|<", tokens[j])), len(tokens))
    return tokens[start:end]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by ``segbench``'s own parser; a ValueError (not an exit) on arguments it rejects."""
    try:
        return cli.build_parser().parse_args(argv)
    except SystemExit:
        raise ValueError(f"segbench rejects the arguments {argv}") from None


def parse_dry_run(text: str) -> list[dict]:
    """The jobs of a ``snakemake --dry-run --printshellcmds`` output, ``all`` excluded: {"rule", "wildcards",
    "resources" (dicts of str), "gpus", "command" (str or None), "args" (``segbench`` arguments, parsed for the
    jobs of the rules that run a network, ``segbench.infra.resources.GPU_RULES``, or ask for a GPU; None for the
    others)}."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head or head.group(1) == "all":
            continue
        resources = re.search(r"^\s*resources: (.*)$", block, re.M)
        wildcards = re.search(r"^\s*wildcards: (.*)$", block, re.M)
        command = re.search(r"^Shell command: (.*?)(?:\n\n|\n(?=\S+ \w+:)|\Z)", block, re.M | re.S)
        job = {"rule": head.group(1), "wildcards": _pairs(wildcards.group(1)) if wildcards else {},
               "resources": _pairs(resources.group(1)) if resources else {},
               "command": command.group(1).strip() if command else None, "args": None}
        job["gpus"] = gpu_count(job["resources"])
        if (job["gpus"] or job["rule"] in GPU_RULES) and job["command"] not in (None, "None"):  # device cpu: none
            job["args"] = parse_args(segbench_argv(job["command"]))
        jobs.append(job)
    return jobs


def dry_run_jobs(configfiles: list[str]) -> list[dict]:
    """Every job of the configuration (see :func:`parse_dry_run`)."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--forceall", "--printshellcmds", "--nolock",
                          "--cores", "1", "--configfile", *configfiles], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"snakemake --dry-run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return parse_dry_run(out.stdout)


# ---------------------------------------------------------------------------------------------------------------
# What each job computes


def store_split(path) -> tuple[str, str, int]:
    """(dataset, split, published image count) of a preprocessed store ``.../<dataset>/<split>[-hha].h5``."""
    path = Path(path)
    dataset, split = path.parent.name, path.stem.removesuffix("-hha")
    if (dataset, split) not in IMAGES:
        raise ValueError(f"{path}: unknown dataset split {(dataset, split)}; expected one of {sorted(IMAGES)}")
    return dataset, split, IMAGES[(dataset, split)]


class Run(NamedTuple):
    """A training run: its net, dataset, training input (H, W), recipe and iteration counts."""

    net: Net
    dataset: str
    size: tuple[int, int]
    recipe: recipes.Recipe
    iterations: int
    images_per_iteration: int
    validation: tuple[str, int]  # (dataset, images) of each validation; ("", 0) without one
    validations: int


def train_run(args: argparse.Namespace) -> Run:
    """What ``segbench train`` with ``args`` trains."""
    dataset, _, _ = store_split(args.train_store)
    net = Net(args.model, CLASSES[dataset], MODALITIES[args.modality], args.width, args.mode, args.dropout)
    rec = recipes.recipe(args.recipe, model_name=args.model, width=args.width, base_lr=args.lr,
                         lr_scale=args.lr_scale, batch_size=args.batch_size, momentum=args.momentum)
    size = (rec.crop, rec.crop) if rec.crop else SIZES[dataset]
    validation, validations = ("", 0), 0
    if args.val_store and args.val_every:
        val_dataset, _, val_images = store_split(args.val_store)
        validation = (val_dataset, val_images)
        validations = args.iterations // args.val_every + (args.iterations % args.val_every != 0)
    return Run(net, dataset, size, rec, args.iterations, recipes.images_per_iteration(rec.batch_size, args.sample_p),
               validation, validations)


def run_name(path) -> str:
    """The run of a training output: ``.../train/<run>/seed<k>[/model.pt]`` (one job per run and seed) or
    ``.../train/<run>[/model.pt]``."""
    path = Path(path)
    if path.suffix:
        path = path.parent
    return path.parent.name if re.fullmatch(r"seed\d+", path.name) else path.name


def training_runs(jobs: list[dict]) -> dict[str, Run]:
    """{run: what it trains} of the dry run's ``segbench train`` jobs (the first seed's; seeds train alike)."""
    runs: dict[str, Run] = {}
    for job in jobs:
        if job["args"] is not None and job["args"].command == "train":
            runs.setdefault(run_name(job["args"].out_dir), train_run(job["args"]))
    return runs


def weights_net(weights, runs: dict[str, Run]) -> Net:
    """The net of a weights file: ``.../train/<run>/seed<k>/model.pt`` (or ``.../train/<run>/model.pt``) of a
    training run of this dry run, or ``.../released/<variant>/model.pt`` (the authors' VOC models)."""
    path = Path(weights)
    if path.parent.parent.name == "released" and path.parent.name in RELEASED:
        return Net(RELEASED[path.parent.name].model, CLASSES["voc"])
    run = run_name(path)
    if run not in runs:
        raise ValueError(f"{weights}: run {run!r} has no train job in this dry run")
    return runs[run].net


class Work(NamedTuple):
    """One job's compute: FLOPs by precision class ("train": training steps, at the training precision of the
    column; "tf32" / "bf16": passes at that precision in both columns) and what the table says about it."""

    flops: dict[str, float]
    input: str          # the input it computes on
    iterations: str     # "iterations x images" of a training job
    forwards: int       # forward passes outside training steps
    memory_gb: float | None = None


def _shape(dataset: str, h: int, w: int, c: int, crop: bool = False) -> str:
    return f"{dataset}{' crop' if crop else ''} {h} x {w} x {c}"


def job_work(job: dict, runs: dict[str, Run]) -> Work | None:
    """The compute of one GPU job (None for a subcommand this script does not know)."""
    a = job["args"]
    if a is None:
        return None
    if a.command == "train":
        run = train_run(a)
        h, w = run.size
        val_dataset, val_images = run.validation
        forwards = run.validations * val_images
        val = forwards * forward_flops(run.net, *SIZES[val_dataset]) if forwards else 0.0
        per_gpu = math.ceil(run.images_per_iteration / max(1, job["gpus"]))
        if getattr(a, "micro_batch", None):  # one forward pass holds at most micro_batch images
            per_gpu = min(per_gpu, a.micro_batch)
        return Work({"train": run.iterations * run.images_per_iteration * step_flops(run.net, h, w), "tf32": val},
                    _shape(run.dataset, h, w, run.net.in_channels, crop=bool(run.recipe.crop)),
                    f"{run.iterations:,} x {run.images_per_iteration}", forwards,
                    train_memory_gb(run.net, h, w, per_gpu, run.recipe.optimizer))
    if a.command in ("evaluate", "submission", "qualitative"):
        dataset, _, images = store_split(a.store)
        if a.command == "qualitative":
            nets = [weights_net(spec.split("=", 1)[1], runs) for spec in a.model]
            images = len(a.id) if a.id else min(a.count, images)
        else:
            nets = [weights_net(a.weights, runs)]
        flops = sum(images * forward_flops(net, *SIZES[dataset]) for net in nets)
        channels = "/".join(sorted({str(net.in_channels) for net in nets}))
        return Work({"tf32": flops}, f"{dataset} {SIZES[dataset][0]} x {SIZES[dataset][1]} x {channels}", "",
                    images * len(nets))
    if a.command == "benchmark":
        net = Net(a.model, CLASSES["voc"], width=a.width)  # run_benchmark's defaults: 21 classes, 3 channels
        modes = a.modes.split(",")
        passes = (a.trials + a.warmup) * len(modes)
        flops = {"tf32": 0.0, "bf16": 0.0}
        for mode in modes:
            flops[BENCHMARK_PRECISION[mode]] += (a.trials + a.warmup) * forward_flops(net, a.size, a.size)
        return Work(flops, f"{a.size} x {a.size} x 3", "", passes)
    return None


def gpu_hours(flops: dict[str, float], rate: dict[str, float]) -> dict[str, float]:
    """{column: hours}: "train" FLOPs at the column's rate, the others at their own."""
    return {col: sum(f / rate[col if kind == "train" else kind] for kind, f in flops.items()) / 3600
            for col in COLUMNS}


def category(job: dict) -> str:
    """Which part of the paper run a job belongs to (for the subtotals)."""
    if job["args"] is None or job["args"].command != "train":
        return "evaluation, benchmark, figures, submission"
    run = train_run(job["args"])
    if models.declared(run.net.model).recipe is not None:
        return "successors (training)"
    return {"nyud": "NYUDv2, Table 4 (training)", "siftflow": "SIFT Flow, Table 5 (training)"}.get(
        run.dataset, "VOC FCNs, Tables 1-2 and Figure 5 (training)")


# ---------------------------------------------------------------------------------------------------------------
# The tables


def _hours(h: float) -> str:
    return f"{h:.2f}" if h >= 0.005 else "< 0.01"


def flop_table(runs: dict[str, Run]) -> list[str]:
    """The "GFLOP per image" table: one row per distinct trained net and input of the dry run."""
    lines = ["| net | dataset, input (H x W x C) | classes | forward | train step | step / forward "
             "| kept for backward, GB |", "|---|---|---:|---:|---:|---:|---:|"]
    seen = set()
    datasets = list(SIZES)
    for run in sorted(runs.values(), key=lambda r: (models.declared(r.net.model).recipe is not None,
                                                    datasets.index(r.dataset), r.net.in_channels, r.net.model,
                                                    r.net.mode)):
        key = (run.net, run.dataset, run.size, bool(run.recipe.crop))
        if key in seen:
            continue
        seen.add(key)
        h, w = run.size
        fwd, step = forward_flops(run.net, h, w), step_flops(run.net, h, w)
        name = run.net.model + ("" if run.net.mode == "full" else f", {run.net.mode}")
        classes = " + ".join(map(str, objective.heads_of(_build(run.net), run.net.classes).values()))
        lines.append(f"| {name} | {_shape(run.dataset, h, w, run.net.in_channels, bool(run.recipe.crop))} | "
                     f"{classes} | {fwd / 1e9:.1f} | {step / 1e9:.1f} | {step / fwd:.2f} | "
                     f"{kept_bytes(run.net, h, w) / 1e9:.2f} |")
    return lines


def job_table(jobs: list[dict], runs: dict[str, Run], rate: dict[str, float], per_job: bool) -> tuple[list[str], dict]:
    """The GPU-job table (grouped unless ``per_job``: training and evaluation by rule and run, seeds summed; every
    other GPU rule in one row) and the totals {"all": {column: hours}, category: {column: hours}}."""
    groups: dict[tuple[str, str], list[tuple[dict, Work | None]]] = {}
    for job in jobs:
        if not job["gpus"]:
            continue
        wildcards = job["wildcards"]
        if per_job:
            key = ", ".join(f"{k}={v}" for k, v in wildcards.items()) or "-"
        elif "run" in wildcards:
            key = wildcards["run"]
        else:
            key = "-"
        groups.setdefault((job["rule"], key), []).append((job, job_work(job, runs)))
    lines = ["| rule | run | jobs | gpu | mem_mb | runtime (min) | input (H x W x C) | iterations x images "
             "| forward passes | GPU memory, GB (est.) | PFLOP | GPU h, fp32 (TF32) | GPU h, bf16 AMP |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    totals: dict[str, dict[str, float]] = {"all": dict.fromkeys(COLUMNS, 0.0)}
    order = {"train": 0, "evaluate": 1}
    for (rule, key), members in sorted(groups.items(), key=lambda g: (order.get(g[0][0], 2), g[0])):
        hours = dict.fromkeys(COLUMNS, 0.0)
        flops, forwards, unknown = 0.0, 0, []
        for job, work in members:
            if work is None:
                unknown.append(job)
                continue
            job_hours = gpu_hours(work.flops, rate)
            part = totals.setdefault(category(job), dict.fromkeys(COLUMNS, 0.0))
            for col in COLUMNS:
                hours[col] += job_hours[col]
                part[col] += job_hours[col]
                totals["all"][col] += job_hours[col]
            flops += sum(work.flops.values())
            forwards += work.forwards
        works = [w for _, w in members if w is not None]

        def one(values) -> str:
            values = sorted({v for v in values if v not in (None, "")})
            return ", ".join(values)

        first = members[0][0]["resources"]
        memory = [w.memory_gb for w in works if w.memory_gb is not None]
        hour_cells = (" | ".join(_hours(hours[c]) for c in COLUMNS) if not unknown
                      else " | ".join(["not estimated"] * len(COLUMNS)))
        lines.append(f"| {rule} | {key} | {len(members)} | {one(m[0]['resources'].get('gpu', '-') for m in members)} | "
                     f"{first.get('mem_mb', '-')} | {first.get('runtime', '-')} | {one(w.input for w in works)} | "
                     f"{one(w.iterations for w in works)} | {forwards:,} | "
                     f"{f'{max(memory):.1f}' if memory else ''} | {flops / 1e15:.3g} | {hour_cells} |")
    return lines, totals


def measured_table(jobs: list[dict], runs: dict[str, Run], *, paper: dict[str, Run] | None = None,
                   log_dir: str | Path | None = None) -> list[str]:
    """Each training run's measured step (its second iteration in ``log.csv``, after the first's warm-up) beside
    the counted FLOPs of that step: the achieved GFLOP/s; and the memory estimate of one forward pass (the
    GPU-memory column's, at this run's batch and ``--micro-batch``) beside the job's peak RSS (the last line of
    its rule log, ``segbench.infra.memory``; it includes PyTorch's libraries and the validation). For the
    rehearsal (config/rehearsal.yaml: 2 iterations per run at full width on a CPU); a run without a log is left
    out. ``paper``: the runs of the configuration rehearsed (config/paper.yaml); each run's time per iteration
    at that configuration's batch and its whole training are then extrapolated from the measured step (time per
    image x images). ``log_dir``: where the rule logs are (default: the ``logs`` folder beside ``train``)."""
    lines = ["| run | input (H x W x C) | images / iteration | step, GFLOP (counted) | measured s / iteration | "
             "GFLOP/s achieved | memory, GB (est.) | peak RSS, GB (measured) |"
             + (" paper: iterations x images | paper: s / iteration (extrapolated) | paper: days on this CPU |"
                if paper else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if paper else "")]
    for job in jobs:
        args = job["args"]
        if args is None or args.command != "train":
            continue
        out = Path(args.out_dir)
        name, log = run_name(out), out / "log.csv"
        if name not in runs or not log.is_file():
            continue
        rows = log.read_text().splitlines()[1:]
        if len(rows) < 2:
            continue
        walls = [float(row.split(",")[3]) for row in rows[:2]]
        run = runs[name]
        h, w = run.size
        flops = step_flops(run.net, h, w) * run.images_per_iteration
        seconds = walls[1] - walls[0]
        per_pass = min(run.images_per_iteration, getattr(args, "micro_batch", None) or run.images_per_iteration)
        estimate = train_memory_gb(run.net, h, w, per_pass, run.recipe.optimizer)
        rule_log = Path(log_dir or out.parent.parent.parent / "logs") / "train" / name / f"{out.name}.log"
        peaks = PATTERN.findall(rule_log.read_text(errors="replace")) if rule_log.is_file() else []
        peak = f"{int(peaks[-1][0]) / 1024:.1f}" if peaks else ""
        lines.append(f"| {name} | {_shape(run.dataset, h, w, run.net.in_channels, bool(run.recipe.crop))} | "
                     f"{run.images_per_iteration} | {flops / 1e9:,.0f} | {seconds:.2f} | {flops / seconds / 1e9:.0f} | "
                     f"{estimate:.1f} | {peak} |" + (_extrapolated(paper.get(name), run, seconds) if paper else ""))
    return lines


def _extrapolated(target: Run | None, run: Run, seconds: float) -> str:
    """The cells of ``measured_table``'s paper columns: ``target``'s iterations at its batch, timed per image."""
    if target is None:
        return " | | |"
    per_iteration = seconds / run.images_per_iteration * target.images_per_iteration
    return (f" {target.iterations:,} x {target.images_per_iteration} | {per_iteration:.1f} | "
            f"{per_iteration * target.iterations / 86400:,.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", choices=sorted(GPUS), default="a100")
    parser.add_argument("--fraction-tf32", type=float, default=FRACTIONS["tf32"])
    parser.add_argument("--fraction-bf16", type=float, default=FRACTIONS["bf16"])
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/paper.yaml"])
    parser.add_argument("--per-job", action="store_true", help="one row per job instead of per rule and run")
    parser.add_argument("--measured", action="store_true",
                        help="only the measured training steps of a finished run of these config files beside their "
                             "counted FLOPs (the rehearsal: --configfile config/rehearsal.yaml)")
    parser.add_argument("--rehearsed", nargs="+", default=["config/config.yaml", "config/paper.yaml"],
                        help="with --measured: the configuration whose batches and iterations the measured steps "
                             "are extrapolated to (default: the paper's)")
    args = parser.parse_args(argv)
    gpu, peaks = GPUS[args.gpu]
    rate = {"tf32": args.fraction_tf32 * peaks["tf32"] * 1e12, "bf16": args.fraction_bf16 * peaks["bf16"] * 1e12}

    jobs = dry_run_jobs(args.configfile)
    runs = training_runs(jobs)
    if args.measured:
        paper = training_runs(dry_run_jobs(args.rehearsed))
        print("\n".join(measured_table(jobs, runs, paper=paper)))
        return
    gpu_jobs = [j for j in jobs if j["gpus"]]
    cpu_rules = sorted({j["rule"] for j in jobs if not j["gpus"]})
    print(f"{len(jobs)} jobs (and `all`): {len(gpu_jobs)} ask for a GPU; the {len(jobs) - len(gpu_jobs)} jobs of "
          f"{len(cpu_rules)} CPU rules ({', '.join(cpu_rules)}) ask for none\n")

    print("GFLOP per image (FlopCounterMode; eval-mode forward, training step as segbench train takes it)\n")
    print("\n".join(flop_table(runs)))
    check = forward_flops(Net("fcn8s_vgg16", CLASSES["voc"]), 500, 500)
    print(f"\nCheck: fcn8s_vgg16 forward at 500 x 500: {check / 1e9:.1f} GFLOP")

    print(f"\nGPU hours on one {gpu}, estimated at {args.fraction_tf32:.0%} of its dense TF32 peak "
          f"({peaks['tf32']:g} TFLOP/s) for float32 and {args.fraction_bf16:.0%} of its bf16 peak "
          f"({peaks['bf16']:g} TFLOP/s) for mixed precision"
          + ("" if args.per_job else "; rows grouped by rule and run (seeds summed), the other GPU rules in one "
             "row each") + "\n")
    lines, totals = job_table(jobs, runs, rate, args.per_job)
    print("\n".join(lines))
    print(f"| **total** | | {len(gpu_jobs)} | | | | | | | | | **{totals['all']['tf32']:.1f}** | "
          f"**{totals['all']['bf16']:.1f}** |")
    print("\nSubtotals, GPU h fp32 (bf16 AMP):")
    for name, hours in sorted(totals.items(), key=lambda kv: -kv[1]["tf32"]):
        if name != "all":
            print(f"- {name}: {hours['tf32']:.2f} ({hours['bf16']:.2f})")


if __name__ == "__main__":
    main()
