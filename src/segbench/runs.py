"""The experiment table: every training run of the pipeline as a function of the (validated) config.

    table = run_table(config)                     # run name -> Run
    table["fcn8s"].init                           # Init("run", "fcn16s"): staged from FCN-16s, same seed
    paths = RunPaths(results="results")
    paths.model("fcn8s", seed=1)                  # results/train/fcn8s/seed1/model.pt
    paths.init(table["fcn8s"], seed=1)            # [results/train/fcn16s/seed1/model.pt]

A run is defined once here; the Snakefile only turns runs into jobs (one per run and seed) and the CLI
flags of ``segbench train``. Runs of Table 2 (``fcn32s-fixed``, the random-trunk control
``fcn32s-fixed-random``, ``fcn32s``, ``fcn16s``, ``fcn8s``), Table 1 (``fcn32s-<backbone>`` and their
fixed runs for the other backbones), Figure 5 (``fig5-p<p>``), Table 4 (``nyud-*``: NYUDv2 RGB, RGB-D, HHA and
the late fusions), Table 5 (``siftflow-32s`` and ``siftflow-16s``, the two-headed nets) and the successors
table (``succ-<model>`` per model of ``successors.models``: U-Net, Dilation, PSPNet, DeepLab, ICNet on VOC).

The paper starts FCN-32s from the classifier with a zero score layer and stages 32s -> 16s -> 8s. With
``train.from_fixed`` (the embedded default's short schedules) every FCN-32s instead starts from its
FCN-32s-fixed run of the same seed (the score layer trained on the frozen trunk first; "linear probing
then fine-tuning"), so the chain is 32s-fixed -> 32s -> 16s -> 8s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from segbench import models
from segbench.training import recipes

TABLE2_NETS = {"FCN-32s-fixed": "fcn32s-fixed", "FCN-32s": "fcn32s", "FCN-16s": "fcn16s", "FCN-8s": "fcn8s"}
RANDOM_CONTROL = "fcn32s-fixed-random"  # FCN-32s-fixed on a randomly initialised trunk: does the transplant matter?
TABLE1_BACKBONES = ("alexnet", "vgg16", "googlenet")


@dataclass(frozen=True)
class Init:
    """Where a run's starting weights come from: a pretrained classifier, another run, or nothing."""

    kind: str            # "pretrained" (a BACKBONES key), "run" (run names, same seed) or "random"
    name: str | None = None
    streams: tuple[str, ...] = ()  # kind "run" of a late-fusion net: its colour and HHA runs


@dataclass(frozen=True)
class Run:
    """One training run (trained once per seed)."""

    name: str
    model: str                       # a models.MODELS name
    width: float
    init: Init
    iterations: int
    recipe: str
    mode: str = "full"               # "full", "fixed" (only score_fr learns) or "context" (only a Dilation
                                     # net's context module learns, on its trained front end)
    sample_p: float = 1.0            # loss sampling keep probability (Figure 5)
    batch_size: int | None = None    # None = the recipe's
    lr: float | None = None          # None = the recipe's
    momentum: float | None = None
    val_every: int = 0
    dataset: str = "voc"             # "voc", "nyud" or "siftflow" (see DATASETS)
    modality: str = "rgb"            # the input (data.tensors.MODALITIES)
    seeds: tuple[int, ...] | None = None  # None = every seed of the config
    tags: tuple[str, ...] = field(default=())  # which tables use it: "table1", "table2", "fig5", "table4", "table5"
    options: tuple[tuple[str, object], ...] = ()  # the model's options (config successors.model_options), sorted

    @property
    def model_options(self) -> dict:
        """``options`` as a dict."""
        return dict(self.options)

    def options_for(self, *stages: str) -> dict:
        """The options of the given stages (``models.registry.OPTION_STAGES``): what ``segbench train`` takes
        ("build", "train") and what ``segbench evaluate`` takes ("evaluate"), so that an evaluation option
        re-scores a run without retraining it."""
        split = models.declared(self.model).split_options(self.model_options)
        return {k: v for stage in stages for k, v in split[stage].items()}


