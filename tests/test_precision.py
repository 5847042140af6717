"""``precision: auto`` on CUDA GPUs: bf16 only where the GPU has it in hardware, never fp16."""

from types import SimpleNamespace

import pytest
import torch

from segbench.infra import precision

CUDA = torch.device("cuda")


def fake_gpu(monkeypatch, major, minor, *, emulation=True):
    """Make torch's CUDA queries describe one GPU of compute capability ``major.minor``; ``emulation``: whether
    a bf16 tensor can be made on it (true on V100 and T4, where bf16 runs emulated in float32)."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(major=major, minor=minor, name=f"sm_{major}{minor}"))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: emulation)


@pytest.mark.parametrize("gpu", [(7, 0), (7, 5)], ids=["V100", "T4"])
def test_auto_is_fp32_on_a_gpu_that_only_emulates_bf16(monkeypatch, gpu):
    fake_gpu(monkeypatch, *gpu)
    assert torch.cuda.is_bf16_supported()  # the trap: torch's default counts the emulation
    assert precision.resolve("auto", CUDA) == "fp32"  # neither emulated bf16 nor, silently, fp16
    assert precision.resolve("fp16", CUDA) == "fp16"  # fp16 stays there for whoever asks for it


@pytest.mark.parametrize("gpu", [(8, 0), (9, 0)], ids=["A100", "H100"])
def test_auto_is_bf16_on_a_gpu_with_bf16_in_hardware(monkeypatch, gpu):
    fake_gpu(monkeypatch, *gpu, emulation=False)  # the hardware answer alone decides
    assert precision.resolve("auto", CUDA) == "bf16"


def test_auto_is_fp32_without_a_usable_gpu(monkeypatch):
    fake_gpu(monkeypatch, 8, 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve("auto", CUDA) == "fp32"
