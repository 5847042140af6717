"""PASCAL VOC 2011 + SBD: readers of the real on-disk formats, FCN's splits, and the HDF5 preprocess.

FCN trains on SBD ``train`` (8,498 images, labels from ``cls/<id>.mat`` ``GTcls.Segmentation``) and
validates on ``seg11valid`` (736 images): VOC2011 segmentation ``val`` minus SBD ``train``, read from
``JPEGImages`` and the palette PNGs of ``SegmentationClass`` (255 = void border).
The same code reads the synthetic twin written by :mod:`segbench.data.synthetic.voc`.

The VOC2011 and VOC2012 segmentation test sets (images without labels, from the evaluation server's
``VOC<year>test.tar``) become stores of images only, for the submission of the paper's Table 3.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from segbench.data.store import write_store
from segbench.errors import MissingInputError, SegbenchError
from segbench.infra.progress import progress_bar

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
SEG11VALID_MD5 = "7984b6ce736bd3666d8b7ee70b5401da"  # md5 of FCN's data/pascal/seg11valid.txt
PUBLISHED_COUNTS = {"train": 8498, "val": 736}


class DatasetError(SegbenchError):
    """Input data is missing or not what the format promises."""


def read_ids(path: Path) -> list[str]:
    """One id per line; tolerates a missing trailing newline and blank lines. A list without ids is an error."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"split list {path} does not exist; check data paths in the config")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"split list {path} lists no ids (expected one image id per line): it is empty or "
                           "truncated; extract the dataset again (or rewrite the synthetic twin)")
    return ids


def split_list_md5(ids: list[str]) -> str:
    """md5 of a split list written as FCN ships it: one id per line, each followed by a newline."""
    return hashlib.md5("".join(f"{i}\n" for i in ids).encode()).hexdigest()


def seg11valid_ids(voc2011: Path, sbd: Path) -> list[str]:
    """VOC2011 seg val minus SBD train, in VOC's order (paper footnote 7)."""
    sbd_train = set(read_ids(Path(sbd) / "train.txt"))
    val = Path(voc2011) / "ImageSets/Segmentation/val.txt"
    ids = [i for i in read_ids(val) if i not in sbd_train]
    if not ids:
        raise DatasetError(f"seg11valid is empty: every id of {val} is also in {Path(sbd) / 'train.txt'}; "
                           f"is {voc2011} the VOC2011 devkit and {sbd} SBD's dataset folder?")
    return ids


def voc_palette() -> np.ndarray:
    """The 256-entry VOC colour map (bit-interleaved class index), flat list of 768 bytes."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap.ravel()


def _open_image(path: Path) -> Image.Image:
    if not path.exists():
        raise DatasetError(f"{path} is listed in a split but does not exist; re-extract the dataset")
    try:
        img = Image.open(path)
        img.load()
    except OSError as err:
        raise DatasetError(f"{path} is not a readable image ({err}); re-download or re-extract it") from err
    return img


def read_image(path: Path) -> np.ndarray:
    """uint8 H x W x 3 RGB from a JPEG."""
    return np.asarray(_open_image(Path(path)).convert("RGB"))


def read_voc_label(path: Path) -> np.ndarray:
    """uint8 H x W class indices from a VOC palette PNG (255 = void)."""
    img = _open_image(Path(path))
    if img.mode != "P":
        raise DatasetError(f"{path} is a {img.mode} image; VOC labels are palette ('P') PNGs of class indices")
    return np.asarray(img, dtype=np.uint8)


def read_sbd_label(path: Path) -> np.ndarray:
    """uint8 H x W class indices from an SBD ``cls/<id>.mat`` (``GTcls.Segmentation``)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} is listed in SBD but does not exist; re-extract benchmark.tgz")
    try:
        import scipy.io  # here, not at the top: training and evaluation import this module, only SBD reads .mat
        gt = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
        return np.asarray(gt.Segmentation, dtype=np.uint8)
    except (ValueError, KeyError, AttributeError, OSError) as err:
        raise DatasetError(f"{path} has no readable GTcls.Segmentation ({err}); re-extract benchmark.tgz") from err


def check_sample(image: np.ndarray, label: np.ndarray, *, num_classes: int, where: str) -> None:
    """Raise if sizes differ or a label value is outside 0..C-1 and 255."""
    if image.shape[:2] != label.shape:
        raise DatasetError(f"{where}: image is {image.shape[0]}x{image.shape[1]} but label is "
                           f"{label.shape[0]}x{label.shape[1]}; they must have the same size")
    bad = np.setdiff1d(np.unique(label), np.r_[np.arange(num_classes), 255])
    if bad.size:
        raise DatasetError(f"{where}: label values {bad.tolist()} are outside 0..{num_classes - 1} and 255 (void)")


