"""Training-time augmentation of one image and its labels, drawn as a successor's recipe says.

    params = Augmentation.of(recipes.recipe("pspnet", model_name="pspnet_resnet50"))
    image, label = augment(image, label, rng, params=params, mean=mean_rgb)   # H x W x 3, H x W uint8

The steps, each only when the parameters ask for it, in this order (semseg's VOC pipeline, hszhao/semseg,
with U-Net's elastic deformation first):

1. ``elastic``: U-Net's deformation, a 3 x 3 grid of N(0, 10^2)-pixel displacements interpolated bicubically
   (``segbench.data.elastic``; mirrored borders, so no label is lost).
2. ``scale_range``: one factor drawn uniformly from the range; the image is resized bilinearly, the labels
   by nearest neighbour at the same pixel centres (``align_corners=False`` / ``nearest-exact``).
3. ``rotate``: an angle drawn uniformly from [-rotate, rotate] degrees (positive = counter-clockwise) about
   the image centre, same size; corners that come from outside are filled with the mean colour and 255.
4. ``blur``: with this probability, a 5 x 5 Gaussian blur of the image (sigma 1.1, OpenCV's for that size;
   mirrored borders); the labels are left alone.
5. ``flip``: a horizontal mirror with probability 0.5.
6. ``crop``: the pair is padded (evenly on both sides) to at least ``crop`` x ``crop`` with the mean colour
   and label 255 (ignored by the loss), then a ``crop`` x ``crop`` window is cut at a uniform offset.

Every random number comes from the ``numpy.random.Generator`` passed in (nothing is drawn for a step that is
off), so a run that seeds it is reproducible. The image is resampled bilinearly and rounded back to uint8;
labels are only ever copied, never interpolated, so no new label values appear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segbench.data.elastic import elastic_deform
from segbench.data.tensors import IMAGENET_MEAN_RGB

IGNORE = 255
MEAN_RGB = tuple(float(v) for v in IMAGENET_MEAN_RGB * 255)  # (123.675, 116.28, 103.53), semseg's padding colour
BLUR_SIGMA = 1.1  # OpenCV's sigma for a 5 x 5 kernel: 0.3 * ((5 - 1) / 2 - 1) + 0.8


@dataclass(frozen=True)
class Augmentation:
    """What ``augment`` does (the same fields as ``recipes.Recipe``'s); the defaults do nothing."""

    crop: int | None = None
    scale_range: tuple[float, float] | None = None
    flip: bool = False
    rotate: float = 0.0
    blur: float = 0.0
    elastic: bool = False

    def __post_init__(self):
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"crop must be a side >= 1 pixel or None, got {self.crop}")
        if self.scale_range is not None:
            lo, hi = self.scale_range
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.rotate <= 180:
            raise ValueError(f"rotate must be a largest angle in [0, 180] degrees, got {self.rotate}")
        if not 0 <= self.blur <= 1:
            raise ValueError(f"blur must be a probability in [0, 1], got {self.blur}")

    @classmethod
    def of(cls, source) -> "Augmentation":
        """The augmentation of ``source``: an ``Augmentation`` or anything with its fields (a ``Recipe``)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    @property
    def active(self) -> bool:
        return (self.crop is not None or self.scale_range is not None or self.flip or self.rotate > 0
                or self.blur > 0 or self.elastic)


def _check(image: np.ndarray, label: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    if label.dtype != np.uint8 or label.shape != image.shape[:2]:
        raise ValueError(f"expected an H x W uint8 label of the image's size {image.shape[:2]}, got {label.shape} "
                         f"{label.dtype}")


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]  # 1 x 3 x H x W


def _label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(label.astype(np.float32))[None, None]  # 1 x 1 x H x W


def rescale(image: np.ndarray, label: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize both by ``factor`` to round(H f) x round(W f) (at least 1): image bilinear, labels nearest."""
    size = (max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor)))
    x = F.interpolate(_image_tensor(image), size=size, mode="bilinear", align_corners=False)
    y = F.interpolate(_label_tensor(label), size=size, mode="nearest-exact")
    return _to_uint8(x[0].permute(1, 2, 0)), y[0, 0].numpy().astype(np.uint8)


