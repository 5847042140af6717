"""HDNet (Li, Kang, Zhu, Ye, Feng, Ming, "Hybrid Distance Network", Neurocomputing 447, 2021): DANet's head with
location-aware attention, and the high-dimensional feature distance (HFD) loss against class centres.

    layer4 (2048, 1/8) -> head.conv5a: 3x3 conv 512 + BN + ReLU -> head.sa: location-aware attention
                                                               -> head.conv51: 3x3 conv 512 + BN + ReLU --+
                       -> head.conv5c: 3x3 conv 512 + BN + ReLU -> head.sc: channel attention (DANet CAM)  |
                                                               -> head.conv52: 3x3 conv 512 + BN + ReLU --+
                       feat_sum = sum (512, 1/8) -> head.conv8: Dropout2d(0.1), 1x1 -> classes -> bilinear to H x W
    feat_sum, labels -> HFD loss: cross-entropy of <feat_sum, centre_k> (training only, weight 0.1)

Everything follows the authors' release (Anstarc/HDNet, ``encoding/nn/attention_module.py``,
``encoding/nn/oim_static.py``, ``train.py``; SEEDS-REFERENCE-2 6), whose head has 23,925,506 + 513 K parameters
(tests/test_graph_heads.py). Location-aware attention on x (512 ch): q = 1x1 conv 512 -> 128 (bias); for each
window k and type (average, then max) a pooled map P_k(q) at q's size and its cosine similarity with q
(14 one-channel maps for 7 windows); a 3x3 conv to 1 channel + BN + ReLU gives the attention map a (no sigmoid);
out = x + 1x1 conv(x * a). The channel attention is DANet's (gamma starts at 0). HFD loss: logits
z_k(i) = <f(i), centre_k> on the 1/8 grid (features not normalised), labels resized there by nearest neighbour,
cross-entropy (label 255 ignored); the centres (a K x 512 buffer, Kaiming-uniform at start as ``train.py``
does) get no gradient; after the loss, each class c present in the batch moves its centre:
centre_c <- m centre_c + (1 - m) mean_batch(f | label c), then centre_c <- centre_c / ||centre_c||, with m =
``centre_momentum`` (the weight of the OLD centre; the release's class default 0.5). Total loss: CE + 0.1 HFD
(``train.py``'s weights [1.0, 0.1]).

Deviations from the release, every one:
- Pooling: the release's ``padding_pool`` is missing; here each window pools with stride 1 and padding k // 2
  (average over the in-image cells only, max with -inf padding), so P_k has q's size.
- ``self.try_case`` (never set in the release) and its visualisation outputs are dropped.
- Centre update: the release updates inside the autograd backward of a custom function (once per backward,
  skipped under no_grad, once per replica under DataParallel). Here it is an explicit, separately callable step
  (``update_centres``) run by the HFD loss right after it computed the loss with a copy of the old centres:
  the gradient (dL/dz . centres, none to the centres) and the update are the release's; it runs only in train
  mode with gradients enabled (never in evaluation), once per loss evaluation (so once per micro-batch, as the
  release under gradient accumulation); under DistributedDataParallel each process updates its own copy and
  the copy of process 0 is broadcast at the next forward (DDP's buffer broadcast), so process 0's batches set
  the centres. A centre whose update has zero norm is left at zero instead of dividing by zero.
- The HFD loss starts at the first iteration (the release's ``oim_start`` epoch and its "dynimic_gamma" decay of
  m are command-line settings whose defaults are in the missing ``option.py``); its optional ``bg`` label is not
  modelled.
- Windows: ``windows`` (default the release's 3, 5, 7, 9, 11, 15, 19); on the twin's 16 x 16 maps windows up to
  19 are near-global: SEEDS-REFERENCE-2 11 suggests 3-9 (set in the configuration, reported beside results).
- Trunk: ``ResNetTrunk`` (torchvision's 7x7 stem) instead of PyTorch-Encoding's deep-stem dilated ResNet; no
  auxiliary head (the release's ``aux=True`` is a skin-detection decoder, not the segmentation setting).
- Initialisation: the attention convs as the release (Kaiming normal, zero bias); the other head layers keep
  PyTorch's defaults. ``width`` scales the 512 / 128 channels (and the centres' width).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.blocks import conv_bn_relu
from segbench.models.dilated_fcn import AuxOutput, DilatedHeadNet
from segbench.models.registry import Declared

WINDOWS = (3, 5, 7, 9, 11, 15, 19)
HFD_WEIGHT = 0.1
CENTRE_MOMENTUM = 0.5
IGNORE = 255


class LocationAwareAttention(nn.Module):
    """Location-aware attention: N x C x h x w -> N x C x h x w (x plus a 1x1 conv of x times the attention)."""

    def __init__(self, channels: int, reduced: int, windows: tuple[int, ...]):
        super().__init__()
        self.windows = tuple(windows)
        self.bottle_neck = nn.Conv2d(channels, reduced, 1)
        self.fuse = nn.Sequential(nn.Conv2d(2 * len(self.windows), 1, 3, padding=1), nn.BatchNorm2d(1),
                                  nn.ReLU(inplace=True))
        self.out_conv = nn.Conv2d(channels, channels, 1)
        for m in self.modules():  # the release's init_para
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map a: N x 1 x h x w, >= 0."""
        q = self.bottle_neck(x)
        pools = [F.avg_pool2d(q, k, stride=1, padding=k // 2, count_include_pad=False) for k in self.windows]
        pools += [F.max_pool2d(q, k, stride=1, padding=k // 2) for k in self.windows]
        return self.fuse(torch.cat([F.cosine_similarity(p, q, dim=1).unsqueeze(1) for p in pools], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_conv(x * self.attention(x))


class ChannelAttention(nn.Module):
    """DANet's channel attention module: N x C x h x w -> gamma x (channel affinity . x) + x, gamma 0 at start."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.flatten(2)  # N x C x P
        energy = q @ q.transpose(1, 2)
        energy = energy.max(dim=-1, keepdim=True)[0].expand_as(energy) - energy
        return self.gamma * (energy.softmax(dim=-1) @ q).view_as(x) + x


class HDNetHead(nn.Module):
    """The release's ``Attention(2048, nclass)``: layer4 N x C x h x w -> (scores N x K x h x w, feat_sum
    N x C/4 x h x w)."""

    def __init__(self, c_in: int, num_classes: int, windows: tuple[int, ...]):
        super().__init__()
        inter = max(1, c_in // 4)
        self.conv5a = conv_bn_relu(c_in, inter, 3)
        self.conv5c = conv_bn_relu(c_in, inter, 3)
        self.sa = LocationAwareAttention(inter, max(1, c_in // 16), windows)
        self.sc = ChannelAttention()
        self.conv51 = conv_bn_relu(inter, inter, 3)
        self.conv52 = conv_bn_relu(inter, inter, 3)
        self.conv8 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, num_classes, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat_sum = self.conv51(self.sa(self.conv5a(x))) + self.conv52(self.sc(self.conv5c(x)))
        return self.conv8(feat_sum), feat_sum


def _nearest(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


class HDNet(DilatedHeadNet):
    """HDNet on ResNet-``depth``: N x C x H x W -> N x K x H x W. ``forward_with_aux`` returns ``{"hfd": (the
    HFD loss of the labels, hfd_weight)}`` (nothing when ``hfd_weight`` is 0); ``centres`` (K x 512) is the
    class-centre buffer that the loss updates (``update_centres``)."""

    aux_modules = ()
    head_prefixes = ("head",)  # the layers no classifier provides

    def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, in_channels: int = 3,
                 windows: tuple[int, ...] = WINDOWS, hfd_weight: float = HFD_WEIGHT,
                 centre_momentum: float = CENTRE_MOMENTUM):
        windows = tuple(windows)
        if not windows or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in windows):
            raise ValueError(f"HDNet's windows must be odd positive integers such as {list(WINDOWS)}, got {windows!r}")
        if not hfd_weight >= 0:
            raise ValueError(f"hfd_weight must be >= 0 (0: no HFD loss), got {hfd_weight!r}")
        if not 0.0 <= centre_momentum < 1.0:
            raise ValueError(f"centre_momentum (the old centre's weight) must be in [0, 1), got {centre_momentum!r}")
        super().__init__(num_classes, depth=depth, width=width, in_channels=in_channels, aux=False)
        self.head = HDNetHead(self.channels["layer4"], num_classes, windows)
        self.hfd_weight, self.centre_momentum = float(hfd_weight), float(centre_momentum)
        centres = torch.empty(num_classes, max(1, self.channels["layer4"] // 4))
        nn.init.kaiming_uniform_(centres, a=math.sqrt(5))  # the release's train.py
        self.register_buffer("centres", centres)

    def _decode(self, layer4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(layer4)

    def _extra_losses(self, feat_sum: torch.Tensor) -> dict[str, AuxOutput]:
        if self.hfd_weight == 0:
            return {}
        return {"hfd": (functools.partial(self.hfd_loss, feat_sum), self.hfd_weight)}

    def hfd_loss(self, features: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        """The HFD loss of ``features`` (N x C x h x w, ``feat_sum``) against ``labels`` (N x H x W, 255 ignored):
        cross-entropy of the logits <f, centre_k> ("mean" over valid cells, or "sum" per image), then, in
        training with gradients on, ``update_centres``. The centres get no gradient."""
        target = _nearest(labels, features.shape[-2:])
        logits = torch.einsum("nchw,kc->nkhw", features.float(), self.centres.detach().clone())
        if not (target != IGNORE).any():
            loss = logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction=reduction)
            loss = loss / logits.shape[0] if reduction == "sum" else loss
        if self.training and torch.is_grad_enabled():
            self.update_centres(features.detach(), target)
        return loss

    @torch.no_grad()
    def update_centres(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Move each centre of a class labelled in ``labels`` (N x h x w, on the grid of ``features`` N x C x h x w)
        to ``m centre + (1 - m) mean feature of the class``, then to unit norm; other centres stay."""
        c = features.shape[1]
        f = features.permute(0, 2, 3, 1).reshape(-1, c).to(self.centres.dtype)
        t = labels.reshape(-1)
        valid = (t >= 0) & (t < self.centres.shape[0])
        f, t = f[valid], t[valid]
        counts = torch.bincount(t, minlength=self.centres.shape[0])
        present = counts > 0
        sums = torch.zeros_like(self.centres).index_add_(0, t, f)
        means = sums[present] / counts[present, None].to(f.dtype)
        moved = self.centre_momentum * self.centres[present] + (1.0 - self.centre_momentum) * means
        norms = moved.norm(dim=1, keepdim=True)
        self.centres[present] = torch.where(norms > 0, moved / norms.clamp_min(1e-12), moved)


# The release's training setting (SEEDS-REFERENCE-2 6.4; PyTorch-Encoding's train.py): PASCAL-Context, base 520,
# crop 480, random short side 0.75-2.0 x base, SGD with a head multiplier ("lr_times") and a poly schedule. Its
# lr, batch, length, momentum, weight decay and head multiplier are in the missing option.py: chosen here as
# PyTorch-Encoding's usual PASCAL-Context settings as recalled (lr 0.001, batch 16, momentum 0.9, weight decay
# 1e-4, head x10, no bias multiplier; unverified) with random mirror (PyTorch-Encoding's base dataset), no
# rotation, blur or elastic deformation. The length is not published either: 30,000 iterations, the length of
# the PSPNet recipe that the plain dilated-FCN control on the same trunk trains with (ours).
RECIPES = {"hdnet": {"batch_size": 16, "momentum": 0.9, "reduction": "mean", "optimizer": "sgd", "schedule": "poly",
                     "lr": 0.001, "weight_decay": 1e-4, "head_lr_mult": 10.0, "bias_lr_mult": 1.0, "crop": 480,
                     "scale_range": (0.75, 2.0), "flip": True, "iterations": 30_000}}
_OPTIONS = {
    "windows": ("build", f"pooling windows of the location-aware attention (default {list(WINDOWS)}; "
                         "SEEDS-REFERENCE-2 section 11: 3-9 on 16 x 16 maps)"),
    "hfd_weight": ("build", f"weight of the HFD loss in training (default {HFD_WEIGHT}; 0: off)"),
    "centre_momentum": ("build", f"weight m of the old class centre in its update (default {CENTRE_MOMENTUM})"),
}
_NONE = {"mean_iu": None, "pixel_acc": None, "split": "none found",
         "setting": "no published figure found: the paper (PASCAL-Context, ADE20K, COCO-Stuff 10k experiments) was "
                    "not read and the release states none",
         "source": "Anstarc/HDNet README; SEEDS-REFERENCE-2 section 6.4"}
MODELS = [
    Declared(f"hdnet_resnet{depth}", HDNet, display=f"HDNet (ResNet-{depth})", backbone=f"resnet{depth}",
             recipe="hdnet", fixed={"depth": depth}, options=_OPTIONS, published=_NONE)
    for depth in (50, 101)
]