# The training and evaluation stores of each dataset, under <results>/preprocessed/<dataset>/
DATASETS = {"voc": ("train.h5", "val.h5"), "nyud": ("train-hha.h5", "test-hha.h5"),
            "siftflow": ("trainval.h5", "test.h5")}
TABLE4_ROWS = {"FCN-32s RGB": "nyud-rgb", "FCN-32s RGBD": "nyud-rgbd", "FCN-32s HHA": "nyud-hha",
               "FCN-32s RGB-HHA": "nyud-rgb-hha", "FCN-16s RGB-HHA": "nyud-rgb-hha-16s"}  # Table 4 row -> run
TABLE5_ROWS = {"FCN-32s (two-headed)": "siftflow-32s", "FCN-16s (two-headed)": "siftflow-16s"}  # Table 5 row -> run
SUCCESSOR_FCN = "fcn8s"  # the successors table's first row: Table 2's FCN-8s run, every seed
# Classifier backbones with torchvision ImageNet weights (segbench.pretraining.imagenet.WEIGHTS); the others have none
TORCHVISION_BACKBONES = ("alexnet", "googlenet", "resnet101", "resnet50", "vgg16")
# ImageNet weights by source (pretrain.weights): torchvision's, or Caffe's as pytorch-fcn converted them
# (segbench.pretraining.imagenet.SOURCES)
WEIGHT_SOURCES = {"torchvision": TORCHVISION_BACKBONES, "caffe": ("vgg16",)}


def weight_source(config: Mapping, backbone: str) -> str:
    """Where ``backbone``'s starting classifier comes from: "synthetic" (the pretrain step's stand-in), or with
    ``pretrain.source: torchvision`` the ImageNet weights ``pretrain.weights`` names for it: "torchvision" (the
    default) or "caffe" (Caffe's VGG16, the reference's, converted by pytorch-fcn; Caffe's input convention)."""
    if config["pretrain"]["source"] != "torchvision":
        return "synthetic"
    source = (config["pretrain"].get("weights") or {}).get(backbone, "torchvision")
    if source not in WEIGHT_SOURCES:
        raise ValueError(f"pretrain.weights.{backbone} is {source!r}; expected one of {sorted(WEIGHT_SOURCES)}")
    if backbone not in WEIGHT_SOURCES[source]:
        raise ValueError(f"pretrain.weights.{backbone} is {source!r}, but {source} weights exist only for "
                         f"{list(WEIGHT_SOURCES[source])}; use torchvision for {backbone}")
    return source


def table1_model(backbone: str, *, torchvision: bool) -> str:
    """Table 1's FCN-32s for a backbone row: the grouped Caffe AlexNet with the stand-in, torchvision's
    single-tower AlexNet when its ImageNet weights are used."""
    if backbone not in TABLE1_BACKBONES:
        raise ValueError(f"unknown Table 1 backbone {backbone!r}; expected one of {list(TABLE1_BACKBONES)}")
    return {"vgg16": "fcn32s_vgg16", "alexnet": "fcn32s_alexnet_tv" if torchvision else "fcn32s_alexnet",
            "googlenet": "fcn32s_googlenet"}[backbone]


def table1_run(backbone: str) -> str:
    """The run of Table 1's ``backbone`` row (VGG16's is Table 2's FCN-32s)."""
    return "fcn32s" if backbone == "vgg16" else f"fcn32s-{backbone}"


def _width(config: Mapping, model: str) -> float:
    family = models.family_of(model)
    widths = config["models"]["width"]
    if family not in widths:
        raise ValueError(f"config models.width has no entry for {family!r} (needed by {model}); it has "
                         f"{sorted(widths)}")
    return float(widths[family])


