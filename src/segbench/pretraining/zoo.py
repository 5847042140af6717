"""The twin's model zoo: one stand-in per backbone, trained once to the same quality, shipped in ``zoo/``.

ImageNet weights are downloaded, checksummed and the same for every run; the twin's stand-ins work the same
way. ``segbench zoo-train <backbone>`` trains a backbone's stand-in with its recipe here (``RECIPES``: the
pretrain step's two phases, longer; the held-out accuracies measured in fp32, which any CPU reproduces) and records
it in ``zoo/MANIFEST.json``: sha256, size, the command and settings, the code identity, the machine, the wall
time and the held-out accuracies on ``HELD_OUT_IMAGES`` images of each kind. With ``pretrain.source: zoo``
(the embedded default) the ``zoo_standin`` rule (``segbench zoo-standin``) verifies a file against the
manifest and copies it where the pretrain step would have written it; a file that does not match is refused
with the command that regenerates it. A stand-in below the zoo's bar (``QUALITY``) is not recorded; a backbone
the manifest does not list is trained by the workflow's ``pretrain`` rule, as with ``pretrain.source:
synthetic``.

ICNet's half-width ResNet-50 is pruned from the zoo's ResNet-50 as its paper pruned (filters of largest L1
norm kept), its batch-norm statistics re-estimated on the training images, then fine-tuned as the ICNet
authors fine-tuned after pruning; its record keeps the accuracies before the fine-tuning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path

from segbench import errors
from segbench.infra.atomic import replacing, write_json
from segbench.infra.identity import code_identity, sha256sum

log = logging.getLogger(__name__)
MANIFEST = "MANIFEST.json"
HELD_OUT_IMAGES = 2000  # held-out images of each kind (single objects, with clutter) measured per stand-in
QUALITY = {"accuracy": 0.97, "accuracy_clutter": 0.92}  # the bar every stand-in of the zoo clears
# The zoo's recipe per backbone: pretrain_classifier's settings, one schedule (dropout off, as in the default's
# fine-tuning) at the embedded default's widths (config models.width), lengthened where a backbone needs it to reach
# the others' quality (ResNet-50's 224 px phase: 1500 steps gave 94.5% with clutter, 3000 gave 97.2%, both more than
# 2 points below GoogLeNet's 99.6%); for the pruned trunk, the fine-tuning after pruning (finetune_pruned's settings).
_SCHEDULE = {"crop_size": 112, "crop_iterations": 1600, "iterations": 1500, "batch_size": 32, "lr": 3e-4,
             "jitter": 16.0, "clutter": 2, "dropout": 0.0, "seed": 0}
RECIPES = {
    "vgg16": {**_SCHEDULE, "width": 0.125},
    "alexnet_caffe": {**_SCHEDULE, "width": 0.25},
    "googlenet": {**_SCHEDULE, "width": 0.5},
    "resnet50": {**_SCHEDULE, "width": 0.25, "iterations": 5000},
    # pruned at width 1/4, it is at chance (5.7% / 4.6%) and 300 fine-tuning steps at 224 px reached 18% / 17%; the
    # pretrain schedule with 1,500 steps at 224 px, 98.6% / 92.1% (on a 97.2% ResNet-50)
    "resnet50_half": {"pruned_from": "resnet50", "recalibrate_batches": 50, "crop_size": 112, "crop_iterations": 1600,
                      "iterations": 7000, "lr": 3e-4, "batch_size": 32, "jitter": 16.0, "clutter": 2, "seed": 0},
}


def command(backbone: str, zoo: str | os.PathLike = "zoo") -> str:
    """The command that (re)generates ``backbone``'s zoo file."""
    return f"segbench zoo-train {backbone} --zoo {zoo}"


def read_manifest(zoo: str | os.PathLike) -> dict:
    """``zoo/MANIFEST.json`` ({"format", "held_out_images", "files": {file name: entry}}); empty if absent."""
    path = Path(zoo) / MANIFEST
    if not path.exists():
        return {"format": 1, "held_out_images": HELD_OUT_IMAGES, "files": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it with git checkout -- {path}") from err
    if not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} has no 'files' table; restore it with git checkout -- {path}")
    return manifest


def file_name(backbone: str) -> str:
    return f"{backbone}.pt"


def held(zoo: str | os.PathLike = "zoo") -> list[str]:
    """The backbones whose stand-in the zoo's manifest lists (the others are trained by the workflow)."""
    return sorted(entry["backbone"] for entry in read_manifest(zoo)["files"].values())


def verify(backbone: str, zoo: str | os.PathLike = "zoo") -> dict:
    """The manifest entry of ``backbone``'s zoo file, after checking the file's size and sha256 against it."""
    if backbone not in RECIPES:
        raise ValueError(f"the zoo has no stand-in for {backbone!r}; it holds {sorted(RECIPES)}")
    path = Path(zoo) / file_name(backbone)
    entry = read_manifest(zoo)["files"].get(path.name)
    regenerate = f"regenerate it with `{command(backbone, zoo)}`"
    if entry is None:
        raise errors.MissingInputError(f"{Path(zoo) / MANIFEST} lists no {path.name}: {regenerate}")
    if not path.exists():
        raise errors.MissingInputError(f"{path} is missing: restore it with `git checkout -- {path}`, or {regenerate}")
    size, digest = path.stat().st_size, sha256sum(path)
    if size != entry["bytes"] or digest != entry["sha256"]:
        raise errors.ChecksumError(f"{path} does not match {Path(zoo) / MANIFEST}: {size} bytes, sha256 "
                                   f"{digest[:16]}..., expected {entry['bytes']} bytes, sha256 "
                                   f"{entry['sha256'][:16]}...; restore it with `git checkout -- {path}`, or "
                                   f"{regenerate}")
    return entry


