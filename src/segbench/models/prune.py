"""Filter pruning of a ResNet classifier to a narrower one of the same depth: ICNet's starting weights.

ICNet's authors built their trunk by pruning their trained PSPNet's ResNet-50 to half its width and
fine-tuning the result (Zhao et al. 2018, section 3.4 "Model compression"), with the method of Li et al.,
"Pruning Filters for Efficient ConvNets" (ICLR 2017): in each layer, keep the filters with the largest L1
norms. ``prune_resnet`` does that to a classifier state dict (torchvision layout, ``segbench.models.resnet``):

- the stem's ``conv1`` keeps its filters of largest L1 norm;
- inside each bottleneck, ``conv1`` and ``conv2`` keep theirs, each layer on its own;
- the channels a stage's blocks add into (every ``conv3``, the ``downsample`` conv and the identity
  shortcuts between them) are one set: each channel is ranked by the sum of the L1 norms of the filters that
  write it, so the residual sums stay aligned;
- every layer's inputs follow the channels kept upstream, batch norms keep the statistics of their kept
  channels, and ``fc`` reads the kept channels of ``layer4``.

Kept channels stay in their original order; ties go to the lower index. No retraining happens here (the
segmentation run fine-tunes, as the paper does after pruning).
"""

from __future__ import annotations

import re

import torch

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _l1(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().flatten(1).sum(1)


def _largest(score: torch.Tensor, k: int) -> torch.Tensor:
    if k > score.numel():
        raise ValueError(f"cannot keep {k} of {score.numel()} channels: the target must not be wider")
    return torch.argsort(score, descending=True, stable=True)[:k].sort().values


def prune_resnet(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (a ResNet classifier) cut down to the shapes of ``target`` (the state dict of the same
    classifier at a smaller width), keeping the filters of largest L1 norm (see the module docstring).

    Raises ``ValueError`` if the two are not the same depth and layout, or if a kept shape comes out
    different from the target's.
    """
    if set(state) != set(target):
        extra, missing = sorted(set(state) - set(target)), sorted(set(target) - set(state))
        raise ValueError(f"the classifiers differ in layout: only in the source {extra[:5]}, only in the target "
                         f"{missing[:5]}; prune a ResNet to the same depth")
    out: dict[str, torch.Tensor] = {}

    def conv(name: str, rows: torch.Tensor, cols: torch.Tensor) -> None:
        out[f"{name}.weight"] = state[f"{name}.weight"][rows][:, cols].clone()

    def bn(name: str, keep: torch.Tensor) -> None:
        for key in BN_KEYS:
            out[f"{name}.{key}"] = state[f"{name}.{key}"][keep].clone()
        if f"{name}.num_batches_tracked" in state:
            out[f"{name}.num_batches_tracked"] = state[f"{name}.num_batches_tracked"].clone()

    def width(name: str) -> int:
        return target[f"{name}.weight"].shape[0]

    keep = _largest(_l1(state["conv1.weight"]), width("conv1"))
    conv("conv1", keep, torch.arange(state["conv1.weight"].shape[1]))
    bn("bn1", keep)
    stages = sorted({m.group(1) for k in state if (m := re.match(r"(layer\d+)\.", k))})
    for stage in stages:
        blocks = sorted({int(m.group(1)) for k in state if (m := re.match(rf"{stage}\.(\d+)\.", k))})
        writers = [_l1(state[f"{stage}.{b}.conv3.weight"]) for b in blocks]
        if f"{stage}.0.downsample.0.weight" in state:
            writers.append(_l1(state[f"{stage}.0.downsample.0.weight"]))
        stream = _largest(torch.stack(writers).sum(0), width(f"{stage}.0.conv3"))
        block_in = keep
        for b in blocks:
            name = f"{stage}.{b}"
            mid1 = _largest(_l1(state[f"{name}.conv1.weight"]), width(f"{name}.conv1"))
            mid2 = _largest(_l1(state[f"{name}.conv2.weight"]), width(f"{name}.conv2"))
            conv(f"{name}.conv1", mid1, block_in)
            bn(f"{name}.bn1", mid1)
            conv(f"{name}.conv2", mid2, mid1)
            bn(f"{name}.bn2", mid2)
            conv(f"{name}.conv3", stream, mid2)
            bn(f"{name}.bn3", stream)
            if f"{name}.downsample.0.weight" in state:
                conv(f"{name}.downsample.0", stream, block_in)
                bn(f"{name}.downsample.1", stream)
            block_in = stream
        keep = stream
    out["fc.weight"] = state["fc.weight"][:, keep].clone()
    out["fc.bias"] = state["fc.bias"].clone()
    wrong = [k for k in target if k not in out or out[k].shape != target[k].shape]
    if wrong:
        raise ValueError(f"pruned parameters {wrong[:5]} do not match the target's shapes "
                         f"{[tuple(target[k].shape) for k in wrong[:5]]}")
    return out
