"""Data-parallel training in N processes of one job: one per GPU over NCCL, or CPU processes over gloo.

    ctx = from_env()                       # rank and world size from torchrun (or srun); world 1 otherwise
    device = start(ctx, device)            # joins the process group; cuda:<local rank> on GPUs
    ddp = replicate(module, ctx, device)   # DistributedDataParallel: gradients averaged over the processes
    ...
    stop(ctx)

Launch with ``torchrun --standalone --nproc-per-node N -m segbench.cli train ...`` (the train rule does,
for ``train.processes: N > 1``, giving a run at most one process per image of its iteration:
``processes_for``), or with ``srun --ntasks N`` in a job step of one node. A plain ``segbench train`` is one
process and never touches ``torch.distributed``.

How N processes give the update of one process on the same total batch (``segbench.training.train``):

- **Total batch**: the recipe's batch (``batch_size / p`` images per iteration) is the batch of all processes
  together. Every process draws the same indices from the run's seed and keeps ``indices[rank::N]``.
- **Loss**: one process weights each image size's loss by its share of the batch's images. Each process
  weights its part of that loss by its share of what the loss averages over (``loss_weights``): images for
  the ``sum`` reduction (per image), valid pixels for ``mean``. The processes' losses then add up to the
  one-process loss; DistributedDataParallel averages gradients, so each process back-propagates N times its
  loss and the average is the one-process gradient. Exact for single-head nets without auxiliary losses;
  with several heads or auxiliary losses the pixel shares are the first head's (the same update in
  expectation).
- **Learning rate**: the recipe's, unchanged: the gradient is that of the same total batch (no linear
  scaling rule is needed, since the batch does not grow with N).
- **Seeds**: the data draw uses the run's seed in every process. Dropout and loss sampling draw from a
  stream per process: process 0 uses the run's seed (exactly the single-process stream), process r > 0 a
  seed derived from (seed, r) (``rank_seed``). Independent masks on different images give the
  single-process distribution, hence the same expected update.
- **Batch norm**: with a recipe that trains batch norm on batch statistics (``Recipe.bn == "batch"``), the
  net's batch-norm layers become SyncBatchNorm on GPUs (``sync_batch_norm``): each forward pass normalises
  over the images of every process, as PSPNet's and DeepLab's cross-GPU batch norm did, so a net whose
  pooling branch needs 2 images (``min_batch``) trains with one image per GPU when the total has 2. A
  SyncBatchNorm forward is a collective call, so every process makes as many forward passes per iteration
  (a process with fewer image sizes or micro-batches runs empty ones). SyncBatchNorm needs CUDA: CPU
  processes over gloo normalise over their own images, so each must get ``min_batch`` images
  (``recipes.min_images_per_process``, ``processes_for``). Frozen batch norm (the FCNs under every FCN
  recipe) uses the running statistics and needs neither.
- **Checkpoints**: process 0 writes them, with every process's random states (``all_gather``); all
  processes resume from them. A checkpoint of another N is not resumed. One written by wall time
  (``train.checkpoint_minutes``) is due when any process's clock says so (``all_sum``), so all save together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Context:
    """This process's place among the training processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # index among the processes of this node: its GPU

    @property
    def main(self) -> bool:
        """Process 0: the one that validates and writes checkpoints, logs and weights."""
        return self.rank == 0


def from_env(environ: Mapping[str, str] = os.environ) -> Context:
    """The context torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or an srun step
    (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``) gives this process; one process otherwise.
    A batch script's own environment (``SLURM_NTASKS`` without a step) counts as one process."""
    if "WORLD_SIZE" in environ:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif "SLURM_STEP_NUM_TASKS" in environ:
        names = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")
    else:
        return Context()
    try:
        rank, world, local = (int(environ[name]) for name in names)
    except (KeyError, ValueError) as err:
        raise ValueError(f"the launcher's variables {names} must all be integers; got "
                         f"{ {name: environ.get(name) for name in names} }") from err
    if not 0 <= rank < world:
        raise ValueError(f"process rank {rank} is outside [0, {world}) ({names[0]}, {names[1]})")
    return Context(rank=rank, world_size=world, local_rank=local)


