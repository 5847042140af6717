"""FCN training as plain functions: build and initialise a model, then SGD over images drawn at random.

One iteration draws ``batch_size / p`` images with replacement (FCN's data layer samples a random index
each step), computes the per-pixel loss, optionally keeps only a Bernoulli(p) subset of the stride-32
output cells (the paper's "patch sampling", section 3.4), and takes one optimizer step (the recipe's
schedule sets the lr first). Checkpoints are written every ``checkpoint_every`` iterations and on SIGTERM;
a rerun resumes from the last one and ends with the same weights as an uninterrupted run (on the CPU).

At the end the run compares its training loss (mean of the last tenth of the iterations) with the loss of
the best constant prediction, the training pixels' class frequencies everywhere (which a net that predicts
background everywhere cannot beat): a run that stays above it learned nothing beyond the class prior, and
says so in its log and in the saved metadata (``learned``), which the tables show.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segbench import checkpoint, errors, losses, models, objective, precision, recipes, runtime
from segbench.atomic import write_json
from segbench.data.store import Store
from segbench.data.tensors import MODALITIES, modality_input
from segbench.evaluate import evaluate_model
from segbench.trainlog import write_log
from segbench.weights import model_from_record, save_model

log = logging.getLogger(__name__)
MODES = ("full", "fixed")


def initialise(model_name: str, num_classes: int, *, width: float,
               init: str | os.PathLike | list[str | os.PathLike] | None, mode: str = "full", in_channels: int = 3,
               dropout: float | None = None, options: dict | None = None) -> tuple[torch.nn.Module, str]:
    """Build ``model_name`` and load its starting weights.

    ``init`` is a pretrained classifier (transplanted: fc6/fc7 become convolutions, fc8 is dropped),
    a coarser FCN (staged training: 32s -> 16s -> 8s, new skip scores start at zero), two trained
    single-stream FCNs ``[color, hha]`` for a late-fusion net, or None (random trunk). ``options`` are the
    model's extra keyword options (``models.build``, e.g. DeepLab's ``output_stride``). ``mode="fixed"`` freezes everything but the final score layer (FCN-32s-fixed). ``dropout``
    replaces the rate of the architecture's dropout layers (None keeps 0.5).
    Returns the model and the input convention its starting weights expect (see ``data.tensors``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model = models.build(model_name, num_classes, width=width, in_channels=in_channels, **(options or {}))
    norm = "caffe"
    if isinstance(init, (list, tuple)):
        if len(init) != 2 or not hasattr(model, "stream_model"):
            raise ValueError(f"a list of initial weights is for the late-fusion nets ([color, hha]); got {len(init)} "
                             f"files for {model_name}")
        missing = [str(p) for p in init if not Path(p).exists()]
        if missing:
            raise errors.MissingInputError(f"initial weights {missing} do not exist: run the single-stream train steps")
        from segbench.models.fusion import init_from_streams

        init_from_streams(model, color=init[0], hha=init[1])
    elif init is not None:
        path = Path(init)
        if not path.exists():
            raise errors.MissingInputError(f"initial weights {path} do not exist: run the pretrain or coarser train "
                                           "step")
        record = torch.load(path, map_location="cpu", weights_only=True)
        if "backbone" in record:  # a classifier: the pretrain step's stand-in or torchvision weights
            models.transplant(record["state_dict"], model)
            norm = record.get("input_norm", "caffe")
        else:
            models.init_from(model, model_from_record(record))
            norm = record["meta"].get("input_norm", "caffe")
    if mode == "fixed":
        models.freeze_trunk(model)
    if dropout is not None:
        models.set_dropout(model, dropout)
    return model, norm


def train(*, train_store: str | os.PathLike, out_dir: str | os.PathLike, model_name: str, width: float = 1.0,
          init: str | os.PathLike | None = None, mode: str = "full", recipe: str = "heavy", lr: float | None = None,
          lr_scale: float = 1.0, batch_size: int | None = None, momentum: float | None = None,
          iterations: int = 1000, sample_p: float = 1.0, criterion: str = "cross_entropy", gamma: float = 2.0,
          val_store: str | os.PathLike | None = None, val_every: int = 0, checkpoint_every: int = 100,
          dropout: float | None = None, precision_mode: str = "fp32", channels_last: bool = False,
          modality: str = "rgb", model_options: dict | None = None, seed: int = 1337, device: str = "auto", threads: int | None = None, progress: bool = True) -> Path:
    """Train one FCN and write ``out_dir/{model.pt, log.csv, run.json, checkpoint.pt}``; returns the model path.

    ``run.json`` is the run's metadata (recipe, resolved precision, seed, final loss against the
    constant-prediction floor, wall time), also stored in ``model.pt``.

    ``precision_mode`` is "fp32", "bf16" (autocast) or "auto" (see ``segbench.precision``); ``channels_last``
    puts weights and inputs in that memory format. ``modality`` picks the input (``data.tensors.MODALITIES``:
    rgb, hha, rgbd, rgb_hha); nets with several heads (``model.heads``) learn every head's store field. Log columns: iteration, images_seen, train_loss, wall_s
    (training only, validation excluded), val_loss, val_mean_iu (on validation rows only).
    """
    if not 0.0 < sample_p <= 1.0:
        raise ValueError(f"sample_p must be in (0, 1], got {sample_p}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    runtime.setup(threads=threads, seed=seed)
    dev = runtime.resolve_device(device)
    prec = precision.resolve(precision_mode, dev)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Store(train_store)
    val = Store(val_store) if val_store and val_every else None
    rec = recipes.recipe(recipe, model_name=model_name, width=width, base_lr=lr, lr_scale=lr_scale,
                         batch_size=batch_size, momentum=momentum)
    model, norm = initialise(model_name, data.num_classes, width=width, init=init, mode=mode, dropout=dropout,
                             in_channels=MODALITIES[modality], options=model_options)
    heads = objective.heads_of(model, data.num_classes)
    model = precision.to_layout(model.to(dev), channels_last=channels_last)
    optimizer = recipes.make_optimizer(model, rec)
    images_per_iter = max(1, round(rec.batch_size / sample_p))  # expected effective batch stays fixed
    rng = np.random.default_rng(seed)
    mask_gen = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    start, wall = 0, 0.0
    ckpt_path = out_dir / checkpoint.CHECKPOINT_NAME
    # Resume only a checkpoint of this very run: a changed setting starts afresh.
    run_key = repr((str(train_store), model_name, width, str(init), mode, rec, iterations, sample_p, criterion,
                    gamma, dropout, prec, channels_last, modality, model_options, seed))
    if checkpoint.latest_checkpoint(out_dir) is not None:
        resumed = checkpoint.load_checkpoint(ckpt_path, model=model, optimizer=optimizer, run_key=run_key)
        if resumed is None:
            log.warning("%s belongs to a run with other settings: starting from iteration 0", ckpt_path)
        else:
            start, extra = resumed
            rng.bit_generator.state = extra["data_rng"]
            mask_gen.set_state(extra["mask_rng"])
            rows, wall = extra["rows"], extra["wall_s"]
            log.info("resuming %s from iteration %d", out_dir, start)

    def save(iteration):
        checkpoint.save_checkpoint(ckpt_path, model=model, optimizer=optimizer, iteration=iteration, run_key=run_key,
                                   extra={"data_rng": rng.bit_generator.state, "mask_rng": mask_gen.get_state(),
                                          "rows": rows, "wall_s": wall})
        write_log(out_dir / "log.csv", rows)

    with checkpoint.PreemptionGuard() as guard:
        bar = tqdm(range(start, iterations), desc=f"train {out_dir.name}", disable=not progress,
                   initial=start, total=iterations)
        for it in bar:
            model.train()
            t0 = time.perf_counter()
            recipes.apply_schedule(optimizer, rec, it, iterations)
            batch = rng.integers(0, len(data), size=images_per_iter)
            loss = _step(model, optimizer, data, batch, heads=heads, modality=modality, norm=norm, dev=dev,
                         reduction=rec.reduction, sample_p=sample_p, mask_gen=mask_gen, criterion=criterion,
                         gamma=gamma, prec=prec, channels_last=channels_last)
            wall += time.perf_counter() - t0
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
            if guard.requested:
                save(it + 1)
                raise checkpoint.Preempted(f"stopped by a signal at iteration {it + 1}; checkpoint {ckpt_path}")
            if checkpoint_every and (it + 1) % checkpoint_every == 0:
                save(it + 1)
    write_log(out_dir / "log.csv", rows)
    floor = sum(losses.constant_prediction_loss(_class_pixels(data, field, n), reduction=rec.reduction,
                                                images=len(data)) for field, n in heads.items())
    tail = [r["train_loss"] for r in rows[-max(1, len(rows) // 10):]]
    final = float(np.mean(tail)) if tail else float("nan")
    learned = bool(final < floor)
    if not learned:
        log.warning("%s: the training loss %.4g never fell below %.4g, the loss of predicting the class "
                    "frequencies everywhere: this net learned nothing beyond the class prior", out_dir, final, floor)
    meta = {"recipe": recipe, "optimizer": rec.optimizer, "schedule": rec.schedule, "lr": rec.lr,
            "batch_size": rec.batch_size, "reduction": rec.reduction, "mode": mode, "iterations": iterations,
            "sample_p": sample_p, "images_per_iter": images_per_iter, "seed": seed, "input_norm": norm,
            "modality": modality, "criterion": criterion, "gamma": gamma,
            "dropout": dropout, "precision": prec, "channels_last": channels_last, "final_train_loss": final,
            "constant_prediction_loss": floor, "learned": learned, "wall_s": wall}
    path = save_model(out_dir / "model.pt", model, name=model_name, num_classes=data.num_classes, width=width,
                      in_channels=MODALITIES[modality], options=model_options, meta=meta)
    write_json(out_dir / "run.json", {"model": model_name, "width": width, "init": None if init is None else str(init),
                                      **meta})
    return path


def _class_pixels(store: Store, field: str, num_classes: int) -> np.ndarray:
    """Pixel count per class of ``field`` over every sample of ``store`` (255 = ignore excluded)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(len(store)):
        label = store.get(field, i)
        counts += np.bincount(label[label != 255].ravel(), minlength=num_classes)[:num_classes]
    return counts


def _step(model, optimizer, data, indices, *, heads, modality, norm, dev, reduction, sample_p, mask_gen, criterion,
          gamma, prec, channels_last) -> float:
    """One optimizer step over the images ``indices``; images of one size are stacked, sizes are accumulated."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for group in objective.batches_by_shape(data, indices, len(indices)):
        x = precision.to_layout(modality_input(data, group, modality, norm).to(dev), channels_last=channels_last)
        y = {field: t.to(dev) for field, t in objective.targets(data, group, heads).items()}
        shape = tuple(next(iter(y.values())).shape)
        keep = None if sample_p == 1.0 else losses.sampling_mask(shape, sample_p, generator=mask_gen).to(dev)
        loss = objective.training_loss(model, x, y, heads, reduction=reduction, criterion=criterion, gamma=gamma,
                                       keep=keep, autocast=precision.autocast(prec, dev))
        loss = loss * (len(group) / len(indices))  # each group's share of the batch
        if reduction == "sum" and sample_p != 1.0:
            loss = loss / sample_p  # a summed loss over the kept cells, per base-batch image: same scale as p = 1
        loss.backward()
        total += float(loss.detach())
    optimizer.step()
    return total
