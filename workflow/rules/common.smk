# Helpers shared by all stages (config validation, run table, input functions); no rules here.

import json
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from segbench.resources import asks_for_gpu, rule_resources, slurm_gpu_problem


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
SYNTHETIC = config["data"]["source"] == "synthetic"


# The paper's grouped (Caffe) AlexNet with the synthetic stand-in; torchvision's weights fit its single tower.
TORCHVISION = config["pretrain"]["source"] == "torchvision"
PRETRAIN_BACKBONE = {"vgg16": "vgg16", "alexnet": "alexnet" if TORCHVISION else "alexnet_caffe",
                     "googlenet": "googlenet"}
CONFIG_BACKBONE = {v: k for k, v in PRETRAIN_BACKBONE.items()}
TABLE1_MODEL = {"vgg16": "fcn32s_vgg16", "alexnet": "fcn32s_alexnet_tv" if TORCHVISION else "fcn32s_alexnet",
                "googlenet": "fcn32s_googlenet"}


def run_table():
    """Every training run of the pipeline: name -> model, initial weights, mode, iterations, sampling."""
    it = config["train"]["iterations"]
    pre = lambda backbone: f"{RESULTS}/pretrain/{PRETRAIN_BACKBONE[backbone]}.pt"
    model_pt = lambda run: f"{RESULTS}/train/{run}/model.pt"
    runs = {
        "fcn32s-fixed": dict(model="fcn32s_vgg16", init=pre("vgg16"), mode="fixed", iterations=it["fcn32s-fixed"]),
        "fcn32s": dict(model="fcn32s_vgg16", init=pre("vgg16"), iterations=it["fcn32s"]),
        "fcn16s": dict(model="fcn16s_vgg16", init=model_pt("fcn32s"), iterations=it["fcn16s"]),
        "fcn8s": dict(model="fcn8s_vgg16", init=model_pt("fcn16s"), iterations=it["fcn8s"]),
    }
    for backbone in config["table1"]["backbones"]:
        if backbone != "vgg16":
            runs[f"fcn32s-{backbone}"] = dict(model=TABLE1_MODEL[backbone], init=pre(backbone), iterations=it["fcn32s"])
    for p in config["fig5"]["p"]:
        f5 = config["fig5"]
        runs[f"fig5-p{p}"] = dict(model=f5["model"], init=pre("vgg16"), iterations=f5["iterations"], sample_p=p,
                                  batch_size=f5["batch_size"], val_every=f5["val_every"], recipe=f5["recipe"],
                                  lr=f5["lr"], momentum=f5["momentum"])
    for spec in runs.values():
        spec["width"] = config["models"]["width"][spec["model"].split("_")[1]]
        spec.setdefault("mode", "full")
        spec.setdefault("sample_p", 1.0)
        spec.setdefault("batch_size", config["train"]["batch_size"])
        spec.setdefault("val_every", config["train"]["val_every"])
        for key in ("recipe", "lr", "momentum"):
            spec.setdefault(key, config["train"][key])
    return runs


SPLITS = {"voc": ("train", "val"), "nyud": ("train", "test"), "siftflow": ("trainval", "test")}
TWIN_MARKERS = {"voc": "manifest.json", "nyud": "twin.json", "siftflow": "TestSet1.txt"}  # each written last


def raw_ready(dataset):
    """The file whose existence means the raw tree of ``dataset`` is complete (twin or verified download)."""
    return f"{RESULTS}/raw/{dataset}/" + (TWIN_MARKERS[dataset] if SYNTHETIC else "manifest.json")


def raw_dir(part):
    """Folders inside the raw trees, as the twins and the extracted archives lay them out."""
    real = {"voc2011": "voc/VOC2011/TrainVal/VOCdevkit/VOC2011", "voc2012": "voc/VOC2012/VOCdevkit/VOC2012",
            "sbd": "voc/SBD/benchmark_RELEASE/dataset",
            "siftflow": "siftflow/SiftFlow"}
    twin = {"voc2011": "voc/VOCdevkit/VOC2011", "sbd": "voc/benchmark_RELEASE/dataset", "siftflow": "siftflow"}
    return f"{RESULTS}/raw/" + (twin if SYNTHETIC else real)[part]


def table1_flags(wildcards):
    flags = []
    for b in config["table1"]["backbones"]:
        run = table1_run(b)
        spec = {"model": RUNS[run]["model"], "metrics": f"{RESULTS}/evaluate/{run}/val.json",
                "benchmark": f"{RESULTS}/benchmark/{TABLE1_MODEL[b]}.json"}
        flags.append(f"--run {b}='{json.dumps(spec)}'")
    return " ".join(flags)


DATA_NOTE = ("synthetic twin data, CPU-sized models: compare trends, not values" if SYNTHETIC
             else "real data")
RUNS = run_table()
TABLE2_RUNS = {"FCN-32s-fixed": "fcn32s-fixed", "FCN-32s": "fcn32s", "FCN-16s": "fcn16s", "FCN-8s": "fcn8s"}


def table1_run(backbone):
    return "fcn32s" if backbone == "vgg16" else f"fcn32s-{backbone}"


def opt(flag, value):
    """A CLI flag with its value, or nothing when the value is unset."""
    return "" if value is None else f"{flag} {value}"


def train_flags(wildcards):
    """The `segbench train` flags of one run."""
    spec, cfg = RUNS[wildcards.run], config["train"]
    val_every = spec["val_every"]
    return " ".join(filter(None, [
        f"--model {spec['model']} --width {spec['width']} --init {spec['init']} --mode {spec['mode']}",
        f"--iterations {spec['iterations']} --sample-p {spec['sample_p']}",
        f"--recipe {spec['recipe']} --criterion {cfg['criterion']} --gamma {cfg['gamma']}",
        opt("--lr", spec["lr"]), opt("--lr-scale", cfg["lr_scale"]), opt("--momentum", spec["momentum"]),
        opt("--batch-size", spec["batch_size"]),
        f"--checkpoint-every {cfg['checkpoint_every']} --seed {config['seed']} --device {config['device']}",
        f"--val-store {RESULTS}/preprocessed/voc/val.h5 --val-every {val_every}" if val_every else "",
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
        f"{RESULTS}/figures/fig5.png",
        *[f"{RESULTS}/stats/{dataset}.json" for dataset in SPLITS],
        *[f"{RESULTS}/preprocessed/nyud/{split}-hha.h5" for split in SPLITS["nyud"]],
    ]
