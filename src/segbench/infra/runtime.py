"""Process-wide settings every entry point applies the same way: device, threads, seeds, deterministic algorithms."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys

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


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the heap, larger ones are mapped
TRIM_THRESHOLD = 256 * 2**20  # free heap kept for reuse before it goes back to the system


def keep_freed_memory() -> bool:
    """Let glibc's allocator reuse the memory of freed tensors instead of returning it to the system.

    By default glibc maps every block above its (adaptive) threshold with its own ``mmap`` and unmaps it on
    free, so a CPU training step that frees and reallocates the same activations each iteration pays a page
    fault for every 4 KiB of them, again each step: 2.2 million faults and 5 s of system time in a 38 s
    FCN-32s job of the embedded default (2-core AMD EPYC, two jobs side by side). Blocks up to 32 MiB from the
    heap, and up to 256 MiB of free heap kept, cut that job to 32 s with the same bits (the arithmetic does not
    change, only where the memory comes from). The same as setting ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_``, which need a fresh process; those, when set, win. Returns whether it applied
    (glibc only: other C libraries have their own policies and are left alone).
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def setup(*, threads: int | None = None, seed: int | None = None) -> None:
    """Fix the intra-op thread count (results depend on it), keep freed memory for reuse
    (:func:`keep_freed_memory`) and seed every generator."""
    keep_freed_memory()
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
