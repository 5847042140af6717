"""The paper's two SGD recipes by name, and the optimizer with Caffe's per-parameter multipliers.

    rec = recipe("heavy", model_name="fcn16s_vgg16")          # lr 1e-12, batch 1, momentum 0.99, summed loss
    optimizer = make_optimizer(model, rec)                    # weights (lr, decay) + biases (2 lr, no decay)

``heavy`` is the reference code's ([BV] solver.prototxt, the PAMI paper): batch 1, momentum 0.99, summed
(unnormalised) loss, lr 1e-10 / 1e-12 / 1e-14 for FCN-32s / 16s / 8s (each stage 100x below the one it
starts from; 8s at-once starts from VGG16 and uses 1e-10). ``paper`` is the CVPR paper's: batch 20,
momentum 0.9, mean loss, lr 1e-4 (VGG16), 1e-3 (AlexNet), 5e-5 (GoogLeNet), 16s and 8s at 1/100 of 32s.
Both: weight decay 5e-4, biases at twice the lr and without decay, frozen parameters (the bilinear
upsamplers, the trunk of FCN-32s-fixed) left out of the optimizer. The reference code has no heavy value
for AlexNet or GoogLeNet (its AlexNet solver is the ``paper`` recipe); ``heavy`` uses VGG16's for them.

Scaling the learning rate (``base_lr`` replaces the recipe's 32s value, ``lr_scale`` multiplies the result):

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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segbench import models

WEIGHT_DECAY = 5e-4
BIAS_LR_MULT = 2.0  # Caffe lr_mult 2 / decay_mult 0 on every bias

# batch size, momentum and loss normalisation of each recipe
_SETTINGS = {
    "heavy": {"batch_size": 1, "momentum": 0.99, "reduction": "sum"},
    "paper": {"batch_size": 20, "momentum": 0.9, "reduction": "mean"},
}
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
_FAMILY = {"vgg16": "vgg16", "alexnet": "alexnet", "alexnet_caffe": "alexnet", "googlenet": "googlenet"}
RECIPES = tuple(_SETTINGS)


@dataclass(frozen=True)
class Recipe:
    """One training recipe resolved for one model: what ``make_optimizer`` and the loss need."""

    name: str
    batch_size: int      # images per iteration before loss sampling (the loop draws batch_size / p)
    momentum: float
    weight_decay: float
    lr: float            # of the weights; biases get BIAS_LR_MULT x lr
    reduction: str       # "sum" (Caffe normalize: false) or "mean" (normalize: true), see losses


def _stage(model_name: str) -> str:
    return "fcn8s_atonce" if model_name.startswith("fcn8s_atonce") else model_name.split("_", 1)[0]


def recipe(name: str, *, model_name: str, lr_scale: float = 1.0, base_lr: float | None = None,
           batch_size: int | None = None, momentum: float | None = None) -> Recipe:
    """The recipe ``name`` (see ``RECIPES``) for ``model_name`` (see ``models.MODELS``).

    ``base_lr`` replaces the recipe's lr for a net trained from its classifier; the stage divisor
    (16s / 8s) still applies, then ``lr_scale`` multiplies. ``batch_size`` and ``momentum`` override the
    recipe's values.
    """
    if name not in _SETTINGS:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(_SETTINGS)}")
    family = _FAMILY[models.backbone_of(model_name)]  # raises for an unknown model, listing the valid ones
    stage = _stage(model_name)
    if stage not in _STAGE_DIVISOR[name]:
        raise ValueError(f"model {model_name!r} is not an FCN-32s/16s/8s/8s-at-once; the recipes know "
                         f"{sorted(_STAGE_DIVISOR[name])}")
    if base_lr is not None and not base_lr > 0:
        raise ValueError(f"base_lr must be > 0 (or None for the recipe's), got {base_lr}")
    if not lr_scale > 0:
        raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (or None for the recipe's), got {batch_size}")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1) (or None for the recipe's), got {momentum}")
    settings = _SETTINGS[name]
    start_lr = _BASE_LR[name][family] if base_lr is None else base_lr
    return Recipe(name=name,
                  batch_size=settings["batch_size"] if batch_size is None else int(batch_size),
                  momentum=settings["momentum"] if momentum is None else float(momentum),
                  weight_decay=WEIGHT_DECAY,
                  lr=start_lr / _STAGE_DIVISOR[name][stage] * lr_scale,
                  reduction=settings["reduction"])


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD over the trainable parameters of ``model`` in two groups (Caffe's lr_mult / decay_mult).

    Group ``"weights"``: every trainable parameter not named ``*.bias``, at ``recipe.lr`` with weight
    decay. Group ``"biases"``: at ``2 x recipe.lr`` without decay. Parameters with ``requires_grad``
    False are left out; an empty group is dropped.
    """
    weights, biases = [], []
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            (biases if param_name.endswith("bias") else weights).append(param)
    if not weights and not biases:
        raise ValueError("the model has no trainable parameters (all have requires_grad False)")
    groups = [
        {"name": "weights", "params": weights, "lr": recipe.lr, "weight_decay": recipe.weight_decay},
        {"name": "biases", "params": biases, "lr": BIAS_LR_MULT * recipe.lr, "weight_decay": 0.0},
    ]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=recipe.lr, momentum=recipe.momentum)
