"""segbench's optimizers: torch.optim's updates bit for bit, without importing TorchDynamo; the allocator setting."""

import os
import subprocess
import sys

import pytest
import torch

from segbench.infra import runtime
from segbench.training import optimizers


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))


def _groups(net):
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return [{"params": weights, "lr": 0.05, "weight_decay": 5e-4}, {"params": biases, "lr": 0.1, "weight_decay": 0.0}]


@pytest.mark.parametrize("ours, theirs, options", [
    (optimizers.SGD, torch.optim.SGD, {"momentum": 0.9, "foreach": True}),
    (optimizers.SGD, torch.optim.SGD, {"momentum": 0.99, "foreach": False}),
    (optimizers.AdamW, torch.optim.AdamW, {"betas": (0.9, 0.999), "foreach": True}),
    (optimizers.Adam, torch.optim.Adam, {}),
])
def test_same_updates_and_state_as_torch_optim(ours, theirs, options):
    a, b = _net(0), _net(0)
    opt_a, opt_b = ours(_groups(a), lr=0.05, **options), theirs(_groups(b), lr=0.05, **options)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    for _ in range(4):
        for net, opt in ((a, opt_a), (b, opt_b)):
            net(x).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # A checkpoint written by one loads into the other and continues identically.
    opt_b.load_state_dict(opt_a.state_dict())
    restored = ours(_groups(_net(0)), lr=0.05, **options)
    restored.load_state_dict(opt_b.state_dict())
    state_a, state_r = opt_a.state_dict()["state"], restored.state_dict()["state"]
    assert state_a.keys() == state_r.keys()
    for key in state_a:
        assert all(torch.equal(state_a[key][k], state_r[key][k]) for k in state_a[key])


def test_step_runs_without_gradient_tracking():
    net = _net(0)
    opt = optimizers.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(1, 3, 5, 5)).sum().backward()
    opt.step()
    assert all(p.grad_fn is None for p in net.parameters())
    assert opt.state_dict()["state"][0]["momentum_buffer"].grad_fn is None


def test_training_does_not_import_torch_dynamo():
    """torch.optim's own classes import torch._dynamo (1.7 s) on their first step or add_param_group."""
    code = (
        "import sys, torch\n"
        "from segbench.training import optimizers\n"
        "net = torch.nn.Linear(3, 2)\n"
        "for cls in (optimizers.SGD, optimizers.AdamW, optimizers.Adam):\n"
        "    opt = cls(net.parameters(), lr=0.1)\n"
        "    net(torch.randn(4, 3)).sum().backward(); opt.step(); opt.zero_grad()\n"
        "    opt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _glibc() -> bool:
    return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert runtime.keep_freed_memory() is True


def test_keep_freed_memory_leaves_an_explicit_setting_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert runtime.keep_freed_memory() is False