def run_table(config: Mapping) -> dict[str, Run]:
    """Every training run of ``config`` (a dict validated against workflow/schemas/config.schema.yaml)."""
    train, it = config["train"], config["train"]["iterations"]
    for backbone in config["pretrain"].get("weights") or {}:
        weight_source(config, backbone)  # a source without weights for its backbone stops here, not in a job
    common = dict(recipe=train["recipe"], lr=train["lr"], momentum=train["momentum"], batch_size=train["batch_size"],
                  val_every=train["val_every"])
    runs: list[Run] = []

    def chain(prefix: str, model: str, tags: tuple[str, ...], *, always: bool = False) -> Init:
        """The fixed run of a 32s net (a run of its own where a table needs it or ``from_fixed`` chains
        the 32s net from it), and where the 32s net starts from."""
        pretrained = Init("pretrained", models.backbone_of(model))
        if not (always or train["from_fixed"]):
            return pretrained
        fixed = Run(name=f"{prefix}-fixed", model=model, width=_width(config, model), init=pretrained,
                    iterations=it["fcn32s-fixed"], mode="fixed", tags=tags, **common)
        runs.append(fixed)
        return Init("run", fixed.name) if train["from_fixed"] else pretrained

    vgg = "fcn32s_vgg16"
    start = chain("fcn32s", vgg, ("table2",), always=True)
    runs += [
        Run(name=RANDOM_CONTROL, model=vgg, width=_width(config, vgg), init=Init("random"),
            iterations=it["fcn32s-fixed"], mode="fixed", tags=("table2",), **common),
        Run(name="fcn32s", model=vgg, width=_width(config, vgg), init=start, iterations=it["fcn32s"],
            tags=("table1", "table2"), **common),
        Run(name="fcn16s", model="fcn16s_vgg16", width=_width(config, vgg), init=Init("run", "fcn32s"),
            iterations=it["fcn16s"], tags=("table2",), **common),
        Run(name="fcn8s", model="fcn8s_vgg16", width=_width(config, vgg), init=Init("run", "fcn16s"),
            iterations=it["fcn8s"], tags=("table2",), **common),
    ]
    for backbone in config["table1"]["backbones"]:
        if backbone == "vgg16":
            continue
        model = table1_model(backbone, torchvision=weight_source(config, backbone) == "torchvision")
        name = table1_run(backbone)
        start = chain(name, model, ("table1",))
        runs.append(Run(name=name, model=model, width=_width(config, model), init=start, iterations=it["fcn32s"],
                        tags=("table1",), **common))
    f5 = config["fig5"]
    for p in f5["p"]:
        runs.append(Run(name=fig5_run(p), model=f5["model"], width=_width(config, f5["model"]),
                        init=Init("pretrained", models.backbone_of(f5["model"])), iterations=f5["iterations"],
                        sample_p=float(p), batch_size=f5["batch_size"], val_every=f5["val_every"],
                        recipe=f5["recipe"], lr=f5["lr"], momentum=f5["momentum"],
                        seeds=tuple(f5["seeds"]) if f5["seeds"] else None, tags=("fig5",)))
    runs += _table4_runs(config) + _table5_runs(config) + _successor_runs(config)
    table = {}
    for run in runs:
        if run.name in table:
            raise ValueError(f"two runs are named {run.name!r}: check table1.backbones and fig5.p for duplicates")
        table[run.name] = run
    for run in table.values():
        for name in (run.init.streams or (run.init.name,)) if run.init.kind == "run" else ():
            if name not in table:
                raise ValueError(f"run {run.name!r} starts from run {name!r}, which the config does not define")
    return table


