"""Process-wide settings every entry point applies the same way: device, threads, seeds, deterministic algorithms."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from segbench.errors import SegbenchError

DEVICES = ("auto", "cpu", "cuda")  # a config's device; runtime also takes cuda:N, SLURM resources do not


def resolve_device(device: str) -> torch.device:
    """The torch device of a config's ``device``: ``cpu``, ``cuda`` / ``cuda:N`` (an error without a GPU), or
    ``auto``: CUDA when a GPU is visible, else the CPU. Inside a SLURM job, ``auto`` takes CUDA only when
    SLURM allocated the job a GPU: on nodes that do not confine devices a job sees every GPU, also those
    that SLURM gave other jobs (``device: auto`` asks SLURM for none, see ``segbench.infra.resources``)."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and _slurm_allows_gpu() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SegbenchError(f"device {device!r} was asked for but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(device)


def _slurm_allows_gpu() -> bool:
    """True outside SLURM, and inside a SLURM job that was allocated GPUs (SLURM then lists them)."""
    if "SLURM_JOB_ID" not in os.environ:
        return True
    listed = (os.environ.get(name, "") for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE"))
    return any(value not in ("", "0") for value in listed)


def setup(*, threads: int | None = None, seed: int | None = None) -> None:
    """Fix the intra-op thread count (results depend on it) and seed every generator."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.set_flush_denormal(True)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def set_deterministic(deterministic: bool) -> None:
    """Choose between bit-reproducible and PyTorch's default GPU arithmetic, for this process.

    True: cuDNN's deterministic convolution algorithms (``torch.backends.cudnn.deterministic``, benchmark
    mode off) and ``torch.use_deterministic_algorithms`` with ``warn_only`` (an operation without a
    deterministic GPU kernel logs a warning naming it instead of stopping the run); cuBLAS gets a fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``, set here unless already set, before the first matrix product on
    the GPU). False: PyTorch's defaults, which every run had before this switch existed: cuDNN's heuristics
    pick the algorithms (some non-deterministic, with atomic adds in the backward pass) and benchmark mode
    stays off, since it would time every algorithm again for each new image size (the paper's recipes train
    on images of many sizes). CPU arithmetic is deterministic either way: the same settings on the same
    machine give the same bits.
    """
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be True or False, got {deterministic!r}")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # The call also sets TorchInductor's flag, importing torch._inductor and torch._dynamo (2.5 s on a 2-core
        # CPU, in every training job): skip it when it would only confirm the defaults (both off).
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