def rotate(image: np.ndarray, label: np.ndarray, degrees: float, *,
           mean: Sequence[float] = MEAN_RGB) -> tuple[np.ndarray, np.ndarray]:
    """Rotate both counter-clockwise by ``degrees`` about the image centre, keeping the size; pixels that come
    from outside the image get the ``mean`` colour (RGB) and label 255. Image bilinear, labels nearest."""
    h, w = label.shape
    a = math.radians(degrees)
    rows = torch.arange(h, dtype=torch.float64)[:, None] - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float64)[None, :] - (w - 1) / 2
    # the source of output pixel (r, c): the inverse rotation (clockwise on screen, where rows grow downwards)
    src_c = math.cos(a) * cols - math.sin(a) * rows + (w - 1) / 2
    src_r = math.sin(a) * cols + math.cos(a) * rows + (h - 1) / 2
    grid = torch.stack([(2 * src_c + 1) / w - 1, (2 * src_r + 1) / h - 1], dim=-1)[None].float()
    fill = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    x = F.grid_sample(_image_tensor(image) - fill, grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False) + fill
    y = F.grid_sample(_label_tensor(label) + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    y = y[0, 0].round().long() - 1  # 0 (outside) -> -1
    return _to_uint8(x[0].permute(1, 2, 0)), torch.where(y < 0, IGNORE, y).numpy().astype(np.uint8)


def blur(image: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """A 5 x 5 Gaussian blur of an H x W x 3 uint8 image (separable, mirrored borders without repeating the
    edge pixel, as OpenCV's default)."""
    k = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
    k /= k.sum()
    h, w = image.shape[:2]
    x = np.pad(image.astype(np.float64), ((2, 2), (2, 2), (0, 0)), mode="reflect")
    x = sum(k[i] * x[i:i + h] for i in range(5))
    x = sum(k[j] * x[:, j:j + w] for j in range(5))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def pad_crop(image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator, *,
             mean: Sequence[float] = MEAN_RGB) -> tuple[np.ndarray, np.ndarray]:
    """Pad both to at least ``size`` x ``size`` (half of the padding on each side, the odd pixel at the
    bottom/right) with the ``mean`` colour and label 255, then cut a ``size`` x ``size`` window at an offset
    drawn uniformly by ``rng``."""
    h, w = label.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        fill = np.asarray(np.rint(mean), dtype=np.uint8)
        padded = np.empty((h + ph, w + pw, 3), dtype=np.uint8)
        padded[:] = fill
        padded[pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w] = image
        image, label = padded, np.pad(label, pads, constant_values=IGNORE)
    top = int(rng.integers(0, label.shape[0] - size + 1))
    left = int(rng.integers(0, label.shape[1] - size + 1))
    return image[top:top + size, left:left + size], label[top:top + size, left:left + size]


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, params,
            mean: Sequence[float] = MEAN_RGB) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of ``image`` (H x W x 3 uint8, RGB) and ``label`` (H x W uint8, 255 = ignore).

    ``params`` is an ``Augmentation`` or a ``recipes.Recipe`` (its crop, scale_range, flip, rotate, blur and
    elastic fields); ``mean`` the RGB colour that fills padding (the training set's mean, so that it becomes
    zero after mean subtraction; default ImageNet's). Returns new arrays of the same dtypes, ``crop`` x
    ``crop`` when cropping, else of the (rescaled) size; with every step off, the inputs themselves.
    """
    _check(image, label)
    p = params if isinstance(params, Augmentation) else Augmentation.of(params)
    if len(mean) != 3:
        raise ValueError(f"mean must be one RGB colour (3 values), got {mean}")
    if p.elastic:
        image, label = elastic_deform(image, label, rng)
    if p.scale_range is not None:
        image, label = rescale(image, label, float(rng.uniform(*p.scale_range)))
    if p.rotate > 0:
        image, label = rotate(image, label, float(rng.uniform(-p.rotate, p.rotate)), mean=mean)
    if p.blur > 0 and rng.random() < p.blur:
        image = blur(image)
    if p.flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if p.crop is not None:
        image, label = pad_crop(image, label, p.crop, rng, mean=mean)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
