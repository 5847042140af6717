"""The fully connected CRF (Krähenbühl & Koltun 2011) as DeepLab applies it after the net: mean field on
the net's softmax with a Potts model and two Gaussian kernels, computed as ``pydensecrf`` computes it.

For pixels i, j with positions p (x, y in pixels) and colours I (uint8 RGB) the pairwise weight is
``w1 exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)`` (appearance, bilateral) plus
``w2 exp(-|p_i - p_j|^2 / 2 theta_gamma^2)`` (smoothness). Like ``pydensecrf`` (its defaults ``DIAG_KERNEL``,
``NORMALIZE_SYMMETRIC``): the unary is ``-log(clip(P, 1e-5, 1))``; each kernel K is normalised as
``D^-1/2 K D^-1/2`` with ``D = diag(K 1)``; the pixel's own term is *not* excluded (the lattice filter cannot
exclude it); Potts compatibility enters as ``+w K Q`` on each label's own logit. One iteration is
``Q <- softmax(-U + w1 K1n Q + w2 K2n Q)`` from ``Q = softmax(-U)``.

:func:`dense_crf` filters both kernels through a permutohedral lattice, a numpy port of ``permutohedral.cpp``
(splat, a [1/2, 1, 1/2] blur along the d + 1 lattice axes, slice): an approximation of the Gaussian (an
effective width of about 1.1-1.2 bandwidths), the same as pydensecrf's, so its marginals equal pydensecrf's to
float32 rounding (1e-5; ``tests/test_crf.py`` checks it where pydensecrf is installed). Its cost is linear in the
pixels. :func:`dense_crf_bruteforce` is the exact O(N^2) oracle with the same semantics, for tests on small
images.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import sparse

PUBLISHED_IMAGE_SIZE = 500  # the spatial bandwidths below were tuned on PASCAL VOC images of about 500 px
UNARY_CLIP = 1e-5  # pydensecrf's unary_from_softmax: probabilities below this count as this


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Kernel weights and bandwidths (pixels; colour in 0-255 units) and the number of mean-field iterations.

    The defaults are DeepLab v2's for PASCAL VOC (ResNet-101, its released ``voc12.yaml``; SEEDS-REFERENCE-2
    §2.4): ``bi_w`` 4, ``bi_xy_std`` 67, ``bi_rgb_std`` 3, ``pos_w`` 3, ``pos_xy_std`` 1, 10 iterations. In
    pydensecrf terms ``addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, compat=w1)`` and
    ``addPairwiseGaussian(sxy=theta_gamma, compat=w2)``.
    """

    w1: float = 4.0  # appearance (bilateral) weight, DeepLab bi_w
    theta_alpha: float = 67.0  # its spatial bandwidth in pixels, bi_xy_std
    theta_beta: float = 3.0  # its colour bandwidth in 0-255 units, bi_rgb_std
    w2: float = 3.0  # smoothness weight, pos_w
    theta_gamma: float = 1.0  # its spatial bandwidth in pixels, pos_xy_std
    iterations: int = 10  # mean-field steps, MAX_ITER

    def __post_init__(self):
        for name in ("w1", "w2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CRF weight {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRF bandwidth {name} must be > 0, got {getattr(self, name)!r}")
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 0:
            raise ValueError(f"CRF iterations must be an integer >= 0, got {self.iterations!r}")

    @classmethod
    def from_dict(cls, values: dict) -> CRFParams:
        """Params from ``{"w1": .., "theta_alpha": .., ...}`` (missing keys: the defaults); an unknown key raises."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown CRF parameters {unknown}; expected some of {names}")
        return cls(**values)


DEEPLAB_VOC = CRFParams()


def scaled(params: CRFParams, size: int, *, reference: int = PUBLISHED_IMAGE_SIZE) -> CRFParams:
    """``params`` for images of ``size`` pixels (the longer side): the spatial bandwidths theta_alpha and
    theta_gamma times ``size / reference``, never below 1 pixel; the colour bandwidth and the weights unchanged.

    The published values are in pixels of ~500 px VOC images: at the twin's 128 px, 67 -> 17.152 and 1 -> 1.
    """
    if size < 1 or reference < 1:
        raise ValueError(f"image size and reference size must be >= 1 pixel, got {size} and {reference}")
    factor = size / reference
    return dataclasses.replace(params, theta_alpha=max(1.0, params.theta_alpha * factor),
                               theta_gamma=max(1.0, params.theta_gamma * factor))


def dense_crf(probabilities: np.ndarray, image: np.ndarray, *, params: CRFParams = DEEPLAB_VOC) -> np.ndarray:
    """Mean-field marginals of the dense CRF: float32 K x H x W, summing to 1 over K.

    ``probabilities``: float K x H x W, the net's softmax at image resolution (upsample the scores first);
    ``image``: uint8 H x W x 3 RGB, the raw image (not mean-subtracted). ``params`` are used as given: scale them
    to the image with :func:`scaled`. Linear in the pixels (a permutohedral lattice per kernel).
    """
    unary = _unary(probabilities, image)
    k, h, w = unary.shape
    if params.iterations == 0 or (params.w1 == 0 and params.w2 == 0):
        return _softmax(-unary)
    xy = _positions(h, w)
    kernels = []  # (weight, lattice, D^-1/2 as an N x 1 column)
    for weight, features in ((params.w2, xy / params.theta_gamma),
                             (params.w1, np.concatenate([xy / params.theta_alpha,
                                                         image.reshape(-1, 3) / np.float32(params.theta_beta)], 1))):
        if weight:
            lattice = _Lattice(features)
            kernels.append((weight, lattice, 1.0 / np.sqrt(lattice.filter(np.ones((h * w, 1), np.float32)) + 1e-20)))
    q = _softmax(-unary)
    for _ in range(params.iterations):
        flat = q.reshape(k, -1).T  # N x K
        logits = -unary
        for weight, lattice, norm in kernels:
            logits = logits + weight * (lattice.filter(flat * norm) * norm).T.reshape(k, h, w)
        q = _softmax(logits)
    return q


def dense_crf_bruteforce(probabilities: np.ndarray, image: np.ndarray, *,
                         params: CRFParams = DEEPLAB_VOC) -> np.ndarray:
    """The same marginals as :func:`dense_crf` with both kernels summed exactly over every pixel pair.

    An N x N matrix per kernel (N = H W): for tests on images of about 32 x 32 or less. float64 inside,
    float32 K x H x W out.
    """
    unary = _unary(probabilities, image).astype(np.float64)
    k, h, w = unary.shape
    if h * w > 4096:
        raise ValueError(f"the exact CRF needs an N x N matrix; got {h}x{w} = {h * w} pixels, expected at most 4096")
    xy = _positions(h, w).astype(np.float64)
    rgb = image.reshape(-1, 3).astype(np.float64)
    kernels = []
    for weight, feats in ((params.w1, np.concatenate([xy / params.theta_alpha, rgb / params.theta_beta], 1)),
                          (params.w2, xy / params.theta_gamma)):
        sq = (feats ** 2).sum(1)
        gauss = np.exp(-0.5 * np.maximum(sq[:, None] + sq[None, :] - 2 * feats @ feats.T, 0.0))
        norm = 1.0 / np.sqrt(gauss.sum(1))
        kernels.append(weight * norm[:, None] * gauss * norm[None, :])
    kernel = kernels[0] + kernels[1]
    q = _softmax(-unary)
    for _ in range(params.iterations):
        q = _softmax(-unary + (kernel @ q.reshape(k, -1).T).T.reshape(k, h, w))
    return q.astype(np.float32)


def _unary(probabilities, image) -> np.ndarray:
    """-log(clip(P, 1e-5, 1)) as float32 K x H x W, after checking both inputs."""
    probabilities = np.asarray(probabilities)
    image = np.asarray(image)
    if probabilities.ndim != 3 or not np.issubdtype(probabilities.dtype, np.floating):
        raise ValueError(f"probabilities must be a float K x H x W array, got {probabilities.dtype} of shape "
                         f"{probabilities.shape}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 H x W x 3 RGB (0-255, not normalised), got {image.dtype} of shape "
                         f"{image.shape}")
    if probabilities.shape[1:] != image.shape[:2]:
        raise ValueError(f"probabilities are K x H x W = {probabilities.shape} but the image is {image.shape[:2]} "
                         "(H x W): expected the same H x W (classes first; upsample the scores to the image)")
    total = probabilities.sum(0)
    if probabilities.min() < 0 or not np.allclose(total, 1.0, atol=1e-3):
        raise ValueError(f"probabilities must be >= 0 and sum to 1 over the K = {probabilities.shape[0]} classes of "
                         f"axis 0 (a softmax); got values in {probabilities.min():.4g}..{probabilities.max():.4g} "
                         f"and sums in {total.min():.4g}..{total.max():.4g}")
    return -np.log(np.clip(probabilities, UNARY_CLIP, 1.0)).astype(np.float32)


def _positions(h: int, w: int) -> np.ndarray:
    """float32 N x 2 (x, y) of the pixels in row-major order, as pydensecrf's features."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0, keepdims=True))
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