def _table4_runs(config: Mapping) -> list[Run]:
    """NYUDv2 (Table 4): FCN-32s on RGB, RGB-D (early fusion), HHA; the RGB-HHA late fusion from the RGB
    and HHA runs, and FCN-16s RGB-HHA staged from it."""
    c = config["nyud"]
    vgg = Init("pretrained", "vgg16")
    width = _width(config, "fcn32s_vgg16")
    common = dict(dataset="nyud", width=width, recipe=config["train"]["recipe"], lr=config["train"]["lr"],
                  momentum=config["train"]["momentum"], batch_size=config["train"]["batch_size"],
                  seeds=tuple(c["seeds"]), tags=("table4",))
    single = c["iterations"]["single"]
    return [
        Run(name="nyud-rgb", model="fcn32s_vgg16", init=vgg, iterations=single, modality="rgb", **common),
        Run(name="nyud-rgbd", model="fcn32s_vgg16", init=vgg, iterations=single, modality="rgbd", **common),
        Run(name="nyud-hha", model="fcn32s_vgg16", init=vgg, iterations=single, modality="hha", **common),
        Run(name="nyud-rgb-hha", model="fcn32s_rgbhha_vgg16", init=Init("run", streams=("nyud-rgb", "nyud-hha")),
            iterations=c["iterations"]["fusion"], modality="rgb_hha", **common),
        Run(name="nyud-rgb-hha-16s", model="fcn16s_rgbhha_vgg16", init=Init("run", "nyud-rgb-hha"),
            iterations=c["iterations"]["fusion"], modality="rgb_hha", **common),
    ]


def _table5_runs(config: Mapping) -> list[Run]:
    """SIFT Flow (Table 5): the two-headed (semantic + geometric) FCN-32s, and FCN-16s staged from it."""
    c = config["siftflow"]
    common = dict(dataset="siftflow", width=_width(config, "fcn32s_vgg16"), recipe=config["train"]["recipe"],
                  lr=config["train"]["lr"], momentum=config["train"]["momentum"],
                  batch_size=config["train"]["batch_size"], seeds=tuple(c["seeds"]), tags=("table5",))
    return [
        Run(name="siftflow-32s", model="fcn32s_siftflow_vgg16", init=Init("pretrained", "vgg16"),
            iterations=c["iterations"]["fcn32s"], **common),
        Run(name="siftflow-16s", model="fcn16s_siftflow_vgg16", init=Init("run", "siftflow-32s"),
            iterations=c["iterations"]["fcn16s"], **common),
    ]


def images_per_iteration(run: Run) -> int:
    """The images one iteration of ``run`` draws (its recipe's batch, or ``batch_size``, over ``sample_p``): the
    most training processes it can be split over (``distributed.processes_for``)."""
    from segbench.training import recipes

    batch = recipes.recipe(run.recipe, model_name=run.model, width=run.width, batch_size=run.batch_size).batch_size
    return recipes.images_per_iteration(batch, run.sample_p)


# Pixels of one training image of each real dataset (VOC's are about 500 x 375), for ordering jobs only
REAL_TRAIN_PIXELS = {"voc": 500 * 375, "nyud": 480 * 640, "siftflow": 256 * 256}
BENCHMARK_PRIORITY = 100  # the all-core benchmark jobs go first: above any two training jobs together


def train_pixels(config: Mapping, dataset: str) -> int:
    """Pixels of one training image of ``dataset`` (``DATASETS``) under ``config``: the twin's size, or the
    real dataset's typical size."""
    if config["data"]["source"] != "synthetic":
        return REAL_TRAIN_PIXELS[dataset]
    twin = config["data"]["synthetic"]
    if dataset == "voc":
        return twin["voc"]["image_size"] ** 2
    if dataset == "nyud":  # the real frames scaled by frame_scale
        return round(REAL_TRAIN_PIXELS["nyud"] * twin["nyud"]["frame_scale"] ** 2)
    return REAL_TRAIN_PIXELS[dataset]  # SIFT Flow's twin keeps the real 256 x 256


def chain_work(table: Mapping[str, Run], config: Mapping) -> dict[str, int]:
    """The training pixels left on the longest chain that starts with each run: its own (iterations x images
    per iteration x pixels per image) plus the largest among the runs that start from it."""
    own = {n: r.iterations * images_per_iteration(r) * train_pixels(config, r.dataset) for n, r in table.items()}
    children: dict[str, list[str]] = {n: [] for n in table}
    for run in table.values():
        for parent in (run.init.streams or (run.init.name,)) if run.init.kind == "run" else ():
            children[parent].append(run.name)
    work: dict[str, int] = {}

    def left(name: str) -> int:
        if name not in work:
            work[name] = own[name] + max((left(child) for child in children[name]), default=0)
        return work[name]

    return {name: left(name) for name in table}


