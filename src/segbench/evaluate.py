"""Evaluation on a preprocessed split: one dataset-level confusion matrix, the four metrics of the paper."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from segbench import precision, runtime
from segbench.atomic import write_json
from segbench.data.store import Store
from segbench.data.tensors import to_input, to_target
from segbench.metrics import confusion_matrix, scores
from segbench.weights import load_model


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, store: Store, *, device: torch.device, norm: str = "caffe",
                   reduction: str = "sum", batch_size: int = 8, channels_last: bool = False,
                   progress: bool = True) -> dict:
    """Confusion matrix, metrics and mean per-image loss of ``model`` on every image of ``store``.

    ``norm`` is the model's input convention (``data.tensors``); ``reduction`` is how the per-image loss
    is formed ("sum" over valid pixels as Caffe's unnormalised loss, or "mean"). Classes listed in the
    store's ``eval_classes`` attribute (if any) restrict the means.
    """
    was_training = model.training
    model.eval()
    n = store.num_classes
    hist = np.zeros((n, n), dtype=np.int64)
    loss_total = 0.0
    mean_bgr = store.attrs.get("mean_bgr", (0.0, 0.0, 0.0))
    by_shape = defaultdict(list)
    for i in range(len(store)):
        by_shape[store.image(i).shape].append(i)
    batches = [g[k:k + batch_size] for g in by_shape.values() for k in range(0, len(g), batch_size)]
    for batch in tqdm(batches, desc="evaluate", disable=not progress):
        x = precision.to_layout(to_input([store.image(i) for i in batch], mean_bgr, norm).to(device),
                                channels_last=channels_last)
        y = to_target([store.label(i) for i in batch]).to(device)
        out = model(x).float()
        per_pixel = F.cross_entropy(out, y, ignore_index=255, reduction="none")
        valid = (y != 255).flatten(1).sum(1).clamp(min=1)
        per_image = per_pixel.flatten(1).sum(1)
        loss_total += float((per_image if reduction == "sum" else per_image / valid).sum())
        hist += confusion_matrix(y.cpu().numpy(), out.argmax(1).cpu().numpy(), n)
    model.train(was_training)
    result = scores(hist, classes=store.attrs.get("eval_classes"))
    result.update(loss=loss_total / max(len(store), 1), hist=hist.tolist(), images=len(store))
    return result


def evaluate(*, store_path: str | os.PathLike, model_path: str | os.PathLike, out_json: str | os.PathLike,
             device: str = "auto", threads: int | None = None, progress: bool = True) -> dict:
    """Evaluate saved weights on a split and write the metrics (with the confusion matrix) as JSON.

    Evaluation runs in float32 (channels-last where the run trained so); the JSON also carries the
    training run's ``seed``, ``precision`` and ``learned`` flag from the weights' metadata, for the tables.
    """
    runtime.setup(threads=threads)
    dev = runtime.resolve_device(device)
    model, record = load_model(model_path)
    store = Store(store_path)
    if store.num_classes != record["num_classes"]:
        raise ValueError(f"{model_path} predicts {record['num_classes']} classes but {store_path} has "
                         f"{store.num_classes}; evaluate a model trained on this dataset")
    meta = record["meta"]
    channels_last = bool(meta.get("channels_last", False))
    model = precision.to_layout(model.to(dev), channels_last=channels_last)
    result = evaluate_model(model, store, device=dev, norm=meta.get("input_norm", "caffe"),
                            reduction=meta.get("reduction", "sum"), channels_last=channels_last, progress=progress)
    result.update(model=record["name"], weights=str(model_path), split=str(store_path), class_names=store.class_names,
                  train={k: meta.get(k) for k in ("seed", "precision", "learned", "final_train_loss",
                                                  "constant_prediction_loss")})
    write_json(out_json, result)
    return result
