"""The rehearsal's mirror: every file the paper configuration downloads, as a twin at the real sizes.

``config/rehearsal.yaml`` runs every job of ``config/paper.yaml`` on a machine without network or GPU. Its
downloads come from a folder that :func:`write_mirror` fills with files named, packed and laid out as the
real ones, so that the real code paths read them (``download`` through ``data.data_root``, ``fetch-weights``
and ``released-model`` through ``pretrain.cache``, ``voc-test-images`` through ``data.data_root``)::

    datasets/VOCtrainval_25-May-2011.tar   TrainVal/VOCdevkit/VOC2011/...   (images ~500 x 375, varying)
    datasets/VOCtrainval_11-May-2012.tar   VOCdevkit/VOC2012/...            (the same images as VOC2012)
    datasets/benchmark.tgz                 benchmark_RELEASE/dataset/...    (SBD: img/, cls/*.mat, lists)
    datasets/nyu_depth_v2_labeled.mat      HDF5 (MATLAB v7.3), 480 x 640 frames with the real camera
    datasets/splits.mat, classMapping40.mat
    datasets/SiftFlowDataset.zip           Images/, SemanticLabels/, GeoLabels/, TestSet1.txt (256 x 256)
    datasets/VOC<year>test.tar             VOCdevkit/VOC<year>/JPEGImages, ImageSets/Segmentation/test.txt
    weights/<torchvision name>.pth         torchvision's layout, torchvision's random initialisation
    weights/vgg16_from_caffe.pth           pytorch-fcn's layout (torchvision's keys)
    weights/fcn<N>s_from_caffe.pth         the released models' layout (pytorch-fcn's keys)
    checksums.json                         {"md5": {file name: md5}}: data.checksums (written last)

The published checksums cannot match these files; ``checksums.json`` replaces them (``data.checksums``), so
the same verification code runs against it. The weights are random: the rehearsal checks that every job runs
and what it costs, not what it scores.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

from segbench.data import MANIFEST
from segbench.data.download import md5sum
from segbench.infra.atomic import replacing, write_json

# (height, width) of the VOC twin's images: VOC's are 500 pixels on the long side, mostly 500 x 375 or
# 375 x 500, with other short sides (333, 442, 281, ...)
VOC_SHAPES = ((375, 500), (500, 375), (333, 500), (500, 442), (281, 500))
NYUD_FRAME_SCALE = 1.0  # 480 x 640, the real camera


def write_mirror(out_dir: str | os.PathLike, *, voc: dict, nyud: dict, siftflow: dict, test_images: int = 2,
                 test_years: Sequence[str] = ("2011", "2012"), weights: Iterable[tuple[str, str]] = (),
                 released: Iterable[str] = (), seed: int = 0, progress: bool = False, msd: dict | None = None) -> Path:
    """Fill ``out_dir`` (module docstring) and return ``out_dir/checksums.json``, written last.

    ``voc``: the counts of :func:`segbench.data.synthetic.voc.write_twin` (``n_sbd_train``, ``n_sbd_val``,
    ``n_voc_train``, ``n_voc_val``, ``n_overlap``); ``nyud``: ``n_images``; ``siftflow``: ``n_train``,
    ``n_test``; ``msd`` (the volumetric nets' Task05_Prostate, None: none): ``n_train``, ``n_test``, ``shape``.
    ``weights``: (backbone, source) pairs, source "torchvision" or "caffe"; ``released``: the released-model
    variants (``segbench.evaluation.released.RELEASED``).
    """
    for name, given, expected in (("voc", voc, {"n_sbd_train", "n_sbd_val", "n_voc_train", "n_voc_val", "n_overlap"}),
                                  ("nyud", nyud, {"n_images"}), ("siftflow", siftflow, {"n_train", "n_test"})):
        if set(given) != expected:
            raise ValueError(f"the mirror's {name} counts must set exactly {sorted(expected)}, got {sorted(given)}")
    if msd is not None and set(msd) != {"n_train", "n_test", "shape"}:
        raise ValueError(f"the mirror's msd counts must set exactly ['n_test', 'n_train', 'shape'], got {sorted(msd)}")
    out_dir = Path(out_dir)
    datasets, weights_dir = out_dir / "datasets", out_dir / "weights"
    datasets.mkdir(parents=True, exist_ok=True)
    weights_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".twin-") as tmp:
        tmp = Path(tmp)
        _voc(tmp / "voc", datasets, voc, seed=seed, progress=progress)
        for year in test_years:
            _voc_test(tmp / f"voc-test{year}", datasets, year, test_images, seed=seed)
        _nyud(tmp / "nyud", datasets, nyud, seed=seed)
        _siftflow(tmp / "siftflow", datasets, siftflow, seed=seed)
        if msd is not None:
            _msd(tmp / "msd", datasets, msd, seed=seed)
    for backbone, source in weights:
        _classifier_weights(weights_dir, backbone, source)
    for variant in released:
        _released_weights(weights_dir, variant)
    files = sorted([*datasets.iterdir(), *weights_dir.iterdir()], key=lambda p: p.name)
    table = {p.name: md5sum(p) for p in files if p.is_file() and not p.name.endswith(".md5.json")}
    return write_json(out_dir / "checksums.json", {"md5": table, "note": "the rehearsal's twin files "
                                                   "(segbench.rehearsal): not the published ones"})


def _pack_tar(path: Path, members: dict[str, Path], *, gzip: bool = False) -> None:
    """A tar of each folder in ``members`` (archive name -> folder), the twin's manifest left out."""
    with replacing(path) as tmp, tarfile.open(tmp, "w:gz" if gzip else "w") as tar:
        for arcname, folder in members.items():
            tar.add(folder, arcname=arcname, filter=lambda info: None if info.name.endswith(MANIFEST) else info)


def _voc(tmp: Path, datasets: Path, counts: dict, *, seed: int, progress: bool) -> None:
    from segbench.data.synthetic.voc import write_twin

    write_twin(tmp, image_size=max(max(s) for s in VOC_SHAPES), shapes=VOC_SHAPES, seed=seed, progress=progress,
               **counts)
    devkit = tmp / "VOCdevkit" / "VOC2011"
    _pack_tar(datasets / "VOCtrainval_25-May-2011.tar", {"TrainVal/VOCdevkit/VOC2011": devkit})
    _pack_tar(datasets / "VOCtrainval_11-May-2012.tar", {"VOCdevkit/VOC2012": devkit})
    _pack_tar(datasets / "benchmark.tgz", {"benchmark_RELEASE/dataset": tmp / "benchmark_RELEASE" / "dataset"},
              gzip=True)


def _voc_test(tmp: Path, datasets: Path, year: str, n_images: int, *, seed: int) -> None:
    from segbench.data.synthetic.voc import write_test_split

    write_test_split(tmp, year=year, n_images=n_images, image_size=max(max(s) for s in VOC_SHAPES),
                     shapes=VOC_SHAPES, seed=seed, progress=False)
    _pack_tar(datasets / f"VOC{year}test.tar", {f"VOCdevkit/VOC{year}": tmp / "VOCdevkit" / f"VOC{year}"})


def _nyud(tmp: Path, datasets: Path, counts: dict, *, seed: int) -> None:
    from segbench.data.synthetic.nyud import write_twin

    write_twin(tmp, seed=seed, frame_scale=NYUD_FRAME_SCALE, **counts)
    for name in ("nyu_depth_v2_labeled.mat", "splits.mat", "classMapping40.mat"):
        shutil.move(tmp / name, datasets / name)


def _siftflow(tmp: Path, datasets: Path, counts: dict, *, seed: int) -> None:
    from segbench.data.synthetic.siftflow import write_twin

    write_twin(tmp, seed=seed, **counts)
    with replacing(datasets / "SiftFlowDataset.zip") as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(tmp.rglob("*")):
            if path.is_file() and path.name != MANIFEST:
                z.write(path, path.relative_to(tmp).as_posix())


def _msd(tmp: Path, datasets: Path, counts: dict, *, seed: int) -> None:
    """The Decathlon's Task05_Prostate.tar: the volumetric twin under the real task's name (one modality where
    the real task has two, T2 and ADC; the readers take the count from dataset.json)."""
    from segbench.data.synthetic.msd import write_twin

    write_twin(tmp, n_train=counts["n_train"], n_test=counts["n_test"], shape=tuple(counts["shape"]), seed=seed,
               task="Task05_Prostate")
    _pack_tar(datasets / "Task05_Prostate.tar", {"Task05_Prostate": tmp / "Task05_Prostate"})


def _classifier_weights(weights_dir: Path, backbone: str, source: str) -> Path:
    """A classifier's weights in the layout of the file ``fetch-weights`` reads for (backbone, source)."""
    import torch
    import torchvision

    from segbench.infra.atomic import torch_save
    from segbench.pretraining.imagenet import weights_file

    name = weights_file(backbone, source)
    torch.manual_seed(0)
    extra = {"aux_logits": True, "init_weights": True} if backbone == "googlenet" else {}  # the released file's keys
    net = getattr(torchvision.models, backbone)(weights=None, **extra)
    return torch_save(net.state_dict(), weights_dir / name)


def _released_weights(weights_dir: Path, variant: str) -> Path:
    """A released model's file in pytorch-fcn's layout (what ``released-model`` converts), random values."""
    import torch

    from segbench import models
    from segbench.evaluation.released import RELEASED, to_released
    from segbench.infra.atomic import torch_save

    if variant not in RELEASED:
        raise ValueError(f"unknown released model {variant!r}; expected one of {sorted(RELEASED)}")
    torch.manual_seed(0)
    net = models.build(RELEASED[variant].model, num_classes=21)
    return torch_save(to_released(net.state_dict(), variant), weights_dir / RELEASED[variant].file)
