"""The paper's two SGD recipes, a short-schedule Adam recipe and the successors' published recipes by name,
and the optimizer with Caffe's per-parameter multipliers.

    rec = recipe("heavy", model_name="fcn16s_vgg16")          # lr 1e-12, batch 1, momentum 0.99, summed loss
    optimizer = make_optimizer(model, rec)                    # weights (lr, decay) + biases (2 lr, no decay)
    rec = recipe(own_recipe("pspnet_resnet50"), model_name="pspnet_resnet50")   # lr 0.01, poly, crop 473, ...

``heavy`` is the reference code's ([BV] solver.prototxt, the PAMI paper): batch 1, momentum 0.99, summed
(unnormalised) loss, lr 1e-10 / 1e-12 / 1e-14 for FCN-32s / 16s / 8s (each stage 100x below the one it
starts from; 8s at-once starts from VGG16 and uses 1e-10). ``paper`` is the CVPR paper's: batch 20,
momentum 0.9, mean loss, lr 1e-4 (VGG16), 1e-3 (AlexNet), 5e-5 (GoogLeNet), 16s and 8s at 1/100 of 32s.
Both: weight decay 5e-4, biases at twice the lr and without decay, frozen parameters (the bilinear
upsamplers, the trunk of FCN-32s-fixed) left out of the optimizer. The reference code has no heavy value
for AlexNet or GoogLeNet (its AlexNet solver is the ``paper`` recipe); ``heavy`` uses VGG16's for them.

``short`` is this project's replacement for schedules thousands of times shorter than the paper's (the
embedded default trains each net on about a thousand images instead of 100,000 iterations): Adam
(decoupled weight decay 5e-4 on weights, none on biases, biases at twice the lr) on the mean loss, batch 4,
the layers named by ``model.head_prefixes`` (``score*`` in FCNs: zero-initialised, and the only layers a
fixed-trunk run learns) at 10x the lr, as the successors' recipes do for their new heads,
the learning rate decayed to zero over each run as (1 - t)^0.9 ("poly"), and no stage divisor: each stage
(32s-fixed -> 32s -> 16s -> 8s) is a short run of its own that starts from the previous stage and decays
its own rate, which is what the paper's /100 per stage did for runs that had converged. Its lr is one
constant for every net, 2.5e-5 at full width, divided by the width: Adam moves every weight by about lr
per step whatever the gradient's scale (so image size and loss normalisation drop out), and a unit with
fan-in n then changes by about n x lr, so lr / width keeps that change the same across widths (the rule of
maximal-update parametrisation for Adam's hidden layers). 2.5e-5 itself was chosen once, on FCN-32s VGG16
at width 1/8 (2e-4 there; 1e-4 learned more slowly and 8e-4 damaged the pretrained trunk), and is not
tuned per net.

Batch norm (``Recipe.bn``; nets that have it: FCN-GoogLeNet, the ResNet successors, ``unet_same``): the FCN
recipes (``heavy``, ``paper``, ``short``) keep it **frozen** on the FCNs, every batch-norm layer in eval mode
(``train.set_train_mode``), normalising with the running statistics it started from (the pretrained
classifier's), which never change; its scale and shift still learn. The successors' nets normalise with
**batch** statistics under every recipe (``short`` too), as their papers train them (batches of 14-16 crops of
one size, synchronised over the GPUs; U-Net, trained from scratch, has no statistics to freeze). Why frozen
for the FCNs: the paper's GoogLeNet (Caffe) had no batch norm, and a frozen layer is a fixed per-channel affine
map, the closest to it; heavy trains on one whole image per step, paper on groups of one image size (on
PASCAL's varied sizes, often one image), short on 4, each padded by 100 pixels of zeros at conv1, so batch
statistics are dominated by the padding (at 500 x 500, 49% of conv1's input; on the twin's 128 px images,
85%) and replace the classifier's from the first step; and small-batch fine-tuning elsewhere freezes it too
(DeepLab's ``fine_tune_batch_norm=False`` below batch 12). Measured on the embedded default (FCN-32s
GoogLeNet from its fixed run, 200 iterations of ``short``, 3 seeds): 44.7 mean IU frozen against 29.8 with
batch statistics. A layer whose parameters do not learn (a frozen trunk) stays in eval mode in any recipe.

Scaling the learning rate of ``heavy`` and ``paper`` (``base_lr`` replaces the recipe's 32s value,
``lr_scale`` multiplies the result; for ``short``, ``base_lr`` replaces the full-width constant):

- A summed loss makes the gradient grow with the number of valid pixels per batch, so lr x pixels is what
  stays comparable: heavy's 1e-10 at ~500 x 500 = 2.5e5 pixels is a per-pixel step of 2.5e-5, i.e.
  2.5e-3 after momentum 0.99 (x100), against the paper recipe's 1e-4 x 10 (momentum 0.9) = 1e-3.
  On 96 x 96 images (9,216 pixels) the same per-pixel step needs 27x the lr: ~2.7e-9.
- Narrow nets (width 0.125: 512 fc channels instead of 4096) and a stand-in pretrained trunk change the
  activation and gradient scale, and a run of hundreds instead of 100,000 iterations must move the
  zero-initialised score layers within its budget; neither has a formula, so the rest of the factor is
  found empirically: the largest lr whose loss falls steadily without diverging (a diverging run stops
  with a FloatingPointError naming the lr).
- With the mean loss (``paper``), the pixel count drops out: only the width and budget part remains.

The successors' own recipes (``SUCCESSOR_RECIPES``; ``own_recipe(model)`` names a successor model's) are
declared, with where each value comes from and which ones the papers do not state, beside the models in
their family files (``RECIPES`` in ``segbench.models.unet``, ``unetplusplus``, ``attention_unet``, ``context``,
``pspnet``, ``deeplab``, ``deeplab_v2``, ``icnet``, ``dilated_fcn``, ``glore``, ``ginet``, ``hdnet``, ``vnet``,
``unet3d``). SGD (Adam for UNet++ and Attention U-Net, as their releases) on the mean loss over valid pixels;
"poly" is lr x (1 - it / iterations) ** 0.9 per iteration, "step" (DeepLab v1, V-Net) lr x 0.1 every
``step_size`` iterations (placed at the same fractions of a run of another length);
``head_lr_mult`` / ``bias_lr_mult`` are the lr multipliers of the new layers (``head_prefixes``) and of the
biases; ``scale_range`` a random rescale factor, ``rotate`` a random rotation in [-r, r] degrees, ``blur``
the probability of a 5x5 Gaussian blur; crops pad the image with the mean colour and the labels with 255
(``segbench.data.augment``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from segbench import models
from segbench.data.tensors import first_conv_lr_mult
from segbench.training import optimizers

WEIGHT_DECAY = 5e-4
BIAS_LR_MULT = 2.0  # Caffe lr_mult 2 / decay_mult 0 on every bias

# batch size, momentum (SGD) or beta1 (Adam), loss normalisation, optimizer and schedule of the FCN recipes
# (Recipe's fields); the successors' recipes, declared by their model families, also set their lr, weight
# decay, multipliers, augmentation and length
_SETTINGS = {
    "heavy": {"batch_size": 1, "momentum": 0.99, "reduction": "sum", "optimizer": "sgd", "schedule": "fixed",
              "bn": "frozen"},
    "paper": {"batch_size": 20, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "fixed",
              "bn": "frozen"},
    "short": {"batch_size": 4, "beta1": 0.9, "reduction": "mean", "optimizer": "adam", "schedule": "poly",
              "head_lr_mult": 10.0, "bn": "frozen"},
}
FCN_RECIPES = ("heavy", "paper", "short")
SUCCESSOR_RECIPES = tuple(models.RECIPES)
SHORT_LR_AT_FULL_WIDTH = 2.5e-5
POLY_POWER = 0.9
# lr of a net trained straight from its classifier (FCN-32s, FCN-8s at-once), per backbone family
_BASE_LR = {
    "heavy": {"vgg16": 1e-10, "alexnet": 1e-10, "googlenet": 1e-10},
    "paper": {"vgg16": 1e-4, "alexnet": 1e-3, "googlenet": 5e-5},
}
# staged nets start from the coarser net and learn with a smaller lr: heavy divides by 100 per stage
# (1e-10 -> 1e-12 -> 1e-14), the paper by 100 for both 16s and 8s
_STAGE_DIVISOR = {
    "heavy": {"fcn32s": 1, "fcn16s": 100, "fcn8s": 10_000, "fcn8s_atonce": 1},
    "paper": {"fcn32s": 1, "fcn16s": 100, "fcn8s": 100, "fcn8s_atonce": 1},
}
RECIPES = FCN_RECIPES + SUCCESSOR_RECIPES
BN_MODES = ("batch", "frozen")
SCHEDULES = ("fixed", "poly", "step")


@dataclass(frozen=True)
class Recipe:
    """One training recipe resolved for one model: what ``make_optimizer`` and the loss need."""

    name: str
    batch_size: int      # images per iteration before loss sampling (the loop draws batch_size / p)
    weight_decay: float
    lr: float            # of the weights; biases get bias_lr_mult x lr
    reduction: str       # "sum" (Caffe normalize: false) or "mean" (normalize: true), see losses
    optimizer: str = "sgd"   # "sgd" or "adam" (AdamW: decoupled weight decay)
    momentum: float | None = None  # SGD's momentum (None for Adam)
    beta1: float | None = None     # Adam's first-moment decay (None for SGD); beta2 is 0.999
    schedule: str = "fixed"  # "fixed" (Caffe lr_policy fixed), "poly": lr x (1 - it / iterations) ** 0.9, or
    #                          "step" (Caffe lr_policy step): lr x step_gamma ** (it // step), see lr_factor
    step_size: int | None = None  # "step": iterations between drops, of the recipe's published length
    step_gamma: float = 0.1       # "step": the factor of each drop
    head_lr_mult: float = 1.0  # lr multiplier of the layers no classifier provides (see make_optimizer)
    bias_lr_mult: float = BIAS_LR_MULT  # Caffe's 2x on biases; 1 for the PyTorch/TensorFlow-era recipes
    # training data as the recipe draws it (segbench.data.augment); the defaults are whole, unchanged images
    crop: int | None = None  # square crop side in pixels (padded with the mean colour / label 255); None: whole
    scale_range: tuple[float, float] | None = None  # random rescale factor drawn uniformly from this range
    flip: bool = False       # random horizontal mirror (probability 0.5)
    rotate: float = 0.0      # random rotation, degrees drawn uniformly from [-rotate, rotate]
    blur: float = 0.0        # probability of a 5x5 Gaussian blur of the image
    elastic: bool = False    # U-Net's elastic deformation (3x3 grid, sigma 10 px)
    iterations: int | None = None  # the recipe's published length (None: the config sets it)
    bn: str = "batch"        # batch norm in training: "batch" statistics, or "frozen" (see "Batch norm" above)

    def __post_init__(self):
        if self.bn not in BN_MODES:
            raise ValueError(f"recipe {self.name!r}: bn must be one of {BN_MODES}, got {self.bn!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"recipe {self.name!r}: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "step" and not (isinstance(self.step_size, int) and self.step_size >= 1):
            raise ValueError(f"recipe {self.name!r}: the step schedule needs step_size, a positive number of "
                             f"iterations, got {self.step_size!r}")

    def lr_factor(self, iteration: int, iterations: int) -> float:
        """The schedule's multiplier of the lr at ``iteration`` (0-based) of a run of ``iterations``."""
        if self.schedule == "poly":
            return (1.0 - iteration / iterations) ** POLY_POWER
        if self.schedule == "step":  # the drops keep their place in the run when its length differs from the
            step = self.step_size * iterations / (self.iterations or iterations)  # published one
            return self.step_gamma ** int(iteration // step)
        return 1.0


def _stage(model_name: str) -> str:
    return "fcn8s_atonce" if model_name.startswith("fcn8s_atonce") else model_name.split("_", 1)[0]


def recipe(name: str, *, model_name: str, width: float = 1.0, lr_scale: float = 1.0, base_lr: float | None = None,
           batch_size: int | None = None, momentum: float | None = None) -> Recipe:
    """The recipe ``name`` (see ``RECIPES``) for ``model_name`` (see ``models.MODELS``) at ``width``.

    ``base_lr`` replaces the recipe's lr for a net trained from its classifier (``short``: the full-width
    constant, divided by ``width``); the stage divisor (16s / 8s) still applies, then ``lr_scale``
    multiplies. ``batch_size`` and ``momentum`` override the recipe's values. A successor recipe
    (``SUCCESSOR_RECIPES``) has one lr for any model and ``width``, and carries its crop, augmentation and
    published length (``Recipe.iterations``); the FCN recipes have none (whole, unchanged images).
    """
    if name not in _SETTINGS and name not in models.RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted([*_SETTINGS, *models.RECIPES])}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    family = models.family_of(model_name)  # raises for an unknown model, listing the valid ones
    if name == "short":
        return _short(model_name, width=width, lr_scale=lr_scale, base_lr=base_lr, batch_size=batch_size,
                      momentum=momentum)
    if name in models.RECIPES:  # one lr for any model and width (the papers train full-width nets)
        _check_overrides(base_lr, lr_scale, batch_size, momentum)
        start_lr = models.RECIPES[name]["lr"] if base_lr is None else base_lr
        return _resolved(name, lr=start_lr * lr_scale, batch_size=batch_size, momentum=momentum)
    stage = _stage(model_name)
    if stage not in _STAGE_DIVISOR[name] or family not in _BASE_LR[name]:
        raise ValueError(f"model {model_name!r} is not an FCN-32s/16s/8s/8s-at-once; the recipes know "
                         f"{sorted(_STAGE_DIVISOR[name])}")
    _check_overrides(base_lr, lr_scale, batch_size, momentum)
    start_lr = _BASE_LR[name][family] if base_lr is None else base_lr
    return _resolved(name, lr=start_lr / _STAGE_DIVISOR[name][stage] * lr_scale, batch_size=batch_size,
                     momentum=momentum)


