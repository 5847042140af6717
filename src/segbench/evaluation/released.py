"""The authors' released FCN-32s / 16s / 8s / 8s-at-once VOC models, as segbench weights.

The Caffe models (``*-heavy-pascal.caffemodel``) were converted to PyTorch state dicts by pytorch-fcn and
are distributed on Google Drive (``<name>_from_caffe.pth``). They take Caffe's
input convention (BGR, 0-255, minus the VOC mean), so the records say ``input_norm: caffe``, and
``segbench evaluate`` scores them with our protocol. ``released_table`` puts our scores beside the ones
published for these very models.

Files over about 100 MB make Google Drive answer a first request with a "can't scan for viruses" page
instead of the file; :func:`fetch_drive` follows that page's confirmation (a form or a ``confirm=`` link,
or the ``download_warning`` cookie's token) and refuses to keep an HTML answer as weights.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Mapping

import torch

from segbench import models
from segbench.data.download import ChecksumError, DownloadError, expected_md5, fetch, read_checksums
from segbench.evaluation.metrics import METRICS
from segbench.infra.tables import write_table
from segbench.weights import read_weights_file, save_model


@dataclass(frozen=True)
class Released:
    label: str       # the name in tables
    model: str       # our model (segbench.models.MODELS)
    file: str        # pytorch-fcn's file name
    drive_id: str    # Google Drive file id
    md5: str
    published: dict  # pixel_acc / mean_acc / mean_iu / fw_iu (%) of the released model on seg11valid


RELEASED = {
    "fcn32s": Released("FCN-32s", "fcn32s_vgg16", "fcn32s_from_caffe.pth", "11k2Q0bvRQgQbT6-jYWeh6nmAsWlSCY3f",
                       "d3eb467a80e7da0468a20dfcbc13e6c8",
                       {"pixel_acc": 90.48, "mean_acc": 76.48, "mean_iu": 63.63, "fw_iu": 83.46}),
    "fcn16s": Released("FCN-16s", "fcn16s_vgg16", "fcn16s_from_caffe.pth", "1bctu58B6YH9bu6lBBSBB2rUeGlGhYLoP",
                       "a2d4035f669f09483b39c9a14a0d6670",
                       {"pixel_acc": 91.00, "mean_acc": 78.07, "mean_iu": 65.01, "fw_iu": 84.26}),
    "fcn8s": Released("FCN-8s", "fcn8s_vgg16", "fcn8s_from_caffe.pth", "1ieXWyoG68xqoHJPWdyrDyaIaaWlfmUxI",
                      "de93e540ec79512f8770033849c8ae89",
                      {"pixel_acc": 91.22, "mean_acc": 77.61, "mean_iu": 65.51, "fw_iu": 84.54}),
    "fcn8s-atonce": Released("FCN-8s at-once", "fcn8s_atonce_vgg16", "fcn8s-atonce_from_caffe.pth",
                             "0B9P1L--7Wd2vblE1VUIxV1o2d2M", "bfed4437e941fef58932891217fe6464",
                             {"pixel_acc": 91.13, "mean_acc": 78.50, "mean_iu": 65.40, "fw_iu": 84.43}),
}

# Released (pytorch-fcn) parameter name -> ours, every entry written out: the names happen to agree, and this
# table is where a difference would show. fc6 / fc7 are already 7x7 and 1x1 convolutions in both.
VGG16_TRUNK_KEYS = {
    "conv1_1.weight": "conv1_1.weight", "conv1_1.bias": "conv1_1.bias",
    "conv1_2.weight": "conv1_2.weight", "conv1_2.bias": "conv1_2.bias",
    "conv2_1.weight": "conv2_1.weight", "conv2_1.bias": "conv2_1.bias",
    "conv2_2.weight": "conv2_2.weight", "conv2_2.bias": "conv2_2.bias",
    "conv3_1.weight": "conv3_1.weight", "conv3_1.bias": "conv3_1.bias",
    "conv3_2.weight": "conv3_2.weight", "conv3_2.bias": "conv3_2.bias",
    "conv3_3.weight": "conv3_3.weight", "conv3_3.bias": "conv3_3.bias",
    "conv4_1.weight": "conv4_1.weight", "conv4_1.bias": "conv4_1.bias",
    "conv4_2.weight": "conv4_2.weight", "conv4_2.bias": "conv4_2.bias",
    "conv4_3.weight": "conv4_3.weight", "conv4_3.bias": "conv4_3.bias",
    "conv5_1.weight": "conv5_1.weight", "conv5_1.bias": "conv5_1.bias",
    "conv5_2.weight": "conv5_2.weight", "conv5_2.bias": "conv5_2.bias",
    "conv5_3.weight": "conv5_3.weight", "conv5_3.bias": "conv5_3.bias",
    "fc6.weight": "fc6.weight", "fc6.bias": "fc6.bias",
    "fc7.weight": "fc7.weight", "fc7.bias": "fc7.bias",
}
# Heads. Upsamplers have no bias (Caffe bias_term: false). The at-once net's pool scalings (0.01, 0.0001) are
# constants of the forward pass, not parameters: neither file has them.
HEAD_KEYS = {
    "fcn32s": {
        "score_fr.weight": "score_fr.weight", "score_fr.bias": "score_fr.bias",
        "upscore.weight": "upscore.weight",
    },
    "fcn16s": {
        "score_fr.weight": "score_fr.weight", "score_fr.bias": "score_fr.bias",
        "score_pool4.weight": "score_pool4.weight", "score_pool4.bias": "score_pool4.bias",
        "upscore2.weight": "upscore2.weight",
        "upscore16.weight": "upscore16.weight",
    },
    "fcn8s": {
        "score_fr.weight": "score_fr.weight", "score_fr.bias": "score_fr.bias",
        "score_pool4.weight": "score_pool4.weight", "score_pool4.bias": "score_pool4.bias",
        "score_pool3.weight": "score_pool3.weight", "score_pool3.bias": "score_pool3.bias",
        "upscore2.weight": "upscore2.weight",
        "upscore_pool4.weight": "upscore_pool4.weight",
        "upscore8.weight": "upscore8.weight",
    },
    "fcn8s-atonce": {
        "score_fr.weight": "score_fr.weight", "score_fr.bias": "score_fr.bias",
        "score_pool4.weight": "score_pool4.weight", "score_pool4.bias": "score_pool4.bias",
        "score_pool3.weight": "score_pool3.weight", "score_pool3.bias": "score_pool3.bias",
        "upscore2.weight": "upscore2.weight",
        "upscore_pool4.weight": "upscore_pool4.weight",
        "upscore8.weight": "upscore8.weight",
    },
}
KEY_MAPS = {variant: {**VGG16_TRUNK_KEYS, **HEAD_KEYS[variant]} for variant in RELEASED}
DRIVE_URL = "https://drive.google.com/uc?export=download&id={}"
_HTML_LIMIT = 4 << 20  # a confirmation page is a few kB; never read more than this of an HTML answer


def _variant(variant: str) -> Released:
    if variant not in RELEASED:
        raise ValueError(f"unknown released model {variant!r}; expected one of {sorted(RELEASED)}")
    return RELEASED[variant]


def _rename(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str], *, what: str) -> dict[str, torch.Tensor]:
    unknown = sorted(set(state) - set(mapping))
    missing = sorted(set(mapping) - set(state))
    if unknown or missing:
        raise ValueError(f"{what}: unknown keys {unknown} and missing keys {missing}; expected exactly "
                         f"{len(mapping)} keys ({', '.join(list(mapping)[:3])}, ...)")
    return {mapping[key]: value for key, value in state.items()}


def to_segbench(state: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """A released state dict of ``variant`` with our parameter names; an unknown or missing key is an error."""
    _variant(variant)
    return _rename(state, KEY_MAPS[variant], what=f"released {variant} state dict")


def to_released(state: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """Our state dict of ``variant``'s model with the released names (the inverse of :func:`to_segbench`)."""
    _variant(variant)
    inverse = {ours: theirs for theirs, ours in KEY_MAPS[variant].items()}
    return _rename(state, inverse, what=f"segbench {RELEASED[variant].model} state dict")


