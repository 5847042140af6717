"""Evaluation on a preprocessed split: one dataset-level confusion matrix, the four metrics of the paper."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from segbench import models
from segbench.data.store import Store
from segbench.data.tensors import modality_input
from segbench.evaluation import losses, objective
from segbench.evaluation.metrics import confusion_matrix, scores
from segbench.evaluation.predict import crf_labels, load_for_store
from segbench.infra import precision, runtime
from segbench.infra.atomic import write_json
from segbench.infra.progress import progress_bar

if TYPE_CHECKING:  # the CRF (scipy.sparse, 0.14 s) is imported only by a run that uses it
    from segbench.evaluation.crf import CRFParams


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, store: Store, *, device: torch.device, norm: str = "caffe",
                   reduction: str = "sum", batch_size: int = 8, channels_last: bool = False, modality: str = "rgb",
                   criterion: str = "cross_entropy", gamma: float = 2.0, progress: bool = True,
                   crf: CRFParams | None = None, crf_scale: bool = True) -> dict:
    """Confusion matrix, metrics and mean per-image loss of ``model`` on every image of ``store``.

    ``norm`` is the model's input convention and ``modality`` its input (``data.tensors``); the loss is the
    training criterion's (``criterion``, ``gamma``) with ``reduction`` "sum" over valid pixels (Caffe's
    unnormalised loss, per image) or "mean". Classes listed in the store's ``eval_classes`` attribute (if
    any) restrict the means. A net with several heads is scored on its first head (``label``); every
    other head adds ``<field>_pixel_acc`` and ``<field>_hist`` (SIFT Flow's geometric accuracy).

    With ``crf`` the first head's labels are those of the dense CRF (``evaluation.crf``) on its softmax and the
    stored RGB image, with the spatial bandwidths scaled to each image's longer side if ``crf_scale``; the loss
    stays the net's. The result then has ``crf``: the parameters, the scaled ones of each image size and the
    CRF's seconds per image.
    """
    was_training = model.training
    model.eval()
    heads = objective.heads_of(model, store.num_classes)
    hists = {field: np.zeros((k, k), dtype=np.int64) for field, k in heads.items()}
    loss_total = 0.0
    main = next(iter(heads))
    crf_seconds, crf_sizes = 0.0, {}
    for batch in progress_bar(objective.batches_by_shape(store, range(len(store)), batch_size), desc="evaluate",
                              disable=not progress):
        x = precision.to_layout(modality_input(store, batch, modality, norm).to(device), channels_last=channels_last)
        y = {field: t.to(device) for field, t in objective.targets(store, batch, heads).items()}
        out = model(x).float()
        for field, head_scores in losses.split_heads(out, heads).items():
            for k in range(len(batch)):  # per image: the "sum" loss is per image, the "mean" one per pixel
                loss_total += float(losses.segmentation_loss(head_scores[k:k + 1], y[field][k:k + 1],
                                                             reduction=reduction, criterion=criterion, gamma=gamma))
            if crf is not None and field == main:
                start = time.perf_counter()
                labels = crf_labels(head_scores, [store.image(i) for i in batch], crf, scale=crf_scale,
                                    used=crf_sizes)
                crf_seconds += time.perf_counter() - start
            else:
                labels = head_scores.argmax(1).cpu().numpy()
            hists[field] += confusion_matrix(y[field].cpu().numpy(), labels, heads[field])
    model.train(was_training)
    result = scores(hists[main], classes=store.attrs.get("eval_classes"))
    result.update(loss=loss_total / max(len(store), 1), hist=hists[main].tolist(), images=len(store))
    if crf is not None:
        result["crf"] = {"params": dataclasses.asdict(crf), "scale": "auto" if crf_scale else "none",
                         "scaled": crf_sizes, "seconds_per_image": crf_seconds / max(len(store), 1)}
    for field in list(heads)[1:]:
        result[f"{field}_pixel_acc"] = scores(hists[field])["pixel_acc"]
        result[f"{field}_hist"] = hists[field].tolist()
    return result


def evaluate(*, store_path: str | os.PathLike, model_path: str | os.PathLike, out_json: str | os.PathLike,
             device: str = "auto", threads: int | None = None, progress: bool = True,
             model_options: dict | None = None, crf: CRFParams | None = None, crf_scale: bool = True,
             mode: str = "fp32", calibration_store: str | os.PathLike | None = None,
             calibration_images: int = 8) -> dict:
    """Evaluate saved weights on a split and write the metrics (with the confusion matrix) as JSON.

    Evaluation runs in float32 (channels-last where the run trained so); the JSON also carries the
    training run's ``seed``, ``precision``, ``learned`` flag and code identity from the weights' metadata, for the
    tables. ``model_options`` are the model's options (config ``successors.model_options``): those of stage
    "evaluate" change how it is scored (U-Net's ``tile``: overlap-tile inference; DeepLab's
    ``eval_output_stride``), the others were the training run's and are recorded in the JSON. With ``crf``
    the labels are the dense CRF's (``evaluate_model``): the rule ``evaluate_crf`` writes these beside the
    plain ``val.json``.

    ``mode`` other than "fp32" scores through an inference mode of ``segbench.evaluation.inference`` (e.g.
    ``compile_fp32``, ``bf16``, ``int8``), refused where this machine's flags rule it out; ``int8`` calibrates on
    the first ``calibration_images`` images of ``calibration_store`` (the training split). The JSON records
    ``inference_mode``.
    """
    runtime.setup(threads=threads)
    dev = runtime.resolve_device(device)
    store = Store(store_path)
    net = load_for_store(model_path, store, dev)
    record, meta = net.record, net.record["meta"]
    channels_last = bool(meta.get("channels_last", False))
    model = precision.to_layout(models.for_evaluation(net.model, record, model_options),
                                channels_last=channels_last)
    if mode != "fp32":
        model, channels_last = _inference_mode(model, mode, store, dev, net, calibration_store,
                                               calibration_images), False
    result = evaluate_model(model, store, device=dev, norm=net.norm, reduction=meta.get("reduction", "sum"),
                            channels_last=channels_last, modality=net.modality,
                            criterion=meta.get("criterion", "cross_entropy"), gamma=meta.get("gamma", 2.0),
                            progress=progress, crf=crf, crf_scale=crf_scale)
    result["inference_mode"] = mode
    if model_options:
        result["model_options"] = dict(model_options)
    result.update(model=record["name"], weights=str(model_path), split=str(store_path), class_names=store.class_names,
                  train={k: meta.get(k) for k in ("seed", "precision", "learned", "final_train_loss",
                                                  "constant_prediction_loss", "code")})
    write_json(out_json, result)
    return result


def _inference_mode(model, mode, store, dev, net, calibration_store, calibration_images) -> torch.nn.Module:
    """``model`` prepared in inference ``mode`` (``inference.Prepared``: any input size), after checking that the
    machine allows it; int8 calibrates on training images."""
    from segbench.evaluation import inference

    allowed, excluded = inference.candidates(dev)
    if mode not in allowed:
        raise ValueError(f"inference mode {mode!r} is not for this machine: {excluded.get(mode, 'unknown mode')}; "
                         f"its modes: {allowed}")
    if mode == "int8" and calibration_store is None:
        raise ValueError("inference mode int8 needs calibration images: pass calibration_store (the training "
                         "split's store), got none")
    calibration = []
    if calibration_store is not None:
        with Store(calibration_store) as cal:
            calibration = [modality_input(cal, [i], net.modality, net.norm).to(dev)
                           for i in range(min(calibration_images, len(cal)))]
    example = calibration[0] if calibration else modality_input(store, [0], net.modality, net.norm).to(dev)
    return inference.Prepared(model.eval(), mode, example, calibration=calibration)
