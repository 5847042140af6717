"""The images of the pretraining stand-in's classification task, in the order pretraining draws them.

``pretrain_classifier`` draws four streams of batches of synthetic objects (``render_classification``): the
two training phases (``crops`` at the crop size, ``full`` at the classifier's input size) from a generator
seeded with ``seed``, and the held-out ``single`` and ``clutter`` images from one seeded with
``seed + 1_000_003``. Which images come out depends only on the seed and these settings, not on the
backbone, so every stand-in of one input size (VGG16, GoogLeNet and ResNet-50 all take 224 px) trains and is
measured on the same pixels. Rendering is about a fifth of a stand-in's time on a CPU, so the workflow
renders them once (``render_images``, rule ``standin_images``) and each stand-in reads them back
(``Images(..., path=...)``): the same bits, batch for batch, as drawing them in the process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from segbench.data.synthetic.objects import NUM_OBJECT_CLASSES, render_classification
from segbench.data.tensors import to_input
from segbench.data.voc import MEAN_BGR
from segbench.infra.progress import progress_bar

EVAL_SEED_OFFSET = 1_000_003  # the held-out generator: never drawn from in training
EVAL_BATCH = 50               # held-out images per forward pass
TRAIN_STREAMS, EVAL_STREAMS = ("crops", "full"), ("single", "clutter")


def phases(*, size: int, crop_size: int, crop_iterations: int, iterations: int, jitter: float,
           clutter: int) -> list[tuple[str, int, int, float, int]]:
    """The training phases that run, as ``(stream, side in px, steps, jitter in px, clutter)``: the crops
    (skipped with ``crop_iterations`` 0; the object's jitter scaled to the canvas), then the input size."""
    plan = [("crops", crop_size, crop_iterations, jitter * crop_size / size, 0),
            ("full", size, iterations, jitter, clutter)]
    return [phase for phase in plan if phase[2] > 0]


def eval_batches(n: int) -> list[int]:
    """The batch sizes in which ``n`` held-out images are drawn (and scored)."""
    return [min(EVAL_BATCH, n - start) for start in range(0, n, EVAL_BATCH)]


def draw(rng: np.random.Generator, size: int, n: int, *, jitter: float, clutter: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` classes (1-20), then one uint8 ``size`` x ``size`` RGB image of each: ``(n, size, size, 3)``, ``(n,)``."""
    classes = rng.integers(1, NUM_OBJECT_CLASSES + 1, size=n)
    images = np.stack([render_classification(rng, size, int(c), jitter=jitter, clutter=clutter) for c in classes])
    return images, classes


class Images:
    """The streams of one ``seed``: drawn here, or read back from ``path`` (written by ``render_images`` with
    the same ``settings``). ``next(stream, size, n, jitter=, clutter=)`` returns the stream's next batch as
    the network's input (BGR, mean subtracted) and 0-based class targets."""

    def __init__(self, seed: int, *, path: str | os.PathLike | None = None, settings: dict | None = None):
        self.path = None if path is None else Path(path)
        if self.path is None:
            self._rngs = {"train": np.random.default_rng(seed), "eval": np.random.default_rng(seed + EVAL_SEED_OFFSET)}
            return
        import h5py

        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist: render the stand-in images first "
                                    "(segbench standin-images, or the workflow's standin_images rule)")
        self._file = h5py.File(self.path, "r")
        stored = json.loads(self._file.attrs["settings"])
        wanted = {"seed": seed, **(settings or {})}
        differ = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
        if differ:
            detail = ", ".join(f"{k} {got!r} (needed {want!r})" for k, (got, want) in differ.items())
            raise ValueError(f"{self.path} was rendered with other settings: {detail}; delete it and render it "
                             "again with this stand-in's settings")
        self._cursor = dict.fromkeys(self._file, 0)

    def draw(self, stream: str, size: int, n: int, *, jitter: float, clutter: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` uint8 images and their classes (1-20) of ``stream``."""
        if stream not in TRAIN_STREAMS + EVAL_STREAMS:
            raise ValueError(f"unknown stream {stream!r}; expected one of {TRAIN_STREAMS + EVAL_STREAMS}")
        if self.path is None:
            rng = self._rngs["train" if stream in TRAIN_STREAMS else "eval"]
            return draw(rng, size, n, jitter=jitter, clutter=clutter)
        if stream not in self._file:
            raise ValueError(f"{self.path} holds no {stream!r} images (it has {sorted(self._file)})")
        group, start = self._file[stream], self._cursor[stream]
        recorded = {"size": group.attrs["size"], "jitter": group.attrs["jitter"], "clutter": group.attrs["clutter"]}
        if recorded != {"size": size, "jitter": jitter, "clutter": clutter} or start + n > len(group["classes"]):
            raise ValueError(f"{self.path}: asked for {n} {stream!r} images of {size} px (jitter {jitter}, clutter "
                             f"{clutter}) from position {start}, but it holds {len(group['classes'])} drawn with "
                             f"{recorded}")
        self._cursor[stream] = start + n
        return group["images"][start:start + n], group["classes"][start:start + n]

    def next(self, stream: str, size: int, n: int, *, jitter: float, clutter: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, classes = self.draw(stream, size, n, jitter=jitter, clutter=clutter)
        return to_input(images, MEAN_BGR), torch.from_numpy(np.asarray(classes) - 1)

    def close(self) -> None:
        if self.path is not None:
            self._file.close()


def render_images(out: str | os.PathLike, *, size: int = 224, crop_size: int = 112, crop_iterations: int = 400,
                  iterations: int = 150, batch_size: int = 32, jitter: float = 16.0, clutter: int = 2, seed: int = 0,
                  eval_images: int = 400, progress: bool = True) -> Path:
    """Write every image that ``pretrain_classifier`` with these settings draws for a classifier of input size
    ``size`` to the HDF5 file ``out`` (atomically): one group per stream with ``images`` (uint8 N x S x S x 3,
    a chunk per batch) and ``classes`` (1-20), the stream's side, jitter and clutter as attributes, and the
    settings (JSON) that ``Images`` checks before reading."""
    import h5py

    from segbench.infra.atomic import replacing

    settings = {"seed": seed, "size": size, "crop_size": crop_size, "crop_iterations": crop_iterations,
                "iterations": iterations, "batch_size": batch_size, "jitter": jitter, "clutter": clutter,
                "eval_images": eval_images}
    source = Images(seed)
    training = phases(size=size, crop_size=crop_size, crop_iterations=crop_iterations, iterations=iterations,
                      jitter=jitter, clutter=clutter)
    plan = [(stream, side, [batch_size] * steps, jit, clut) for stream, side, steps, jit, clut in training]
    plan += [(stream, size, eval_batches(eval_images), jitter, clut)
             for stream, clut in zip(EVAL_STREAMS, (0, clutter))]
    total = sum(len(batches) for _, _, batches, _, _ in plan)
    with replacing(out) as tmp, h5py.File(tmp, "w") as f, progress_bar(total=total, desc="stand-in images",
                                                                        disable=not progress) as bar:
        f.attrs["settings"] = json.dumps(settings, sort_keys=True)
        for stream, side, batches, jit, clut in plan:
            group = f.create_group(stream)
            group.attrs.update(size=side, jitter=jit, clutter=clut)
            n = sum(batches)
            images = group.create_dataset("images", (n, side, side, 3), dtype=np.uint8,
                                          chunks=(max(batches, default=1), side, side, 3))
            classes = group.create_dataset("classes", (n,), dtype=np.int64)
            start = 0
            for k in batches:
                images[start:start + k], classes[start:start + k] = source.draw(stream, side, k, jitter=jit,
                                                                                 clutter=clut)
                start += k
                bar.update()
    return Path(out)
