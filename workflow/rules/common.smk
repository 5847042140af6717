# Helpers shared by all stages (config validation, the run table, input functions); no rules here.

import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from segbench import models, runs
from segbench.pretraining import zoo
from segbench.training.distributed import launch_command, processes_for
from segbench.data import MANIFEST
from segbench.reporting.perclass import csv_path as perclass_csv
from segbench.infra.provenance import provenance_path, write_config
from segbench.infra.resources import asks_for_gpu, rule_resources, slurm_gpu_problem


def layer_config(config):
    """With ``layered_on`` (config/rehearsal.yaml names config/paper.yaml): config/config.yaml, then that file,
    then the command line's config files and --config, in place of what Snakemake merged without the middle."""
    base = config.get("layered_on")
    if not base:
        return
    from snakemake.common.configfile import load_configfile
    from snakemake.utils import update_config

    if not os.path.isfile(base):
        raise WorkflowError(f"layered_on: {base!r} is not a file (paths are relative to {os.getcwd()})")
    middle = load_configfile(base)
    if middle.get("layered_on"):
        raise WorkflowError(f"layered_on: {base} is itself layered on {middle['layered_on']}; layer on a file that "
                            "is not (one level)")
    merged = load_configfile(os.path.join(workflow.basedir, "config", "config.yaml"))
    update_config(merged, middle)
    update_config(merged, workflow.config_settings.overwrite_config)
    config.clear()
    config.update(merged)


layer_config(config)
validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
SYNTHETIC = config["data"]["source"] == "synthetic"
TORCHVISION = config["pretrain"]["source"] == "torchvision"
ZOO = config["pretrain"]["source"] == "zoo"  # the stand-ins shipped in zoo/ (segbench.pretraining.zoo)
ZOO_HELD = zoo.held(config["pretrain"]["zoo"]) if ZOO else []  # the others are trained here (rule pretrain)
SEEDS = config["seeds"]

# The rehearsal (config/rehearsal.yaml): real data's rules on twin downloads at real sizes, verified against the
# checksum table its mirror writes (data.checksums); real runs check the published checksums and split sizes.
REHEARSAL = config["rehearsal"]
CHECKSUMS = config["data"]["checksums"]
CHECK_COUNTS = not SYNTHETIC and config["data"]["check_counts"]
CHECKSUM_TABLE = [CHECKSUMS] if CHECKSUMS else []  # an input of every rule that verifies a download
if REHEARSAL:
    _mirror = REHEARSAL["mirror"]
    _expected = {"data.source": ("real", config["data"]["source"]),
                 "pretrain.source": ("torchvision", config["pretrain"]["source"]),
                 "data.data_root": (f"{_mirror}/datasets", config["data"]["data_root"]),
                 "data.checksums": (f"{_mirror}/checksums.json", CHECKSUMS),
                 "pretrain.cache": (f"{_mirror}/weights", config["pretrain"]["cache"])}
    _wrong = {key: got for key, (want, got) in _expected.items() if want != got}
    if _wrong:
        raise WorkflowError(f"rehearsal.mirror is {_mirror!r}, so the rehearsal needs "
                            f"{', '.join(f'{k}: {_expected[k][0]}' for k in _wrong)}; the config has "
                            f"{', '.join(f'{k}: {v}' for k, v in _wrong.items())}")

RUNS = runs.run_table(config)  # run name -> segbench.runs.Run
TRAIN_PRIORITY = runs.train_priorities(RUNS, config)  # the longest chains of runs start first
PATHS = runs.RunPaths(RESULTS)
BACKBONES = runs.pretrained_backbones(RUNS)  # classifiers the runs start from, and those they are pruned from
TRAINED_BACKBONES = "|".join(b for b in models.BACKBONES if b not in models.PRUNED_FROM and b not in ZOO_HELD) or "$^"
# ^ pretrained here or downloaded


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