def train_priorities(table: Mapping[str, Run], config: Mapping) -> dict[str, int]:
    """Each run's training-job priority, 1 ... ``BENCHMARK_PRIORITY // 2 - 1`` (Snakemake starts the ready jobs
    whose priorities sum highest, so two of them stay below one benchmark), in proportion to ``chain_work``: the
    longest chains start first, so that the cores finish together instead of one running a late chain alone.
    Only the order of the jobs changes, never their results."""
    work = chain_work(table, config)
    top, most = max(work.values(), default=1), BENCHMARK_PRIORITY // 2 - 1
    return {name: max(1, round(most * w / top)) for name, w in work.items()}


def min_images_per_process(run: Run, *, synced: bool) -> int:
    """The fewest images a training process of ``run`` may get (``recipes.min_images_per_process``; ``synced``:
    batch norm synchronised over the processes, as on CUDA)."""
    from segbench.training import recipes

    rec = recipes.recipe(run.recipe, model_name=run.model, width=run.width, batch_size=run.batch_size)
    return recipes.min_images_per_process(run.model, rec, synced=synced)


def successor_run(model: str) -> str:
    """The run name of successor ``model`` (``succ-pspnet_resnet50``)."""
    return f"succ-{model}"


def successor_models() -> list[str]:
    """The models a successors table can list: the 2D models that declare a recipe of their own (not the FCNs)."""
    return sorted(name for name, entry in models.MODELS.items() if entry.recipe is not None and entry.dims == 2)


def crf_runs(config: Mapping, table: Mapping[str, Run]) -> list[str]:
    """The runs of ``crf.runs`` that ``table`` (this configuration's runs) holds, in the listed order: those the
    dense CRF scores (rule evaluate_crf). A successor's run (``succ-<model>``) whose model ``successors.models``
    does not list waits unused, as its ``successors.model_options`` do: the default names the DeepLab rows, and a
    narrower model list layered over it keeps working. Any other name that is not a run here is refused (a typo)."""
    listed = list(config["crf"]["runs"])
    strays = sorted(set(listed) - set(table) - {successor_run(model) for model in successor_models()})
    if strays:
        raise ValueError(f"crf.runs names {strays}, which are not runs of this configuration; expected names from "
                         f"{sorted(table)}, or succ-<model> for a successor model")
    return [name for name in listed if name in table]


def successor_init(model: str, *, torchvision: bool) -> Init:
    """Where successor ``model`` starts: the classifier of its backbone (the pretrain step's stand-in, or
    torchvision's ImageNet weights; ICNet's half-width ResNet-50 is pruned from the ResNet-50 one, as the
    ICNet authors pruned their trained PSPNet), or a random net where there is none: U-Net (trained from
    scratch, as published)."""
    backbone = models.backbone_of(model)
    source = models.PRUNED_FROM.get(backbone, backbone)
    if backbone is None or (torchvision and source not in TORCHVISION_BACKBONES):
        return Init("random")
    return Init("pretrained", backbone)