def processes_for(requested: int, images_per_iter: int, *, min_per_process: int = 1) -> int:
    """The processes a run trains in: ``requested`` (the config's ``train.processes``), at most one per image of
    its iteration, so that a batch-1 recipe (``heavy``) runs as one process whatever was asked, and at most one
    per ``min_per_process`` images (``recipes.min_images_per_process``: a net whose batch norm needs 2 images
    in each process that does not synchronise it); at least one."""
    if requested < 1 or images_per_iter < 1 or min_per_process < 1:
        raise ValueError(f"need at least one process, one image per iteration and per process, got "
                         f"processes={requested}, images_per_iter={images_per_iter}, min_per_process={min_per_process}")
    return max(1, min(requested, images_per_iter // min_per_process))


def launch_command(processes: int) -> str:
    """The command that starts ``segbench train`` in ``processes`` processes on this node: itself for one,
    else torchrun with a rendezvous of its own on a free local port (``--standalone``), which sets each
    process's rank and world size and stops them all when one fails."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    if processes == 1:
        return "segbench train"
    return f"torchrun --standalone --nproc-per-node {processes} -m segbench.cli train"


def start(ctx: Context, device: torch.device) -> torch.device:
    """Join the process group of ``ctx`` (NCCL on a GPU, gloo on the CPU); returns this process's device:
    ``cuda:<local rank>`` on GPUs, ``device`` otherwise. Nothing happens for a single process.

    torchrun sets ``MASTER_ADDR`` and ``MASTER_PORT``; under srun they default to this node and a port
    derived from the job id (a job of one node; set both yourself for several nodes)."""
    if ctx.world_size == 1:
        return device
    backend = "gloo"
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {ctx.rank} is local process {ctx.local_rank} but only "
                             f"{torch.cuda.device_count()} GPUs are visible: ask for one GPU per process")
        device, backend = torch.device("cuda", ctx.local_rank), "nccl"
        torch.cuda.set_device(device)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size)
    return device


def stop(ctx: Context) -> None:
    """Leave the process group (after the last collective call)."""
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s own random streams (dropout, loss sampling): ``seed`` for process 0."""
    return seed if rank == 0 else int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def batch_norm_synced(ctx: Context, device: torch.device) -> bool:
    """Whether batch norm is synchronised over the processes (``sync_batch_norm``): several processes on GPUs.
    SyncBatchNorm computes on CUDA tensors only (a training forward on the CPU raises), so CPU processes over
    gloo each normalise over their own images."""
    return ctx.world_size > 1 and device.type == "cuda"


def sync_batch_norm(module: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """``module`` with every batch-norm layer a SyncBatchNorm where ``batch_norm_synced`` (the same parameters
    and buffers, so the state dict's keys and values stay the same), else ``module`` unchanged. Call before
    ``replicate`` and before building the optimizer."""
    if not batch_norm_synced(ctx, device):
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


def replicate(module: torch.nn.Module, ctx: Context, device: torch.device) -> DistributedDataParallel:
    """``module`` under DistributedDataParallel: process 0's parameters and buffers are copied to every
    process, and each backward pass averages the gradients over the processes."""
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(values: Sequence[float], ctx: Context, device: torch.device) -> list[float]:
    """The element-wise sum of ``values`` over the processes (float64; ``values`` itself for one process)."""
    if ctx.world_size == 1:
        return [float(v) for v in values]
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    summed = torch.tensor([float(v) for v in values], dtype=torch.float64, device=on)
    dist.all_reduce(summed)
    return summed.tolist()


def all_max(value: int, ctx: Context, device: torch.device) -> int:
    """The largest ``value`` over the processes (``value`` itself for one process)."""
    if ctx.world_size == 1:
        return int(value)
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    largest = torch.tensor([int(value)], dtype=torch.int64, device=on)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())


def all_gather(obj, ctx: Context) -> list:
    """Every process's ``obj`` (picklable), in rank order."""
    if ctx.world_size == 1:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: Context) -> None:
    """Wait until every process has arrived here."""
    if ctx.world_size > 1:
        dist.barrier()


def loss_weights(groups: Sequence[tuple[tuple[int, int], float]], sizes: Sequence[tuple[tuple[int, int], int]],
                 images: int, ctx: Context, device: torch.device) -> list[float]:
    """The weight of each of this process's loss terms, one per image size, in the loss of the whole batch.

    ``groups``: (image size, what its loss averages over: its images for the ``sum`` reduction, its valid
    pixels for ``mean``) of this process's groups. ``sizes``: (image size, images of that size in the whole
    batch) over all processes, ``images`` in total. One process weights size s by n_s / images; here a
    process's share c of size s gets n_s / images x c / C_s, C_s summed over the processes (one
    ``all_reduce``), so that the processes' weighted losses add up to the one-process loss.
    """
    order = {size: k for k, (size, _) in enumerate(sizes)}
    local = [0.0] * len(sizes)
    for size, count in groups:
        local[order[size]] += count
    totals = all_sum(local, ctx, device)
    return [sizes[order[size]][1] / images * (count / totals[order[size]] if totals[order[size]] else 0.0)
            for size, count in groups]
