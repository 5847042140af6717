"""Procedural objects for the synthetic datasets: 20 classes, each with its own shape family,
texture and colour statistics, so that a network has to look at shape and texture, not colour alone.

Class ``c`` (1..20) is defined by three independent properties (see :func:`class_spec`):

- a shape family (ellipse, box, triangle, star, ring, cross, crescent, diamond) and a variant of it
  (aspect ratio, number of star points),
- a number of thin parts (legs or antennae one or two pixels wide, which a stride-32 output cannot
  resolve but a stride-8 one can),
- a texture (stripes, checks, dots, hatch, concentric rings) that mixes two palette colours.

Each class has its own unordered pair of palette colours, and each colour is shared by five classes,
so one colour never identifies a class, but the two colours of its texture do (together with the
shape). Scenes place one to three objects that may occlude each other on a
textured background. Everything is deterministic given a ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np

NUM_OBJECT_CLASSES = 20
# Object scale in pixels, in scenes and classification samples alike: objects must be comparable to the
# FCNs' 224-pixel fc6 window (as PASCAL objects are), or a stride-32 net cannot represent them.
OBJECT_RADIUS = (29.0, 54.0)
SCENE_AREA = 160 * 160  # a scene of this many pixels holds one to three objects; larger ones hold more
EXTENT = 1.7  # every shape lies within 1 radius of its centre, thin parts within 1.6 radii
SHAPES = ("ellipse", "box", "triangle", "star", "ring", "cross", "crescent", "diamond")
# Two-colour patterns with sharp edges: every class is told from the smooth background by its
# texture, as well as by its shape (smooth fills were tried and were learnt as background).
TEXTURES = ("stripes", "checks", "dots", "hatch", "concentric")
PALETTE = np.array(
    [[200, 40, 40], [40, 160, 60], [50, 70, 200], [220, 200, 50],
     [170, 60, 190], [40, 190, 200], [230, 130, 40], [120, 120, 120]],
    dtype=np.float64,
)


# The 20 colour pairs: every pair of the 8 palette colours except neighbours in palette order
# (circular distance 1), so that each colour is used by exactly five classes.
COLOUR_PAIRS = tuple((i, j) for i in range(len(PALETTE)) for j in range(i + 1, len(PALETTE))
                     if (j - i) % len(PALETTE) not in (1, len(PALETTE) - 1))
COLOUR_JITTER = 12.0  # std of the per-object colour change, per channel


def class_spec(c: int) -> dict:
    """The fixed properties of object class ``c`` in 1..20."""
    if not 1 <= c <= NUM_OBJECT_CLASSES:
        raise ValueError(f"object class must be in 1..{NUM_OBJECT_CLASSES}, got {c}")
    k = c - 1
    return {
        "shape": SHAPES[k % len(SHAPES)],
        "variant": k // len(SHAPES),  # 0, 1 or 2
        "thin_parts": (k * 7) % 4,  # 0..3 legs/antennae
        "texture": TEXTURES[k % len(TEXTURES)],
        "colours": tuple(PALETTE[i] for i in COLOUR_PAIRS[k]),
    }


def _shape_mask(shape: str, variant: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape in local coordinates where the shape spans about [-1, 1]^2."""
    aspect = (1.0, 0.6, 0.8)[variant]
    if shape == "ellipse":
        return np.hypot(u, v / aspect) <= 1.0
    if shape == "box":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9 * aspect)
    if shape == "triangle":
        return (v <= 0.8 * aspect) & (v >= 1.7 * np.abs(u) - 0.9)
    if shape == "star":
        points = (5, 4, 6)[variant]
        return np.hypot(u, v) <= 0.55 + 0.4 * np.cos(points * np.arctan2(v, u))
    if shape == "ring":
        r = np.hypot(u, v / aspect)
        return (r <= 1.0) & (r >= (0.55, 0.4, 0.65)[variant])
    if shape == "cross":
        arm = (0.3, 0.22, 0.38)[variant]
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    if shape == "crescent":
        return (np.hypot(u, v) <= 1.0) & (np.hypot(u - (0.5, 0.35, 0.65)[variant], v) > 0.75)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) / aspect <= 1.0
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between the two class colours."""
    freq = rng.uniform(5.0, 8.0)
    if texture == "stripes":
        return 0.5 + 0.5 * np.sign(np.sin(freq * u))
    if texture == "checks":
        return 0.5 + 0.5 * np.sign(np.sin(freq * u) * np.sin(freq * v))
    if texture == "dots":
        return ((np.mod(u * freq / 3, 1.0) - 0.5) ** 2 + (np.mod(v * freq / 3, 1.0) - 0.5) ** 2 < 0.08) * 1.0
    if texture == "hatch":
        return 0.5 + 0.5 * np.sign(np.sin(freq * (u + v) / np.sqrt(2)))
    if texture == "concentric":
        return 0.5 + 0.5 * np.sign(np.sin(1.5 * freq * np.hypot(u, v)))
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled (separably)."""
    h, w = shape
    grid = rng.random((cells + 1, cells + 1))
    return _lerp_matrix(h, cells) @ grid @ _lerp_matrix(w, cells).T


def _lerp_matrix(n: int, cells: int) -> np.ndarray:
    """n x (cells + 1) weights of linear interpolation from a coarse grid at n points over [0, cells)."""
    pos = np.linspace(0, cells, n, endpoint=False)
    lo = pos.astype(int)
    frac = pos - lo
    weights = np.zeros((n, cells + 1))
    weights[np.arange(n), lo] = 1 - frac
    weights[np.arange(n), lo + 1] += frac
    return weights