class _Lattice:
    """Gaussian filtering of N values in a d-dimensional feature space (features already divided by their
    bandwidths), vectorised from Adams et al.'s permutohedral lattice as ``permutohedral.cpp`` implements it."""

    def __init__(self, features: np.ndarray):
        n, d = features.shape
        # Elevate onto the plane sum = 0 of R^(d+1), scaled so that the lattice blur approximates a unit Gaussian
        scale = math.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt((np.arange(d) + 2.0) * (np.arange(d) + 1.0))
        cf = features.astype(np.float32) * scale.astype(np.float32)
        elevated = np.zeros((n, d + 1), np.float32)
        suffix = np.cumsum(cf[:, ::-1], axis=1)[:, ::-1]  # suffix[:, j] = sum of cf[:, j:]
        elevated[:, 0] = suffix[:, 0]
        for j in range(1, d + 1):
            elevated[:, j] = (suffix[:, j] if j < d else 0.0) - j * cf[:, j - 1]
        # The nearest remainder-0 lattice point, then the simplex containing the point (rank of each coordinate)
        v = elevated / (d + 1)
        up, down = np.ceil(v) * (d + 1), np.floor(v) * (d + 1)
        rem0 = np.where(up - elevated < elevated - down, up, down).astype(np.int64)
        total = rem0.sum(1) // (d + 1)
        diff = elevated - rem0
        rank = np.zeros((n, d + 1), np.int64)
        for i in range(d):
            for j in range(i + 1, d + 1):
                less = diff[:, i] < diff[:, j]
                rank[:, i] += less
                rank[:, j] += ~less
        rank += total[:, None]
        low, high = rank < 0, rank > d
        rank[low] += d + 1
        rem0[low] += d + 1
        rank[high] -= d + 1
        rem0[high] -= d + 1
        # Barycentric weights of the d + 1 vertices of that simplex
        bary = np.zeros((n, d + 2), np.float32)
        vals = (elevated - rem0) / (d + 1)
        rows = np.arange(n)[:, None]
        bary[rows, d - rank] += vals  # ranks are a permutation of 0..d in each row: no index repeats
        bary[rows, d - rank + 1] -= vals
        bary[:, 0] += 1.0 + bary[:, d + 1]
        # Vertex keys (the first d coordinates determine the point), one per (pixel, remainder)
        remainder = np.arange(d + 1)[None, :, None]
        keys = rem0[:, None, :d] + remainder - (d + 1) * (rank[:, None, :d] > d - remainder)
        keys = keys.reshape(-1, d)
        self._pack = _Packer(keys, margin=d + 1)
        vertices, inverse = np.unique(self._pack(keys), return_inverse=True)
        m = vertices.size
        self._splat = sparse.csr_matrix((bary[:, :d + 1].ravel(), (inverse.ravel(), np.repeat(np.arange(n), d + 1))),
                                        shape=(m, n), dtype=np.float32)
        self._slice = (self._splat.T * (1.0 / (1.0 + 2.0 ** -d))).tocsr().astype(np.float32)
        # Blur neighbours along each of the d + 1 lattice axes (-1: not in the lattice, contributes 0)
        vkeys = keys[np.unique(inverse.ravel(), return_index=True)[1]]
        self._neighbours = []
        for j in range(d + 1):
            n1, n2 = vkeys - 1, vkeys + 1
            if j < d:
                n1[:, j] = vkeys[:, j] + d
                n2[:, j] = vkeys[:, j] - d
            self._neighbours.append((self._find(vertices, n1), self._find(vertices, n2)))
        self.vertices = m

    def _find(self, vertices: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Row of each key in ``vertices`` plus 1 (0: absent), for gathering from values padded with a zero row."""
        packed = self._pack(keys)
        pos = np.minimum(np.searchsorted(vertices, packed), vertices.size - 1)
        return np.where(vertices[pos] == packed, pos + 1, 0)

    def filter(self, values: np.ndarray) -> np.ndarray:
        """N x C values -> N x C, each the (approximate) Gaussian-weighted sum of all N (including itself)."""
        lattice = np.zeros((self.vertices + 1, values.shape[1]), np.float32)
        lattice[1:] = self._splat @ values
        blurred, gathered = np.zeros_like(lattice), np.empty_like(lattice[1:])
        for n1, n2 in self._neighbours:  # row 0 stays 0: the value of an absent neighbour
            np.take(lattice, n1, axis=0, out=blurred[1:])
            blurred[1:] += np.take(lattice, n2, axis=0, out=gathered)
            blurred[1:] *= 0.5
            blurred[1:] += lattice[1:]
            lattice, blurred = blurred, lattice
        return self._slice @ lattice[1:]


class _Packer:
    """Integer keys of d coordinates -> one int64 each (mixed radix), leaving room for neighbours at +- margin."""

    def __init__(self, keys: np.ndarray, margin: int):
        self.low = keys.min(0) - margin
        span = keys.max(0) + margin - self.low + 1
        if float(np.prod(span.astype(np.float64))) >= 2.0 ** 62:
            raise ValueError(f"the lattice spans {span.tolist()} cells per axis, too many to index: bandwidths "
                             "far below one pixel or one colour unit? Expected theta_alpha, theta_beta >= 1")
        self.radix = np.concatenate([[1], np.cumprod(span[:-1])]).astype(np.int64)

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        return (keys - self.low) @ self.radix