def shared_standin_images(wildcards):
    """The shared images of a stand-in (rule standin_images) where two or more stand-ins of this config take
    its input size, else none (it renders its own)."""
    from segbench.pretraining.standins import INPUT_SIZE

    size = INPUT_SIZE[wildcards.backbone]
    sharing = [b for b in BACKBONES if b not in models.PRUNED_FROM and b not in ZOO_HELD and INPUT_SIZE[b] == size]
    return [f"{RESULTS}/pretrain/images-{size}px.h5"] if len(sharing) > 1 else []


def backbone_width(backbone):
    return config["models"]["width"][models.FAMILIES[backbone]]


def check_zoo():
    """With pretrain.source zoo: the zoo's stand-ins that the runs need are at the width models.width builds them
    (a pruned trunk at its source's); a width the zoo does not hold stops here, not in a job."""
    zoo_width = {b: zoo.RECIPES[models.PRUNED_FROM.get(b, b)]["width"] for b in BACKBONES if b in ZOO_HELD}
    other = {b: backbone_width(b) for b, w in zoo_width.items() if backbone_width(b) != w}
    if other:
        raise WorkflowError("pretrain.source is zoo, but models.width builds " + ", ".join(
            f"{b} at {w:g}" for b, w in other.items()) + ", the zoo's are at " + ", ".join(
            f"{zoo_width[b]:g}" for b in other) + ": set pretrain.source: synthetic to train stand-ins for this "
            "configuration")


if ZOO:
    check_zoo()


def table1_flags(wildcards):
    flags = []
    for b in config["table1"]["backbones"]:
        run = RUNS[runs.table1_run(b)]
        spec = {"model": run.model, "metrics": seeds_of(run.name, PATHS.metrics),
                "benchmark": f"{RESULTS}/benchmark/{run.model}.json"}
        flags.append(arg("--run", f"{b}={json.dumps(spec)}"))
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


# The successors table (config successors): FCN-8s (Table 2's run, every seed) first, then one run per model.
SUCCESSOR_RUNS = [name for name, run in RUNS.items() if "successors" in run.tags]
SUCCESSOR_ROWS = [runs.SUCCESSOR_FCN, *SUCCESSOR_RUNS] if SUCCESSOR_RUNS else []


# The dense CRF after the net (config crf): rule evaluate_crf scores every seed of these runs with it as well.
try:
    CRF_RUNS = runs.crf_runs(config, RUNS)
except ValueError as err:
    raise WorkflowError(str(err)) from None


def volumetric_iterations(model):
    """volumetric.iterations, or (null) the published length of the volumetric model's own recipe."""
    return config["volumetric"]["iterations"] or models.RECIPES[models.declared(model).recipe]["iterations"]


def crf_metrics(run, seed):
    """The evaluation JSON of ``run`` and ``seed`` with the dense CRF (rule evaluate_crf), beside val.json."""
    return f"{RESULTS}/evaluate/{run}/seed{seed}/val_crf.json"


def successor_benchmark(run):
    """The forward-time benchmark of ``run``'s model (full width at the benchmark size, as Table 1's)."""
    return f"{RESULTS}/benchmark/{RUNS[run].model}.json"


def successors_flags(wildcards):
    """The `segbench table-successors --run` flags: per row its model, metrics (one per seed), benchmark,
    recipe, length and width."""
    flags = []
    for name in SUCCESSOR_ROWS:
        run = RUNS[name]
        spec = {"metrics": seeds_of(name, PATHS.metrics), "benchmark": successor_benchmark(name),
                "crf_metrics": seeds_of(name, crf_metrics) if name in CRF_RUNS else None,
                "recipe": run.recipe, "iterations": run.iterations, "width": run.width}
        flags.append(arg("--run", f"{run.model}={json.dumps(spec)}"))
    return " ".join(flags)