def use_standin(backbone: str, out: str | os.PathLike, *, zoo: str | os.PathLike = "zoo",
                width: float | None = None) -> Path:
    """Copy ``backbone``'s verified zoo file to ``out`` with its JSON summary beside it (``out`` with ``.json``),
    as the pretrain step writes them. ``width``: the width the runs build the backbone at, which must be the
    zoo's."""
    entry = verify(backbone, zoo)
    if width is not None and abs(width - entry["width"]) > 1e-12:
        raise ValueError(f"the zoo's {backbone} stand-in is {entry['width']:g} wide, but models.width asks "
                         f"for {width:g}: use the zoo's width, or pretrain.source: synthetic to train a "
                         f"stand-in at {width:g}")
    summary = {k: entry[k] for k in ("backbone", "width", "image_size", "accuracy", "accuracy_clutter", "chance")}
    summary["settings"] = {**entry["settings"], "precision": entry["precision"], "wall_s": entry["wall_s"],
                           "zoo": {"sha256": entry["sha256"], "held_out_images": entry["held_out_images"]}}
    for key in ("pruned_from", "before_finetuning"):
        if key in entry:
            summary[key] = entry[key]
    with replacing(out) as tmp:
        shutil.copyfile(Path(zoo) / file_name(backbone), tmp)
    write_json(Path(out).with_suffix(".json"), summary)
    log.info("%s: the zoo's %s stand-in (sha256 %s..., held-out accuracy %.3f single, %.3f with clutter)", out,
             backbone, entry["sha256"][:16], entry["accuracy"], entry["accuracy_clutter"])
    return Path(out)


def train_standin(backbone: str, *, zoo: str | os.PathLike = "zoo", threads: int | None = None,
                  progress: bool = True) -> Path:
    """Train ``backbone``'s zoo stand-in with ``RECIPES[backbone]`` (precision auto; held-out measured in fp32),
    write it to ``zoo/<backbone>.pt`` and its entry to the manifest, or refuse one below ``QUALITY``. A pruned
    trunk starts from its source's verified zoo file."""
    from segbench.infra.cpuinfo import cpu_info
    from segbench.infra.provenance import software
    from segbench.pretraining.standins import finetune_pruned, pretrain_classifier

    if backbone not in RECIPES:
        raise ValueError(f"the zoo has no recipe for {backbone!r}; expected one of {sorted(RECIPES)}")
    recipe = RECIPES[backbone]
    zoo = Path(zoo)
    zoo.mkdir(parents=True, exist_ok=True)
    out = zoo / file_name(backbone)
    started = time.perf_counter()
    if "pruned_from" in recipe:
        source = recipe["pruned_from"]
        verify(source, zoo)
        settings = {k: v for k, v in recipe.items() if k != "pruned_from"}
        finetune_pruned(zoo / file_name(source), out, backbone=backbone, threads=threads, eval_precision="fp32",
                        eval_images=HELD_OUT_IMAGES, progress=progress, **settings)
    else:
        pretrain_classifier(out, backbone=backbone, threads=threads, eval_precision="fp32",
                            eval_images=HELD_OUT_IMAGES, progress=progress, **recipe)
    wall = time.perf_counter() - started
    sidecar = out.with_suffix(".json")
    summary = json.loads(sidecar.read_text())
    sidecar.unlink()
    entry = {"backbone": backbone, "sha256": sha256sum(out), "bytes": out.stat().st_size,
             "command": command(backbone, zoo), "settings": recipe, "precision": summary["settings"]["precision"],
             "eval_precision": "fp32", "width": summary["width"], "image_size": summary["image_size"],
             "accuracy": summary["accuracy"],
             "accuracy_clutter": summary["accuracy_clutter"], "chance": summary["chance"],
             "held_out_seed": recipe["seed"], "held_out_images": HELD_OUT_IMAGES,
             "code_identity": code_identity(), "software": software(), "machine": {**cpu_info(), "threads": threads},
             "wall_s": round(wall, 1)}
    for key in ("pruned_from", "before_finetuning"):
        if key in summary:
            entry[key] = summary[key]
    short = [k for k, bar in QUALITY.items() if entry[k] < bar]
    if short:
        out.unlink()
        raise ValueError(f"{backbone}'s stand-in reached held-out accuracy {entry['accuracy']:.4f} on single "
                         f"objects and {entry['accuracy_clutter']:.4f} with clutter, below the zoo's bar {QUALITY}: "
                         "not recorded; lengthen its recipe (segbench.pretraining.zoo.RECIPES) and run "
                         f"`{command(backbone, zoo)}` again")
    with open(zoo / ".manifest.lock", "w") as lock:  # two zoo-train commands may finish together
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(zoo)
        manifest["files"][out.name] = entry
        manifest["files"] = dict(sorted(manifest["files"].items()))
        write_json(zoo / MANIFEST, manifest)
    log.info("%s: held-out accuracy %.4f single, %.4f with clutter (%d images each), %.0f s", out,
             entry["accuracy"], entry["accuracy_clutter"], HELD_OUT_IMAGES, wall)
    return out