def _successor_runs(config: Mapping) -> list[Run]:
    """The successors table: one run per model of ``successors.models`` on VOC, with the section's recipe
    (null: the model's own paper's, ``recipes.own_recipe``) and length (``_successor_length``; a net trained from
    scratch takes ``successors.scratch_iterations`` where set), batch size ``successors.batch_size`` (absent or
    null: the recipe's), lr and momentum the recipe's (``train.lr`` and ``train.momentum`` are the FCNs': 1e-10 for
    the heavy recipe's VGG16 would stall a successor).

    A Dilation net with a context module trains in the paper's two stages, each with the section's recipe and
    length (the paper states none for the second): the front end ``succ-dilation8_vgg16`` (a row of its own,
    as in the paper's Table 3), then the module on it with the front end frozen (``mode="context"``).
    ``successors.model_options`` gives a model its options (``{model: {option: value}}``, the options its
    declaration lists, e.g. DeepLab's ``output_stride``); an option the model does not have is refused here, and so
    is a name that is no successor model (a typo). Options of a successor that ``successors.models`` does not list
    wait unused: a layer (config/successors.yaml) carries its models' options, and a narrower model list layered
    over it keeps working."""
    c, train = config["successors"], config["train"]
    torchvision = config["pretrain"]["source"] == "torchvision"
    runs = []
    successors = successor_models()
    options = c.get("model_options") or {}
    strays = sorted(set(options) - set(successors))
    if strays:
        raise ValueError(f"successors.model_options names {strays}, which are not successor models; expected names "
                         f"from {successors}")
    for model in c["models"]:
        if model not in successors:
            raise ValueError(f"successors.models has {model!r}, which is not a successor model; expected names "
                             f"from {successors}")
        entry = models.declared(model)
        try:
            entry.split_options(options.get(model))
        except ValueError as err:
            raise ValueError(f"successors.model_options.{model}: {err}") from err
        recipe = c["recipe"] or recipes.own_recipe(model)
        try:
            settings = recipes.recipe(recipe, model_name=model)
        except ValueError as err:
            raise ValueError(f"successors.recipe {recipe!r} does not fit {model}: {err}; use short, a successor "
                             f"recipe ({', '.join(recipes.SUCCESSOR_RECIPES)}) or null for each model's own") from err
        published, batch = settings.iterations, c.get("batch_size") or settings.batch_size
        if batch < entry.min_batch:
            raise ValueError(f"{model} trains with batch size {batch} (successors.batch_size or recipe {recipe!r}), "
                             f"but its pooling branch's batch norm needs at least {entry.min_batch} images per "
                             f"batch; set successors.batch_size to {entry.min_batch} or more")
        init = successor_init(model, torchvision=torchvision)
        length = c["iterations"]
        if init.kind == "random" and c.get("scratch_iterations") is not None:
            length = c["scratch_iterations"]
        iterations = _successor_length(config, length, published=published, batch=batch, recipe=recipe)
        common = dict(width=_width(config, model), iterations=iterations, recipe=recipe,
                      batch_size=c.get("batch_size"), val_every=train["val_every"], seeds=tuple(c["seeds"]),
                      tags=("successors",))
        front = entry.front_end and successor_run(entry.front_end)
        if front and front not in {r.name for r in runs}:  # stage 1 before the runs on it
            runs.append(Run(name=front, model=entry.front_end, init=successor_init(entry.front_end,
                            torchvision=torchvision), options=_sorted(options.get(entry.front_end)), **common))
        if successor_run(model) in {r.name for r in runs}:  # the front end, listed after a context model
            continue
        init = Init("run", front) if front else init
        runs.append(Run(name=successor_run(model), model=model, init=init, mode="context" if front else "full",
                        options=_sorted(options.get(model)), **common))
    return runs


def fcn8s_images(config: Mapping) -> int:
    """The images the successors table's FCN-8s row trained on, over every stage of its chain
    (32s-fixed with ``train.from_fixed``, 32s, 16s, 8s)."""
    train = config["train"]
    stages = (["fcn32s-fixed"] if train["from_fixed"] else []) + ["fcn32s", "fcn16s", "fcn8s"]
    batch = train["batch_size"] or recipes.recipe(train["recipe"], model_name="fcn8s_vgg16").batch_size
    return sum(train["iterations"][stage] for stage in stages) * batch


def standin_images(config: Mapping, backbone: str = "vgg16") -> int:
    """The images ``backbone``'s stand-in saw in its pretraining (both phases): the zoo's recipe with
    ``pretrain.source: zoo``, the config's ``pretrain`` settings with ``synthetic``."""
    from segbench.pretraining import zoo

    source = config["pretrain"]["source"]
    if source == "torchvision":
        raise ValueError("successors.scratch_iterations: pretraining counts the images of a stand-in's pretraining, "
                         "but pretrain.source is torchvision (ImageNet weights): set an integer, or null for "
                         "successors.iterations")
    settings = zoo.RECIPES[backbone] if source == "zoo" else config["pretrain"]
    return (settings["crop_iterations"] + settings["iterations"]) * settings["batch_size"]


