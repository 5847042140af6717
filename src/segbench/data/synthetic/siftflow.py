"""A small synthetic SIFT Flow in the layout of the extracted ``SiftFlowDataset.zip``.

Outdoor scenes of 256 x 256 in the real release's eight categories (coast, forest, highway, inside city,
mountain, open country, street, tall building), laid out as the geometric classes say:

- **sky** (geometric 1) above a slightly tilted horizon: ``sky``, with a ``sun`` or ``moon`` in it;
- **horizontal** (2) below it: the ground (``road``, ``sidewalk``, ``crosswalk``, ``grass``, ``field``,
  ``sand``, ``desert``, ``sea``, ``river``), roads as trapezoids towards a vanishing point on the horizon
  with sidewalks or verges beside them, crosswalk stripes, a river band, a beach;
- **vertical** (3): everything that stands: ``mountain`` ridges and ``building`` blocks rising from the
  horizon (with ``window``, ``door``, ``balcony``, ``awning`` on their facades), a ``bridge`` on pillars,
  ``tree`` (trunk and crown), and objects whose base lies on the ground below the horizon, larger the
  lower (nearer) they stand: ``car``, ``bus``, ``person``, ``pole``, ``sign``, ``streetlight``, ``fence``,
  ``rock``, ``plant``, ``staircase``, ``boat`` (on water), ``cow``; and ``bird`` in the sky.

The geometric label of a pixel is that of its semantic class, so sky pixels lie above the horizon and
horizontal ones below it in every column. Colours come in families shared across classes (sky, sea and
river are blue; grass, field, tree and plant green; road, sidewalk, building and rock grey), so position
and shape matter. Like the real release it has two images without annotation files, void seams between
regions, and ``cow``, ``desert`` and ``moon`` only in training images, so the test ground truth lacks them.
Written: ``Images/<sub>/<id>.jpg``, ``SemanticLabels/<sub>/<id>.mat`` and ``GeoLabels/<sub>/<id>.mat`` (key
``S``), ``TestSet1.txt`` with Windows-style paths and CRLF line ends, and last ``manifest.json``
(``segbench.data.MANIFEST``, the completion marker of every raw dataset folder) with the seed and counts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from segbench.data import MANIFEST
from segbench.data.siftflow import CLASSES, REAL_ABSENT_FROM_TEST, SUBDIR
from segbench.data.synthetic.matfile import savemat
from segbench.infra.atomic import replacing, write_json

SIZE = 256
SKY_CLASSES = ("sky", "sun", "moon")
HORIZONTAL_CLASSES = ("road", "sidewalk", "crosswalk", "grass", "field", "sand", "desert", "sea", "river")
# semantic 0..33 -> geometric: void -1, sky 1, horizontal 2, every other class vertical 3
GEO_LUT = np.array([-1] + [1 if c in SKY_CLASSES else 2 if c in HORIZONTAL_CLASSES else 3 for c in CLASSES])
# per category: ground classes, what beside a road, far layer on the horizon, objects standing on the ground
SCENES = {
    "coast_natu": (("sea",), None, ("mountain",), ("boat", "rock", "person")),
    "forest_natu": (("grass", "field"), None, ("tree",), ("tree", "plant", "rock")),
    "highway_bost": (("road",), ("grass", "field"), ("mountain", "tree", "bridge"),
                     ("car", "bus", "sign", "pole", "streetlight", "fence")),
    "insidecity_art": (("road",), ("sidewalk",), ("building",), ("car", "person", "pole", "sign", "plant")),
    "mountain_nat": (("grass", "field"), None, ("mountain",), ("tree", "rock", "plant")),
    "opencountry_land": (("field", "grass", "sand"), None, ("mountain", "tree"), ("tree", "fence", "plant", "rock")),
    "street_urb": (("road",), ("sidewalk",), ("building",), ("car", "person", "pole", "sign", "streetlight",
                                                            "staircase")),
    "tallbuilding_art": (("road",), ("sidewalk",), ("building",), ("car", "person", "streetlight")),
}
CATEGORIES = tuple(SCENES)
# (width, height) in pixels of an object standing at the bottom row; it shrinks towards the horizon
OBJECT_SIZE = {"car": (70, 34), "bus": (110, 60), "person": (16, 60), "pole": (5, 130), "sign": (24, 24),
               "streetlight": (6, 150), "fence": (120, 24), "rock": (40, 26), "plant": (26, 30),
               "staircase": (50, 30), "boat": (60, 24), "cow": (56, 36), "tree": (50, 150)}
COLOURS = {
    "sky": (135, 180, 225), "sea": (60, 110, 170), "river": (70, 120, 160), "window": (90, 120, 150),
    "grass": (80, 140, 60), "field": (150, 160, 80), "tree": (45, 100, 45), "plant": (60, 130, 50),
    "road": (90, 90, 95), "sidewalk": (150, 145, 140), "building": (160, 150, 140), "rock": (120, 115, 110),
    "pole": (80, 80, 80), "streetlight": (70, 70, 75), "bridge": (130, 125, 120), "staircase": (140, 130, 120),
    "crosswalk": (230, 230, 230), "sand": (210, 190, 140), "desert": (220, 180, 120), "mountain": (100, 105, 125),
    "fence": (120, 95, 70), "door": (100, 70, 50), "balcony": (150, 140, 130), "awning": (180, 60, 60),
    "car": (170, 40, 40), "bus": (220, 180, 40), "person": (60, 60, 120), "sign": (200, 40, 40),
    "boat": (225, 225, 225), "bird": (40, 40, 40), "cow": (120, 80, 60), "sun": (250, 240, 180),
    "moon": (230, 230, 215)}


def write_twin(out_dir: str | os.PathLike, *, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """Write ``n_train`` annotated training images, 2 unannotated ones, and ``n_test`` test images."""
    if n_train < len(REAL_ABSENT_FROM_TEST) or n_test < 1:
        raise ValueError(f"need n_train >= {len(REAL_ABSENT_FROM_TEST)} (one image per train-only class) "
                         f"and n_test >= 1, got n_train={n_train}, n_test={n_test}")
    out_dir = Path(out_dir)
    for top in ("Images", "SemanticLabels", "GeoLabels"):
        (out_dir / top / SUBDIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + 2 + n_test
    ids = [f"{CATEGORIES[i % len(CATEGORIES)]}{100 + 7 * i}" for i in range(n)]
    order = rng.permutation(n)
    test_ids = [ids[i] for i in sorted(order[:n_test])]
    train_ids = [ids[i] for i in sorted(order[n_test:])]
    unannotated = set(train_ids[:2])
    train_only = [i for i in train_ids if i not in unannotated][:len(REAL_ABSENT_FROM_TEST)]
    for sample_id in ids:
        extra = REAL_ABSENT_FROM_TEST[train_only.index(sample_id)] if sample_id in train_only else None
        image, sem = _scene(rng, sample_id.rstrip("0123456789"), extra=extra)
        _save_jpg(out_dir / "Images" / SUBDIR / f"{sample_id}.jpg", image)
        if sample_id in unannotated:
            continue
        _save_mat(out_dir / "SemanticLabels" / SUBDIR / f"{sample_id}.mat", sem.astype(np.float64))
        _save_mat(out_dir / "GeoLabels" / SUBDIR / f"{sample_id}.mat", GEO_LUT[sem].astype(np.float64))
    listing = "\r\n".join(f"{SUBDIR}\\{i}.jpg" for i in test_ids) + "\r\n"
    with replacing(out_dir / "TestSet1.txt") as tmp:
        tmp.write_bytes(listing.encode("ascii"))
    write_json(out_dir / MANIFEST, {"dataset": "siftflow", "synthetic": True, "seed": seed,  # last: complete
                                    "counts": {"trainval": n_train, "test": n_test, "unannotated": len(unannotated)}})
    return out_dir


class _Canvas:
    """Semantic labels (1..33, 0 = void) painted back to front; ``paint`` only where ``where`` allows."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.sem = np.zeros((SIZE, SIZE), np.int64)
        self.yy, self.xx = np.mgrid[0:SIZE, 0:SIZE]

    def paint(self, name: str, mask: np.ndarray, where: np.ndarray | None = None) -> None:
        self.sem[mask if where is None else mask & where] = CLASSES.index(name) + 1

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2 < 1