def _thin_parts(n: int, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """``n`` straight legs or antennae about 1.5 pixels wide, radiating from the shape's edge."""
    mask = np.zeros(u.shape, dtype=bool)
    half_width = 0.75 / scale  # in local units: 0.75 px either side of the centre line
    for i in range(n):
        angle = np.pi / 2 + (i - (n - 1) / 2) * 0.6  # fanned out below the object
        d = np.array([np.cos(angle), np.sin(angle)])
        along = u * d[0] + v * d[1]
        across = np.abs(-u * d[1] + v * d[0])
        mask |= (across <= half_width) & (along >= 0.6) & (along <= 1.6)
    return mask


def draw_object(canvas: np.ndarray, label: np.ndarray, c: int, *, center: tuple[float, float],
                radius: float, angle: float, rng: np.random.Generator) -> None:
    """Paint object class ``c`` into ``canvas`` (H x W x 3 float) and ``label`` (H x W uint8) in place.

    Only the object's bounding box (``EXTENT`` radii around the centre, which holds every shape and its
    thin parts) is computed, so the cost follows the object's size, not the canvas's; the colours only on
    the object's pixels.
    """
    spec = class_spec(c)
    h, w = label.shape
    reach = EXTENT * radius
    y0, y1 = max(0, int(np.floor(center[0] - reach))), min(h, int(np.ceil(center[0] + reach)) + 1)
    x0, x1 = max(0, int(np.floor(center[1] - reach))), min(w, int(np.ceil(center[1] + reach)) + 1)
    dy = ((np.arange(y0, y1, dtype=np.float64) - center[0]) / radius)[:, None]  # a column and a row: the
    dx = ((np.arange(x0, x1, dtype=np.float64) - center[1]) / radius)[None, :]  # box's grid by broadcasting
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = _shape_mask(spec["shape"], spec["variant"], u, v) | _thin_parts(spec["thin_parts"], u, v, radius)
    mix = _texture(spec["texture"], u, v, rng)[mask][:, None]
    jitter = rng.normal(0.0, COLOUR_JITTER, size=(2, 3))  # per-object colour jitter
    c1, c2 = spec["colours"][0] + jitter[0], spec["colours"][1] + jitter[1]
    canvas[y0:y1, x0:x1][mask] = c1 * (1 - mix) + c2 * mix
    label[y0:y1, x0:x1][mask] = c


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A segmentation sample: uint8 H x W x 3 RGB image and uint8 H x W label (0 = background, 1..20).

    Objects have the fixed pixel scale ``OBJECT_RADIUS``; there are one to three per ``SCENE_AREA`` pixels,
    so that every image size has the same object density.
    """
    canvas = _background(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    max_objects = max(1, round(3 * size * size / SCENE_AREA))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(1, NUM_OBJECT_CLASSES + 1))
        radius = rng.uniform(*OBJECT_RADIUS)
        center = (rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size)
        draw_object(canvas, label, c, center=center, radius=radius, angle=rng.uniform(-0.5, 0.5), rng=rng)
    return _finish(canvas, rng), label


def render_classification(rng: np.random.Generator, size: int, c: int, *, jitter: float = 16.0,
                          clutter: int = 0) -> np.ndarray:
    """A classification sample, uint8 H x W x 3 RGB: one object of class ``c`` (``OBJECT_RADIUS``) within
    ``jitter`` pixels of the centre, drawn over 0 to ``clutter`` other objects placed anywhere (the label
    is the centred object, as a photo's label names the object in front, not everything in the frame)."""
    canvas = _background(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(0, clutter + 1))):
        other = int(rng.integers(1, NUM_OBJECT_CLASSES + 1))
        draw_object(canvas, label, other, center=tuple(rng.uniform(0, size, size=2)),
                    radius=rng.uniform(*OBJECT_RADIUS), angle=rng.uniform(-0.5, 0.5), rng=rng)
    center = tuple(size / 2 + rng.uniform(-jitter, jitter, size=2))
    draw_object(canvas, label, c, center=center, radius=rng.uniform(*OBJECT_RADIUS), angle=rng.uniform(-0.5, 0.5),
                rng=rng)
    return _finish(canvas, rng)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """The smooth background, float32 H x W x 3 (computed in float64; objects are painted over it)."""
    base = rng.uniform(60, 200, size=3)
    tint = rng.uniform(-50, 50, size=3)
    noise = _smooth_noise((size, size), rng, cells=3)[..., None]
    canvas = np.empty((size, size, 3), dtype=np.float32)
    return np.add(base, tint * (2 * noise - 1), out=canvas, casting="same_kind")  # float64 sums, rounded once


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise (std 6) over the float32 ``canvas``, rounded and clipped to uint8."""
    image = rng.standard_normal(size=canvas.shape, dtype=np.float32)
    image *= np.float32(6.0)
    image += canvas
    np.rint(image, out=image)
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def void_borders(label: np.ndarray, width: int = 1) -> np.ndarray:
    """VOC-style annotation: pixels within ``width`` of an object boundary become 255 (void)."""
    out = label.copy()
    edge = np.zeros(label.shape, dtype=bool)
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    edge[1:, :] |= label[:-1, :] != label[1:, :]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, :-1] != label[:, 1:]
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    out[edge] = 255
    return out
