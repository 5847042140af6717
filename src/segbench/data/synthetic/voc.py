"""The synthetic twin of PASCAL VOC 2011 + SBD, written in the real on-disk formats.

Layout under ``out_dir`` (as the real archives extract)::

    VOCdevkit/VOC2011/JPEGImages/<id>.jpg
    VOCdevkit/VOC2011/SegmentationClass/<id>.png     palette PNG, 255 on object borders
    VOCdevkit/VOC2011/ImageSets/Segmentation/{train,val}.txt
    benchmark_RELEASE/dataset/img/<id>.jpg
    benchmark_RELEASE/dataset/cls/<id>.mat           GTcls.Segmentation (no void borders, as SBD)
    benchmark_RELEASE/dataset/{train,val}.txt

Ids look like VOC's (``2008_000123``). As in the real data, part of VOC2011 seg val is also in SBD train,
so the derived seg11valid is VOC val minus that overlap.

:func:`write_test_split` writes, in a folder of its own, the twin of an evaluation server test archive
(``VOC<year>test.tar``: ``VOCdevkit/VOC<year>/JPEGImages`` and ``ImageSets/Segmentation/test.txt``, no labels),
so that the paper's Table 3 submission runs on the twin too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segbench.data import MANIFEST
from segbench.data.synthetic.matfile import savemat
from segbench.data.synthetic.objects import render_scene, void_borders
from segbench.data.voc import voc_palette
from segbench.infra.atomic import replacing, write_json, write_text
from segbench.infra.progress import progress_bar


def write_twin(out_dir: Path, *, image_size: int = 96, n_sbd_train: int = 300, n_sbd_val: int = 40,
               n_voc_train: int = 40, n_voc_val: int = 100, n_overlap: int = 20, seed: int = 0,
               shapes: Sequence[tuple[int, int]] | None = None, progress: bool = True) -> Path:
    """Write the twin and return ``out_dir/manifest.json`` (``segbench.data.MANIFEST``, written last: its
    presence means the twin is complete).

    SBD train has ``n_sbd_train`` images, SBD val ``n_sbd_val``; VOC2011 seg train ``n_voc_train``
    and seg val ``n_voc_val``, of which ``n_overlap`` are also in SBD train (so seg11valid has
    ``n_voc_val - n_overlap`` images). With ``shapes`` (a list of (height, width)), image k is rendered at
    ``image_size`` and cropped to ``shapes[k % len(shapes)]``, as VOC's images are 500 pixels on the long side and
    vary on the short one (the rehearsal's real-size twin); each side at most ``image_size``.
    """
    if not 0 <= n_overlap <= min(n_voc_val, n_sbd_train):
        raise ValueError(f"n_overlap must be in 0..min(n_voc_val, n_sbd_train), got {n_overlap}")
    _check_shapes(shapes, image_size)
    out_dir = Path(out_dir)
    voc = out_dir / "VOCdevkit" / "VOC2011"
    sbd = out_dir / "benchmark_RELEASE" / "dataset"

    n_unique = n_sbd_train + n_sbd_val + n_voc_train + n_voc_val - n_overlap
    ids = [f"{2007 + k % 5}_{k:06d}" for k in range(n_unique)]
    sbd_train = ids[:n_sbd_train]
    sbd_val = ids[n_sbd_train:n_sbd_train + n_sbd_val]
    rest = ids[n_sbd_train + n_sbd_val:]
    voc_train = rest[:n_voc_train]
    voc_val = sorted(sbd_train[:n_overlap] + rest[n_voc_train:])
    in_voc, in_sbd = set(voc_train + voc_val), set(sbd_train + sbd_val)

    rng = np.random.default_rng(seed)
    palette = voc_palette()
    for k, i in enumerate(progress_bar(ids, desc="synthetic VOC", disable=not progress)):
        image, label = _cropped(render_scene(rng, image_size), shapes, k)
        if i in in_voc:
            with replacing(voc / "JPEGImages" / f"{i}.jpg") as tmp:
                Image.fromarray(image).save(tmp, format="JPEG", quality=95)
            png = Image.fromarray(void_borders(label), mode="P")
            png.putpalette(palette.tolist())
            with replacing(voc / "SegmentationClass" / f"{i}.png") as tmp:
                png.save(tmp, format="PNG")
        if i in in_sbd:
            with replacing(sbd / "img" / f"{i}.jpg") as tmp:
                Image.fromarray(image).save(tmp, format="JPEG", quality=95)
            gt = {"Segmentation": label, "CategoriesPresent": np.unique(label[label > 0]).astype(np.uint8)}
            savemat(sbd / "cls" / f"{i}.mat", {"GTcls": gt}, compression=True)

    lists = {voc / "ImageSets/Segmentation/train.txt": voc_train, voc / "ImageSets/Segmentation/val.txt": voc_val,
             sbd / "train.txt": sbd_train, sbd / "val.txt": sbd_val}
    for path, members in lists.items():
        write_text(path, "".join(f"{m}\n" for m in members))
    return write_json(out_dir / MANIFEST, {
        "dataset": "voc", "synthetic": True, "seed": seed, "image_size": image_size,
        **({"shapes": [list(hw) for hw in shapes]} if shapes else {}),
        "counts": {"sbd_train": n_sbd_train, "sbd_val": n_sbd_val, "voc2011_seg_train": n_voc_train,
                   "voc2011_seg_val": n_voc_val, "seg11valid": n_voc_val - n_overlap},
    })


def write_test_split(out_dir: Path, *, year: str = "2012", n_images: int = 4, image_size: int = 96, seed: int = 0,
                     shapes: Sequence[tuple[int, int]] | None = None, progress: bool = True) -> Path:
    """Write a test split of ``n_images`` unlabelled twin images for VOC``year`` under
    ``out_dir/VOCdevkit/VOC<year>`` and return ``out_dir/manifest.json`` (written last).

    Its own random stream (``seed`` and the year), so the twin's train and val images do not change; its ids
    (``<year>_9xxxxx``) are not among theirs. ``shapes`` as for :func:`write_twin`.
    """
    if n_images < 1:
        raise ValueError(f"a test split needs at least one image, got n_images={n_images}")
    _check_shapes(shapes, image_size)
    out_dir = Path(out_dir)
    devkit = out_dir / "VOCdevkit" / f"VOC{year}"
    rng = np.random.default_rng([seed, int(year)])
    ids = [f"{year}_{900000 + k:06d}" for k in range(n_images)]
    for k, i in enumerate(progress_bar(ids, desc=f"synthetic VOC{year} test", disable=not progress)):
        image, _ = _cropped(render_scene(rng, image_size), shapes, k)
        with replacing(devkit / "JPEGImages" / f"{i}.jpg") as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=95)
    write_text(devkit / "ImageSets" / "Segmentation" / "test.txt", "".join(f"{i}\n" for i in ids))
    return write_json(out_dir / MANIFEST, {"dataset": f"voc{year}-test", "synthetic": True, "seed": seed,
                                           "image_size": image_size, "test_ids": n_images})


def _check_shapes(shapes, image_size: int) -> None:
    if shapes is not None and (not shapes or any(not 1 <= s <= image_size for hw in shapes for s in hw)):
        raise ValueError(f"shapes must be a non-empty list of (height, width), each side in 1..image_size "
                         f"({image_size}), got {shapes}")


def _cropped(scene: tuple[np.ndarray, np.ndarray], shapes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The scene's image and label, cropped to ``shapes[k % len(shapes)]`` from the top left (unchanged without
    shapes: the twin of the embedded default draws and writes the same as before)."""
    if not shapes:
        return scene
    h, w = shapes[k % len(shapes)]
    return tuple(np.ascontiguousarray(a[:h, :w]) for a in scene)