def _scene(rng: np.random.Generator, category: str, *, extra: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 256x256x3 image, int 256x256 semantic labels 0..33) of one ``category`` scene."""
    grounds, beside, far, objects = SCENES[category]
    c = _Canvas(rng)
    horizon = rng.integers(80, 150) + rng.uniform(-0.12, 0.12) * (c.xx - SIZE / 2)  # row of the horizon per pixel
    sky = c.yy < horizon
    c.paint("sky", sky)
    light = "moon" if extra == "moon" else ("sun" if rng.random() < 0.3 else None)
    if light:
        c.paint(light, c.ellipse(rng.integers(30, SIZE - 30), rng.integers(12, 45), 11, 11), sky)
    ground = {"desert": "desert", "cow": "grass"}.get(extra, grounds[rng.integers(len(grounds))])
    c.paint(ground, ~sky)
    _ground_details(c, rng, ground, beside, horizon, sky)
    for kind in rng.choice(far, rng.integers(1, 3)):
        _far(c, rng, str(kind), horizon)
    kinds = [str(k) for k in rng.choice(objects, rng.integers(2, 7))] + (["cow"] if extra == "cow" else [])
    bases = np.sort(rng.uniform(0, 1, len(kinds)))  # far objects first, near ones painted over them
    for kind, t in zip(kinds, bases):
        _stand(c, rng, kind, horizon, t)
    if rng.random() < 0.4:
        for _ in range(rng.integers(1, 4)):
            c.paint("bird", c.ellipse(rng.integers(10, SIZE - 10), rng.integers(5, 60), 4, 2), sky)
    sem = c.sem
    seam = np.zeros_like(sem, bool)
    seam[:, 1:] |= sem[:, 1:] != sem[:, :-1]
    seam[1:, :] |= sem[1:, :] != sem[:-1, :]
    sem[seam & (rng.random(sem.shape) < 0.7)] = 0
    palette = np.array([(128, 128, 128)] + [COLOURS[n] for n in CLASSES], np.float64)
    palette += rng.normal(0, 10, palette.shape)  # this image's light and materials
    image = palette[sem] * (0.85 + 0.25 * c.yy[..., None] / SIZE) + rng.normal(0, 6, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8), sem


def _ground_details(c: _Canvas, rng, ground: str, beside, horizon: np.ndarray, sky: np.ndarray) -> None:
    """Roads towards a vanishing point with sidewalks or verges beside them, crosswalks, rivers, beaches."""
    below = ~sky
    if ground == "road":
        vx = rng.uniform(0.3, 0.7) * SIZE
        spread = (c.yy - horizon) * rng.uniform(0.8, 1.6)  # half-width of the road grows towards the camera
        c.paint(beside[rng.integers(len(beside))], np.abs(c.xx - vx) > spread, below)
        if rng.random() < 0.5:
            y0 = rng.uniform(0.5, 0.8) * SIZE
            stripes = ((c.xx // 10) % 2 == 0) & (c.yy >= y0) & (c.yy < y0 + 18) & (np.abs(c.xx - vx) < spread)
            c.paint("crosswalk", stripes, below)
    elif ground in ("grass", "field") and rng.random() < 0.4:
        mid = horizon + rng.uniform(0.3, 0.6) * (SIZE - horizon) + 8 * np.sin(c.xx / rng.uniform(15, 40))
        c.paint("river", np.abs(c.yy - mid) < rng.uniform(5, 14), below)
    elif ground == "sea":
        c.paint("sand", c.yy > SIZE - rng.uniform(20, 70) + 6 * np.sin(c.xx / 30.0), below)


def _far(c: _Canvas, rng, kind: str, horizon: np.ndarray) -> None:
    """A mountain ridge, buildings, a tree line or a bridge rising from the horizon."""
    if kind == "mountain":
        cx, peak = rng.uniform(0, SIZE), rng.uniform(25, 70)
        ridge = peak - rng.uniform(0.3, 0.9) * np.abs(c.xx - cx)
        c.paint("mountain", (c.yy >= horizon - ridge) & (c.yy < horizon + 2))
    elif kind == "building":
        x = rng.uniform(-20, 20)
        while x < SIZE:
            width, top = rng.uniform(40, 90), rng.uniform(0, 0.5) * horizon.min()
            base = horizon + 4
            block = (c.xx >= x) & (c.xx < x + width) & (c.yy >= top) & (c.yy < base)
            c.paint("building", block)
            _facade(c, rng, x, width, top, base)
            x += width + rng.uniform(0, 20)
    elif kind == "tree":
        for x in rng.uniform(0, SIZE, rng.integers(3, 8)):
            r = rng.uniform(10, 22)
            crown = horizon.min() - r * 0.6
            c.paint("tree", c.ellipse(x, crown, r, r * 1.2) | c.rect(x - 2, x + 2, crown, SIZE), c.yy < horizon + 2)
    else:  # bridge: a deck above the horizon on pillars
        deck = horizon.min() - rng.uniform(15, 40)
        c.paint("bridge", c.rect(0, SIZE, deck, deck + 8))
        for x in rng.uniform(0, SIZE, 3):
            c.paint("bridge", c.rect(x, x + 7, deck, SIZE) & (c.yy < horizon + 3))


def _facade(c: _Canvas, rng, x: float, width: float, top: np.ndarray, base: np.ndarray) -> None:
    """Windows in rows (some with a balcony), a door at the base with an awning over it."""
    ground_row = float(np.min(base[:, int(np.clip(x + width / 2, 0, SIZE - 1))]))
    for row in np.arange(top + 8, ground_row - 30, 22):
        for col in np.arange(x + 6, x + width - 12, 16):
            c.paint("window", c.rect(col, col + 9, row, row + 12))
            if rng.random() < 0.15:
                c.paint("balcony", c.rect(col - 2, col + 11, row + 12, row + 17))
    if rng.random() < 0.7:
        dx = x + rng.uniform(0.2, 0.6) * width
        c.paint("door", c.rect(dx, dx + 12, ground_row - 24, ground_row))
        if rng.random() < 0.6:
            c.paint("awning", c.rect(dx - 5, dx + 17, ground_row - 31, ground_row - 25))


def _stand(c: _Canvas, rng, kind: str, horizon: np.ndarray, t: float) -> None:
    """``kind`` with its base between the horizon (t = 0) and the bottom row (t = 1), scaled by distance."""
    x = rng.uniform(0, SIZE)
    col = int(np.clip(x, 0, SIZE - 1))
    h0 = float(horizon[0, col])
    base = h0 + 4 + t * (SIZE - h0 - 4)
    scale = 0.25 + 0.75 * (base - h0) / (SIZE - h0)
    w, h = (s * scale * rng.uniform(0.8, 1.2) for s in OBJECT_SIZE[kind])
    if kind == "sign":  # a plate on a pole
        c.paint("pole", c.rect(x - 1, x + 1 + 2 * scale, base - 2 * h, base))
        c.paint("sign", c.rect(x - h / 2, x + h / 2, base - 3 * h, base - 2 * h))
    elif kind in ("pole", "streetlight"):
        c.paint(kind, c.rect(x, x + max(w, 2), base - h, base))
        if kind == "streetlight":  # and its arm
            c.paint(kind, c.rect(x, x + 0.2 * h, base - h, base - h + 4))
    elif kind == "tree":
        c.paint("tree", c.rect(x - w / 8, x + w / 8, base - h / 2, base) | c.ellipse(x, base - 0.7 * h, w / 2, h / 3))
    elif kind in ("rock", "plant", "cow", "boat"):
        c.paint(kind, c.ellipse(x, base - h / 2, w / 2, h / 2))
    else:  # car, bus, person, fence, staircase: boxes
        c.paint(kind, c.rect(x - w / 2, x + w / 2, base - h, base))


def _save_jpg(path: Path, image: np.ndarray) -> None:
    with replacing(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=90)


def _save_mat(path: Path, s: np.ndarray) -> None:
    savemat(path, {"S": s}, compression=True)
