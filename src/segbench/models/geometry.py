"""Layer geometry read off the modules themselves: coordinate maps, crop offsets, receptive fields.

Every spatial layer (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``) maps an output coordinate
``y`` to the centre of its input window, ``x = s*y + (d*(k-1)/2 - p)``; a transposed convolution inverts
that, ``x = (y - (d*(k-1)/2 - p)) / s``. Composing these affine maps along a path from the input to a blob
is what Caffe's ``coord_map.py`` does, and the crop offset between two blobs of equal scale is the
difference of their shifts (rounded half-to-even as ``coord_map.crop`` does). Pointwise modules (ReLU,
dropout, batch and local response normalisation) are transparent; an Inception block is parallel, and its
branches must agree on the map. The receptive field composes the same way: ``rf += d*(k-1) * jump``,
``jump *= s``; a parallel block contributes its widest branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from torch import nn

from segbench.models.googlenet import Inception

_POINTWISE = (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d, nn.LocalResponseNorm, nn.Identity)
_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Geometry:
    """A path's geometry: input coordinate = ``scale * blob coordinate + shift``; ``rf`` the receptive
    field (input pixels) of one blob unit; ``jump`` the input distance between neighbouring units;
    ``depth`` the number of parameterised conv layers on the deepest path."""

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)
    rf: int = 1
    jump: Fraction = Fraction(1)
    depth: int = 0

    def then(self, layer: "Geometry") -> "Geometry":
        """This path followed by ``layer`` (whose own geometry is relative to its input)."""
        return Geometry(scale=self.scale * layer.scale, shift=self.scale * layer.shift + self.shift,
                        rf=self.rf + int((layer.rf - 1) * self.jump), jump=self.jump * layer.jump,
                        depth=self.depth + layer.depth)


def _pair(v) -> int:
    v = v if isinstance(v, (tuple, list)) else (v, v)
    if v[0] != v[1]:
        raise ValueError(f"geometry assumes square kernels, strides and paddings, got {tuple(v)}")
    return int(v[0])


def layer_geometry(module: nn.Module) -> Geometry:
    """The geometry of one module relative to its input (containers compose their children in order)."""
    if isinstance(module, nn.ConvTranspose2d):
        k, s, p, d = (_pair(module.kernel_size), _pair(module.stride), _pair(module.padding), _pair(module.dilation))
        return Geometry(scale=Fraction(1, s), shift=-Fraction(d * (k - 1), 2) / s + Fraction(p, s),
                        rf=1, jump=Fraction(1, s), depth=0)
    if isinstance(module, _WINDOWED):
        k, s, p = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
        d = _pair(getattr(module, "dilation", 1))
        return Geometry(scale=Fraction(s), shift=Fraction(d * (k - 1), 2) - p, rf=d * (k - 1) + 1, jump=Fraction(s),
                        depth=int(isinstance(module, nn.Conv2d)))
    if isinstance(module, _POINTWISE):
        return Geometry()
    if isinstance(module, Inception):
        branches = [layer_geometry(b) for b in (module.branch1, module.branch2, module.branch3, module.branch4)]
        first = branches[0]
        if any((b.scale, b.shift) != (first.scale, first.shift) for b in branches):
            raise ValueError("Inception branches disagree on their coordinate maps; they cannot be concatenated")
        return Geometry(scale=first.scale, shift=first.shift, rf=max(b.rf for b in branches), jump=first.jump,
                        depth=max(b.depth for b in branches))
    children = list(module.children())
    if not children:
        raise TypeError(f"no geometry rule for {type(module).__name__}: add it to segbench.models.geometry")
    return path_geometry(children)


def path_geometry(modules: Iterable[nn.Module]) -> Geometry:
    """The composed geometry of ``modules`` applied in order, from the network input to the last blob."""
    geometry = Geometry()
    for module in modules:
        geometry = geometry.then(layer_geometry(module))
    return geometry


def crop_offset(target: Iterable[nn.Module], reference: Iterable[nn.Module], *, allow_half: bool = False) -> int:
    """Top-left offset at which the blob of path ``target`` is cropped to align with that of ``reference``.

    Both paths start at the network input. Raises if the blobs are at different scales, if the target does
    not cover the reference, or -- like Caffe's ``coord_map.crop`` ("cannot crop noninteger offset") -- if
    the offset is fractional, unless ``allow_half`` (then a x.5 offset is rounded down).
    """
    t, r = path_geometry(target), path_geometry(reference)
    if t.scale != r.scale:
        raise ValueError(f"cannot crop a blob at scale {t.scale} to one at scale {r.scale}")
    offset = (r.shift - t.shift) / t.scale
    if offset < 0:
        raise ValueError(f"crop offset {offset} is negative: the target blob does not cover the reference")
    if offset.denominator != 1 and not (allow_half and offset.denominator == 2):
        raise ValueError(f"crop offset {offset} is not a whole pixel: use an odd upsampling kernel on a trunk "
                         "of odd kernels (as FCN-AlexNet's 63/32), or allow_half=True to round it down")
    return math.floor(offset)
