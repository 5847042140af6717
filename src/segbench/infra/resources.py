"""Cluster resources of each pipeline rule, as Snakemake ``resources:`` keys (read by the SLURM executor).

A rule file writes ``resources: **rule_resources("train", device=config["device"],
overrides=config.get("resources"))``. The keys are the ones snakemake-executor-plugin-slurm maps to
sbatch options: ``gpu`` -> ``--gpus``, ``cpus_per_task`` -> ``--cpus-per-task``, ``mem_mb`` -> ``--mem``,
``runtime`` (minutes) -> ``--time``; ``gpu_model``, ``slurm_partition``, ``slurm_extra`` ... may come
from ``overrides``. CPUs: the plugin asks for the rule's ``threads`` (training runs on one thread so that
results do not depend on the node) unless ``cpus_per_task`` is set. ``benchmark`` and ``hha_nyud`` set it,
and their rules take it as their threads (:func:`hha_processes`: as many HHA workers as the CPUs and the
memory hold), so that a job uses what it asks for. A training job of P processes with W data-loading workers
each sets it to P x (1 + W) when that exceeds 1, and asks for P GPUs with ``device: cuda`` (one task running
torchrun, which starts the P processes: ``segbench.training.distributed``), and P times the memory.
``cpus_per_task`` in ``overrides`` replaces it. Run locally, Snakemake only limits the resources given to
``--resources``, so ``gpu: 1`` does not stop a CPU-only laptop from running the pipeline.

Only ``device: cuda`` asks SLURM for GPUs. ``auto`` asks for none, so the same command runs on a CPU-only
cluster and on a GPU cluster; a network job then uses CUDA only where SLURM gave it a GPU (see
:func:`segbench.infra.runtime.resolve_device`). A request SLURM cannot satisfy is caught before anything is
submitted: the workflow's ``onstart`` calls :func:`slurm_gpu_problem`, which reads ``sinfo``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from segbench.infra.runtime import DEVICES

TRAIN_TIME_LIMIT = 1440  # minutes: the config's train.time_limit when it is not set (the schema's default)
# The slurm profile asks for SIGTERM 300 s before a training job's time limit (SLURM may send it up to 60 s
# earlier): a shorter limit would stop the training as it starts, before it can write a checkpoint.
TRAIN_MIN_MINUTES = 10
# hha_nyud's memory (docs/cluster.md, "Memory of the data jobs"; measured on 425 x 560 frames of the NYUD twin):
# the main process holds every frame of the split (about 550 MB for the CLI, then 5.1-5.8 MB per frame: 4.6 GB for
# the 795 train frames), each worker process one frame's float64 encoding (about 65 MB of arrays at its peak; 108 MB
# before the banded sums, which the sizing below still allows).
HHA_MAIN_MB = 6000
HHA_WORKER_MB = 150
HHA_CPUS = 4  # at 0.2-0.35 s per frame, 4 workers encode the 795 train frames in one to two minutes

# Rules that run a network: with device "cuda" they ask SLURM for one GPU each.
GPU_RULES = {
    "pretrain": {"gpu": 1, "mem_mb": 16000, "runtime": 720},
    "train": {"gpu": 1, "mem_mb": 16000, "runtime": TRAIN_TIME_LIMIT},
    "evaluate": {"gpu": 1, "mem_mb": 16000, "runtime": 120},
    # batch-1 forward passes: 8 threads on the CPU (the usual share of a GPU node's cores per GPU), and the rule
    # runs with as many threads as it asks for
    "benchmark": {"gpu": 1, "cpus_per_task": 8, "mem_mb": 16000, "runtime": 60},
    "train_volumetric": {"gpu": 1, "mem_mb": 8000, "runtime": 120},  # V-Net / 3D U-Net (config volumetric)
    "evaluate_volumetric": {"gpu": 1, "mem_mb": 8000, "runtime": 30},
}
# Data and report rules: never a GPU, whatever the device.
CPU_RULES = {
    "synth_voc": {"mem_mb": 4000, "runtime": 60},
    "rehearsal_mirror": {"mem_mb": 4000, "runtime": 60},  # one weights file at a time (VGG16's 0.55 GB)
    "download": {"mem_mb": 4000, "runtime": 480},
    # streams one image at a time: 0.70 GB peak RSS for 100 and for 400 images of 500 x 500 (the CLI's imports)
    "preprocess_voc": {"mem_mb": 2000, "runtime": 120},
    "synth_nyud": {"mem_mb": 4000, "runtime": 60},
    "preprocess_nyud": {"mem_mb": 8000, "runtime": 120},
    "hha_nyud": {"cpus_per_task": HHA_CPUS, "mem_mb": HHA_MAIN_MB + HHA_CPUS * HHA_WORKER_MB, "runtime": 60},
    "synth_siftflow": {"mem_mb": 4000, "runtime": 60},
    "preprocess_siftflow": {"mem_mb": 8000, "runtime": 120},
    "dataset_stats": {"mem_mb": 8000, "runtime": 60},
    "standin_images": {"mem_mb": 4000, "runtime": 60},  # 1.3 GB of images for the default's 224 px stand-ins
    "prune_trunk": {"mem_mb": 4000, "runtime": 30},  # seconds of work; a stand-in's accuracy check runs on CPU
    "zoo_standin": {"mem_mb": 2000, "runtime": 15},  # a checksum and a copy of a few MB
    "table1": {"mem_mb": 2000, "runtime": 15},
    "table2": {"mem_mb": 2000, "runtime": 15},
    "fig5": {"mem_mb": 2000, "runtime": 15},
}
# Keys that ask SLURM for a GPU one way or another; none of them may appear when device is "cpu".
GPU_KEYS = ("gpu", "gpu_model", "cpus_per_gpu", "tasks_per_gpu", "gres")


def rule_resources(rule: str, *, device: str, overrides: Mapping[str, Mapping] | None = None, processes: int = 1,
                   workers: int = 0, runtime: int | None = None) -> dict:
    """The Snakemake resources of ``rule``: its defaults, with ``overrides[rule]`` replacing keys.

    ``device`` is the config's device: "cuda" gives the network rules ``gpu: 1``; "auto" and "cpu" give
    no rule a GPU key, so the pipeline fits a CPU-only partition (with "auto" an override may still ask
    for a GPU, which the job then uses; with "cpu" that is refused). ``processes`` and ``workers`` (train
    only: the config's ``train.processes`` and ``train.num_workers``) scale the request: ``gpu: processes``
    with "cuda", ``mem_mb`` times ``processes``, and ``cpus_per_task: processes x (1 + workers)`` when that
    exceeds 1. ``runtime`` (minutes) replaces the rule's time limit: the train rule's is the config's
    ``train.time_limit``. ``overrides`` is the config's ``resources:`` section, rule name -> {resource: value};
    a value of None removes that key, and a string of digits becomes an int; its ``runtime`` wins over the
    ``runtime`` argument. Raises ValueError for an unknown rule (here or in ``overrides``), an unknown device,
    processes or workers for another rule than train or out of range, a runtime below 1 (for train: below
    ``TRAIN_MIN_MINUTES``), or a GPU override on a CPU rule or with device "cpu".
    """
    valid = sorted({*GPU_RULES, *CPU_RULES})
    if rule not in GPU_RULES and rule not in CPU_RULES:
        raise ValueError(f"no resources for rule {rule!r}; valid rules: {', '.join(valid)}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"resources overrides name unknown rules {unknown}; valid rules: {', '.join(valid)}")
    if processes < 1 or workers < 0:
        raise ValueError(f"processes must be >= 1 and workers >= 0, got processes={processes}, workers={workers}")
    if (processes, workers) != (1, 0) and rule != "train":
        raise ValueError(f"only the train rule runs several processes or data-loading workers; got "
                         f"processes={processes}, workers={workers} for rule {rule!r}")
    if runtime is not None and (not isinstance(runtime, int) or runtime < 1):
        raise ValueError(f"the time limit of rule {rule!r} must be a whole number of minutes >= 1, got {runtime!r}")
    resources = dict(GPU_RULES.get(rule) or CPU_RULES[rule])
    if runtime is not None:
        resources["runtime"] = runtime
    if rule == "train":
        resources.update(gpu=processes, mem_mb=resources["mem_mb"] * processes)
        if processes * (1 + workers) > 1:
            resources["cpus_per_task"] = processes * (1 + workers)
    if device != "cuda":
        for key in GPU_KEYS:
            resources.pop(key, None)
    extra = dict(overrides.get(rule) or {})
    if device == "cpu" and any(extra.get(key) for key in GPU_KEYS):
        raise ValueError(f"resources.{rule} asks for a GPU ({ {k: extra[k] for k in GPU_KEYS if extra.get(k)} }) "
                         f"but device is 'cpu'; remove the GPU keys or set device to cuda (or auto)")
    if rule in CPU_RULES and any(extra.get(key) for key in GPU_KEYS):
        raise ValueError(f"resources.{rule} asks for a GPU, but rule {rule!r} never uses one; GPU rules: "
                         f"{', '.join(sorted(GPU_RULES))}")
    if "cpus_per_gpu" in extra:
        resources.pop("cpus_per_task", None)  # the plugin would let cpus_per_task win over it
    for key, value in extra.items():
        if value is None:
            resources.pop(key, None)
        elif isinstance(value, str) and value.isdigit():
            resources[key] = int(value)  # `--config resources=...` hands numbers over as strings
        else:
            resources[key] = value
    if rule == "train" and int(resources["runtime"]) < TRAIN_MIN_MINUTES:
        raise ValueError(f"the train rule's time limit is {resources['runtime']} minutes, below {TRAIN_MIN_MINUTES}: "
                         f"the slurm profile sends training its stop signal 5 to 6 minutes before the limit, so it "
                         f"would stop as it starts; set train.time_limit (or resources.train.runtime) to at least "
                         f"{TRAIN_MIN_MINUTES}")
    return resources


def hha_processes(resources: Mapping) -> int:
    """The HHA worker processes that an hha_nyud job with these ``resources`` can run: one per CPU
    (``cpus_per_task``), as many as its ``mem_mb`` holds beside the main process (``HHA_MAIN_MB`` plus
    ``HHA_WORKER_MB`` each). Raises ValueError when ``mem_mb`` does not hold the main process and one worker."""
    cpus, mem_mb = int(resources.get("cpus_per_task") or 1), int(resources.get("mem_mb") or 0)
    fit = (mem_mb - HHA_MAIN_MB) // HHA_WORKER_MB
    if fit < 1:
        raise ValueError(f"resources.hha_nyud.mem_mb is {mem_mb}, below the {HHA_MAIN_MB + HHA_WORKER_MB} MB that the "
                         f"HHA step needs with one worker ({HHA_MAIN_MB} MB for the frames of a split, "
                         f"{HHA_WORKER_MB} MB per worker); raise it")
    return min(cpus, fit)


def asks_for_gpu(resources: Mapping) -> bool:
    """Whether a job with these resources asks SLURM for GPUs (the plugin's own test: ``gpu``, or a gpu GRES)."""
    return bool(resources.get("gpu")) or "gpu" in str(resources.get("gres") or "")


def sinfo_gpu_partitions(sinfo_output: str) -> tuple[dict[str, bool], str | None]:
    """Parse ``sinfo -h -a -o '%P|%G'`` (one line per partition and node group: ``gpu*|gpu:a100:4(S:0-1)``).

    Returns ({partition: whether any of its nodes lists a ``gpu`` GRES}, the default partition or None).
    """
    partitions: dict[str, bool] = {}
    default = None
    for line in sinfo_output.splitlines():
        if "|" not in line:
            continue
        name, gres = (part.strip() for part in line.split("|", 1))
        if name.endswith("*"):
            name = default = name[:-1]
        has_gpu = any(entry.split(":")[0].strip() in ("gpu", "gres/gpu") for entry in gres.split(","))
        partitions[name] = partitions.get(name, False) or has_gpu
    return partitions, default


def slurm_gpu_problem(gpu_jobs: set[tuple[str, str | None]], *, sinfo_output: str | None = None) -> str | None:
    """Why SLURM would refuse the GPU requests of ``gpu_jobs``, or None when it should accept them.

    ``gpu_jobs``: (rule, its ``slurm_partition`` or None for the cluster's default) of every job asking for
    a GPU. The cluster is read from ``sinfo`` (or ``sinfo_output``, the text of ``sinfo -h -a -o '%P|%G'``).
    A request is judged refused only when sinfo shows no GPU where it would run; None when sinfo is missing
    or fails, or when a partition is not listed (another cluster, a hidden one): then sbatch decides.
    """
    if not gpu_jobs:
        return None
    if sinfo_output is None:
        if shutil.which("sinfo") is None:
            return None
        done = subprocess.run(["sinfo", "-h", "-a", "-o", "%P|%G"], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        sinfo_output = done.stdout
    partitions, default = sinfo_gpu_partitions(sinfo_output)
    rules = ", ".join(sorted({rule for rule, _ in gpu_jobs}))
    with_gpus = sorted(name for name, has_gpu in partitions.items() if has_gpu)
    if partitions and not with_gpus:
        return (f"device: cuda makes rules {rules} ask SLURM for a GPU, but no partition of this cluster has one "
                f"(`sinfo -o %P|%G` lists no gpu GRES in {', '.join(sorted(partitions))}), so sbatch would refuse "
                "them ('Invalid generic resource (gres) specification'). Run on a GPU cluster, or set device: auto "
                "(no GPU requested; a job uses CUDA only where SLURM gives it one) or cpu, e.g. --config "
                "device=auto; docs/cluster.md gives the GPU hours that the paper's configuration needs.")
    refused = []
    for rule, partition in sorted(gpu_jobs, key=str):
        names = partition.split(",") if partition else [default] if default else []
        if names and all(name in partitions and not partitions[name] for name in names):
            refused.append(f"{rule} (partition {partition or f'{default}, the default'})")
    if not refused:
        return None
    return (f"device: cuda makes {', '.join(refused)} ask SLURM for a GPU in a partition without one; "
            f"partitions with GPUs: {', '.join(with_gpus)}. Send these rules there with the config's resources: "
            f"section, e.g. resources: {{{refused[0].split()[0]}: {{slurm_partition: {with_gpus[0]}}}}}, "
            "or set device: auto to run them on CPUs.")
