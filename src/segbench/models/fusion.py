"""Late fusion of a colour FCN and an HHA FCN (NYUDv2, Table 4: FCN-32s and FCN-16s RGB-HHA).

Two full VGG16 FCN streams, one per modality, whose class scores are averaged before a single
upsampling, as in the reference's ``nyud-fcn32s-color-hha``: ``score_fused`` is an Eltwise SUM with
coefficients [0.5, 0.5] of ``score_frcolor`` and ``score_frhha``, followed by one 64/32 ``upscore``.
Layer names are the reference's: every layer of a stream carries its modality as a suffix
(``conv1_1color`` ... ``fc7color``, ``score_frcolor``; ``conv1_1hha`` ... ``score_frhha``); the upsamplers
are shared and unsuffixed. The FCN-16s fusion (Table 4's last row; the reference code has none) adds
``score_pool4color`` and ``score_pool4hha``, fused with the same weights::

    FCN-32s: score_fused = 0.5 score_frcolor + 0.5 score_frhha -> upscore (64/32) -> crop 19
    FCN-16s: upscore2(score_fused) + crop 5 (0.5 score_pool4color + 0.5 score_pool4hha)
             -> upscore16 (32/16) -> crop 27

Everything after the score layers is linear, so the fused output is the mean of what the two
single-stream FCNs would output on their halves of the input. ``init_from_streams`` fills the streams
from two trained single-stream FCNs (the reference's ``surgery.transplant(..., suffix=...)``); the
FCN-16s fusion is then staged from the FCN-32s fusion with ``models.init_from`` (shared names copied,
``score_pool4*`` left at zero).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from segbench.models import vgg
from segbench.models.fcn import _SKIP_NAMES, FCN
from segbench.models.layers import BilinearUpsample, crop
from segbench.models.registry import Declared

# modality -> weight of its scores in score_fused (Eltwise SUM coeff), in input-channel order
STREAMS = {"color": 0.5, "hha": 0.5}
STREAM_CHANNELS = 3  # BGR, then HHA (data.tensors modality "rgb_hha")
STREAM_MODELS = {(): "fcn32s_vgg16", ("pool4",): "fcn16s_vgg16"}  # the single-stream net of each fusion


class LateFusionFCN(nn.Module):
    """Two VGG16 FCN streams fused at the scores: ``forward(x: N x 6 x H x W) -> N x num_classes x H x W``.

    ``x[:, :3]`` (BGR) feeds the ``color`` stream and ``x[:, 3:]`` (HHA) the ``hha`` stream. Attributes:
    ``num_classes``, ``width``, ``skips`` (``()`` or ``("pool4",)``), ``trunk_names`` (unsuffixed),
    ``crops`` (as the single-stream nets') and ``stream_model`` (the single-stream model name).
    """

    def __init__(self, *, num_classes: int, skips: tuple[str, ...] = (), width: float = 1.0):
        super().__init__()
        if tuple(skips) not in STREAM_MODELS:
            raise ValueError(f"late fusion is built as FCN-32s or FCN-16s, i.e. skips in {list(STREAM_MODELS)}; "
                             f"got {skips}")
        self.backbone = "vgg16"
        self.num_classes, self.width, self.skips = num_classes, width, tuple(skips)
        self.stream_model = STREAM_MODELS[self.skips]
        for suffix in STREAMS:
            layers, channels = vgg.trunk(width=width, in_channels=STREAM_CHANNELS)
            stream = FCN(backbone="vgg16", trunk=layers, channels=channels, num_classes=num_classes, skips=skips)
            for name, module in stream.named_children():
                if not isinstance(module, BilinearUpsample):
                    self.add_module(name + suffix, module)
                elif not hasattr(self, name):
                    self.add_module(name, module)
        self.trunk_names = stream.trunk_names
        self.crops = dict(stream.crops)
        self.final_name = stream.final_name

    def fused_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Before any upsampling: ``{"score_fr": score_fused}`` (N x C x h x w at stride 32) and, for FCN-16s,
        ``{"score_pool4": ...}`` (stride 16), each the weighted sum of the streams' scores."""
        self._check(x)
        fused: dict[str, torch.Tensor] = {}
        for k, (suffix, weight) in enumerate(STREAMS.items()):
            for name, score in self._stream(x[:, k * STREAM_CHANNELS:(k + 1) * STREAM_CHANNELS], suffix).items():
                fused[name] = fused[name] + weight * score if name in fused else weight * score
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fused_scores(x)
        h = fused["score_fr"]
        for skip in self.skips:
            up_name, score_name = _SKIP_NAMES[skip]
            h = getattr(self, up_name)(h)
            h = h + crop(fused[score_name], self.crops[score_name], like=h)  # fuse_pool4
        return getattr(self, self.final_name).window(h, self.crops[self.final_name], x.shape[-2:])  # upscore + crop

    def _stream(self, x: torch.Tensor, suffix: str) -> dict[str, torch.Tensor]:
        taps, h = {}, x
        for name in self.trunk_names:
            h = getattr(self, name + suffix)(h)
            if name in self.skips:
                taps[name] = h
        scores = {"score_fr": getattr(self, "score_fr" + suffix)(h)}
        for skip in self.skips:
            score_name = _SKIP_NAMES[skip][1]
            scores[score_name] = getattr(self, score_name + suffix)(taps[skip])
        return scores

    def _check(self, x: torch.Tensor) -> None:
        want = STREAM_CHANNELS * len(STREAMS)
        if x.dim() != 4 or x.shape[1] != want:
            raise ValueError(f"late fusion takes N x {want} x H x W (BGR then HHA: data.tensors modality "
                             f"'rgb_hha'), got {tuple(x.shape)}")


def fcn_rgb_hha(num_classes: int, *, width: float, in_channels: int, skips: tuple[str, ...] = ()) -> LateFusionFCN:
    """The late-fusion net with ``skips``: it takes in_channels = 6 only."""
    want = STREAM_CHANNELS * len(STREAMS)
    if in_channels != want:
        raise ValueError(f"the late-fusion FCN takes {want} input channels (BGR then HHA), got "
                         f"in_channels={in_channels}")
    return LateFusionFCN(num_classes=num_classes, skips=skips, width=width)


def init_from_streams(fused: LateFusionFCN, *, color: Mapping, hha: Mapping) -> LateFusionFCN:
    """Fill the two streams of ``fused`` from trained single-stream FCNs, in place; returns ``fused``.

    ``color`` and ``hha`` are the records of weights files written by ``segbench.weights.save_model``
    (``segbench.weights.load_record`` reads them) of ``fused.stream_model`` (``fcn32s_vgg16`` for the FCN-32s
    fusion), trained on the colour and on the HHA input, with ``fused``'s number of classes and width. Every
    layer ``L`` of a stream net goes to ``L + "color"`` / ``L + "hha"``; the streams' upsamplers are not copied
    (the fusion has its own, reset to bilinear). Raises ``ValueError`` naming the record and the mismatch
    otherwise.
    """
    state = {}
    for suffix, record in (("color", color), ("hha", hha)):
        where = f"the {suffix} stream's weights"
        got = (record["name"], record["num_classes"], record["width"], record.get("in_channels", 3))
        want = (fused.stream_model, fused.num_classes, fused.width, STREAM_CHANNELS)
        if got != want:
            raise ValueError(f"{where}: (model, classes, width, in_channels) = {got}, expected {want} for the "
                             f"{suffix} stream of this fusion")
        for key, value in record["state_dict"].items():
            layer, _, leaf = key.partition(".")
            if not isinstance(getattr(fused, layer, None), BilinearUpsample):
                state[f"{layer}{suffix}.{leaf}"] = value
    missing, unexpected = fused.load_state_dict(state, strict=False)
    missing = [k for k in missing if not isinstance(getattr(fused, k.split(".")[0]), BilinearUpsample)]
    if missing or unexpected:
        raise ValueError(f"the stream weights do not fit the fusion: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    for module in fused.modules():
        if isinstance(module, BilinearUpsample):
            module.reset_bilinear()
    return fused


MODELS = [  # NYUDv2 late fusion (Table 4): N x 6 x H x W input
    Declared("fcn32s_rgbhha_vgg16", fcn_rgb_hha, display="FCN-32s RGB-HHA"),
    Declared("fcn16s_rgbhha_vgg16", fcn_rgb_hha, display="FCN-16s RGB-HHA", fixed={"skips": ("pool4",)}),
]