def convert_released(variant: str, pth: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert a released state dict file to a segbench weights record at ``out`` (``weights.save_model``).

    The channel width and class count are read from ``conv1_1`` and ``score_fr`` (1.0 and 21 for the
    released files) and every tensor's shape is checked against our model of that size.
    """
    spec = _variant(variant)
    hint = drive_hint(DRIVE_URL.format(spec.drive_id), spec.md5, dest=pth, command=f"segbench released-model {variant}")
    loaded = read_weights_file(pth, fetch_hint=hint)
    if isinstance(loaded, Mapping) and "model_state_dict" in loaded:  # pytorch-fcn's trainer checkpoints
        loaded = loaded["model_state_dict"]
    state = to_segbench(loaded, variant)
    width = state["conv1_1.weight"].shape[0] / 64
    num_classes = state["score_fr.bias"].shape[0]
    model = models.build(spec.model, num_classes, width=width)
    expected = model.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in state.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{pth} does not fit {spec.model} at width {width:g} with {num_classes} classes: "
                         + "; ".join(wrong))
    model.load_state_dict(state)
    meta = {"input_norm": "caffe", "reduction": "sum", "source": "released", "released": variant,
            "file": spec.file, "drive_id": spec.drive_id, "md5": spec.md5}
    return save_model(out, model, name=spec.model, num_classes=num_classes, width=width, meta=meta)


def drive_hint(url: str, md5: str, *, dest: str | os.PathLike, command: str) -> str:
    """How to get a Google Drive file right, for the error raised when ``dest`` is not it."""
    return (f"download it again from {url} (md5 {md5}). Google Drive answers a first request for a file over "
            "about 100 MB with a virus-scan confirmation page, which a plain download saves under the file's name: "
            f"`{command}` follows that confirmation; or download it in a browser (or with gdown) and put it at {dest}")


class _DrivePage(HTMLParser):
    """The parts of a Google Drive answer page that lead to the file: forms, links, the title."""

    def __init__(self):
        super().__init__()
        self.forms: list[tuple[str, list[tuple[str, str]]]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append((attrs.get("action") or "", []))
        elif tag == "input" and self.forms and attrs.get("name") and (attrs.get("type") or "").lower() == "hidden":
            self.forms[-1][1].append((attrs["name"], attrs.get("value") or ""))
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data.strip()


def _looks_like_html(content_type: str | None, head: bytes) -> bool:
    start = head.lstrip()[:15].lower()
    return "text/html" in (content_type or "").lower() or start.startswith((b"<!doctype html", b"<html"))


def _confirmed_url(page: bytes, base: str, cookies: list[str]) -> str | None:
    """The URL a Drive confirmation page points to, or None when the page is not one (quota, error)."""
    parser = _DrivePage()
    parser.feed(page.decode("utf-8", errors="replace"))
    for action, inputs in parser.forms:
        if any(name == "confirm" for name, _ in inputs) or "download" in action:
            return urllib.parse.urljoin(base, action) + "?" + urllib.parse.urlencode(inputs)
    for href in parser.links:
        if "confirm=" in href:
            return urllib.parse.urljoin(base, href)  # the parser has already unescaped &amp;
    for cookie in cookies:
        name, _, value = cookie.split(";", 1)[0].partition("=")
        if name.strip().startswith("download_warning"):
            return base + ("&" if "?" in base else "?") + urllib.parse.urlencode({"confirm": value.strip()})
    return None


def _page_title(page: bytes) -> str:
    parser = _DrivePage()
    parser.feed(page.decode("utf-8", errors="replace"))
    return parser.title or "no title"


def resolve_drive(url: str, *, timeout: float = 60.0, max_hops: int = 3) -> str:
    """The URL that answers with the file itself: ``url``, or the target of Drive's confirmation page.

    Raises :class:`DownloadError` when the answer stays an HTML page (quota exceeded, file not shared, ...).
    """
    for _ in range(max_hops + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                head = response.read(1024)
                if not _looks_like_html(response.headers.get("Content-Type"), head):
                    return url
                page = head + response.read(_HTML_LIMIT)
                cookies = response.headers.get_all("Set-Cookie") or []
        except urllib.error.URLError as err:
            raise DownloadError(f"{url} could not be reached ({err}); download the file by hand") from err
        following = _confirmed_url(page, url, cookies)
        if following is None:
            raise DownloadError(f"{url} answered a web page ({_page_title(page)!r}), not the file, and the page "
                                "has no download confirmation: the file may be over its download quota or no "
                                "longer shared; download it in a browser and put it in the cache folder")
        url = following
    raise DownloadError(f"Google Drive kept answering confirmation pages after {max_hops} confirmations "
                        f"(last URL {url}); download the file in a browser and put it in the cache folder")


def fetch_drive(url: str, dest: str | os.PathLike, md5: str, *, timeout: float = 60.0,
                progress: bool | None = None) -> Path:
    """Download a Google Drive file to ``dest`` through its confirmation page, resumable and md5-checked
    (``segbench.data.download.fetch``); an existing verified ``dest`` is not downloaded again.

    An HTML answer is never kept: a page without a confirmation, or a "file" that turns out to be HTML,
    raises :class:`DownloadError` and leaves no ``dest``.
    """
    dest = Path(dest)
    try:
        if dest.exists():
            return fetch(url, dest, md5, progress=progress)  # only verifies
        return fetch(resolve_drive(url, timeout=timeout), dest, md5, timeout=timeout, progress=progress)
    except ChecksumError:
        bad = dest.with_name(dest.name + ".bad")
        if bad.exists() and _looks_like_html(None, bad.read_bytes()[:1024]):
            bad.unlink()
            raise DownloadError(f"{dest.name} from {url} is a web page, not the file; it was not kept. Download "
                                f"the file in a browser and put it at {dest}") from None
        raise


def released_model(variant: str, out: str | os.PathLike, *, cache: str | os.PathLike,
                   checksums: str | os.PathLike | None = None) -> Path:
    """Download (into ``cache``, or verify a copy already there) and convert released model ``variant``;
    writes the segbench weights record ``out`` and returns it. ``checksums`` (a table,
    :func:`segbench.data.download.read_checksums`) replaces the published md5: the rehearsal's twin files."""
    spec = _variant(variant)
    table = read_checksums(checksums) if checksums is not None else None
    md5 = expected_md5(spec.file, spec.md5, table)
    pth = fetch_drive(DRIVE_URL.format(spec.drive_id), Path(cache) / spec.file, md5)
    return convert_released(variant, pth, out)


def released_table(metrics: Mapping[str, str | os.PathLike], out_prefix: str | os.PathLike, *,
                   dataset_note: str = "") -> list[Path]:
    """Our evaluation of each released model beside the scores published for it, in percent.

    ``metrics`` maps a variant ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce") to the evaluation JSON of its
    converted weights. Writes ``out_prefix.{csv,tex,md}`` (``tables.write_table``, 2 decimals).
    """
    rows = []
    for variant, path in metrics.items():
        spec = _variant(variant)
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist: evaluate the converted {variant} weights first")
        ours = json.loads(Path(path).read_text())
        row = {"net": spec.label}
        for key, _ in METRICS:
            row[key] = 100.0 * ours[key]
            row[f"{key}_published"] = spec.published[key]
            row[f"{key}_diff"] = row[key] - spec.published[key]
        rows.append(row)
    columns = [("net", "net")]
    for key, header in METRICS:
        columns += [(key, header), (f"{key}_published", "published"), (f"{key}_diff", "Δ")]
    caption = ("The authors' released Caffe models (converted to PyTorch by pytorch-fcn) scored by segbench on "
               "seg11valid (percent), beside the scores published for the same models (pytorch-fcn and "
               "wkentaro/fcn READMEs: mean IU 63.63 / 65.01 / 65.51 / 65.40)"
               + (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, columns, rows, caption=caption, digits=2)
