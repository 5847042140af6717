"""FCN training as plain functions: build and initialise a model, then SGD over images drawn at random.

One iteration draws ``batch_size / p`` images with replacement (FCN's data layer samples a random index
each step), computes the per-pixel loss, optionally keeps only a Bernoulli(p) subset of the stride-32
output cells (the paper's "patch sampling", section 3.4), and takes one optimizer step (the recipe's
schedule sets the lr first). Checkpoints are written every ``checkpoint_every`` iterations, every
``checkpoint_minutes`` of wall time, and on SIGTERM; a rerun resumes from the last one and ends with the same
weights as an uninterrupted run (on the CPU). Only a checkpoint of the same settings, code identity and input
contents is resumed (``segbench.infra.identity``): a rerun after a code change, or with a rebuilt store or
starting weights at the same path, starts afresh. The checkpoint is removed once ``model.pt`` is written, so a
finished run leaves nothing to resume.

At the end the run compares its training loss (mean of the last tenth of the iterations) with the loss of
the best constant prediction, the training pixels' class frequencies everywhere (which a net that predicts
background everywhere cannot beat): a run that stays above it learned nothing beyond the class prior, and
says so in its log and in the saved metadata (``learned``), which the tables show.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from segbench import errors, models
from segbench.data.augment import Augmentation
from segbench.data.stats import class_pixels
from segbench.data.store import Store
from segbench.data.tensors import MODALITIES
from segbench.evaluation import losses, objective
from segbench.evaluation.evaluate import evaluate_model
from segbench.infra import precision, runtime
from segbench.infra.atomic import write_json
from segbench.infra.identity import code_identity, sha256sum
from segbench.infra.progress import progress_bar
from segbench.training import checkpoint, distributed, loader, recipes
from segbench.training.trainlog import write_log
from segbench.weights import load_record, model_from_record, read_weights_file, save_model

log = logging.getLogger(__name__)
MODES = ("full", "fixed", "context")


def initialise(model_name: str, num_classes: int, *, width: float,
               init: str | os.PathLike | list[str | os.PathLike] | None, mode: str = "full", in_channels: int = 3,
               dropout: float | None = None, options: dict | None = None) -> tuple[torch.nn.Module, str]:
    """Build ``model_name`` and load its starting weights.

    ``init`` is a pretrained classifier (transplanted: fc6/fc7 become convolutions, fc8 is dropped),
    a coarser FCN (staged training: 32s -> 16s -> 8s, new skip scores start at zero), two trained
    single-stream FCNs ``[color, hha]`` for a late-fusion net, or None (random trunk). ``options`` are the
    model's extra keyword options (``models.build``, e.g. DeepLab's ``output_stride``). ``mode="fixed"``
    freezes everything but the final score layer (FCN-32s-fixed); ``mode="context"`` everything but a Dilation
    net's context module (its second stage, on a trained front end). ``dropout`` replaces the rate of the
    architecture's dropout layers (None keeps 0.5).
    Returns the model and the input convention its starting weights expect (see ``data.tensors``); from scratch
    (``init`` None), the one the model declares (``Declared.input_norm``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model = models.build(model_name, num_classes, width=width, in_channels=in_channels, **(options or {}))
    norm = models.declared(model_name).input_norm  # from scratch: what the initialisation assumes
    if isinstance(init, (list, tuple)):
        if len(init) != 2 or not hasattr(model, "stream_model"):
            raise ValueError(f"a list of initial weights is for the late-fusion nets ([color, hha]); got {len(init)} "
                             f"files for {model_name}")
        missing = [str(p) for p in init if not Path(p).exists()]
        if missing:
            raise errors.MissingInputError(f"initial weights {missing} do not exist: run the single-stream train steps")
        from segbench.models.fusion import init_from_streams

        color, hha = (load_record(p) for p in init)
        norms = {str(p): r["meta"].get("input_norm", "caffe") for p, r in zip(init, (color, hha))}
        if len(set(norms.values())) > 1:
            raise ValueError(f"the two streams of a late fusion were trained on different input conventions "
                             f"{norms}: retrain them from weights of one convention")
        norm = next(iter(norms.values()))  # the streams' convention, which the fused net keeps
        try:
            init_from_streams(model, color=color, hha=hha)
        except ValueError as err:
            raise ValueError(f"{[str(p) for p in init]}: {err}") from err
    elif init is not None:
        path = Path(init)
        if not path.exists():
            raise errors.MissingInputError(f"initial weights {path} do not exist: run the pretrain or coarser train "
                                           "step")
        record = read_weights_file(path, fetch_hint="delete it and rerun the step that writes it (the pretrain, "
                                                    "fetch-weights or coarser train step)")
        if "backbone" in record:  # a classifier: the pretrain step's stand-in or torchvision weights
            models.transplant(record["state_dict"], model)
            norm = record.get("input_norm", "caffe")
        else:
            models.init_from(model, model_from_record(record))
            norm = record["meta"].get("input_norm", "caffe")
    if dropout is not None:
        models.set_dropout(model, dropout)
    if mode == "fixed":
        models.freeze_trunk(model)
    elif mode == "context":
        models.freeze_front_end(model)
    return model, norm


def train(*, train_store: str | os.PathLike, out_dir: str | os.PathLike, model_name: str, width: float = 1.0,
          init: str | os.PathLike | None = None, mode: str = "full", recipe: str = "heavy", lr: float | None = None,
          lr_scale: float = 1.0, batch_size: int | None = None, momentum: float | None = None,
          iterations: int = 1000, sample_p: float = 1.0, criterion: str = "cross_entropy", gamma: float = 2.0,
          val_store: str | os.PathLike | None = None, val_every: int = 0, checkpoint_every: int = 100,
          dropout: float | None = None, precision_mode: str = "fp32", channels_last: bool = False,
          modality: str = "rgb", model_options: dict | None = None, seed: int = 1337, device: str = "auto",
          threads: int | None = None, progress: bool = True, num_workers: int = 0, pin_memory: bool = True,
          compile: bool = False, deterministic: bool = False, micro_batch: int | None = None,
          checkpoint_minutes: float | None = None) -> Path:
    """Train one FCN and write ``out_dir/{model.pt, log.csv, run.json, checkpoint.pt}``; returns the model path.

    ``run.json`` is the run's metadata (recipe, resolved precision, seed, switches, final loss against the
    constant-prediction floor, wall time), also stored in ``model.pt``.

    ``precision_mode`` is "fp32", "bf16", "fp16" (autocast; fp16 with a gradient scaler) or "auto" (see
    ``segbench.infra.precision``); ``channels_last`` puts weights and inputs in that memory format, ``compile``
    trains through ``torch.compile``, ``deterministic`` picks cuDNN's deterministic algorithms (see
    ``runtime.set_deterministic``). ``num_workers`` processes load the batches (0: this process; the
    results are the same bits either way, ``segbench.training.loader``), into pinned memory on a GPU if
    ``pin_memory``. Started by torchrun or srun with N processes, the run is data-parallel
    (``segbench.training.distributed``): the batch is the total of all processes, process 0 writes the files.
    ``model_options`` are the model's declared options (``segbench.models.registry``): its build options
    (DeepLab's ``output_stride``, ...) go to the net and are stored with the weights, ``weighted_loss`` (U-Net)
    weights each pixel's loss by ``losses.unet_weight_map`` of its label map; evaluate options are refused
    only if the model does not declare them (``segbench evaluate`` applies them).
    ``modality`` picks the input (``data.tensors.MODALITIES``: rgb, hha, rgbd, rgb_hha); nets with several
    heads (``model.heads``) learn every head's store field. Log columns: iteration, images_seen, train_loss
    (of the whole batch), wall_s (training and waiting for data; validation excluded), val_loss,
    val_mean_iu (on validation rows only).
    ``micro_batch`` caps the images of one forward pass: each image size's group is split into balanced chunks
    of at most that many, their gradients accumulated with weights that make the sum the unsplit loss (exact
    for single-head nets without auxiliary losses; ``_micro_batches``), so memory follows this setting and not
    ``batch_size / sample_p``. Batch norm on batch statistics then sees the chunks (None: no cap).
    A checkpoint is written every ``checkpoint_every`` iterations (0: never by count) and once
    ``checkpoint_minutes`` of wall time have passed since the last one (None: never by time), and on SIGTERM.
    Batch norm follows the recipe (``Recipe.bn``): frozen layers (and those of a frozen trunk) stay in eval
    mode; with several GPUs, batch statistics are synchronised (``distributed.sync_batch_norm``).
    """
    if not 0.0 < sample_p <= 1.0:
        raise ValueError(f"sample_p must be in (0, 1], got {sample_p}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    ctx = distributed.from_env()
    options = models.declared(model_name).split_options(model_options)
    weighted_loss = bool(options["train"].get("weighted_loss", False))
    if micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(micro_batch, int)
                                    or micro_batch < 1):
        raise ValueError(f"micro_batch must be an integer >= 1 (or None: each image size in one forward pass), got "
                         f"{micro_batch!r}")
    schedule = checkpoint.CheckpointSchedule(checkpoint_every, checkpoint_minutes)
    rec = recipes.recipe(recipe, model_name=model_name, width=width, base_lr=lr, lr_scale=lr_scale,
                         batch_size=batch_size, momentum=momentum)
    images_per_iter = recipes.images_per_iteration(rec.batch_size, sample_p)  # expected effective batch stays fixed
    if images_per_iter < ctx.world_size:
        raise ValueError(f"{ctx.world_size} processes need at least one image each per iteration, but the batch "
                         f"has {images_per_iter} (batch {rec.batch_size}, sample_p {sample_p}): raise the batch "
                         "or lower the number of processes")
    on = runtime.resolve_device(device)
    _check_batch_norm_batch(model_name, rec, images_per_iter, micro_batch, ctx, on)
    runtime.setup(threads=threads, seed=seed)
    runtime.set_deterministic(deterministic)
    dev = distributed.start(ctx, on)
    prec = precision.resolve(precision_mode, dev)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Store(train_store)
    val = Store(val_store) if val_store and val_every and ctx.main else None
    model, norm = initialise(model_name, data.num_classes, width=width, init=init, mode=mode, dropout=dropout,
                             in_channels=MODALITIES[modality], options=options["build"])
    heads = objective.heads_of(model, data.num_classes)
    # SyncBatchNorm where several GPUs normalise over their images together; it then needs equal forward passes
    synced_bn = rec.bn == "batch" and distributed.batch_norm_synced(ctx, dev) and _has_batch_norm(model)
    if synced_bn:
        model = distributed.sync_batch_norm(model, ctx, dev)
    model = precision.to_layout(model.to(dev), channels_last=channels_last)
    optimizer = recipes.make_optimizer(model, rec, input_norm=norm if init is not None else None)
    scaler = precision.grad_scaler(prec, dev)
    own_seed = distributed.rank_seed(seed, ctx.rank)  # dropout and loss sampling; the run's seed in process 0
    if ctx.rank > 0:
        runtime.setup(seed=own_seed)
    mask_gen = torch.Generator().manual_seed(own_seed)
    forward, ddp = _training_forward(model, ctx, dev, compile=compile)
    rows: list[dict] = []
    start, wall, data_rng = 0, 0.0, None
    ckpt_path = out_dir / checkpoint.CHECKPOINT_NAME
    # Resume only a checkpoint of this very run: a changed setting, code or input content starts afresh.
    run_key = repr((code_identity(), _contents(train_store), _contents(init),
                    _contents(val_store if val_store and val_every else None), model_name, width, mode, rec,
                    iterations, sample_p, criterion, gamma, dropout, prec, channels_last, modality, model_options, seed)
                   + ((ctx.world_size,) if ctx.world_size > 1 else ())
                   + ((("micro_batch", micro_batch),) if micro_batch is not None else ()))
    first_iteration = 0
    if checkpoint.latest_checkpoint(out_dir) is not None:
        resumed = checkpoint.load_checkpoint(ckpt_path, model=model, optimizer=optimizer, run_key=run_key)
        if resumed is None:
            log.warning("%s belongs to a run with other settings, code or input contents: starting from "
                        "iteration 0", ckpt_path)
        else:
            start, extra = resumed
            own = extra["ranks"][ctx.rank] if ctx.world_size > 1 else extra
            if ctx.world_size > 1:
                checkpoint.set_rng_states(own["rng"])
            mask_gen.set_state(own["mask_rng"])
            if "scaler" in extra:
                scaler.load_state_dict(extra["scaler"])
            data_rng, rows, wall = extra["data_rng"], extra["rows"], extra["wall_s"]
            first_iteration = start
            log.info("resuming %s from iteration %d", out_dir, start)

    def save(iteration):
        ranks = (distributed.all_gather({"rng": checkpoint.rng_states(), "mask_rng": mask_gen.get_state()}, ctx)
                 if ctx.world_size > 1 else None)
        if not ctx.main:
            return
        extra = {"data_rng": data_rng, "mask_rng": mask_gen.get_state(), "rows": rows, "wall_s": wall}
        if ranks:
            extra["ranks"] = ranks  # every process's own random states, in rank order
        if scaler.is_enabled():
            extra["scaler"] = scaler.state_dict()  # fp16's loss scale
        checkpoint.save_checkpoint(ckpt_path, model=model, optimizer=optimizer, iteration=iteration, run_key=run_key,
                                   extra=extra)
        write_log(out_dir / "log.csv", rows)

    sampler = loader.RandomBatches(len(data), images_per_iter, seed=seed, iterations=(start, iterations),
                                   state=data_rng)
    batches = iter(loader.batch_loader(
        loader.TrainingBatches(data, heads=heads, modality=modality, norm=norm, rank=ctx.rank,
                               world_size=ctx.world_size, augmentation=Augmentation.of(rec), seed=seed),
        sampler, num_workers=num_workers, pin_memory=pin_memory and dev.type == "cuda"))
    with checkpoint.PreemptionGuard() as guard:
        bar = progress_bar(range(start, iterations), desc=f"train {out_dir.parent.name}/{out_dir.name}",
                           disable=not progress or not ctx.main, initial=start, total=iterations)
        for it in bar:
            set_train_mode(model, rec.bn)
            t0 = time.perf_counter()
            batch = next(batches)
            recipes.apply_schedule(optimizer, rec, it, iterations)
            loss = _step(forward, ddp, optimizer, scaler, batch, heads=heads, dev=dev, reduction=rec.reduction,
                         sample_p=sample_p, mask_gen=mask_gen, criterion=criterion, gamma=gamma, prec=prec,
                         channels_last=channels_last, ctx=ctx, weighted_loss=weighted_loss, micro_batch=micro_batch,
                         equal_passes=synced_bn)
            # one decision for all processes: the batch's loss, whether any process was asked to stop, and
            # whether any process's clock says a checkpoint is due
            loss, stop, time_due = distributed.all_sum([loss, guard.requested, schedule.time_due()], ctx, dev)
            wall += time.perf_counter() - t0
            data_rng = batch.data_rng
            if not np.isfinite(loss):
                raise errors.DivergenceError(f"training loss became {loss} at iteration {it + 1}: the learning "
                                             f"rate {rec.lr:g} is too high for the {rec.reduction} loss of recipe "
                                             f"{recipe!r}; lower the run's lr or lr_scale")
            row = {"iteration": it + 1, "images_seen": (it + 1) * images_per_iter, "train_loss": loss, "wall_s": wall}
            if val is not None and ((it + 1) % val_every == 0 or it + 1 == iterations):
                result = evaluate_model(model, val, device=dev, norm=norm, reduction=rec.reduction,
                                        channels_last=channels_last, modality=modality, criterion=criterion,
                                        gamma=gamma, progress=False)
                row.update(val_loss=result["loss"], val_mean_iu=result["mean_iu"])
            rows.append(row)
            bar.set_postfix(loss=f"{loss:.4g}")
            if stop:
                save(it + 1)
                distributed.barrier(ctx)  # no process exits (getting the others killed) before the checkpoint exists
                distributed.stop(ctx)
                raise checkpoint.Preempted(f"stopped by a signal at iteration {it + 1}; checkpoint {ckpt_path}")
            if schedule.due(it + 1, time_due > 0):
                save(it + 1)
                schedule.saved()
    path = out_dir / "model.pt"
    if ctx.main:
        _finish(model, data, heads, rows, out_dir, rec=rec, name=model_name, width=width, init=init,
                in_channels=MODALITIES[modality], options=options["build"],
                meta={"model_options": dict(model_options or {}), "recipe": recipe, "optimizer": rec.optimizer,
                      "schedule": rec.schedule, "lr": rec.lr,
                      "batch_size": rec.batch_size, "reduction": rec.reduction, "mode": mode,
                      "iterations": iterations, "sample_p": sample_p, "images_per_iter": images_per_iter,
                      "seed": seed, "input_norm": norm, "modality": modality, "criterion": criterion,
                      "gamma": gamma, "dropout": dropout, "precision": prec, "channels_last": channels_last,
                      "augmentation": _augmentation_meta(rec), "batch_norm": rec.bn, "micro_batch": micro_batch,
                      "code": code_identity()},
                run={"wall_s": wall, "start_iteration": first_iteration, "compile": compile,
                     "deterministic": deterministic, "processes": ctx.world_size, "sync_batch_norm": synced_bn})
        ckpt_path.unlink(missing_ok=True)  # finished: nothing is left that a rerun could resume
    distributed.barrier(ctx)
    distributed.stop(ctx)
    return path


def _finish(model, data, heads, rows, out_dir, *, rec, name, width, init, in_channels, options, meta, run) -> None:
    """Write the log, ``model.pt`` and ``run.json``: ``meta``, the final loss against the constant-prediction
    floor of the whole objective (every head, and the weighted auxiliary losses), then ``run`` (wall time and
    switches that leave the arithmetic alone or nearly so)."""
    write_log(out_dir / "log.csv", rows)
    floors = [losses.constant_prediction_loss(class_pixels(data, field, n)[0], reduction=rec.reduction,
                                              images=len(data)) for field, n in heads.items()]
    # the objective also sums the weighted auxiliary losses (PSPNet, ICNet) on the first head's labels: their
    # floor is that head's (its labels resized to the auxiliary scores, nearly the same class frequencies).
    # Losses of their own (GINet's semantic context, HDNet's feature distance) are not in aux_weights: they are
    # >= 0 and count with floor 0, so "learned" still means the segmentation terms fell below their floor
    floor = sum(floors) + sum(getattr(model, "aux_weights", {}).values()) * floors[0]
    tail = [r["train_loss"] for r in rows[-max(1, len(rows) // 10):]]
    final = float(np.mean(tail)) if tail else float("nan")
    learned = bool(final < floor)
    if not learned:
        log.warning("%s: the training loss %.4g never fell below %.4g, the loss of predicting the class "
                    "frequencies everywhere: this net learned nothing beyond the class prior", out_dir, final, floor)
    meta = {**meta, "final_train_loss": final, "constant_prediction_loss": floor, "learned": learned, **run}
    save_model(out_dir / "model.pt", model, name=name, num_classes=data.num_classes, width=width,
               in_channels=in_channels, options=options, meta=meta)
    write_json(out_dir / "run.json", {"model": name, "width": width, "init": None if init is None else str(init),
                                      **meta})


def _contents(paths) -> str | tuple | None:
    """The sha256 of a file, or of each file of a list (None stays None): what a resume key holds of an input."""
    if paths is None:
        return None
    return tuple(sha256sum(p) for p in paths) if isinstance(paths, (list, tuple)) else sha256sum(paths)


def _augmentation_meta(rec: recipes.Recipe) -> dict | None:
    """The recipe's training augmentation as run metadata (None: whole, unchanged images)."""
    aug = Augmentation.of(rec)
    return dataclasses.asdict(aug) if aug.active else None


class _TrainingForward(torch.nn.Module):
    """A net's training forward, ``x -> (scores, auxiliary outputs)``, as one module: what DistributedDataParallel
    and ``torch.compile`` wrap, so that the auxiliary heads (``forward_with_aux``) are synchronised and compiled
    too. ``objective.training_loss`` calls it as ``forward_with_aux``."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_with_aux(x) if hasattr(self.net, "forward_with_aux") else (self.net(x), {})


def _training_forward(model, ctx, dev, *, compile):
    """What ``objective.training_loss`` calls, and the DistributedDataParallel module (None for one process):
    ``model`` itself, or its ``_TrainingForward`` replicated over the processes and/or compiled."""
    if not compile and ctx.world_size == 1:
        return model, None
    forward = _TrainingForward(model)
    ddp = distributed.replicate(forward, ctx, dev) if ctx.world_size > 1 else None
    wrapped = precision.compiled(ddp or forward) if compile else ddp or forward
    return SimpleNamespace(forward_with_aux=wrapped), ddp


_BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def _has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, _BATCH_NORMS) for m in model.modules())


def set_train_mode(model: torch.nn.Module, bn: str) -> None:
    """``model.train()``, then every batch-norm layer that must not normalise with batch statistics back to eval
    mode (the running statistics, which then stay as they are): all of them when the recipe freezes batch norm
    (``bn == "frozen"``), and in any recipe those whose affine parameters do not learn (the frozen trunk of
    FCN-32s-fixed), so that a frozen trunk computes in training what it computes in evaluation."""
    model.train()
    for module in model.modules():
        if isinstance(module, _BATCH_NORMS) and (
                bn == "frozen" or not any(p.requires_grad for p in module.parameters(recurse=False))):
            module.eval()


def _check_batch_norm_batch(model_name, rec, images_per_iter, micro_batch, ctx, device) -> None:
    """Refuse a run in which a batch-norm layer that needs ``min_batch`` images (a pooling branch's, on a 1 x 1
    map) would normalise over fewer: in the whole batch, in one process that does not synchronise it, or in a
    micro-batch (only a process's images beyond ``micro_batch`` are split)."""
    if rec.bn == "frozen":
        return
    least = models.declared(model_name).min_batch
    if images_per_iter < least:
        raise ValueError(f"{model_name}'s batch norm needs at least {least} images per iteration, but the batch has "
                         f"{images_per_iter} (batch {rec.batch_size}): raise the batch size")
    per_process = recipes.min_images_per_process(model_name, rec, synced=distributed.batch_norm_synced(ctx, device))
    if images_per_iter // ctx.world_size < per_process:
        raise ValueError(f"{model_name}'s batch norm needs at least {per_process} images in each process, which "
                         f"normalises over its own images ({ctx.world_size} processes on the {device.type}: "
                         f"SyncBatchNorm needs GPUs), but {images_per_iter} images give some process "
                         f"{images_per_iter // ctx.world_size}: use at most "
                         f"{distributed.processes_for(ctx.world_size, images_per_iter, min_per_process=per_process)} "
                         "processes (train.processes) or a larger batch")
    largest_share = -(-images_per_iter // ctx.world_size)  # a process's images: more than micro_batch are split
    if micro_batch is not None and largest_share > micro_batch and micro_batch < 2 * per_process - 1:
        raise ValueError(f"micro_batch {micro_batch} splits a group of {micro_batch + 1} images into forward passes "
                         f"of {(micro_batch + 2) // 2} and {(micro_batch + 1) // 2}, but {model_name}'s batch norm "
                         f"needs at least {per_process} images per pass: set micro_batch to {2 * per_process - 1} or "
                         "more, or null")


def _step(forward, ddp, optimizer, scaler, batch, *, heads, dev, reduction, sample_p, mask_gen, criterion, gamma,
          prec, channels_last, ctx, weighted_loss=False, micro_batch=None, equal_passes=False) -> float:
    """One optimizer step over this process's groups of ``batch`` (one image size each, gradients accumulated),
    in forward passes of at most ``micro_batch`` images (``_micro_batches``); returns this process's part of the
    batch's loss. ``weighted_loss``: U-Net's per-pixel weights (``losses.unet_weight_map`` of each label map as
    drawn). ``equal_passes`` (SyncBatchNorm, whose forward and backward passes are collective calls): every
    process makes as many forward passes, the ones with fewer adding empty ones of weight 0."""
    optimizer.zero_grad(set_to_none=True)
    parts = []
    for group in batch.groups:
        x = precision.to_layout(group.x.to(dev, non_blocking=True), channels_last=channels_last)
        y = {field: t.to(dev, non_blocking=True) for field, t in group.y.items()}
        shape = tuple(next(iter(y.values())).shape)
        keep = None if sample_p == 1.0 else losses.sampling_mask(shape, sample_p, generator=mask_gen).to(dev)
        pixel_weights = (torch.stack([losses.unet_weight_map(t) for t in group.y[next(iter(heads))]]).to(dev)
                         if weighted_loss else None)
        parts.append((x, y, keep, pixel_weights))
    weights = _loss_weights(batch, parts, heads=heads, reduction=reduction, ctx=ctx, dev=dev)
    passes = _micro_batches(parts, weights, heads=heads, reduction=reduction, micro_batch=micro_batch)
    if equal_passes:
        passes += [_empty_pass(passes[-1][0]) for _ in range(distributed.all_max(len(passes), ctx, dev) - len(passes))]
    total = 0.0
    for k, ((x, y, keep, pixel_weights), weight) in enumerate(passes):
        # DistributedDataParallel averages the gradients in the last backward pass only
        with ddp.no_sync() if ddp is not None and k < len(passes) - 1 else nullcontext():
            loss = objective.training_loss(forward, x, y, heads, reduction=reduction, criterion=criterion,
                                           gamma=gamma, keep=keep, pixel_weights=pixel_weights,
                                           autocast=precision.autocast(prec, dev))
            loss = loss * weight
            if reduction == "sum" and sample_p != 1.0:
                loss = loss / sample_p  # a summed loss over the kept cells, per base-batch image: same scale as p = 1
            scaler.scale(loss * ctx.world_size if ddp is not None else loss).backward()
        total += float(loss.detach())
    scaler.step(optimizer)
    scaler.update()
    return total


def _micro_batches(parts, weights, *, heads, reduction, micro_batch) -> list[tuple[tuple, float]]:
    """The forward passes of one step, ``((x, y, keep, pixel_weights), weight)``: each group whole (None), or in
    ceil(n / ``micro_batch``) chunks of sizes that differ by at most one. A chunk's weight is its group's times
    its share of what the group's loss averages over: images for the ``sum`` reduction, valid (kept, labelled)
    pixels of the first head for ``mean``, so that the weighted chunk losses add up to the group's loss. Exact
    for single-head nets without auxiliary losses; with several heads or auxiliary losses, whose means count
    their own pixels, the same update in expectation (as ``distributed.loss_weights``)."""
    if micro_batch is None:
        return list(zip(parts, weights))
    main = next(iter(heads))
    passes = []
    for part, weight in zip(parts, weights):
        n = part[0].shape[0]
        if n <= micro_batch:
            passes.append((part, weight))
            continue
        chunks = [_sliced(part, a, b) for a, b in _chunk_bounds(n, micro_batch)]
        counts = [len(x) if reduction == "sum" else _valid_pixels(y[main], keep) for x, y, keep, _ in chunks]
        whole = sum(counts)
        passes += [(chunk, weight * count / whole if whole else 0.0) for chunk, count in zip(chunks, counts)]
    return passes


def _chunk_bounds(n: int, most: int) -> list[tuple[int, int]]:
    """[a, b) bounds of ceil(n / most) consecutive chunks of n images, their sizes differing by at most one."""
    k = -(-n // most)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    ends = np.cumsum(sizes).tolist()
    return list(zip([0, *ends[:-1]], ends))


def _sliced(part, a: int, b: int) -> tuple:
    x, y, keep, pixel_weights = part
    return (x[a:b], {field: t[a:b] for field, t in y.items()}, None if keep is None else keep[a:b],
            None if pixel_weights is None else pixel_weights[a:b])


def _valid_pixels(target: torch.Tensor, keep: torch.Tensor | None) -> int:
    valid = target != losses.IGNORE_INDEX
    return int((valid if keep is None else valid & keep).sum())


def _empty_pass(part) -> tuple[tuple, float]:
    """A forward pass of no image (of ``part``'s size), weight 0: SyncBatchNorm's collective calls without data."""
    x, y, _, _ = part
    return (x[:0], {field: t[:0] for field, t in y.items()}, None, None), 0.0


def _loss_weights(batch, parts, *, heads, reduction, ctx, dev) -> list[float]:
    """The weight of each group's loss: its image size's share of the batch's images; with several processes
    times this process's share of what that size's loss averages over (``distributed.loss_weights``)."""
    if ctx.world_size == 1:
        return [len(group.indices) / batch.images for group in batch.groups]
    main = next(iter(heads))
    averaged_over = [len(group.indices) if reduction == "sum"  # per image
                     else _valid_pixels(y[main], keep)  # per pixel
                     for group, (_, y, keep, _) in zip(batch.groups, parts)]
    return distributed.loss_weights([(group.size, n) for group, n in zip(batch.groups, averaged_over)], batch.sizes,
                                    batch.images, ctx, dev)