def _short(model_name: str, *, width: float, lr_scale: float, base_lr: float | None, batch_size: int | None,
           momentum: float | None) -> Recipe:
    _check_overrides(base_lr, lr_scale, batch_size, momentum)
    full_width_lr = SHORT_LR_AT_FULL_WIDTH if base_lr is None else base_lr
    rec = _resolved("short", lr=full_width_lr / width * lr_scale, batch_size=batch_size, momentum=momentum)
    # a successor trains its batch norm under any recipe, as its paper does (U-Net, from scratch, has no
    # statistics to freeze); only the FCNs freeze it
    return rec if _is_fcn(model_name) else replace(rec, bn="batch")


def _is_fcn(model_name: str) -> bool:
    return models.declared(model_name).recipe is None  # the FCNs take heavy, paper or short; successors their own


def _check_overrides(base_lr, lr_scale, batch_size, momentum) -> None:
    if base_lr is not None and not base_lr > 0:
        raise ValueError(f"base_lr must be > 0 (or None for the recipe's), got {base_lr}")
    if not lr_scale > 0:
        raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (or None for the recipe's), got {batch_size}")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1) (or None for the recipe's), got {momentum}")


def _momentum(name: str, settings: dict, momentum: float | None) -> None:
    if momentum is None:
        return
    if settings["optimizer"] != "sgd":
        raise ValueError(f"recipe {name!r} trains with Adam, which has no momentum setting (its beta1 is "
                         f"{settings['beta1']}); leave momentum null (train.momentum, fig5.momentum)")
    settings["momentum"] = float(momentum)


