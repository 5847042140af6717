# Helpers shared by all stages (config validation, the run table, input functions); no rules here.

import json
import os
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from segbench import models, runs
from segbench.data import MANIFEST
from segbench.resources import asks_for_gpu, rule_resources, slurm_gpu_problem


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
SYNTHETIC = config["data"]["source"] == "synthetic"
TORCHVISION = config["pretrain"]["source"] == "torchvision"
SEEDS = config["seeds"]

RUNS = runs.run_table(config)  # run name -> segbench.runs.Run
PATHS = runs.RunPaths(RESULTS)
BACKBONES = runs.pretrained_backbones(RUNS)  # classifiers the runs start from


def run_seeds(run):
    """The seeds ``run`` is trained with: its own (Tables 4 and 5) or the config's."""
    return list(RUNS[run].seeds or SEEDS)


def seeds_of(run, paths):
    """One path per seed of ``run``: ``paths(run, seed)``, in seed order."""
    return [paths(run, seed) for seed in run_seeds(run)]


SPLITS = {"voc": ("train", "val"), "nyud": ("train", "test"), "siftflow": ("trainval", "test")}


def raw_ready(dataset):
    """The file whose existence means the raw tree of ``dataset`` is complete (twin or verified download)."""
    return f"{RESULTS}/raw/{dataset}/{MANIFEST}"


def raw_dir(part):
    """Folders inside the raw trees, as the twins and the extracted archives lay them out."""
    real = {"voc2011": "voc/VOC2011/TrainVal/VOCdevkit/VOC2011", "voc2012": "voc/VOC2012/VOCdevkit/VOC2012",
            "sbd": "voc/SBD/benchmark_RELEASE/dataset",
            "siftflow": "siftflow/SiftFlow"}
    twin = {"voc2011": "voc/VOCdevkit/VOC2011", "sbd": "voc/benchmark_RELEASE/dataset", "siftflow": "siftflow"}
    return f"{RESULTS}/raw/" + (twin if SYNTHETIC else real)[part]


def backbone_width(backbone):
    return config["models"]["width"][models.FAMILIES[backbone]]


def table1_flags(wildcards):
    flags = []
    for b in config["table1"]["backbones"]:
        run = RUNS[runs.table1_run(b)]
        spec = {"model": run.model, "metrics": seeds_of(run.name, PATHS.metrics),
                "benchmark": f"{RESULTS}/benchmark/{run.model}.json"}
        flags.append(f"--run {b}='{json.dumps(spec)}'")
    return " ".join(flags)


DATA_NOTE = ("synthetic twin data, CPU-sized models: compare trends, not values" if SYNTHETIC
             else "real data")
TABLE2_ROWS = {**runs.TABLE2_NETS, "FCN-32s-fixed, random trunk": runs.RANDOM_CONTROL}


def _seeds_note(section):
    n = len(config[section]["seeds"])
    return f"{n} seed{'s' if n > 1 else ''}" + ("" if n >= len(SEEDS) else f" (Tables 1 and 2: {len(SEEDS)})")


_nyud = config["data"]["synthetic"]["nyud"]
DATASET_NOTES = {
    "table4": "; ".join(filter(None, [
        f"NYUDv2 twin: {_nyud['n_images']} frames at {_nyud['frame_scale']:g} of 480x640, HHA computed from "
        "the twin depth" if SYNTHETIC else "real data", _seeds_note("nyud"),
        f"recipe {config['train']['recipe']}, {config['nyud']['iterations']['single']} / "
        f"{config['nyud']['iterations']['fusion']} iterations (single / fusion runs)",
        f"VGG16 at width {config['models']['width']['vgg16']:g}" if SYNTHETIC else ""])),
    "table5": "; ".join(filter(None, [
        "SIFT Flow twin" if SYNTHETIC else "real data", _seeds_note("siftflow"),
        f"recipe {config['train']['recipe']}, {config['siftflow']['iterations']['fcn32s']} + "
        f"{config['siftflow']['iterations']['fcn16s']} iterations (32s, 16s)",
        f"VGG16 at width {config['models']['width']['vgg16']:g}" if SYNTHETIC else ""])),
}


def opt(flag, value):
    """A CLI flag with its value, or nothing when the value is unset."""
    return "" if value is None else f"{flag} {value}"


def train_flags(wildcards):
    """The `segbench train` flags of one run and seed."""
    run, cfg = RUNS[wildcards.run], config["train"]
    init = PATHS.init(run, wildcards.seed)
    return " ".join(filter(None, [
        f"--model {run.model} --width {run.width} --mode {run.mode} --modality {run.modality}",
        f"--init {' '.join(init)}" if init else "",
        f"--iterations {run.iterations} --sample-p {run.sample_p}",
        f"--recipe {run.recipe} --criterion {cfg['criterion']} --gamma {cfg['gamma']}",
        opt("--lr", run.lr), opt("--lr-scale", cfg["lr_scale"]), opt("--momentum", run.momentum),
        opt("--batch-size", run.batch_size), opt("--dropout", config["models"]["dropout"]),
        f"--precision {config['precision']}", "--channels-last" if config["channels_last"] else "",
        f"--num-workers {cfg['num_workers']}", "" if cfg["pin_memory"] else "--no-pin-memory",
        "--compile" if cfg["compile"] else "", "--deterministic" if cfg["deterministic"] else "",
        f"--checkpoint-every {cfg['checkpoint_every']} --seed {wildcards.seed} --device {config['device']}",
        f"--val-store {PATHS.stores(run)[1]} --val-every {run.val_every}" if run.val_every else "",
    ]))


def resources_for(rule):
    return rule_resources(rule, device=config["device"], overrides=config.get("resources"))


onstart:
    # Before the first sbatch: a GPU request that the cluster cannot satisfy stops the run with what to change
    # (sbatch would refuse each such job with "Invalid generic resource (gres) specification").
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        problem = slurm_gpu_problem({(job.rule.name, job.resources.get("slurm_partition"))
                                     for job in workflow.dag.needrun_jobs() if asks_for_gpu(job.resources)})
        if problem:
            raise WorkflowError(problem)


def final_outputs():
    return [
        f"{RESULTS}/tables/table1.md",
        f"{RESULTS}/tables/table2.md",
        f"{RESULTS}/tables/fig5.md",
        *([] if TORCHVISION else [f"{RESULTS}/tables/pretrain.md"]),
        f"{RESULTS}/tables/table4.md",
        f"{RESULTS}/tables/table5.md",
        f"{RESULTS}/figures/fig5.png",
        *[f"{RESULTS}/stats/{dataset}.json" for dataset in SPLITS],
        *[f"{RESULTS}/preprocessed/nyud/{split}-hha.h5" for split in SPLITS["nyud"]],
    ]
