"""Training V-Net and 3D U-Net on an MSD-layout task (the twin, ``segbench.data.synthetic.msd``, or a real one).

    train_volumetric(task_dir="results/data/msd/Task505_TwinProstate", model="vnet", out="vnet-s0.pt", seed=0,
                     width=0.25, iterations=300, n_val=6)

A plain loop: the fit cases (all training cases but the last ``n_val``, ``segbench.data.msd.split_training``) are
read once, each z-scored with the mean and std of its voxels > 0 (V-Net's normalisation); every iteration draws
``batch_size`` random patches of ``patch`` voxels (x, y, z; a case smaller than the patch is padded, its padding
unlabelled), one random case each, and takes one optimizer step on the model's loss. Volumes are not resampled:
the twin has one spacing; a real task's cases keep their own (V-Net resampled to 1 x 1 x 1.5 mm first).

- ``vnet``: ``dice_loss`` (``dice_form`` "squared", the paper's), averaged over every class, background included
  (``dice_background``): V-Net's task was binary, where the foreground term alone trains both classes; with
  several foreground classes a class absent from a patch gets no gradient from its own term, and without the
  background term the argmax rarely says background (measured on the twin, width 0.25, 300 iterations:
  background Dice 0.9% and nodule 0.002% with the foreground terms alone);
- ``unet3d``: ``sparse_cross_entropy``; with ``annotate_every=k`` only every k-th z-slice of each training label
  is kept (the others become 255, weight 0), 3D U-Net's sparse annotation.

Recipes: ``"twin"`` (default) is this project's short one for minutes-long CPU runs: Adam (beta 0.9, 0.999),
lr 1e-3, no weight decay, fixed lr, batch 2. ``"paper"`` is the model's own (``models.RECIPES``: V-Net's SGD 0.99 /
1e-4 / 5e-4 with its x0.1 step every 20,000 iterations; 3D U-Net's SGD 0.99 / 1e-3), which needs
its published length (100,000 / 70,000 iterations) to get anywhere. ``lr`` and ``batch_size`` override either.
No augmentation (the papers' deformations and histogram matching are not implemented here).

Writes ``out`` (a ``segbench.weights`` record, atomically and durably, with the loss history in ``meta``) and
``out`` with suffix ``.json`` (the summary: settings, losses, seconds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from segbench import models
from segbench.data.msd import load_cases
from segbench.evaluation.volumetric_losses import IGNORE, dice_loss, sparse_cross_entropy
from segbench.infra import precision as precisions
from segbench.infra.atomic import write_json
from segbench.infra.runtime import resolve_device, setup
from segbench.training import optimizers, recipes
from segbench.weights import save_model

LOSSES = ("dice", "sparse_ce")
DEFAULT_LOSS = {"vnet": "dice", "unet3d": "sparse_ce"}
TRAINING_RECIPES = ("twin", "paper")
TWIN = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 2, "momentum": None}


def sparsify(label: np.ndarray, every: int | None) -> np.ndarray:
    """``label`` (X x Y x Z) with only every ``every``-th z-slice kept (from slice 0), the others ``IGNORE``."""
    if not every:
        return label
    if every < 1:
        raise ValueError(f"annotate_every must be >= 1 (or None: dense labels), got {every}")
    out = np.full_like(label, IGNORE)
    out[..., ::every] = label[..., ::every]
    return out


def random_patches(cases: list, patch: tuple[int, int, int], batch_size: int, rng: np.random.Generator,
                   annotate_every: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random crops of ``patch`` voxels: images N x C x px x py x pz, labels N x px x py x pz (int64;
    sparse with ``annotate_every``). A case smaller than the patch along an axis is padded at its far end (image 0,
    the mean after z-scoring; label ``IGNORE``), so cases of different shapes batch together."""
    images, labels = [], []
    for _ in range(batch_size):
        _, image, label = cases[rng.integers(len(cases))]
        short = [(0, max(0, p - n)) for p, n in zip(patch, label.shape)]
        if any(after for _, after in short):
            image = np.pad(image, [(0, 0)] + short)
            label = np.pad(label, short, constant_values=IGNORE)
        start = [int(rng.integers(n - p + 1)) for n, p in zip(label.shape, patch)]
        window = tuple(slice(a, a + p) for a, p in zip(start, patch))
        images.append(image[(slice(None),) + window])
        labels.append(sparsify(label[window], annotate_every))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int64))


