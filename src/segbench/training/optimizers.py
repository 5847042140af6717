"""torch.optim's SGD, Adam and AdamW, the same updates without importing TorchDynamo in every training job.

In this torch, ``Optimizer.step`` (through ``_use_grad_for_differentiable``) and ``zero_grad``,
``add_param_group``, ``state_dict`` and ``load_state_dict`` (through ``torch._disable_dynamo``) import
``torch._dynamo`` on their first call, only to mark themselves as not to be traced by ``torch.compile``:
1.3-1.7 s of a training job's fixed cost on a 2-core AMD EPYC, paid by every job of the workflow although none
compiles its optimizer. These subclasses call the same undecorated methods, with gradients off as the
decorator sets them (``differentiable`` is False): the same arithmetic, the same state dicts. They must not
be called from inside a ``torch.compile``'d function (segbench compiles only the forward pass); use
torch.optim's own classes for that.
"""

from __future__ import annotations

import inspect

import torch
from torch.optim import Optimizer


def _undecorated(method):
    """The function under torch's decorators (``functools.wraps`` keeps each one's as ``__wrapped__``; an
    optimizer's constructor may have wrapped ``step`` once more in its profiler hook)."""
    return inspect.unwrap(method)


class _NoDynamo:
    """Mixin: ``step`` and the decorated ``Optimizer`` methods, called undecorated."""

    @torch.no_grad()
    def step(self, closure=None):
        return _undecorated(super().step)(self, closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _undecorated(Optimizer.zero_grad)(self, set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        _undecorated(Optimizer.add_param_group)(self, param_group)

    def state_dict(self) -> dict:
        return _undecorated(Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict) -> None:
        _undecorated(Optimizer.load_state_dict)(self, state_dict)


class SGD(_NoDynamo, torch.optim.SGD):
    """``torch.optim.SGD`` (see the module's docstring)."""


class Adam(_NoDynamo, torch.optim.Adam):
    """``torch.optim.Adam`` (see the module's docstring)."""


class AdamW(_NoDynamo, torch.optim.AdamW):
    """``torch.optim.AdamW`` (see the module's docstring)."""