def _resolved(name: str, *, lr: float, batch_size: int | None, momentum: float | None) -> Recipe:
    settings = {"weight_decay": WEIGHT_DECAY, **(_SETTINGS.get(name) or models.RECIPES[name])}
    settings.pop("lr", None)
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    _momentum(name, settings, momentum)
    return Recipe(name=name, lr=lr, **settings)


def images_per_iteration(batch_size: int, sample_p: float) -> int:
    """Images one iteration draws: ``batch_size / sample_p`` rounded, at least 1, so that the expected number of
    images whose loss counts stays ``batch_size`` under patch sampling (keep probability ``sample_p``)."""
    if not 0.0 < sample_p <= 1.0:
        raise ValueError(f"sample_p must be in (0, 1], got {sample_p}")
    return max(1, round(batch_size / sample_p))


def min_images_per_process(model_name: str, recipe: Recipe, *, synced: bool) -> int:
    """The fewest images one training process may get per forward pass of ``model_name`` under ``recipe``: the
    model's ``min_batch`` (a pooling branch's batch norm on a 1 x 1 map needs 2 images) where its batch norm
    uses the batch statistics of this process alone, else 1 (frozen batch norm; or ``synced``: SyncBatchNorm
    pools the statistics of every process, see ``segbench.training.distributed``)."""
    if recipe.bn == "frozen" or synced:
        return 1
    return models.declared(model_name).min_batch