def _successor_starts():
    """How the successor rows start and which share a trunk, for the table's caption."""
    trunks = {}
    for name in SUCCESSOR_ROWS:
        trunks.setdefault(runs.trunk_of(RUNS, name), []).append(models.declared(RUNS[name].model).display)
    source = ("ImageNet weights (torchvision)" if TORCHVISION
              else "the pretraining stand-ins (synthetic objects, not ImageNet)")
    groups = [f"{trunk}{f' pruned from {models.PRUNED_FROM[trunk]}' if trunk in models.PRUNED_FROM else ''} "
              f"({', '.join(rows)})" for trunk, rows in trunks.items() if trunk is not None]
    return "; ".join(filter(None, [f"trunks from {source}", f"rows by trunk: {', '.join(groups)}",
                                   f"from scratch: {', '.join(trunks[None])}" if None in trunks else ""]))


DATASET_NOTES["successors"] = "; ".join(filter(None, [
    f"VOC twin at {config['data']['synthetic']['voc']['image_size']} px, CPU-sized models: compare trends, "
    "not values" if SYNTHETIC else "real data", _successor_starts() if SUCCESSOR_RUNS else ""]))


def arg(flag, value):
    """A CLI flag with its value, quoted for the shell (paths may hold spaces or quotes)."""
    return f"{flag} {shlex.quote(str(value))}"


def opt(flag, value):
    """A CLI flag with its value, quoted for the shell, or nothing when the value is unset."""
    return "" if value is None else arg(flag, value)


def train_flags(wildcards):
    """The `segbench train` flags of one run and seed."""
    run, cfg = RUNS[wildcards.run], config["train"]
    init = PATHS.init(run, wildcards.seed)
    return " ".join(filter(None, [
        f"--model {run.model} --width {run.width} --mode {run.mode} --modality {run.modality}",
        f"--init {' '.join(map(shlex.quote, init))}" if init else "",
        f"--iterations {run.iterations} --sample-p {run.sample_p}",
        f"--recipe {run.recipe} --criterion {cfg['criterion']} --gamma {cfg['gamma']}",
        opt("--lr", run.lr), opt("--lr-scale", cfg["lr_scale"]), opt("--momentum", run.momentum),
        opt("--batch-size", run.batch_size), opt("--dropout", config["models"]["dropout"]),
        f"--precision {config['precision']}", "--channels-last" if config["channels_last"] else "",
        f"--num-workers {cfg['num_workers']}", "" if cfg["pin_memory"] else "--no-pin-memory",
        "--compile" if cfg["compile"] else "", "--deterministic" if cfg["deterministic"] else "",
        f"--checkpoint-every {cfg['checkpoint_every']} --seed {wildcards.seed} --device {config['device']}",
        f"{arg('--val-store', PATHS.stores(run)[1])} --val-every {run.val_every}" if run.val_every else "",
        opt("--checkpoint-minutes", cfg["checkpoint_minutes"]), opt("--micro-batch", cfg["micro_batch"]),
        model_options_flag(wildcards, "build", "train"),
    ]))


def model_options_flag(wildcards, *stages):
    """`--model-options JSON` of a run's options of those stages (config successors.model_options), or nothing."""
    options = RUNS[wildcards.run].options_for(*stages)
    return arg("--model-options", json.dumps(options)) if options else ""


def resources_for(rule):
    return rule_resources(rule, device=config["device"], overrides=config.get("resources"))


def check_set_resources(overrides):
    """Snakemake's --set-resources (the slurm profile's set-resources: train's slurm_extra, the early SIGTERM)
    replaces a rule's resources: a value that the config's resources: section gives the same rule and key would be
    dropped without a word. Raises WorkflowError naming both."""
    for rule, given in workflow.resource_settings.overwrite_resources.items():
        clash = sorted(set(given.keys()) & set((overrides or {}).get(rule) or {}))
        if clash:
            raise WorkflowError(
                f"the config's resources.{rule} sets {', '.join(f'{key}={overrides[rule][key]!r}' for key in clash)}, "
                f"but --set-resources sets {rule}:{', '.join(clash)} as well (a profile's set-resources: "
                "slurm/config.yaml gives train the early SIGTERM in slurm_extra) and would replace it. Set each in "
                "one place: for slurm_extra, add the config's options to the profile's line (docs/cluster.md, "
                "Resuming).")


check_set_resources(config.get("resources"))


