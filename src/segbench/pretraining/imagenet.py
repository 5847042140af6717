"""ImageNet classifiers from torchvision, fetched into a cache and checked, as the FCNs' starting point.

Used when ``pretrain.source: torchvision`` (on a cluster with network). torchvision names each weight file
``<arch>-<first hex digits of its sha256>.pth``; the file is downloaded with :func:`segbench.data.fetch`
(resumable) and its sha256 prefix checked before it is used. These weights expect torchvision's input
normalisation (RGB in [0, 1], ImageNet mean and std), which the record says, so training and evaluation
feed the net accordingly.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
import torchvision

from segbench.data import fetch
from segbench.errors import ChecksumError
from segbench.infra.atomic import torch_save

WEIGHTS = {
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "googlenet": torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1,
    # the successors' trunks (PSPNet, DeepLab); V1 = the original recipe's weights, as those papers' era had
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}


def check_sha256_prefix(path: Path) -> None:
    """Raise ChecksumError unless the file's sha256 starts with the hex digits in its torchvision name
    (ValueError if the name carries none)."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if not match:
        raise ValueError(f"{path.name} does not carry a sha256 prefix (<arch>-<hex>.pth)")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(match.group(1)):
        raise ChecksumError(f"{path} has sha256 {h.hexdigest()[:16]}..., expected a prefix {match.group(1)}: "
                            "delete it and rerun to download it again")


def fetch_torchvision(backbone: str, out: str | os.PathLike, *, cache: str | os.PathLike) -> Path:
    """Download ``backbone``'s ImageNet weights into ``cache`` and write a classifier record to ``out``."""
    if backbone not in WEIGHTS:
        raise ValueError(f"no torchvision weights for backbone {backbone!r}; expected one of {sorted(WEIGHTS)}")
    url = WEIGHTS[backbone].url
    path = fetch(url, Path(cache) / url.rsplit("/", 1)[1], None)
    check_sha256_prefix(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return torch_save({"backbone": backbone, "width": 1.0, "num_classes": 1000, "input_norm": "torchvision",
                       "source": url, "state_dict": state}, out)