def own_recipe(model_name: str) -> str:
    """The recipe of the paper that introduced successor model ``model_name`` (its declaration's ``recipe``)."""
    own = models.declared(model_name).recipe
    if own is None:
        with_own = sorted(name for name, entry in models.MODELS.items() if entry.recipe)
        raise ValueError(f"model {model_name!r} is not a successor with a recipe of its own; expected one of "
                         f"{with_own} (the FCNs use heavy, paper or short)")
    return own


def head_parameter(model: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` belongs to the layers that score classes: the FCNs' ``score_*`` convolutions,
    or the successors' heads (their ``head_prefixes``: PSPNet's pyramid pooling and classifier, DeepLab's
    ASPP, decoder and classifier, ...), i.e. the layers that no pretrained classifier provides."""
    return name.startswith(tuple(getattr(model, "head_prefixes", ("score",))))


def _first_conv_weight(model: nn.Module) -> str | None:
    return next((f"{name}.weight" if name else "weight" for name, m in model.named_modules()
                 if isinstance(m, nn.Conv2d)), None)


def make_optimizer(model: nn.Module, recipe: Recipe, *, input_norm: str | None = "caffe") -> torch.optim.Optimizer:
    """SGD (or AdamW for ``recipe.optimizer == "adam"``) over the trainable parameters of ``model`` in
    Caffe's lr_mult / decay_mult groups; each group remembers its ``base_lr`` for the schedule.

    Groups ``"weights"`` (lr, weight decay) and ``"biases"`` (``recipe.bias_lr_mult`` x lr, no decay); with
    ``recipe.head_lr_mult != 1`` the head parameters (``head_parameter``) form ``"head weights"`` and
    ``"head biases"`` at that multiple. Parameters with ``requires_grad`` False are left out; an empty
    group is dropped. The FCN recipes were set for Caffe's 0-255 inputs: for a net that starts from weights
    of another ``input_norm`` (torchvision's), the first conv's weights form ``"first conv weights"`` at
    ``data.tensors.first_conv_lr_mult`` x lr, which trains that net as the recipe trains a Caffe one.
    ``input_norm`` None: the net is trained from scratch, its initialisation already set for its inputs (no
    multiplier).
    """
    first = (_first_conv_weight(model) if recipe.name in FCN_RECIPES and input_norm is not None else None)
    first_mult = first_conv_lr_mult(input_norm, recipe.optimizer) if first else 1.0
    groups = {}
    for param_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = recipe.head_lr_mult != 1.0 and head_parameter(model, param_name)
        bias = param_name.endswith("bias")
        key = ("head " if head else "") + ("biases" if bias else "weights")
        lr = recipe.lr * (recipe.bias_lr_mult if bias else 1.0) * (recipe.head_lr_mult if head else 1.0)
        if param_name == first and first_mult != 1.0:
            key, lr = "first conv weights", lr * first_mult
        group = groups.setdefault(key, {"name": key, "params": [], "lr": lr, "base_lr": lr,
                                        "weight_decay": 0.0 if bias else recipe.weight_decay})
        group["params"].append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad False)")
    order = ("weights", "biases", "head weights", "head biases", "first conv weights")
    groups = [groups[k] for k in order if k in groups]
    # foreach: one multi-tensor update per step (PyTorch's default on GPUs; on a CPU the same bits, 1 s less per run)
    if recipe.optimizer == "adam":
        return optimizers.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, 0.999), foreach=True)
    return optimizers.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, foreach=True)


def apply_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, iteration: int, iterations: int) -> None:
    """Set every group's lr to its ``base_lr`` times the recipe's schedule at ``iteration`` (0-based)."""
    factor = recipe.lr_factor(iteration, iterations)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
