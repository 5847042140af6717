"""Training batches off the training thread: FCN's random index draw as a ``torch.utils.data`` sampler, and
a dataset that turns one iteration's indices into network inputs and targets.

    sampler = RandomBatches(len(store), images_per_iter, seed=seed, iterations=(0, 1000))
    data = TrainingBatches(store, heads={"label": 21}, modality="rgb", norm="caffe")
    for batch in batch_loader(data, sampler, num_workers=2, pin_memory=False):
        batch.iteration, batch.data_rng, batch.groups      # groups: inputs and targets, one image size each

The sampler draws exactly what the training loop drew before it had a loader: one
``np.random.default_rng(seed).integers(0, len(store), size=images_per_iter)`` per iteration, from one
generator, so runs keep their data order. With workers the sampler runs ahead of the training (it feeds
``prefetch_factor`` batches per worker), so each batch carries the generator state right after its own draw
(``data_rng``): a checkpoint stores the state of the last batch trained on, and a resumed run draws the
same indices as an uninterrupted one.

Workers only read the store and build tensors; the one randomness they use, a successor recipe's augmentation,
comes from a generator per image seeded by the iteration and the image's place in the batch. So the batches,
and so the trained weights, are byte-identical with 0 workers (everything in the training process) and with
any number.
With ``world_size > 1`` (``segbench.training.distributed``) every process draws the same indices and keeps its
shard, ``indices[rank::world_size]``.
"""

from __future__ import annotations

import signal
from typing import Iterator, Mapping, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from segbench.data.augment import MEAN_RGB, Augmentation, augment
from segbench.data.store import Store
from segbench.data.tensors import modality_input, to_input, to_target
from segbench.evaluation import objective
from segbench.training.checkpoint import STOP_SIGNALS


class Draw(NamedTuple):
    """One iteration's draw: the indices of the whole batch (every process's), and the generator state after it."""

    iteration: int           # 0-based
    indices: tuple[int, ...]
    data_rng: dict           # np.random.Generator.bit_generator.state after this draw


class Group(NamedTuple):
    """Images of one size in this process's share of a batch."""

    indices: list[int]
    size: tuple[int, int]            # H, W
    x: torch.Tensor                  # float32 N x C x H x W, the modality's input in the model's convention
    y: dict[str, torch.Tensor]       # head field -> int64 N x H x W labels (255 = ignore)


class Batch(NamedTuple):
    """One iteration of this process: its groups, and the image sizes of the whole batch (for the loss weights)."""

    iteration: int
    data_rng: dict
    groups: list[Group]
    sizes: list[tuple[tuple[int, int], int]]  # ((H, W), images of that size in the whole batch), first-seen order
    images: int                                # images in the whole batch, all processes together

    def pin_memory(self) -> Batch:
        """This batch with its tensors in page-locked memory (what the loader's ``pin_memory`` calls): only the
        tensors change, the indices, sizes and generator state stay the same Python values."""
        groups = [group._replace(x=group.x.pin_memory(), y={k: t.pin_memory() for k, t in group.y.items()})
                  for group in self.groups]
        return self._replace(groups=groups)


class RandomBatches(Sampler):
    """``images`` indices in [0, ``num_samples``) drawn with replacement per iteration, for iterations
    ``iterations = (start, stop)``; ``state`` (a ``data_rng`` of an earlier ``Draw``) continues a generator,
    else it starts from ``seed``. Yields one ``Draw`` per iteration."""

    def __init__(self, num_samples: int, images: int, *, seed: int, iterations: tuple[int, int],
                 state: dict | None = None):
        if num_samples < 1 or images < 1:
            raise ValueError(f"need at least one sample and one image per iteration, got num_samples={num_samples}, "
                             f"images={images}")
        self.num_samples, self.images, self.seed, self.state = num_samples, images, seed, state
        self.start, self.stop = iterations

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[Draw]:
        rng = np.random.default_rng(self.seed)
        if self.state is not None:
            rng.bit_generator.state = self.state
        for it in range(self.start, self.stop):
            indices = rng.integers(0, self.num_samples, size=self.images)
            yield Draw(it, tuple(int(i) for i in indices), rng.bit_generator.state)