def _settings(model: str, recipe: str, *, lr: float | None, batch_size: int | None) -> dict:
    if recipe not in TRAINING_RECIPES:
        raise ValueError(f"recipe must be one of {TRAINING_RECIPES}, got {recipe!r}")
    if recipe == "twin":
        settings = dict(TWIN, schedule=None)
    else:
        own = recipes.recipe(models.declared(model).recipe, model_name=model)
        settings = {"optimizer": own.optimizer, "lr": own.lr, "weight_decay": own.weight_decay,
                    "batch_size": own.batch_size, "momentum": own.momentum, "schedule": own}
    if lr is not None:
        settings["lr"] = float(lr)
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    if not settings["lr"] > 0 or settings["batch_size"] < 1:
        raise ValueError(f"need lr > 0 and batch_size >= 1, got lr={settings['lr']}, "
                         f"batch_size={settings['batch_size']}")
    return settings


def _optimizer(net: torch.nn.Module, s: dict) -> torch.optim.Optimizer:
    if s["optimizer"] == "adam":
        return optimizers.AdamW(net.parameters(), lr=s["lr"], betas=(0.9, 0.999), weight_decay=s["weight_decay"])
    return optimizers.SGD(net.parameters(), lr=s["lr"], momentum=s["momentum"] or 0.0, weight_decay=s["weight_decay"])


def volumetric_loss(name: str, scores: torch.Tensor, labels: torch.Tensor, *, dice_form: str = "squared",
                    dice_background: bool = True, class_weights=None) -> torch.Tensor:
    """The loss ``name`` (``LOSSES``) of scores N x K x D x H x W against labels N x D x H x W."""
    if name == "dice":
        return dice_loss(scores, labels, form=dice_form, include_background=dice_background)
    if name == "sparse_ce":
        return sparse_cross_entropy(scores, labels, class_weights=class_weights)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


def train_volumetric(*, task_dir: str | os.PathLike, model: str, out: str | os.PathLike, seed: int, width: float,
                     iterations: int, n_val: int, patch: tuple[int, int, int] = (32, 32, 16),
                     recipe: str = "twin", lr: float | None = None, batch_size: int | None = None,
                     loss: str | None = None, dice_form: str = "squared", dice_background: bool = True,
                     class_weights=None, annotate_every: int | None = None, precision: str = "fp32",
                     device: str = "cpu", threads: int | None = None, log_every: int = 10) -> Path:
    """Train ``model`` (a ``models.MODELS`` name with ``dims == 3``) for ``iterations`` steps; return ``out``."""
    entry = models.declared(model)
    if entry.dims != 3:
        raise ValueError(f"model {model!r} is a 2D net (dims {entry.dims}); volumetric models: "
                         f"{sorted(n for n, e in models.MODELS.items() if e.dims == 3)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    loss = loss or DEFAULT_LOSS.get(model, "dice")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    s = _settings(model, recipe, lr=lr, batch_size=batch_size)
    setup(threads=threads, seed=seed)
    dev = torch.device(resolve_device(device))
    mode = precisions.resolve(precision, dev)
    task, cases = load_cases(task_dir, n_val=n_val)
    num_classes, in_channels = len(task["labels"]), len(task["modality"])
    net = models.build(model, num_classes, width=width, in_channels=in_channels).to(dev).train()
    optimizer = _optimizer(net, s)
    rng = np.random.default_rng(seed)
    losses, start = [], time.perf_counter()
    for it in range(iterations):
        if s["schedule"]:  # the recipe's (V-Net: x0.1 every 20,000 of its 100,000 iterations, at the same fractions
            for group in optimizer.param_groups:  # of a shorter run)
                group["lr"] = s["lr"] * s["schedule"].lr_factor(it, iterations)
        x, y = random_patches(cases, tuple(patch), s["batch_size"], rng, annotate_every)
        x, y = x.to(dev), y.to(dev)
        with precisions.autocast(mode, dev):
            scores = net(x)
        value = volumetric_loss(loss, scores.float(), y, dice_form=dice_form, dice_background=dice_background,
                                class_weights=class_weights)
        if not torch.isfinite(value):
            raise FloatingPointError(f"{model}: loss {value.item()} at iteration {it} (lr {s['lr']}); lower the lr")
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(value.item())
        if log_every and (it % log_every == 0 or it == iterations - 1):
            print(f"{model} seed {seed} it {it}: loss {losses[-1]:.4f}", flush=True)
    seconds = time.perf_counter() - start
    summary = {"model": model, "seed": seed, "width": width, "iterations": iterations, "recipe": recipe,
               "loss": loss, "dice_form": dice_form if loss == "dice" else None,
               "dice_background": dice_background if loss == "dice" else None, "annotate_every": annotate_every,
               "patch": list(patch), "precision": mode, "device": str(dev), "threads": torch.get_num_threads(),
               "task": task["name"], "fit_cases": [c[0] for c in cases], "n_val": n_val,
               "settings": {k: v for k, v in s.items()}, "losses": losses, "seconds": seconds}
    out = Path(out)
    save_model(out, net, name=model, num_classes=num_classes, width=width, in_channels=in_channels,
               meta={k: v for k, v in summary.items() if k != "losses"} | {"losses": losses})
    write_json(out.with_suffix(".json"), summary)
    return out
