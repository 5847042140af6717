"""A re-implementation of pytorch-fcn's ``torchfcn.models.FCN8s`` (wkentaro/pytorch-fcn 1.9.7, MIT licence), the
reference that ``bench_forward.py --reference`` times beside segbench's own FCN-8s.

Not segbench code and not torchfcn itself: the PyPI package (torchfcn 1.9.7) does not install with this
torch (it needs ``fcn``, which needs ``chainer``, whose build fails) and imports ``fcn`` at the top of every
model file, so ``reference()`` uses torchfcn where it imports and this copy of its layer layout otherwise:
``conv1_1`` padded by 100, 2x2 ceil-mode max pools, ``fc6`` a 7x7 conv to 4096, ``fc7`` 1x1, ReLU and
channel-wise ``Dropout2d`` after each, ``score_fr`` / ``score_pool4`` / ``score_pool3`` 1x1 convs, full
C x C ``ConvTranspose2d`` upsamplers ``upscore2`` (4/2), ``upscore_pool4`` (4/2) and ``upscore8`` (16/8) with
the bilinear kernel on the class diagonal, and the crops 5, 9 and 31, in torchfcn's forward order. The
module names are torchfcn's (so segbench's weights load into it as they are).
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def upsampling_weight(channels: int, kernel_size: int) -> torch.Tensor:
    """torchfcn's ``get_upsampling_weight``: C x C x k x k, the bilinear kernel on the diagonal."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    line = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=torch.float64)
    weight[range(channels), range(channels)] = torch.outer(line, line)
    return weight.float()


class FCN8s(nn.Module):
    """torchfcn's FCN8s (see the module docstring): 1 x 3 x H x W -> 1 x n_class x H x W scores."""

    def __init__(self, n_class: int = 21):
        super().__init__()
        c_in = 3
        for i, stage in enumerate(STAGES, start=1):
            for j, c in enumerate(stage, start=1):
                self.add_module(f"conv{i}_{j}", nn.Conv2d(c_in, c, 3, padding=100 if (i, j) == (1, 1) else 1))
                self.add_module(f"relu{i}_{j}", nn.ReLU(inplace=True))
                c_in = c
            self.add_module(f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.fc6, self.relu6, self.drop6 = nn.Conv2d(512, 4096, 7), nn.ReLU(inplace=True), nn.Dropout2d()
        self.fc7, self.relu7, self.drop7 = nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout2d()
        self.score_fr = nn.Conv2d(4096, n_class, 1)
        self.score_pool3 = nn.Conv2d(256, n_class, 1)
        self.score_pool4 = nn.Conv2d(512, n_class, 1)
        self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        for m in self.modules():  # torchfcn's _initialize_weights
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                m.weight.data.copy_(upsampling_weight(m.in_channels, m.kernel_size[0]))

    def _stage(self, h: torch.Tensor, i: int) -> torch.Tensor:
        for j in range(1, len(STAGES[i - 1]) + 1):
            h = getattr(self, f"relu{i}_{j}")(getattr(self, f"conv{i}_{j}")(h))
        return getattr(self, f"pool{i}")(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in (1, 2, 3):
            h = self._stage(h, i)
        pool3 = h  # 1/8
        pool4 = h = self._stage(h, 4)  # 1/16
        h = self._stage(h, 5)
        h = self.drop6(self.relu6(self.fc6(h)))
        h = self.drop7(self.relu7(self.fc7(h)))
        upscore2 = self.upscore2(self.score_fr(h))  # 1/16
        score_pool4c = self.score_pool4(pool4)[:, :, 5:5 + upscore2.size(2), 5:5 + upscore2.size(3)]
        upscore_pool4 = self.upscore_pool4(upscore2 + score_pool4c)  # 1/8
        score_pool3c = self.score_pool3(pool3)[:, :, 9:9 + upscore_pool4.size(2), 9:9 + upscore_pool4.size(3)]
        h = self.upscore8(upscore_pool4 + score_pool3c)
        return h[:, :, 31:31 + x.size(2), 31:31 + x.size(3)].contiguous()


def reference() -> tuple[str, type[nn.Module]]:
    """(name, FCN8s class): torchfcn's own where it imports, else this re-implementation."""
    try:
        import torchfcn
        return f"torchfcn {getattr(torchfcn, '__version__', '')} FCN8s".replace("  ", " "), torchfcn.models.FCN8s
    except Exception:  # noqa: BLE001 - any failure of its import chain (fcn, chainer, distutils) means: not usable
        return "re-implementation of torchfcn 1.9.7's FCN8s (benchmarks/reference_fcn8s.py)", FCN8s