def preprocess_voc(voc2011: Path, sbd: Path, out_dir: Path, *, check_md5: bool = False,
                   voc2012: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Write ``out_dir/train.h5`` (SBD train) and ``out_dir/val.h5`` (seg11valid).

    ``voc2011`` is the ``VOCdevkit/VOC2011`` folder, ``sbd`` the ``benchmark_RELEASE/dataset`` folder.
    With ``check_md5`` (real data) the derived seg11valid list must match the published list's md5
    and the split sizes the published counts. With ``voc2012`` (its ``VOCdevkit/VOC2012`` folder) also
    ``out_dir/val2012.h5``: VOC2012 seg val, flagged in its attributes as overlapping SBD train (FCN
    trains on SBD train, so numbers on it are not clean).
    """
    voc2011, sbd, out_dir = Path(voc2011), Path(sbd), Path(out_dir)
    train_ids = read_ids(sbd / "train.txt")
    val_ids = seg11valid_ids(voc2011, sbd)
    if check_md5:
        got = split_list_md5(val_ids)
        if got != SEG11VALID_MD5:
            raise DatasetError(f"derived seg11valid ({len(val_ids)} ids) has md5 {got}, expected {SEG11VALID_MD5} "
                               f"({PUBLISHED_COUNTS['val']} ids): is {voc2011} really VOC2011?")
        if len(train_ids) != PUBLISHED_COUNTS["train"]:
            raise DatasetError(f"{sbd / 'train.txt'} lists {len(train_ids)} ids, expected {PUBLISHED_COUNTS['train']}")
    n = len(CLASS_NAMES)
    sources = {
        "train": (train_ids, lambda i: (read_image(sbd / "img" / f"{i}.jpg"), read_sbd_label(sbd / "cls" / f"{i}.mat"),
                                        f"SBD {i}")),
        "val": (val_ids, lambda i: (read_image(voc2011 / "JPEGImages" / f"{i}.jpg"),
                                    read_voc_label(voc2011 / "SegmentationClass" / f"{i}.png"), f"VOC2011 {i}")),
    }
    if voc2012 is not None:
        voc2012 = Path(voc2012)
        ids2012 = read_ids(voc2012 / "ImageSets/Segmentation/val.txt")
        sources["val2012"] = (ids2012, lambda i: (read_image(voc2012 / "JPEGImages" / f"{i}.jpg"),
                                                  read_voc_label(voc2012 / "SegmentationClass" / f"{i}.png"),
                                                  f"VOC2012 {i}"))
    written = {}
    for split, (ids, load) in sources.items():
        samples = _checked_samples(ids, load, num_classes=n, desc=f"voc {split}", progress=progress)
        attrs = {"mean_bgr": list(MEAN_BGR), "source": {"train": "SBD train", "val": "seg11valid",
                                                         "val2012": "VOC2012 seg val"}[split]}
        if split == "val2012":
            overlap = sorted(set(ids) & set(train_ids))
            attrs.update(overlaps_sbd_train=len(overlap), warning=f"{len(overlap)} of these {len(ids)} images are in "
                         "SBD train, on which FCN trains: do not report numbers on this split as clean")
        written[split] = write_store(out_dir / f"{split}.h5", dataset="voc", split=split, ids=ids,
                                     fields=samples, class_names=CLASS_NAMES, attrs=attrs)
    return written


def _checked_samples(ids: list[str], load, *, num_classes: int, desc: str, progress: bool) -> dict:
    """The ``image`` and ``label`` fields of a split for :func:`write_store`, read and checked one sample at a time,
    so that memory follows one image, not the split (SBD train's 8,498 decoded images and labels are 6.4 GB).

    The store writer takes the fields in step, in this order (image i, label i, image i + 1, ...): reading image i
    puts label i in a one-place slot, which the label field empties. (``itertools.tee`` would keep up to 57 pairs
    in its buffer blocks.) A bad sample raises while the store is written, which then leaves no file."""
    slot = []

    def images():
        for i in progress_bar(ids, desc=desc, disable=not progress):
            image, label, where = load(i)
            check_sample(image, label, num_classes=num_classes, where=where)
            slot.append(label)
            yield image

    def labels():
        while slot:
            yield slot.pop()

    return {"image": images(), "label": labels()}


def seg_test_list(devkit: Path) -> Path:
    """``ImageSets/Segmentation/test.txt`` of a ``VOCdevkit/VOC<year>`` folder."""
    return Path(devkit) / "ImageSets" / "Segmentation" / "test.txt"


def find_test_devkit(raw_dir: Path, year: str) -> Path:
    """The one ``VOC<year>`` folder under ``raw_dir`` that has a segmentation test list (an extracted test
    archive, or the twin's test split)."""
    found = sorted(p.parents[2] for p in Path(raw_dir).glob(f"**/VOC{year}/ImageSets/Segmentation/test.txt"))
    if len(found) != 1:
        raise MissingInputError(f"expected one VOC{year}/ImageSets/Segmentation/test.txt under {raw_dir}, found "
                                f"{len(found)} {[str(p) for p in found]}: extract VOC{year}test.tar there again")
    return found[0]


def preprocess_voc_test(raw_dir: Path, out_path: Path, *, year: str, progress: bool = True) -> Path:
    """Write the VOC<year> segmentation test set found under ``raw_dir`` (:func:`find_test_devkit`) as a store
    of images only (split ``test<year>``: the test labels are the server's), in test-list order."""
    devkit = find_test_devkit(raw_dir, year)
    ids = read_ids(seg_test_list(devkit))
    images = (read_image(devkit / "JPEGImages" / f"{i}.jpg")
              for i in progress_bar(ids, desc=f"voc test{year}", disable=not progress))
    return write_store(out_path, dataset="voc", split=f"test{year}", ids=ids, fields={"image": images},
                       class_names=CLASS_NAMES, attrs={"mean_bgr": list(MEAN_BGR), "source": f"VOC{year} seg test"})
