"""The pretraining stand-in: ImageNet weights cannot be downloaded here, so the classifier that FCN
starts from is trained on a synthetic classification task drawn from the same object generator as the
segmentation twins (20 classes, one object per image). The result has torchvision's state-dict layout
and is transplanted into the FCNs exactly as ``VGG16_Weights`` would be.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from segbench import models, runtime
from segbench.atomic import torch_save
from segbench.data.synth_objects import NUM_OBJECT_CLASSES, render_classification
from segbench.data.tensors import to_input
from segbench.data.voc import MEAN_BGR

log = logging.getLogger(__name__)


def _batch(rng: np.random.Generator, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    classes = rng.integers(1, NUM_OBJECT_CLASSES + 1, size=n)
    images = [render_classification(rng, size, int(c)) for c in classes]
    return to_input(images, MEAN_BGR), torch.from_numpy(classes - 1)


def pretrain_classifier(out: str | os.PathLike, *, backbone: str = "vgg16", width: float = 0.125,
                        image_size: int = 224, iterations: int = 200, batch_size: int = 16, lr: float = 1e-3,
                        seed: int = 0, device: str = "auto", threads: int | None = None,
                        eval_images: int = 200, progress: bool = True) -> Path:
    """Train ``models.classifier(backbone)`` on synthetic objects and save it atomically to ``out``.

    The saved file holds ``{"backbone", "width", "num_classes", "image_size", "accuracy", "state_dict"}``;
    ``accuracy`` is measured on ``eval_images`` fresh images (chance is 1/20).
    """
    runtime.setup(threads=threads, seed=seed)
    dev = runtime.resolve_device(device)
    rng = np.random.default_rng(seed)
    net = models.classifier(backbone, NUM_OBJECT_CLASSES, width=width).to(dev)
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, image_size, image_size, device=dev))
    except RuntimeError as err:
        raise ValueError(f"image_size {image_size} is too small for the {backbone} classifier ({err}); "
                         "use a larger pretrain image_size (112 works for every backbone)") from err
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    bar = tqdm(range(iterations), desc=f"pretrain {backbone}", disable=not progress)
    for it in bar:
        x, y = _batch(rng, image_size, batch_size)
        loss = F.cross_entropy(net(x.to(dev)), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if it % 50 == 0:
            log.info("iteration %d loss %.4f", it, loss.item())
    accuracy = _accuracy(net, rng, image_size, eval_images, dev)
    log.info("held-out accuracy %.3f on %d images (chance %.3f)", accuracy, eval_images, 1 / NUM_OBJECT_CLASSES)
    return torch_save({"backbone": backbone, "width": width, "num_classes": NUM_OBJECT_CLASSES,
                       "image_size": image_size, "accuracy": accuracy,
                       "state_dict": {k: v.cpu() for k, v in net.state_dict().items()}}, out)


@torch.no_grad()
def _accuracy(net: torch.nn.Module, rng: np.random.Generator, size: int, n: int, dev: torch.device) -> float:
    net.eval()
    correct = 0
    for start in range(0, n, 50):
        x, y = _batch(rng, size, min(50, n - start))
        correct += int((net(x.to(dev)).argmax(1).cpu() == y).sum())
    return correct / n if n else float("nan")