def train_processes(wildcards):
    """The training processes of one run: train.processes, at most as many as give each process the fewest
    images its batch norm needs (runs.min_images_per_process) of the run's iteration."""
    run = RUNS[wildcards.run]
    least = runs.min_images_per_process(run, synced=config["device"] == "cuda")
    return processes_for(config["train"]["processes"], runs.images_per_iteration(run), min_per_process=least)


def train_resources():
    """The train rule's resources, with the time limit train.time_limit (minutes). With train.processes > 1 each
    is a function of the job, since a run gets only as many processes (GPUs, CPUs, memory) as its iteration has
    images; cpus_per_task is then 1 for a job of one process without workers (the rule's threads)."""
    cfg = config["train"]

    def of(processes):
        return rule_resources("train", device=config["device"], overrides=config.get("resources"),
                              processes=processes, workers=cfg["num_workers"], runtime=cfg["time_limit"])

    if cfg["processes"] == 1:
        return of(1)
    keys = {*of(1), *of(cfg["processes"])}
    return {key: (lambda wildcards, key=key: of(train_processes(wildcards)).get(key, 1)) for key in keys}


onstart:
    # The resolved configuration, which every job's provenance sidecar records (--provenance). Written here and
    # not by a rule, so that no job depends on it: changing a config key reruns only the jobs it changes.
    write_config(CONFIG_JSON, config)
    # Before the first sbatch: a GPU request that the cluster cannot satisfy stops the run with what to change
    # (sbatch would refuse each such job with "Invalid generic resource (gres) specification").
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        problem = slurm_gpu_problem({(job.rule.name, job.resources.get("slurm_partition"))
                                     for job in workflow.dag.needrun_jobs() if asks_for_gpu(job.resources)})
        if problem:
            raise WorkflowError(problem)


def final_outputs():
    return [
        REPORT,
        f"{RESULTS}/tables/table1.md",
        f"{RESULTS}/tables/table2.md",
        f"{RESULTS}/tables/fig5.md",
        *([] if TORCHVISION else [f"{RESULTS}/tables/pretrain.md"]),
        f"{RESULTS}/tables/table4.md",
        f"{RESULTS}/tables/table5.md",
        *([f"{RESULTS}/tables/successors.md"] if SUCCESSOR_RUNS else []),
        *[path for run in CRF_RUNS for path in seeds_of(run, crf_metrics)],
        *([f"{RESULTS}/tables/volumetric.md"] if config.get("volumetric") else []),
        f"{RESULTS}/figures/fig5.png",
        *[f"{RESULTS}/stats/{dataset}.json" for dataset in SPLITS],
        *[f"{RESULTS}/preprocessed/nyud/{split}-hha.h5" for split in SPLITS["nyud"]],
    ]


# Traceability (workflow/rules/trace.smk): provenance sidecars, per-class results, figures, the report.

CONFIG_JSON = f"{RESULTS}/provenance/config.json"  # the resolved config of the latest run (see onstart)
PROVENANCE = arg("--provenance", CONFIG_JSON)  # the flag with which a subcommand writes its outputs' sidecars
REPORT = f"{RESULTS}/report.html"
PAGES = f"{RESULTS}/report"  # the tables and the provenance as HTML pages, for the report
TABLE_PAGES = {  # name -> (table prefix, title, caption in workflow/report/, report category); one page each
    "table1": (f"{RESULTS}/tables/table1", "Table 1: classifiers as FCNs", "table1.rst", "Table 1"),
    "table2": (f"{RESULTS}/tables/table2", "Table 2: skip architectures on seg11valid", "table2.rst", "Table 2"),
    "table3": (f"{RESULTS}/tables/table3", "Table 3: VOC test submissions", "table3.rst", "Table 3"),
    "fig5": (f"{RESULTS}/tables/fig5", "Figure 5: whole images against patch sampling", "fig5.rst", "Figure 5"),
    "table4": (f"{RESULTS}/tables/table4", "Table 4: RGB-D on NYUDv2", "table4.rst", "Table 4"),
    "table5": (f"{RESULTS}/tables/table5", "Table 5: SIFT Flow, semantic and geometric", "table5.rst", "Table 5"),
    **({"successors": (f"{RESULTS}/tables/successors", "Beyond FCN: FCN-8s and its successors", "successors.rst",
                       "Successors")} if SUCCESSOR_RUNS else {}),
    **({} if TORCHVISION else {"pretrain": (f"{RESULTS}/tables/pretrain", "Pretraining stand-ins",
                                            "pretrain.rst", "Pretraining")}),
    **({} if SYNTHETIC else {"released": (f"{RESULTS}/tables/released", "The authors' released models",
                                          "released.rst", "Released models")}),
}
# Evaluations that get a per-class CSV: every run a table reads metrics of, every seed.
EVALUATED = sorted({*TABLE2_ROWS.values(), *(runs.table1_run(b) for b in config["table1"]["backbones"]),
                    *runs.TABLE4_ROWS.values(), *runs.TABLE5_ROWS.values(), *SUCCESSOR_ROWS})