class TrainingBatches(Dataset):
    """Indexed by a ``Draw``: this process's share of the batch, grouped by image size (``Store.by_size``),
    as inputs of ``modality`` in the ``norm`` convention and the targets of every field of ``heads``.

    With an active ``augmentation`` (a successor recipe's crop, scale, flip, rotation, blur, elastic
    deformation; ``segbench.data.augment``) every image is augmented before it becomes an input, with a
    generator of its own seeded by ``(seed, iteration, position in the whole batch)``: the same pixels with
    any number of workers or processes, and after a resume. The recipe's crop then gives the batch one size.
    """

    def __init__(self, store: Store, *, heads: Mapping[str, int], modality: str, norm: str, rank: int = 0,
                 world_size: int = 1, augmentation: Augmentation | None = None, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.store, self.heads, self.modality, self.norm = store, dict(heads), modality, norm
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        if self.augmentation is not None:
            if modality != "rgb" or len(self.heads) != 1:
                raise ValueError(f"augmentation (a successor recipe's crop, scale, flip, ...) is for colour input "
                                 f"with one label field; got modality {modality!r} and fields {sorted(self.heads)}: "
                                 "use the short, heavy or paper recipe for this run")
            if self.augmentation.crop is None and world_size > 1:
                raise ValueError("augmentation without a crop leaves images of random sizes, which a data-parallel "
                                 "batch cannot weigh across processes: give the recipe a crop")
            # padding takes the mean colour (zero after normalisation); the torchvision norm ignores mean_bgr
            self.mean_bgr = tuple(store.input_mean("mean_bgr")) if norm == "caffe" else (0.0, 0.0, 0.0)
            self.fill = tuple(reversed(self.mean_bgr)) if norm == "caffe" else MEAN_RGB

    def __getitem__(self, draw: Draw) -> Batch:
        if self.augmentation is not None:
            return self._augmented(draw)
        share = self.store.by_size(draw.indices[self.rank::self.world_size])
        groups = [Group(g, size, modality_input(self.store, g, self.modality, self.norm),
                        objective.targets(self.store, g, self.heads)) for size, g in share.items()]
        whole = share if self.world_size == 1 else self.store.by_size(draw.indices)
        sizes = [(size, len(g)) for size, g in whole.items()]
        return Batch(draw.iteration, draw.data_rng, groups, sizes, len(draw.indices))

    def _augmented(self, draw: Draw) -> Batch:
        (field,) = self.heads
        by_size: dict[tuple[int, int], list] = {}
        for position in range(self.rank, len(draw.indices), self.world_size):
            i = draw.indices[position]
            rng = np.random.default_rng([self.seed, draw.iteration, position])
            image, label = augment(self.store.image(i), self.store.get(field, i), rng, params=self.augmentation,
                                   mean=self.fill)
            by_size.setdefault(image.shape[:2], []).append((i, image, label))
        groups = [Group([i for i, _, _ in items], size,
                        to_input([im for _, im, _ in items], self.mean_bgr, self.norm),
                        {field: to_target([lab for _, _, lab in items])})
                  for size, items in by_size.items()]
        crop = self.augmentation.crop
        sizes = ([((crop, crop), len(draw.indices))] if crop is not None
                 else [(group.size, len(group.indices)) for group in groups])
        return Batch(draw.iteration, draw.data_rng, groups, sizes, len(draw.indices))


def batch_loader(dataset: TrainingBatches, sampler: RandomBatches, *, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """A loader of one ``Batch`` per draw of ``sampler``: built in the training process with ``num_workers=0``,
    else by that many worker processes (each opens its own store handle), two batches ahead per worker.
    ``pin_memory`` puts batches in page-locked memory for asynchronous copies to a GPU.

    The loader has a generator of its own: creating its iterator then draws no number from torch's global
    generator (dropout's), so training with the loader draws the same dropout masks as the loop without it.
    Workers ignore the stop signals (``checkpoint.STOP_SIGNALS``): SLURM and Ctrl-C signal every process of
    the job, and a worker killed by SIGTERM would crash the training process before it writes its checkpoint
    (``PreemptionGuard``); workers end with the loader, or on their own when the training process is gone.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_unchanged, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(sampler.seed),
                      worker_init_fn=_ignore_stop_signals if num_workers else None)


def _ignore_stop_signals(worker_id: int) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _unchanged(batch: Batch) -> Batch:
    return batch  # the default (torch's default_convert) would turn the tuples inside into lists
