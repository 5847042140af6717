"""Process-wide settings every entry point applies the same way: device, threads, seeds."""

from __future__ import annotations

import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(device)


def setup(*, threads: int | None = None, seed: int | None = None) -> None:
    """Fix the intra-op thread count (results depend on it) and seed every generator."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.set_flush_denormal(True)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
