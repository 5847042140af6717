"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015): the paper's valid-convolution net and the same-padding variant.

    contracting: d0 = 2 x [3x3 conv + ReLU] (64), then pool{i} (2x2 max) + d{i} for i = 1..4 (128 ... 1024),
                 Dropout(0.5) at its end ("drop-out layers at the end of the contracting path")
    expansive  : upconv{i} (2x2 up-convolution halving the channels), concatenated with the centre-cropped
                 d{i}, then u{i} = 2 x [3x3 conv + ReLU], for i = 3..0; score = 1x1 conv -> classes

``padding="valid"`` is the paper's net: unpadded convolutions, so a tile of ``16k + 60`` pixels (k >= 8)
gives ``16k - 124`` outputs (572 -> 388), a 92-pixel context margin on each side, crops of 4/16/40/88, and
every pooling sees an even size. To map N x C x H x W to N x K x H x W, ``forward`` mirrors the image by 92
pixels (more at the bottom/right, up to the next valid size), runs ``forward_valid`` once and crops the
output to H x W; ``predict_tiled`` does the same tile by tile (the paper's overlap-tile strategy).
Initialisation as in the paper: Gaussian with std sqrt(2 / N), N the incoming connections of a unit. ``width``
multiplies every channel count, except that no expansive stage is narrower than the classes
(``expansive_channels``): at width 1/8 the last two would be 8 and 16 channels for VOC's 21 classes.
Without a normalisation layer the valid net takes unit-scale inputs (``input_norm="torchvision"``), the
scale its initialisation assumes (on Caffe's 0-255 inputs its scores start some 50 times too large).

``padding="same"`` is the common variant (milesial/Pytorch-UNet, ``bilinear=False``): 3x3 convs padded by 1
without bias, each followed by BN + ReLU; no dropout. ``forward`` mirrors the bottom/right border up to a
multiple of 16 (so any size, 1x1 upward, pools cleanly) and crops back.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segbench.models import vgg
from segbench.models.blocks import mirror_pad
from segbench.models.layers import centre_crop, scaled
from segbench.models.registry import Declared

CHANNELS = (64, 128, 256, 512, 1024)
MARGIN = 92  # context lost on each side by the valid net: 184 = 2 * 92
STRIDE = 16  # four 2x2 poolings
CROPS = (88, 40, 16, 4)  # centre-crop offsets of d0..d3 before concatenation (568->392, 280->200, 136->104, 64->56)
PADDINGS = ("valid", "same")


def unet_output_size(n: int) -> int:
    """Output size of the valid U-Net for an input of ``n`` pixels (one axis): ``n - 184``.

    Raises ``ValueError`` unless ``n = 16k + 60`` with ``k >= 8`` (188, 204, ..., 572, ...), the sizes at which
    every 2x2 pooling sees an even size and the output is at least 4 pixels.
    """
    if n < 188 or (n - 60) % STRIDE:
        raise ValueError(f"the valid U-Net needs an input of 16k + 60 pixels with k >= 8 (188, 204, ..., 572, ...), "
                         f"got {n}")
    return n - 2 * MARGIN


def valid_input_size(output: int) -> int:
    """The smallest valid input size (``16k + 60``, k >= 8) whose output covers ``output`` pixels."""
    return STRIDE * max(8, math.ceil((output + 2 * MARGIN - 60) / STRIDE)) + 60


def expansive_channels(contracting: list[int], num_classes: int) -> list[int]:
    """Channels of the expansive path's stages (index = scale, the last = the bottom, which is not widened).

    U-Net's: each stage as wide as the contracting stage at its scale. A width multiplier can make the last
    stages narrower than the number of classes (8 channels at width 1/8 against VOC's 21), and every class
    must pass through them to reach the 1x1 classifier: a bottleneck the full-width net never has (64 channels
    against 21, 40 or 2 classes). So no expansive stage is narrower than ``num_classes``; at full width on
    every dataset here this changes nothing.
    """
    return [max(ch, num_classes) for ch in contracting[:-1]] + [contracting[-1]]


def _double_conv(c_in: int, c_out: int, padding: str) -> nn.Sequential:
    if padding == "valid":
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.ReLU(inplace=True),
                             nn.Conv2d(c_out, c_out, 3), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def he_init(module: nn.Module) -> None:
    """The paper's init, for every convolution in ``module`` (2D or 3D): N(0, 2 / N), N = k * k * C_in (a 2x2/2
    up-convolution feeds C_in inputs to a unit); biases zero. UNet++ and Attention U-Net use it too."""
    for m in module.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, std=math.sqrt(2 / m.in_channels))
        elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.normal_(m.weight, std=math.sqrt(2 / m.weight[0].numel()))
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class UNet(nn.Module):
    """U-Net: ``forward(x: N x C x H x W) -> N x num_classes x H x W`` scores, any H and W.

    ``width`` multiplies every channel count (64 ... 1024). ``backbone`` is None: no classifier to
    transplant. ``forward_valid`` (valid net only) is the bare network on one valid tile.
    """

    backbone = None
    head_prefixes = ()  # nothing is pretrained: no layer is a "new head" for the lr multiplier

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3, padding: str = "valid"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        self.output_stride, self.max_stride = 1, STRIDE
        c = [scaled(ch, width) for ch in CHANNELS]
        self.d0 = _double_conv(in_channels, c[0], padding)
        for i in range(1, 5):
            self.add_module(f"pool{i}", nn.MaxPool2d(2))
            self.add_module(f"d{i}", _double_conv(c[i - 1], c[i], padding))
        self.drop = nn.Dropout(0.5) if padding == "valid" else nn.Identity()
        e = expansive_channels(c, num_classes)
        for i in range(3, -1, -1):
            self.add_module(f"upconv{i}", nn.ConvTranspose2d(e[i + 1], e[i], 2, stride=2))
            self.add_module(f"u{i}", _double_conv(e[i] + c[i], e[i], padding))
        self.score = nn.Conv2d(e[0], num_classes, 1)
        he_init(self)

    def support(self, p: int) -> tuple[int, int]:
        """First and last input pixel (one axis) that output pixel ``p`` depends on, in the coordinates of the
        network's own input (a ``forward_valid`` tile; for the same net, the padded input, so the interval
        may reach into the padding). The interval depends on ``p`` modulo 16: a 2x2 up-convolution gives
        both pixels of a pair the same coarse unit, so the neighbouring 3x3 convs see 1 or 2 coarse units."""
        pad = 0 if self.padding == "valid" else 1
        crops = CROPS if self.padding == "valid" else (0, 0, 0, 0)

        def down(i: int, a: int, b: int) -> tuple[int, int]:  # d{i} output [a, b] -> input pixels
            a, b = a - 2 * pad, b + 4 - 2 * pad
            return (a, b) if i == 0 else down(i - 1, 2 * a, 2 * b + 1)

        def up(i: int, a: int, b: int) -> tuple[int, int]:  # u{i} output [a, b] (u4 = d4) -> input pixels
            if i == 4:
                return down(4, a, b)
            a, b = a - 2 * pad, b + 4 - 2 * pad
            (ua, ub), (sa, sb) = up(i + 1, a // 2, b // 2), down(i, a + crops[i], b + crops[i])
            return min(ua, sa), max(ub, sb)

        return up(0, p, p)

    def receptive_field(self) -> int:
        """The largest number of input pixels (one axis) that one output pixel depends on (204; 188 for a
        quarter of the positions)."""
        return max(b - a + 1 for a, b in map(self.support, range(STRIDE)))

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.d0(x)]
        for i in range(1, 5):
            skips.append(getattr(self, f"d{i}")(getattr(self, f"pool{i}")(skips[-1])))
        h = self.drop(skips.pop())
        for i in range(3, -1, -1):
            up = getattr(self, f"upconv{i}")(h)
            h = getattr(self, f"u{i}")(torch.cat([up, centre_crop(skips[i], up)], dim=1))  # release order
        return self.score(h)

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """The valid net on one tile: N x C x (16k + 60) x (16l + 60) -> N x K x (16k - 124) x (16l - 124)."""
        if self.padding != "valid":
            raise ValueError("forward_valid is the valid-convolution net's; this U-Net has padding='same'")
        for n in x.shape[-2:]:
            unet_output_size(n)  # raises on sizes that do not tile
        return self._net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.padding == "same":
            return self._net(mirror_pad(x, 0, -h % STRIDE, 0, -w % STRIDE))[..., :h, :w]
        n_h, n_w = valid_input_size(h), valid_input_size(w)
        x = mirror_pad(x, MARGIN, n_h - h - MARGIN, MARGIN, n_w - w - MARGIN)
        return self._net(x)[..., :h, :w]


def predict_tiled(model: UNet, x: torch.Tensor, *, tile: int = 572, step: int | None = None) -> torch.Tensor:
    """Overlap-tile inference of the valid U-Net: N x C x H x W -> N x K x H x W scores.

    The image is mirrored by 92 pixels (more at the bottom/right as the last tile needs); tiles of
    ``tile x tile`` input pixels (a valid size, 572 in the paper) start every ``step`` pixels, and each
    contributes the first ``step x step`` pixels of its ``(tile - 184)``-pixel output, so the used outputs
    cover the image exactly once, without seams or blending. ``step`` defaults to the output size rounded
    down to a multiple of 16: every tile then pools on the same grid as ``model(x)``, and the result equals
    whole-image inference. ``step = tile - 184`` (388, the paper's non-overlapping outputs) also tiles
    seamlessly but pools on a grid shifted by 4 pixels per tile, so it differs slightly from ``model(x)``.
    """
    if getattr(model, "padding", None) != "valid":
        raise ValueError("overlap-tile inference needs the valid-convolution U-Net (build('unet', ...))")
    out = unet_output_size(tile)
    step = out // STRIDE * STRIDE if step is None else step
    if not 1 <= step <= out:
        raise ValueError(f"step must be in [1, {out}] (the output of a {tile}-pixel tile), got {step}; "
                         "use a tile of at least 204 pixels for the default step")
    h, w = x.shape[-2:]
    rows, cols = math.ceil(h / step), math.ceil(w / step)
    x = mirror_pad(x, MARGIN, (rows - 1) * step + tile - MARGIN - h, MARGIN, (cols - 1) * step + tile - MARGIN - w)
    result = None
    for i in range(rows):
        for j in range(cols):
            y = model.forward_valid(x[..., i * step:i * step + tile, j * step:j * step + tile])
            if result is None:
                result = y.new_empty(y.shape[0], y.shape[1], rows * step, cols * step)
            result[..., i * step:(i + 1) * step, j * step:(j + 1) * step] = y[..., :step, :step]
    return result[..., :h, :w]


class OverlapTile(nn.Module):
    """The valid U-Net scored by ``predict_tiled`` with ``tile``-pixel tiles (evaluation option ``tile``)."""

    def __init__(self, net: UNet, tile: int):
        super().__init__()
        unet_output_size(tile)  # raises on a size that does not tile
        self.net, self.tile = net, int(tile)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return predict_tiled(self.net, x, tile=self.tile)


class VGGUNet(nn.Module):
    """U-Net's expansive path on FCN's VGG16 trunk: the trunk-controlled U-Net, so that a table can compare
    decoders on the trunk FCN-8s starts from (the same stand-in or ImageNet weights, ``transplant``).

        contracting: VGG16's conv1_1 ... conv5_3 (3x3 convs padded by 1, as in the classifier) with pool1-pool4
                     (2x2 max); conv1_2, conv2_2, conv3_3 and conv4_3 are the skips (strides 1, 2, 4, 8), conv5_3
                     the bottom (stride 16, 512 channels: VGG16 has no 1024-channel stage). fc6 and fc7 are unused.
        expansive  : as ``UNet(padding="same")``: upconv{i} (2x2 up-convolution to the skip's channels),
                     concatenated with the skip, u{i} = 2 x [3x3 conv + BN + ReLU], for i = 3..0; score 1x1.

    ``forward`` mirrors the bottom/right border up to a multiple of 16 and crops back, as the same-padding U-Net.
    The expansive path is new (He-initialised, as U-Net's): the recipes' new-layer multiplier applies to it.
    """

    backbone = "vgg16"
    head_prefixes = ("upconv", "u0", "u1", "u2", "u3", "score")

    def __init__(self, num_classes: int, *, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        layers = [(n, m) for n, m in vgg._features(width, in_channels, first_padding=1, ceil_mode=False)
                  if n != "pool5"]
        self.trunk_names = [name for name, _ in layers]
        for name, module in layers:
            self.add_module(name, module)
        self.skip_names = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
        self.output_stride, self.max_stride = 1, STRIDE
        c = [scaled(stage[-1], width) for stage in vgg.STAGES]
        e = expansive_channels(c, num_classes)
        for i in range(3, -1, -1):
            self.add_module(f"upconv{i}", nn.ConvTranspose2d(e[i + 1], e[i], 2, stride=2))
            self.add_module(f"u{i}", _double_conv(e[i] + c[i], e[i], "same"))
        self.score = nn.Conv2d(e[0], num_classes, 1)
        for name in ("upconv3", "upconv2", "upconv1", "upconv0", "u3", "u2", "u1", "u0", "score"):
            he_init(getattr(self, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y, skips = mirror_pad(x, 0, -h % STRIDE, 0, -w % STRIDE), []
        for name in self.trunk_names:
            y = getattr(self, name)(y)
            if name in self.skip_names:
                skips.append(y)
        for i in range(3, -1, -1):
            y = getattr(self, f"u{i}")(torch.cat([getattr(self, f"upconv{i}")(y), skips[i]], dim=1))
        return self.score(y)[..., :h, :w]


def _for_evaluation(model: UNet, rebuild, *, tile: int | None = None) -> nn.Module:
    return model if tile is None else OverlapTile(model, tile)


# Ronneberger et al. 2015, section 3: Caffe SGD, one large tile per step, momentum 0.99, shifts, rotations,
# gray-value variations and the 3x3-grid elastic deformation (sigma 10 px). The paper states no learning rate,
# schedule, weight decay or length (about 10 h on one Titan). *Ours*: lr 1e-3, so that lr / (1 - momentum)
# = 0.1 equals PSPNet's 0.01 / (1 - 0.9); weight decay 5e-4 and the bias 2x of Caffe nets of the time (FCN,
# Dilation); a fixed lr; 30K iterations like the other VOC recipes; rotations of up to 10 degrees (the paper
# gives no range; PSPNet's). No gray-value variation (its form is not given). Crop 388 = the output of the
# paper's 572-pixel tile: the model mirrors the 92-pixel context itself.
RECIPES = {"unet": {"batch_size": 1, "momentum": 0.99, "reduction": "mean", "optimizer": "sgd", "schedule": "fixed",
                    "lr": 1e-3, "weight_decay": 5e-4, "crop": 388, "rotate": 10.0, "elastic": True,
                    "iterations": 30_000}}
_PUBLISHED = {"mean_iu": None, "pixel_acc": None, "split": "--", "setting": "no VOC result published",
              "source": "Ronneberger et al. 2015: ISBI cell tracking 2015 mean IoU 92% (PhC-U373), 77.5% (DIC-HeLa)"}
_WEIGHTED = ("train", "true: the paper's weighted loss (Eq. 2: class balance + w0 10, sigma 5 px border term)")
MODELS = [
    Declared("unet", UNet, display="U-Net", backbone=None, recipe="unet", published=_PUBLISHED,
             fixed={"padding": "valid"}, for_evaluation=_for_evaluation, input_norm="torchvision",
             options={"weighted_loss": _WEIGHTED,
                      "tile": ("evaluate", "overlap-tile inference with tiles of this many pixels (572 in the "
                                           "paper); the result equals whole-image scoring")}),
    Declared("unet_same", UNet, display="U-Net (same padding)", backbone=None, recipe="unet", published=_PUBLISHED,
             fixed={"padding": "same"}, options={"weighted_loss": _WEIGHTED}),
    Declared("unet_vgg16", VGGUNet, display="U-Net decoder on VGG16 (FCN's trunk)", recipe="unet",
             published={"mean_iu": None, "pixel_acc": None, "split": "--",
                        "setting": "this project's control: U-Net's expansive path on FCN-8s's VGG16 trunk",
                        "source": "none (no paper; U-Net's Fig. 1 decoder on VGG16's conv1-conv5)"},
             options={"weighted_loss": _WEIGHTED}),
]