PERCLASS_FIGURES = {run: PATHS.metrics(run, SEEDS[0]) for run in runs.TABLE2_NETS.values()}  # first seed
QUALITATIVE = {  # dataset -> evaluation store, {column title: weights of the first seed} and report category
    "voc": {"store": PATHS.stores(RUNS[runs.TABLE2_NETS["FCN-32s"]])[1], "category": "Table 2",
            "models": {net: PATHS.model(runs.TABLE2_NETS[net], SEEDS[0]) for net in ("FCN-32s", "FCN-16s", "FCN-8s")}},
    "nyud": {"store": PATHS.stores(RUNS["nyud-rgb"])[1], "category": "Table 4",
             "models": {row.replace("FCN-32s ", "").replace("FCN-", ""): PATHS.model(run, SEEDS[0])
                        for row, run in runs.TABLE4_ROWS.items()}},
    "siftflow": {"store": PATHS.stores(RUNS["siftflow-32s"])[1], "category": "Table 5",
                 "models": {row.removesuffix(" (two-headed)"): PATHS.model(run, SEEDS[0])
                            for row, run in runs.TABLE5_ROWS.items()}},
}
TEST_YEARS = ("2012",) if SYNTHETIC else ("2011", "2012")  # the twin has one test split, of VOC2012's layout
TWIN_TEST_IMAGES = 4  # images in the twin's test split (only the submission's layout is tested on it)
SUBMISSION_RUN = "fcn8s"  # the net of Table 3, first seed
RELEASED_VARIANTS = () if SYNTHETIC else ("fcn32s", "fcn16s", "fcn8s")  # real data: weights from the network


def evaluations():
    """Every evaluation JSON the per-class step reads: each seed of each evaluated run, the released models."""
    return [path for run in EVALUATED for path in seeds_of(run, PATHS.metrics)] + [
        f"{RESULTS}/evaluate/released-{v}/val.json" for v in RELEASED_VARIANTS]


def sidecars(*paths):
    """The provenance sidecar of each path (``<path>.provenance.json``)."""
    return [str(provenance_path(p)) for p in paths]


def figure_files(*prefixes):
    """The PNG and PDF of each figure prefix."""
    return [f"{prefix}.{ext}" for prefix in prefixes for ext in ("png", "pdf")]


def curve_category(run):
    """The report category of a run's training curves: the first table that uses it."""
    tags = RUNS[run].tags
    categories = {"table1": "Table 1", "table2": "Table 2", "fig5": "Figure 5", "table4": "Table 4",
                  "table5": "Table 5", "successors": "Successors"}
    return categories.get(tags[0] if tags else "", "Runs")


def report_figures():
    """Every figure the report shows: its PNG (and the start of the provenance page's trace)."""
    return [
        f"{RESULTS}/figures/fig5.png",
        *[f"{RESULTS}/figures/perclass/{run}.png" for run in PERCLASS_FIGURES],
        *[f"{RESULTS}/figures/curves/{run}.png" for run in RUNS],
        *[f"{RESULTS}/figures/qualitative/{dataset}.png" for dataset in QUALITATIVE],
    ]
