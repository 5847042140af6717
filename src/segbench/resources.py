"""Cluster resources of each pipeline rule, as Snakemake ``resources:`` keys (read by the SLURM executor).

A rule file writes ``resources: **rule_resources("train", device=config["device"],
overrides=config.get("resources"))``. The keys are the ones snakemake-executor-plugin-slurm maps to
sbatch options: ``gpu`` -> ``--gpus``, ``cpus_per_task`` -> ``--cpus-per-task``, ``mem_mb`` -> ``--mem``,
``runtime`` (minutes) -> ``--time``; ``gpu_model``, ``slurm_partition``, ``slurm_extra`` ... may come
from ``overrides``. CPUs are not set here: the plugin asks for the rule's ``threads`` (training runs on
one thread so that results do not depend on the node; ``hha_nyud`` and ``benchmark`` take all cores), and
``cpus_per_task`` in ``overrides`` asks for more. Run locally, Snakemake only limits the resources given to ``--resources``, so
``gpu: 1`` does not stop a CPU-only laptop from running the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping

# Rules that run a network: with device "auto" or "cuda" they land on a GPU node. ``auto`` means a GPU on a
# cluster: the job asks SLURM for one, and the CLI then finds CUDA inside the job.
GPU_RULES = {
    "pretrain": {"gpu": 1, "mem_mb": 16000, "runtime": 720},
    "train": {"gpu": 1, "mem_mb": 16000, "runtime": 1440},
    "evaluate": {"gpu": 1, "mem_mb": 16000, "runtime": 120},
    "benchmark": {"gpu": 1, "mem_mb": 16000, "runtime": 60},
}
# Data and report rules: never a GPU, whatever the device.
CPU_RULES = {
    "synth_voc": {"mem_mb": 4000, "runtime": 60},
    "download": {"mem_mb": 4000, "runtime": 480},
    "preprocess_voc": {"mem_mb": 8000, "runtime": 120},
    "synth_nyud": {"mem_mb": 4000, "runtime": 60},
    "preprocess_nyud": {"mem_mb": 8000, "runtime": 120},
    "hha_nyud": {"mem_mb": 8000, "runtime": 480},
    "synth_siftflow": {"mem_mb": 4000, "runtime": 60},
    "preprocess_siftflow": {"mem_mb": 8000, "runtime": 120},
    "dataset_stats": {"mem_mb": 8000, "runtime": 60},
    "table1": {"mem_mb": 2000, "runtime": 15},
    "table2": {"mem_mb": 2000, "runtime": 15},
    "fig5": {"mem_mb": 2000, "runtime": 15},
}
DEVICES = ("auto", "cuda", "cpu")
# Keys that ask SLURM for a GPU one way or another; none of them may appear when device is "cpu".
GPU_KEYS = ("gpu", "gpu_model", "cpus_per_gpu", "tasks_per_gpu", "gres")


def rule_resources(rule: str, *, device: str, overrides: Mapping[str, Mapping] | None = None) -> dict:
    """The Snakemake resources of ``rule``: its defaults, with ``overrides[rule]`` replacing keys.

    ``device`` is the config's device: "auto" and "cuda" give the network rules ``gpu: 1``; "cpu" gives no
    rule a GPU key, so the whole pipeline fits a CPU-only partition. ``overrides`` is the config's
    ``resources:`` section, rule name -> {resource: value}; a value of None removes that key, and a
    string of digits becomes an int. Raises KeyError for an unknown rule (here or in ``overrides``) and
    ValueError for an unknown device or a GPU override on a CPU rule or with device "cpu".
    """
    valid = sorted({*GPU_RULES, *CPU_RULES})
    if rule not in GPU_RULES and rule not in CPU_RULES:
        raise KeyError(f"no resources for rule {rule!r}; valid rules: {', '.join(valid)}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise KeyError(f"resources overrides name unknown rules {unknown}; valid rules: {', '.join(valid)}")
    resources = dict(GPU_RULES.get(rule) or CPU_RULES[rule])
    if device == "cpu":
        for key in GPU_KEYS:
            resources.pop(key, None)
    extra = dict(overrides.get(rule) or {})
    if device == "cpu" and any(extra.get(key) for key in GPU_KEYS):
        raise ValueError(f"resources.{rule} asks for a GPU ({ {k: extra[k] for k in GPU_KEYS if extra.get(k)} }) "
                         f"but device is 'cpu'; remove the GPU keys or set device to auto/cuda")
    if rule in CPU_RULES and any(extra.get(key) for key in GPU_KEYS):
        raise ValueError(f"resources.{rule} asks for a GPU, but rule {rule!r} never uses one; GPU rules: "
                         f"{', '.join(sorted(GPU_RULES))}")
    for key, value in extra.items():
        if value is None:
            resources.pop(key, None)
        elif isinstance(value, str) and value.isdigit():
            resources[key] = int(value)  # `--config resources=...` hands numbers over as strings
        else:
            resources[key] = value
    return resources
