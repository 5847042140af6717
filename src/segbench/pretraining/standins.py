"""The pretraining stand-in: ImageNet weights cannot be downloaded here, so the classifier that FCN
starts from is trained on a synthetic classification task drawn from the same object generator as the
segmentation twins (20 classes, objects at the twins' pixel scale). The result has torchvision's state-dict
layout and is transplanted into the FCNs exactly as ``VGG16_Weights`` would be.

Two phases, both Adam with a poly-decayed learning rate:

1. ``crop_size`` (112 px) canvases that the object nearly fills, without clutter: cheap images on which
   the convolutions learn the classes' colours, textures and shapes. The classifier's adaptive pooling
   stretches the small pool5 to the 7 x 7 (AlexNet: 6 x 6) its fc6 expects, so fc6 learns nothing spatial here.
2. The classifier's own input size (224 px; 227 for the Caffe AlexNet), so that fc6 sees real, distinct
   pool5 windows of the size the FCN's fc6 slides over the padded images (7 x 7 cells of 32 px). The
   object sits within ``jitter`` px of the centre, over up to ``clutter`` other objects: on the FCN's
   images every fc6 window holds several objects and must name the one at its centre.

The held-out accuracy (fresh objects at the classifier's input size, chance 1/20) is measured at the end on
single objects (``accuracy``) and on phase-2 images with clutter (``accuracy_clutter``), and saved with the
weights and in a JSON sidecar, which the report reads.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from segbench import errors, models
from segbench.data.classification import Images, eval_batches, phases
from segbench.data.synthetic.objects import NUM_OBJECT_CLASSES
from segbench.infra import precision, runtime
from segbench.infra.atomic import torch_save, write_json
from segbench.infra.progress import progress_bar
from segbench.training import optimizers
from segbench.weights import read_weights_file

log = logging.getLogger(__name__)
INPUT_SIZE = {"vgg16": 224, "alexnet": 224, "alexnet_caffe": 227, "googlenet": 224, "resnet50": 224,
              "resnet101": 224, "resnet50_half": 224}


def pretrain_classifier(out: str | os.PathLike, *, backbone: str = "vgg16", width: float = 0.125,
                        crop_size: int = 112, crop_iterations: int = 400, iterations: int = 150,
                        batch_size: int = 32, lr: float = 3e-4, jitter: float = 16.0, clutter: int = 2,
                        dropout: float | None = None, seed: int = 0, device: str = "auto", threads: int | None = None,
                        precision_mode: str = "auto", eval_images: int = 400, images: str | os.PathLike | None = None,
                        eval_precision: str | None = None, progress: bool = True) -> Path:
    """Train ``models.classifier(backbone)`` on synthetic objects and save it atomically to ``out``.

    Phase 1: ``crop_iterations`` steps on ``crop_size`` canvases (0 skips it); phase 2: ``iterations``
    steps at the classifier's input size (``INPUT_SIZE``). Each phase decays Adam's ``lr`` (phase 2 starts
    at lr / 3) to zero as (1 - t)^0.9. ``dropout`` replaces the rate of the classifier's dropout layers
    (None keeps torchvision's 0.5). The saved file holds ``{"backbone", "width", "num_classes", "image_size",
    "accuracy", "accuracy_clutter", "settings", "state_dict"}``, the accuracies measured on ``eval_images``
    fresh images each.
    ``out`` with the suffix ``.json`` gets the accuracy and settings too. ``images``: the file of rendered
    images (``segbench.data.classification.render_images`` with the same settings) to read instead of
    rendering them here; the weights come out the same. ``eval_precision``: the precision of the held-out
    measurement (None: the training's; the zoo measures in fp32, which every CPU reproduces).
    """
    if backbone not in INPUT_SIZE:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(INPUT_SIZE)}")
    if iterations < 1 or crop_iterations < 0 or batch_size < 1:
        raise ValueError(f"need iterations >= 1, crop_iterations >= 0 and batch_size >= 1; got {iterations}, "
                         f"{crop_iterations} and {batch_size}")
    started = time.perf_counter()
    runtime.setup(threads=threads, seed=seed)
    dev = runtime.resolve_device(device)
    prec = precision.resolve(precision_mode, dev)
    size = INPUT_SIZE[backbone]
    source = Images(seed, path=images, settings={
        "size": size, "crop_size": crop_size, "crop_iterations": crop_iterations, "iterations": iterations,
        "batch_size": batch_size, "jitter": jitter, "clutter": clutter, "eval_images": eval_images})
    net = models.classifier(backbone, NUM_OBJECT_CLASSES, width=width)
    if dropout is not None:
        models.set_dropout(net, dropout)
    net = precision.to_layout(net.to(dev), channels_last=True)
    losses = _train_phases(net, source, backbone=backbone, size=size, crop_size=crop_size,
                           crop_iterations=crop_iterations, iterations=iterations, batch_size=batch_size, lr=lr,
                           jitter=jitter, clutter=clutter, dev=dev, prec=prec, progress=progress)
    eval_prec = prec if eval_precision is None else precision.resolve(eval_precision, dev)
    accuracy, accuracy_clutter = _held_out_accuracy(net, source, size=size, n=eval_images, dev=dev, prec=eval_prec,
                                                    jitter=jitter, clutter=clutter)
    source.close()
    log.info("held-out accuracy %.3f on single objects, %.3f with clutter, %d images each (chance %.3f)", accuracy,
             accuracy_clutter, eval_images, 1 / NUM_OBJECT_CLASSES)
    settings = {"crop_size": crop_size, "crop_iterations": crop_iterations, "iterations": iterations,
                "batch_size": batch_size, "lr": lr, "jitter": jitter, "clutter": clutter, "dropout": dropout,
                "seed": seed, "precision": prec, "eval_images": eval_images, "eval_precision": eval_prec,
                "last_loss": losses, "wall_s": time.perf_counter() - started}
    summary = {"backbone": backbone, "width": width, "image_size": size, "accuracy": accuracy,
               "accuracy_clutter": accuracy_clutter, "chance": 1 / NUM_OBJECT_CLASSES, "settings": settings}
    write_json(Path(out).with_suffix(".json"), summary)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return torch_save({**summary, "num_classes": NUM_OBJECT_CLASSES, "state_dict": state}, out)


def prune_classifier(source: str | os.PathLike, out: str | os.PathLike, *, backbone: str = "resnet50_half",
                     device: str = "auto", threads: int | None = None) -> Path:
    """``backbone``'s classifier pruned from the classifier ``source`` (``models.PRUNED_FROM``: ICNet's
    half-width ResNet-50 from a ResNet-50 stand-in or from torchvision's ImageNet ResNet-50), written to ``out``
    in the same record format, so that ``transplant`` fills ICNet's trunk from it (``segbench.models.prune``).

    For a stand-in, the pruned classifier's held-out accuracy (before any retraining) is measured on the very
    images the pretrain step measured its source on, and written with the record and its JSON sidecar.
    """
    from segbench.models.prune import prune_resnet

    if backbone not in models.PRUNED_FROM:
        raise ValueError(f"no pruning defined for backbone {backbone!r}; expected one of {sorted(models.PRUNED_FROM)}")
    wanted = models.PRUNED_FROM[backbone]
    if not Path(source).exists():
        raise errors.MissingInputError(f"{source} does not exist: run the pretrain (or fetch-weights) step for "
                                       f"{wanted} first")
    record = read_weights_file(source, fetch_hint=f"delete it and rerun the pretrain (or fetch-weights) step for "
                                                  f"{wanted}")
    if record.get("backbone") != wanted:
        raise ValueError(f"{source} holds a {record.get('backbone')!r} classifier, but {backbone} is pruned from "
                         f"{wanted!r}: run the pretrain (or fetch-weights) step for {wanted}")
    started = time.perf_counter()
    net = models.classifier(backbone, record["num_classes"], width=record["width"])
    state = prune_resnet(record["state_dict"], net.state_dict())
    net.load_state_dict(state)
    summary = {"backbone": backbone, "width": record["width"], "pruned_from": wanted}
    if "settings" in record:  # a stand-in: held-out accuracy as the pretrain step measures it
        runtime.setup(threads=threads, seed=record["settings"]["seed"])
        dev = runtime.resolve_device(device)
        s, size = record["settings"], record["image_size"]
        net = precision.to_layout(net.to(dev), channels_last=True)
        accuracy, accuracy_clutter = _held_out_accuracy(net, Images(s["seed"]), size=size, n=s["eval_images"],
                                                        dev=dev, prec=s["precision"], jitter=s["jitter"],
                                                        clutter=s["clutter"])
        log.info("%s pruned from %s: held-out accuracy %.3f on single objects (source %.3f), %.3f with clutter",
                 backbone, wanted, accuracy, record["accuracy"], accuracy_clutter)
        summary.update(image_size=size, accuracy=accuracy, accuracy_clutter=accuracy_clutter,
                       chance=record["chance"], settings={"precision": s["precision"], "pruned_from": wanted,
                                                          "source_accuracy": record["accuracy"],
                                                          "wall_s": time.perf_counter() - started})
        write_json(Path(out).with_suffix(".json"), summary)
    extra = {"input_norm": record["input_norm"]} if "input_norm" in record else {}
    return torch_save({**summary, **extra, "num_classes": record["num_classes"], "state_dict": state}, out)


def finetune_pruned(source: str | os.PathLike, out: str | os.PathLike, *, backbone: str = "resnet50_half",
                    recalibrate_batches: int = 50, crop_size: int = 112, crop_iterations: int = 0,
                    iterations: int = 300, batch_size: int = 32, lr: float = 3e-4, jitter: float = 16.0,
                    clutter: int = 2, seed: int = 0, device: str = "auto", threads: int | None = None,
                    precision_mode: str = "auto", eval_images: int = 400, eval_precision: str | None = None,
                    progress: bool = True) -> Path:
    """``backbone`` pruned from the stand-in ``source`` (``prune_classifier``), then, as the ICNet authors did
    after pruning, its batch-norm statistics re-estimated on ``recalibrate_batches`` training batches (a plain
    average, no gradient) and the whole classifier fine-tuned by the pretrain step's phases with these settings.

    Saved as the pretrain step saves a stand-in, with the held-out accuracies after each stage under
    ``before_finetuning`` ({"pruned": [single, clutter], "recalibrated": [single, clutter]}), all measured in
    ``eval_precision`` (None: the training's)."""
    record = read_weights_file(source,
                               fetch_hint=f"regenerate it (segbench zoo-train {models.PRUNED_FROM.get(backbone)})")
    if "settings" not in record:
        raise ValueError(f"{source} holds ImageNet weights, not a stand-in: fine-tuning after pruning is for "
                         "stand-ins (the ImageNet route prunes only, segbench prune-trunk)")
    if recalibrate_batches < 0:
        raise ValueError(f"recalibrate_batches must be >= 0; got {recalibrate_batches}")
    started = time.perf_counter()
    from segbench.models.prune import prune_resnet

    if record.get("backbone") != models.PRUNED_FROM.get(backbone):
        raise ValueError(f"{source} holds a {record.get('backbone')!r} classifier, but {backbone} is pruned from "
                         f"{models.PRUNED_FROM.get(backbone)!r}")
    runtime.setup(threads=threads, seed=seed)
    dev = runtime.resolve_device(device)
    prec = precision.resolve(precision_mode, dev)
    eval_prec = prec if eval_precision is None else precision.resolve(eval_precision, dev)
    size = record["image_size"]
    net = models.classifier(backbone, record["num_classes"], width=record["width"])
    net.load_state_dict(prune_resnet(record["state_dict"], net.state_dict()))
    net = precision.to_layout(net.to(dev), channels_last=True)

    def held_out() -> list[float]:
        return list(_held_out_accuracy(net, Images(seed), size=size, n=eval_images, dev=dev, prec=eval_prec,
                                       jitter=jitter, clutter=clutter))

    before = {"pruned": held_out()}
    source_images = Images(seed)
    _recalibrate_batch_norm(net, source_images, batches=recalibrate_batches, size=size, batch_size=batch_size,
                            jitter=jitter, clutter=clutter, dev=dev, prec=prec)
    before["recalibrated"] = held_out()
    log.info("%s pruned from %s: held-out accuracy %s as pruned, %s with batch-norm statistics re-estimated "
             "(single, clutter)", backbone, record["backbone"], before["pruned"], before["recalibrated"])
    losses = _train_phases(net, source_images, backbone=backbone, size=size, crop_size=crop_size,
                           crop_iterations=crop_iterations, iterations=iterations, batch_size=batch_size, lr=lr,
                           jitter=jitter, clutter=clutter, dev=dev, prec=prec, progress=progress)
    accuracy, accuracy_clutter = held_out()
    log.info("fine-tuned: held-out accuracy %.3f on single objects, %.3f with clutter", accuracy, accuracy_clutter)
    settings = {"recalibrate_batches": recalibrate_batches, "crop_size": crop_size, "crop_iterations": crop_iterations,
                "iterations": iterations, "batch_size": batch_size, "lr": lr, "jitter": jitter, "clutter": clutter,
                "seed": seed, "precision": prec, "eval_images": eval_images, "eval_precision": eval_prec,
                "last_loss": losses, "source_accuracy": record["accuracy"], "wall_s": time.perf_counter() - started}
    summary = {"backbone": backbone, "width": record["width"], "pruned_from": record["backbone"], "image_size": size,
               "accuracy": accuracy, "accuracy_clutter": accuracy_clutter, "chance": record["chance"],
               "before_finetuning": before, "settings": settings}
    write_json(Path(out).with_suffix(".json"), summary)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return torch_save({**summary, "num_classes": record["num_classes"], "state_dict": state}, out)


@torch.no_grad()
def _recalibrate_batch_norm(net: torch.nn.Module, source: Images, *, batches: int, size: int, batch_size: int,
                            jitter: float, clutter: int, dev: torch.device, prec: str) -> None:
    """Every batch-norm layer's running mean and variance replaced by their plain average over ``batches``
    training batches (momentum None), the weights untouched."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches == 0:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for _ in range(batches):
        x, _y = source.next("full", size, batch_size, jitter=jitter, clutter=clutter)
        with precision.autocast(prec, dev):
            net(precision.to_layout(x.to(dev), channels_last=True))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def _train_phases(net: torch.nn.Module, source: Images, *, backbone: str, size: int, crop_size: int,
                  crop_iterations: int, iterations: int, batch_size: int, lr: float, jitter: float, clutter: int,
                  dev: torch.device, prec: str, progress: bool) -> dict[str, float]:
    """The two phases (``segbench.data.classification.phases``), Adam with a poly-decayed learning rate each;
    returns each phase's last loss."""
    losses = {}
    for phase, phase_size, steps, phase_jitter, phase_clutter in phases(
            size=size, crop_size=crop_size, crop_iterations=crop_iterations, iterations=iterations, jitter=jitter,
            clutter=clutter):
        phase_lr = lr if phase == "crops" else lr / 3
        _check_input_size(net, backbone, phase_size, dev)
        opt = optimizers.Adam(net.parameters(), lr=phase_lr)
        net.train()
        bar = progress_bar(range(steps), desc=f"pretrain {backbone} ({phase}, {phase_size} px)", disable=not progress)
        for it in bar:
            opt.param_groups[0]["lr"] = phase_lr * (1 - it / steps) ** 0.9
            x, y = source.next(phase, phase_size, batch_size, jitter=phase_jitter, clutter=phase_clutter)
            with precision.autocast(prec, dev):
                scores = net(precision.to_layout(x.to(dev), channels_last=True))
            loss = F.cross_entropy(scores.float(), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses[phase] = float(loss.item())
        log.info("%s phase (%d px, %d steps): last loss %.4f", phase, phase_size, steps, losses[phase])
    return losses


def _check_input_size(net: torch.nn.Module, backbone: str, size: int, dev: torch.device) -> None:
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, size, size, device=dev))
    except RuntimeError as err:
        raise ValueError(f"{size} px is too small for the {backbone} classifier ({err}); use a larger "
                         "pretrain crop_size (112 works for every backbone)") from err


@torch.no_grad()
def _held_out_accuracy(net: torch.nn.Module, source: Images, *, size: int, n: int, dev: torch.device, prec: str,
                       jitter: float, clutter: int) -> tuple[float, float]:
    """Accuracy on ``n`` fresh single objects, then on ``n`` images with up to ``clutter`` others: the same
    images for every classifier of the same seed (a generator never drawn from in training)."""
    single = _accuracy(net, source, "single", size, n, dev, prec, jitter=jitter, clutter=0)
    return single, _accuracy(net, source, "clutter", size, n, dev, prec, jitter=jitter, clutter=clutter)


def _accuracy(net: torch.nn.Module, source: Images, stream: str, size: int, n: int, dev: torch.device, prec: str, *,
              jitter: float, clutter: int) -> float:
    net.eval()
    correct = 0
    for k in eval_batches(n):
        x, y = source.next(stream, size, k, jitter=jitter, clutter=clutter)
        with precision.autocast(prec, dev):
            scores = net(precision.to_layout(x.to(dev), channels_last=True))
        correct += int((scores.float().argmax(1).cpu() == y).sum())
    return correct / n if n else float("nan")
