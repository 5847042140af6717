"""How an architecture family declares its models and its papers' recipes, and how the package collects them.

A family module (``segbench.models.pspnet``, ...) ends with

    RECIPES = {"pspnet": {"batch_size": 16, "momentum": 0.9, ...}}        # its paper's recipe (Recipe fields)
    MODELS = [Declared("pspnet_resnet50", PSPNet, display="PSPNet (ResNet-50)", backbone="resnet50",
                       recipe="pspnet", published={...}, fixed={"depth": 50}), ...]

and ``segbench.models.FAMILY_MODULES`` names the module: that one line registers every model it declares.
``collect`` gathers them into ``segbench.models.MODELS`` (name -> ``Declared``) and ``RECIPES``, refusing a
name declared twice.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

# Where a model option (config successors.model_options) takes effect: "build" goes to the model's
# constructor (and is stored with the weights), "train" to the training loss, "evaluate" to inference.
OPTION_STAGES = ("build", "train", "evaluate")


@dataclass(frozen=True)
class Declared:
    """One model as its family file declares it.

    ``build(num_classes, width=, in_channels=, **fixed, **build options)`` makes the net (N x C x H x W ->
    N x num_classes x H x W scores). ``backbone`` is the ``BACKBONES`` classifier its trunk is transplanted
    from (None: trained from scratch); ``recipe`` the recipe of its own paper (a ``RECIPES`` key; None for the
    FCNs, which take heavy, paper or short); ``published`` its paper's VOC figure for the successors table
    (``{"mean_iu", "pixel_acc", "split", "setting", "source"}``; None: not in that table); ``options`` each
    option it accepts with its stage (``OPTION_STAGES``) and a line of help; ``min_batch`` the smallest batch
    it trains with (2 where a global pooling branch has batch norm); ``front_end`` the model whose trained
    run it starts from, frozen (a Dilation context module's second stage); ``input_norm`` the input convention
    (``data.tensors.NORMS``) of the net trained from scratch, which its initialisation assumes: "torchvision"
    (unit scale) where no normalisation layer follows the first conv (He initialisation keeps the inputs' scale
    to the scores: on Caffe's 0-255 inputs they start some 60 times too large), "caffe" where batch norm makes
    the scale irrelevant; a net that starts from weights takes their convention instead;
    ``for_evaluation(model, rebuild, **evaluate options)`` the net to score with those options
    (``rebuild(**build options)`` gives the same weights in a net built with other build options), needed where
    the model has evaluate options.
    """

    name: str
    build: Callable[..., nn.Module]
    display: str
    backbone: str | None = "vgg16"
    recipe: str | None = None
    published: Mapping[str, Any] | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    min_batch: int = 1
    front_end: str | None = None
    for_evaluation: Callable[..., nn.Module] | None = None
    input_norm: str = "caffe"
    dims: int = 2  # spatial axes of the input: 2 (N x C x H x W) or 3 (V-Net, 3D U-Net: N x C x D x H x W)

    def make(self, num_classes: int, *, width: float, in_channels: int, **options) -> nn.Module:
        return self.build(num_classes, width=width, in_channels=in_channels, **self.fixed, **options)

    def split_options(self, options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
        """``options`` by stage: ``{"build": {...}, "train": {...}, "evaluate": {...}}``; an option the model
        does not declare raises, naming the ones it has."""
        out: dict[str, dict[str, Any]] = {stage: {} for stage in OPTION_STAGES}
        for key, value in (options or {}).items():
            if key not in self.options:
                have = ", ".join(f"{k} ({stage}: {text})" for k, (stage, text) in self.options.items()) or "none"
                raise ValueError(f"model {self.name} has no option {key!r}; its options: {have}")
            out[self.options[key][0]][key] = value
        return out


def collect(module_names: tuple[str, ...]) -> tuple[dict[str, Declared], dict[str, dict]]:
    """The models and recipes that the family modules ``segbench.models.<name>`` declare, in order."""
    declared: dict[str, Declared] = {}
    recipes: dict[str, dict] = {}
    for module_name in module_names:
        module = importlib.import_module(f"segbench.models.{module_name}")
        for entry in getattr(module, "MODELS", ()):
            if entry.name in declared:
                raise ValueError(f"model {entry.name!r} is declared twice (again in segbench.models.{module_name})")
            declared[entry.name] = entry
        for name, settings in getattr(module, "RECIPES", {}).items():
            if name in recipes:
                raise ValueError(f"recipe {name!r} is declared twice (again in segbench.models.{module_name})")
            recipes[name] = dict(settings)
    for entry in declared.values():
        if entry.recipe is not None and entry.recipe not in recipes:
            raise ValueError(f"model {entry.name} names recipe {entry.recipe!r}, which no family declares; "
                             f"declared: {sorted(recipes)}")
        for key, (stage, _) in entry.options.items():
            if stage not in OPTION_STAGES:
                raise ValueError(f"model {entry.name}'s option {key!r} has stage {stage!r}; expected one of "
                                 f"{OPTION_STAGES}")
    return declared, recipes