def _successor_length(config: Mapping, length, *, published: int | None, batch: int, recipe: str) -> int:
    """A successor run's iterations from ``successors.iterations`` (or ``scratch_iterations``): an integer; null,
    the recipe's published length; ``"fcn8s"``, as many images as the FCN-8s row (``fcn8s_images``);
    ``"pretraining"``, those plus the VGG16 stand-in's pretraining images (``standin_images``: what a net
    trained from scratch has not seen), each divided by the run's batch and rounded up."""
    if length is None:
        if published is None:
            raise ValueError(f"successors.iterations is null (the recipe's published length) but recipe {recipe!r} "
                             f"has none; set successors.iterations, or a successor recipe "
                             f"({', '.join(recipes.SUCCESSOR_RECIPES)}) or null for each model's own")
        return int(published)
    if length == "fcn8s":
        return -(-fcn8s_images(config) // batch)
    if length == "pretraining":
        return -(-(fcn8s_images(config) + standin_images(config)) // batch)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"successors iterations {length!r}: expected a positive integer, null, fcn8s or pretraining")
    return length


def _sorted(options: Mapping | None) -> tuple[tuple[str, object], ...]:
    return tuple(sorted((options or {}).items()))


def trunk_of(table: Mapping[str, Run], name: str) -> str | None:
    """The pretrained backbone that run ``name``'s weights descend from (through the runs it starts from), or
    None for a net trained from scratch: the rows of a table that share a trunk."""
    init = table[name].init
    while init.kind == "run":
        init = table[init.streams[0] if init.streams else init.name].init
    return init.name if init.kind == "pretrained" else None


def fig5_run(p: float) -> str:
    """The run name of Figure 5's keep probability ``p`` (``fig5-p0.5``)."""
    return f"fig5-p{float(p)}"


def pretrained_backbones(table: Mapping[str, Run]) -> list[str]:
    """The classifier backbones whose (stand-in, downloaded or pruned) weights the runs start from, and the
    classifiers those are pruned from (``models.PRUNED_FROM``), sorted."""
    starts = {r.init.name for r in table.values() if r.init.kind == "pretrained"}
    return sorted(starts | {models.PRUNED_FROM[b] for b in starts if b in models.PRUNED_FROM})


@dataclass(frozen=True)
class RunPaths:
    """Where the pipeline writes each run's files, under the ``results`` folder."""

    results: str

    def run_dir(self, run: str, seed: int | str) -> str:
        return f"{self.results}/train/{run}/seed{seed}"

    def model(self, run: str, seed: int | str) -> str:
        return f"{self.run_dir(run, seed)}/model.pt"

    def log(self, run: str, seed: int | str) -> str:
        return f"{self.run_dir(run, seed)}/log.csv"

    def metrics(self, run: str, seed: int | str) -> str:
        return f"{self.results}/evaluate/{run}/seed{seed}/val.json"

    def stores(self, run: Run) -> tuple[str, str]:
        """The training and evaluation stores of ``run``'s dataset."""
        return tuple(f"{self.results}/preprocessed/{run.dataset}/{name}" for name in DATASETS[run.dataset])

    def pretrained(self, backbone: str) -> str:
        return f"{self.results}/pretrain/{backbone}.pt"

    def init(self, run: Run, seed: int | str) -> list[str]:
        """The starting weights files of ``run`` for ``seed``: one, two for a late fusion, none for a random trunk."""
        if run.init.kind == "pretrained":
            return [self.pretrained(run.init.name)]
        if run.init.kind == "run":
            return [self.model(name, seed) for name in (run.init.streams or (run.init.name,))]
        return []
