"""``segbench <subcommand>``: one subcommand per Snakemake rule, each calling one function.

This is the only layer that turns flags into keyword arguments; nothing below it reads the config. With
``--provenance CONFIG_JSON`` (the resolved configuration the workflow writes when it starts) a subcommand
also writes the provenance sidecar of each output (``segbench.infra.provenance``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

from segbench.errors import Preempted, SegbenchError
from segbench.infra.memory import peak_line

log = logging.getLogger("segbench")


def _synth_voc(a):
    from segbench.data.synthetic.voc import write_twin

    write_twin(a.out_dir, image_size=a.image_size, n_sbd_train=a.n_sbd_train, n_sbd_val=a.n_sbd_val,
               n_voc_train=a.n_voc_train, n_voc_val=a.n_voc_val, n_overlap=a.n_overlap, seed=a.seed)


def _preprocess_voc(a):
    from segbench.data.voc import preprocess_voc

    preprocess_voc(a.voc2011, a.sbd, a.out_dir, check_md5=a.check_md5, voc2012=a.voc2012)


def _download(a):
    from segbench.data.sources import download_dataset

    download_dataset(a.dataset, a.dest_dir, data_root=a.data_root, checksums=a.checksums)


def _rehearsal_mirror(a):
    from segbench.rehearsal import write_mirror

    spec = a.twin
    write_mirror(a.out_dir, voc=spec.get("voc", {}), nyud=spec.get("nyud", {}), siftflow=spec.get("siftflow", {}),
                 test_images=spec.get("test_images", 2), test_years=a.test_year, seed=spec.get("seed", 0),
                 weights=[tuple(w.split(":", 1)) for w in a.weights], released=a.released, msd=spec.get("msd"))


def _synth_nyud(a):
    from segbench.data.synthetic.nyud import write_twin

    write_twin(a.out_dir, n_images=a.n_images, seed=a.seed, frame_scale=a.frame_scale)


def _preprocess_nyud(a):
    from segbench.data.nyud import REAL_COUNTS, preprocess_nyud

    preprocess_nyud(a.raw_dir, a.out_dir, expect_counts=REAL_COUNTS if a.check_counts else None)


def _hha_nyud(a):
    from segbench.data.nyud import add_hha

    add_hha(a.store, a.png_dir, out_path=a.out, train_hha_store=a.train_hha_store, threads=a.threads)


def _synth_siftflow(a):
    from segbench.data.synthetic.siftflow import write_twin

    write_twin(a.out_dir, n_train=a.n_train, n_test=a.n_test, seed=a.seed)


def _preprocess_siftflow(a):
    from segbench.data.siftflow import REAL_COUNTS, preprocess_siftflow

    preprocess_siftflow(a.raw_dir, a.out_dir, expect_counts=REAL_COUNTS if a.check_counts else None)


def _dataset_stats(a):
    from segbench.data import nyud, siftflow, voc
    from segbench.data.stats import dataset_stats

    published = {"voc": voc.PUBLISHED_COUNTS, "nyud": nyud.REAL_COUNTS, "siftflow": siftflow.REAL_COUNTS}
    dataset_stats(a.store, a.out, expected_counts=published[a.dataset] if a.check_counts else None)


def _pretrain(a):
    from segbench.pretraining.standins import pretrain_classifier

    summary = a.out.with_suffix(".json")
    with _tracked(a, a.out, also=[summary], device=a.device, threads=a.threads, batch_size=a.batch_size,
                  seeds=a.seed) as late:
        pretrain_classifier(a.out, backbone=a.backbone, width=a.width, crop_size=a.crop_size,
                            crop_iterations=a.crop_iterations, iterations=a.iterations, batch_size=a.batch_size,
                            lr=a.lr, clutter=a.clutter, dropout=a.dropout, seed=a.seed, device=a.device,
                            threads=a.threads, precision_mode=a.precision, images=a.images)
        late["precision"] = json.loads(summary.read_text())["settings"]["precision"]


def _standin_images(a):
    from segbench.data.classification import render_images

    render_images(a.out, size=a.size, crop_size=a.crop_size, crop_iterations=a.crop_iterations,
                  iterations=a.iterations, batch_size=a.batch_size, clutter=a.clutter, seed=a.seed)


def _prune_trunk(a):
    from segbench.pretraining.standins import prune_classifier

    summary = a.out.with_suffix(".json")
    with _tracked(a, a.out, also=[summary] if a.with_summary else [], device=a.device, threads=a.threads):
        prune_classifier(a.source, a.out, backbone=a.backbone, device=a.device, threads=a.threads)


def _zoo_train(a):
    from segbench.pretraining.zoo import train_standin

    train_standin(a.backbone, zoo=a.zoo, threads=a.threads)


def _zoo_standin(a):
    from segbench.pretraining.zoo import use_standin

    summary = a.out.with_suffix(".json")
    with _tracked(a, a.out, also=[summary]):
        use_standin(a.backbone, a.out, zoo=a.zoo, width=a.width)


def _fetch_weights(a):
    from segbench.pretraining.imagenet import fetch_weights

    fetch_weights(a.backbone, a.out, cache=a.cache, source=a.source, checksums=a.checksums)


def _train(a):
    from segbench.training.distributed import from_env
    from segbench.training.train import train

    init = a.init[0] if a.init and len(a.init) == 1 else a.init
    main = from_env().main  # under torchrun, process 0 records the run; the others write nothing
    run = a.out_dir / "run.json"
    tracked = _tracked(a if main else None, a.out_dir / "model.pt", also=[a.out_dir / "log.csv", run],
                       device=a.device, threads=a.threads,
                       inputs=[a.train_store, *(a.init or []), a.val_store if a.val_every else None], seeds=a.seed)
    with tracked as late:
        train(train_store=a.train_store, out_dir=a.out_dir, model_name=a.model, width=a.width, init=init,
              mode=a.mode, recipe=a.recipe, lr=a.lr, lr_scale=a.lr_scale, batch_size=a.batch_size,
              momentum=a.momentum, iterations=a.iterations, sample_p=a.sample_p, criterion=a.criterion,
              gamma=a.gamma, val_store=a.val_store, val_every=a.val_every, checkpoint_every=a.checkpoint_every,
              dropout=a.dropout, precision_mode=a.precision, channels_last=a.channels_last, modality=a.modality,
              seed=a.seed, device=a.device, threads=a.threads, num_workers=a.num_workers,
              pin_memory=a.pin_memory, compile=a.compile, deterministic=a.deterministic,
              model_options=a.model_options, checkpoint_minutes=a.checkpoint_minutes, micro_batch=a.micro_batch)
        if main:
            meta = json.loads(run.read_text())  # what the recipe and "auto" resolved to
            late.update(batch_size=meta["images_per_iter"], precision=meta["precision"])


def _evaluate(a):
    from segbench.evaluation.evaluate import evaluate

    crf = None
    if a.crf:
        from segbench.evaluation.crf import CRFParams

        crf = CRFParams.from_dict({**(a.crf_params or {}),
                                   **({} if a.crf_iterations is None else {"iterations": a.crf_iterations})})
    elif a.crf_params or a.crf_iterations is not None:
        raise ValueError("--crf-params and --crf-iterations set the dense CRF: add --crf to apply it")
    with _tracked(a, a.out, inputs=[a.store, a.weights], device=a.device, threads=a.threads,
                  precision="fp32") as late:
        result = evaluate(store_path=a.store, model_path=a.weights, out_json=a.out, device=a.device,
                          threads=a.threads, model_options=a.model_options, crf=crf, crf_scale=a.crf_scale == "auto",
                          mode=a.mode, calibration_store=a.calibration_store)
        late["seeds"] = result["train"].get("seed")  # the training run's
    log.info("%s: pixel acc %.4f, mean acc %.4f, mean IU %.4f, f.w. IU %.4f%s", a.weights, result["pixel_acc"],
             result["mean_acc"], result["mean_iu"], result["fw_iu"],
             f" after the dense CRF ({result['crf']['seconds_per_image']:.3f} s per image)" if crf else "")


def _table2(a):
    from segbench.reporting.paper_tables import table2

    runs = {net: paths.split(",") for net, paths in _pairs(a.run)}
    table2(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {net: {"metrics": paths} for net, paths in runs.items()})


def _table1(a):
    from segbench.reporting.paper_tables import table1

    runs = {backbone: json.loads(spec) for backbone, spec in _pairs(a.run)}
    table1(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {b: {"metrics": run["metrics"], "benchmark": run["benchmark"]} for b, run in runs.items()})


def _benchmark(a):
    from segbench.evaluation.benchmark import run_benchmark, write_benchmark_json
    from segbench.infra import runtime

    runtime.setup(threads=a.threads)
    with _tracked(a, a.out, device=a.device, threads=a.threads, batch_size=1, precision=a.modes):
        result = run_benchmark(a.model, width=a.width, size=a.size, trials=a.trials, warmup=a.warmup,
                               modes=tuple(a.modes.split(",")), device=a.device, model_options=a.model_options)
        write_benchmark_json(result, a.out)
    log.info("%s: %.1f GFLOP per forward on %s (%s); practical peak %s", a.model, result["gflop"], result["device"],
             " ".join(result["instruction_sets"]) or "no listed instruction sets",
             ", ".join(f"{p} {v['gflops_per_s']:.0f} GFLOP/s" for p, v in result["peak"].items()))
    for mode, m in result["modes"].items():
        log.info("%s %s: mean %.1f ms, median %.1f ms, %.2fx fp32, argmax agreement %.4f, %.0f GFLOP/s = %.0f%% "
                 "of the %s peak", a.model, mode, m["mean_ms"], m["median_ms"], m["speedup_vs_fp32"],
                 m["argmax_agreement"], m["gflops_per_s"], 100 * m["peak_fraction"], m["precision"])


def _fig5(a):
    from segbench.reporting.fig5 import make_fig5

    runs = {float(p): paths.split(",") for p, paths in _pairs(a.run)}
    figures = [f"{a.out_figure}.png", f"{a.out_figure}.pdf"]
    with _tracked(a, figures[0], also=figures[1:], inputs=[*(p for paths in runs.values() for p in paths),
                                                            a.floor_from]):
        make_fig5(runs, out_table=a.out_table, out_figure=a.out_figure, model_name=a.model,
                  target_loss=a.target_loss, floor_loss=_floor(a.floor_from) if a.floor_from else None)
    rows = {f"p={p:g}": {"logs": paths} for p, paths in runs.items()}
    if a.floor_from:
        rows["constant-prediction floor"] = {"run": a.floor_from}
    _table_provenance(a, rows, table=a.out_table)


def _floor(run_json):
    return float(json.loads(Path(run_json).read_text())["constant_prediction_loss"])


def _table4(a):
    from segbench.reporting.paper_tables import table4

    runs = {net: paths.split(",") for net, paths in _pairs(a.run)}
    table4(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {net: {"metrics": paths} for net, paths in runs.items()})


def _table5(a):
    from segbench.reporting.paper_tables import table5

    runs = {net: paths.split(",") for net, paths in _pairs(a.run)}
    table5(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {net: {"metrics": paths} for net, paths in runs.items()})


def _table_pretrain(a):
    from segbench.reporting.paper_tables import table_pretrain

    runs = dict(_pairs(a.run))
    table_pretrain(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {backbone: {"summary": path} for backbone, path in runs.items()})


def _perclass(a):
    from segbench.reporting.perclass import perclass

    published = json.loads(a.published.read_text()) if a.published else None
    with _tracked(a, a.out_csv, also=[f"{a.out_figure}.png", f"{a.out_figure}.pdf"], inputs=[a.metrics]):
        perclass(metrics_json=a.metrics, out_csv=a.out_csv, out_figure=a.out_figure, published=published,
                 label=a.label, published_label=a.published_label, title=a.title)


def _perclass_all(a):
    from segbench.reporting.perclass import perclass_all

    published = json.loads(a.published.read_text()) if a.published else None
    perclass_all(metrics=a.metrics, figures=dict(_pairs(a.figure)), figure_dir=a.figure_dir, published=published,
                 config=_config(a))


def _qualitative(a):
    from segbench.reporting.qualitative import qualitative

    models = dict(_pairs(a.model))
    with _tracked(a, f"{a.out_figure}.png", also=[f"{a.out_figure}.pdf"], inputs=[a.store, *models.values()],
                  device=a.device, threads=a.threads, precision="fp32"):
        qualitative(store_path=a.store, models=models, out_figure=a.out_figure, ids=a.id, count=a.count,
                    device=a.device, threads=a.threads, title=a.title)


def _curves(a):
    from segbench.reporting.curves import training_curves

    with _tracked(a, f"{a.out_figure}.png", also=[f"{a.out_figure}.pdf"], inputs=[a.log]):
        training_curves(log_csv=a.log, out_figure=a.out_figure, run=a.run, window=a.window)


def _curves_all(a):
    from segbench.reporting.curves import curves_all

    curves_all(runs={run: logs.split(",") for run, logs in _pairs(a.run)}, out_dir=a.out_dir, window=a.window,
               config=_config(a))


def _released_model(a):
    from segbench.evaluation.released import RELEASED, released_model

    with _tracked(a, a.out, inputs=[a.cache / RELEASED[a.variant].file]):
        released_model(a.variant, a.out, cache=a.cache, checksums=a.checksums)


def _table_released(a):
    from segbench.evaluation.released import released_table

    runs = dict(_pairs(a.run))
    released_table(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {variant: {"metrics": path} for variant, path in runs.items()})


def _submission(a):
    from segbench.evaluation.submission import results_folder, write_submission

    with _tracked(a, a.archive or results_folder(a.out_dir, a.year), inputs=[a.store, a.weights, a.ids_list],
                  device=a.device, threads=a.threads, batch_size=1, precision="fp32"):
        folder = write_submission(store_path=a.store, model_path=a.weights, out_dir=a.out_dir, year=a.year,
                                  ids_list=a.ids_list, archive=a.archive, device=a.device, threads=a.threads)
    log.info("wrote %d PNGs to %s", len(list(folder.iterdir())), folder)


def _table_successors(a):
    from segbench.reporting.successors import table_successors

    runs = {model: json.loads(spec) for model, spec in _pairs(a.run)}
    table_successors(runs, a.out_prefix, dataset_note=a.note)
    _table_provenance(a, {model: {key: run[key] for key in ("metrics", "crf_metrics", "benchmark") if run.get(key)}
                          for model, run in runs.items()})


def _synth_voc_test(a):
    from segbench.data.synthetic.voc import write_test_split

    write_test_split(a.out_dir, year=a.year, n_images=a.n_images, image_size=a.image_size, seed=a.seed)


def _voc_test_images(a):
    from segbench.evaluation.submission import extract_test_images

    extract_test_images(a.year, a.dest_dir, data_root=a.data_root)


def _preprocess_voc_test(a):
    from segbench.data import MANIFEST
    from segbench.data.voc import preprocess_voc_test

    with _tracked(a, a.out, inputs=[a.raw_dir / MANIFEST]):
        preprocess_voc_test(a.raw_dir, a.out, year=a.year)


def _table3(a):
    from segbench.evaluation.submission import table3

    archives = dict(_pairs(a.submission))
    table3(archives, a.out_prefix, net=a.net, dataset_note=a.note)
    _table_provenance(a, {f"{a.net} VOC{year} test": {"archive": path} for year, path in archives.items()})


def _report_pages(a):
    from segbench.reporting.pages import report_pages

    tables = dict(_pairs(a.table))
    report_pages(tables=tables, titles=dict(_pairs(a.title)), figures=a.figure, out_dir=a.out_dir)


def _config(a) -> dict | None:
    """The resolved configuration named by ``--provenance``, or None without it."""
    from segbench.infra.provenance import read_config

    return read_config(a.provenance) if getattr(a, "provenance", None) else None


def _tracked(a, output, **fields):
    """``provenance.tracked(output, **fields)`` with the ``--provenance`` configuration; nothing without it
    (or with ``a`` None)."""
    from segbench.infra.provenance import tracked_if

    return tracked_if(None if a is None else _config(a), output, **fields)


def _table_provenance(a, rows, table=None):
    """The sidecar of the table at ``--out-prefix`` (or ``table``): its rows traced to their files."""
    config = _config(a)
    if config is not None:
        from segbench.infra.provenance import write_table_provenance

        write_table_provenance(table or a.out_prefix, rows, config=config)


def _pairs(items):
    for item in items:
        if "=" not in item:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        yield tuple(item.split("=", 1))


def _twin_msd(a):
    from segbench.data.synthetic.msd import write_twin

    write_twin(a.out_dir, n_train=a.n_train, n_test=a.n_test, shape=tuple(a.shape), seed=a.seed)


def _train_volumetric(a):
    from segbench.training.volumetric import train_volumetric

    train_volumetric(task_dir=a.task_dir, model=a.model, out=a.out, seed=a.seed, width=a.width,
                     iterations=a.iterations, n_val=a.n_val, patch=tuple(a.patch), recipe=a.recipe, lr=a.lr,
                     batch_size=a.batch_size, loss=a.loss, dice_form=a.dice_form,
                     dice_background=not a.dice_foreground_only,
                     annotate_every=a.annotate_every, precision=a.precision, device=a.device, threads=a.threads)


def _evaluate_volumetric(a):
    from segbench.evaluation.volumetric import evaluate_volumetric

    evaluate_volumetric(task_dir=a.task_dir, weights=a.weights, n_val=a.n_val, out=a.out, device=a.device,
                        threads=a.threads)


def _table_volumetric(a):
    from segbench.reporting.volumetric import table_volumetric

    runs: dict[str, list] = {}
    for model, path in _pairs(a.run):
        runs.setdefault(model, []).append(path)
    table_volumetric(runs, a.out_prefix, dataset_note=a.note)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth-voc", help="write the synthetic VOC2011 + SBD twin")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--image-size", type=int, default=96)
    for name, default in (("sbd-train", 300), ("sbd-val", 40), ("voc-train", 40), ("voc-val", 100), ("overlap", 20)):
        s.add_argument(f"--n-{name}", type=int, default=default)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth_voc)

    s = sub.add_parser("preprocess-voc", help="VOC2011 + SBD -> train.h5 (SBD train) and val.h5 (seg11valid)")
    s.add_argument("--voc2011", type=Path, required=True, help="the VOCdevkit/VOC2011 folder")
    s.add_argument("--sbd", type=Path, required=True, help="the benchmark_RELEASE/dataset folder")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--check-md5", action="store_true", help="check seg11valid against the published list (real data)")
    s.add_argument("--voc2012", type=Path, help="VOCdevkit/VOC2012: also write val2012.h5 (overlaps SBD train)")
    s.set_defaults(func=_preprocess_voc)

    s = sub.add_parser("download", help="download (or, with --data-root, only verify) a real dataset")
    s.add_argument("dataset", choices=("voc", "nyud", "siftflow"))
    s.add_argument("--dest-dir", type=Path, required=True)
    s.add_argument("--data-root", type=Path, help="a folder that already holds the files: verify, do not download")
    _checksums(s)
    s.set_defaults(func=_download)

    s = sub.add_parser("rehearsal-mirror", help="write twins of every download at the real sizes and formats, and "
                                                "their checksum table (config/rehearsal.yaml)")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--twin", type=_json_object, required=True,
                   help='JSON: {"voc": {...}, "nyud": {...}, "siftflow": {...}, "test_images": N, "seed": S} (the '
                   "config's rehearsal section)")
    s.add_argument("--test-year", action="append", default=[], choices=("2011", "2012"))
    s.add_argument("--weights", action="append", default=[], metavar="BACKBONE:SOURCE",
                   help="a classifier's weights file to write, e.g. vgg16:caffe, resnet50:torchvision")
    s.add_argument("--released", action="append", default=[], help="a released model's file to write (fcn8s, ...)")
    s.set_defaults(func=_rehearsal_mirror)

    s = sub.add_parser("synth-nyud", help="write the synthetic NYUDv2 twin (.mat files)")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--n-images", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--frame-scale", type=float, default=1.0,
                   help="render 480s x 640s frames with the camera scaled by s (0.25 -> 120x160; a multiple of 1/160)")
    s.set_defaults(func=_synth_nyud)

    s = sub.add_parser("preprocess-nyud", help="NYUDv2 .mat files -> train.h5 and test.h5 (425x560 crop, 40 classes)")
    s.add_argument("--raw-dir", type=Path, required=True)
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--check-counts", action="store_true", help="require the published 795/654 split (real data)")
    s.set_defaults(func=_preprocess_nyud)

    s = sub.add_parser("hha-nyud", help="HHA-encode every frame of an NYUD store (PNGs + an hha field)")
    s.add_argument("--store", type=Path, required=True)
    s.add_argument("--png-dir", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--train-hha-store", type=Path,
                   help="the train split's HHA store, whose mean_hha other splits take (required but for train)")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=_hha_nyud)

    s = sub.add_parser("synth-siftflow", help="write the synthetic SIFT Flow twin")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--n-train", type=int, default=24)
    s.add_argument("--n-test", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth_siftflow)

    s = sub.add_parser("preprocess-siftflow", help="SIFT Flow -> trainval.h5 and test.h5 (33 semantic + 3 geometric)")
    s.add_argument("--raw-dir", type=Path, required=True)
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--check-counts", action="store_true", help="require the published 2,486/200 split (real data)")
    s.set_defaults(func=_preprocess_siftflow)

    s = sub.add_parser("dataset-stats", help="image counts and class frequencies per split, as JSON")
    s.add_argument("dataset", choices=("voc", "nyud", "siftflow"))
    s.add_argument("--store", type=Path, nargs="+", required=True, help="one store per split")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--check-counts", action="store_true", help="require the published image counts (real data)")
    s.set_defaults(func=_dataset_stats)

    from segbench import models
    from segbench.data.tensors import MODALITIES
    from segbench.evaluation.losses import CRITERIA
    from segbench.infra import precision
    from segbench.pretraining.standins import INPUT_SIZE, pretrain_classifier
    from segbench.training import recipes
    from segbench.training.train import MODES, train

    d = _defaults(pretrain_classifier)
    s = sub.add_parser("pretrain", help="train the classifier stand-in for ImageNet weights")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--backbone", default=d["backbone"], choices=sorted(INPUT_SIZE))
    s.add_argument("--width", type=float, default=d["width"])
    s.add_argument("--crop-size", type=int, default=d["crop_size"], help="phase 1 canvas side (px)")
    s.add_argument("--crop-iterations", type=int, default=d["crop_iterations"], help="phase 1 steps (0 skips it)")
    s.add_argument("--iterations", type=int, default=d["iterations"], help="phase 2 steps at the input size")
    s.add_argument("--batch-size", type=int, default=d["batch_size"])
    s.add_argument("--lr", type=float, default=d["lr"])
    s.add_argument("--clutter", type=int, default=d["clutter"], help="phase 2: most objects behind the labelled one")
    s.add_argument("--dropout", type=float, help="rate of the classifier's dropout layers (default: 0.5)")
    s.add_argument("--precision", default=d["precision_mode"], choices=precision.PRECISIONS)
    s.add_argument("--images", type=Path, help="read the images from this standin-images file (same settings) "
                                               "instead of rendering them")
    _common(s, seed_default=d["seed"])
    _provenance(s)
    s.set_defaults(func=_pretrain)

    s = sub.add_parser("standin-images", help="render the pretrain step's images once, for every stand-in of one "
                                              "input size")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--size", type=int, default=224, help="the classifiers' input size (px)")
    for flag in ("crop-size", "crop-iterations", "iterations", "batch-size", "clutter"):
        s.add_argument(f"--{flag}", type=int, default=d[flag.replace("-", "_")], help="as for pretrain")
    s.add_argument("--seed", type=int, default=d["seed"])
    s.set_defaults(func=_standin_images)

    s = sub.add_parser("prune-trunk", help="a narrower classifier pruned from a trained one (ICNet's half-width "
                                           "ResNet-50), filters of largest L1 norm kept")
    s.add_argument("source", type=Path, help="the classifier to prune (pretrain or fetch-weights output)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--backbone", default="resnet50_half", choices=sorted(models.PRUNED_FROM))
    s.add_argument("--with-summary", action="store_true",
                   help="track the accuracy JSON beside --out too (written for a stand-in source)")
    _common(s, seed=False)
    _provenance(s)
    s.set_defaults(func=_prune_trunk)

    from segbench.pretraining import zoo

    s = sub.add_parser("zoo-train", help="train a backbone's stand-in for the twin's model zoo (zoo/, fp32) and "
                                         "record it in the zoo's manifest")
    s.add_argument("backbone", choices=sorted(zoo.RECIPES))
    s.add_argument("--zoo", type=Path, default=Path("zoo"), help="the zoo folder (default: zoo)")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=_zoo_train)

    s = sub.add_parser("zoo-standin", help="a backbone's stand-in from the model zoo, verified against its manifest")
    s.add_argument("backbone", choices=sorted(zoo.RECIPES))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--zoo", type=Path, default=Path("zoo"), help="the zoo folder (default: zoo)")
    s.add_argument("--width", type=float, help="the width the runs build the backbone at (must be the zoo's)")
    _provenance(s)
    s.set_defaults(func=_zoo_standin)

    s = sub.add_parser("fetch-weights", help="download a backbone's ImageNet weights (torchvision's, or Caffe's VGG16 "
                                             "as pytorch-fcn converted it; checksummed)")
    s.add_argument("--source", choices=("torchvision", "caffe"), default="torchvision",
                   help="torchvision's weights (torchvision input), or caffe: the reference's VGG16 (Caffe input)")
    s.add_argument("backbone", choices=("vgg16", "alexnet", "googlenet", "resnet50", "resnet101"))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--cache", type=Path, required=True, help="download cache folder")
    _checksums(s)
    s.set_defaults(func=_fetch_weights)

    d = _defaults(train)
    s = sub.add_parser("train", help="train one FCN")
    s.add_argument("--train-store", type=Path, required=True)
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--model", required=True, choices=sorted(models.MODELS), metavar="MODEL")
    s.add_argument("--width", type=float, default=d["width"])
    s.add_argument("--init", type=Path, nargs="+",
                   help="pretrained classifier or coarser FCN weights; a late fusion takes its colour and HHA runs")
    s.add_argument("--modality", default=d["modality"], choices=sorted(MODALITIES))
    s.add_argument("--mode", default=d["mode"], choices=MODES)
    s.add_argument("--recipe", default=d["recipe"], choices=recipes.RECIPES)
    s.add_argument("--lr", type=float, help="the recipe's base lr (default: the recipe's)")
    s.add_argument("--lr-scale", type=float, default=d["lr_scale"])
    s.add_argument("--batch-size", type=int, help="images per iteration before sampling (default: the recipe's)")
    s.add_argument("--momentum", type=float, help="default: the recipe's")
    s.add_argument("--iterations", type=int, default=d["iterations"])
    s.add_argument("--sample-p", type=float, default=d["sample_p"])
    s.add_argument("--criterion", default=d["criterion"], choices=sorted(CRITERIA))
    s.add_argument("--gamma", type=float, default=d["gamma"])
    s.add_argument("--val-store", type=Path)
    s.add_argument("--val-every", type=int, default=d["val_every"])
    s.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"])
    s.add_argument("--checkpoint-minutes", type=float, default=d["checkpoint_minutes"],
                   help="also a checkpoint once this many minutes of wall time have passed (default: never by time)")
    s.add_argument("--micro-batch", type=int, default=d["micro_batch"],
                   help="at most this many images per forward pass, gradients accumulated (default: no cap)")
    s.add_argument("--dropout", type=float, help="rate of the dropout layers (default: the architecture's 0.5)")
    s.add_argument("--precision", default=d["precision_mode"], choices=precision.TRAINING_PRECISIONS)
    s.add_argument("--channels-last", action="store_true", default=d["channels_last"])
    s.add_argument("--compile", action="store_true", default=d["compile"], help="train through torch.compile")
    s.add_argument("--deterministic", action="store_true", default=d["deterministic"],
                   help="cuDNN's deterministic algorithms, no benchmark mode (GPU; CPU runs are deterministic anyway)")
    s.add_argument("--num-workers", type=int, default=d["num_workers"],
                   help="processes loading the batches (0: the training process)")
    s.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=d["pin_memory"],
                   help="load batches into page-locked memory (GPU only)")
    _model_options(s)
    _common(s, seed_default=d["seed"])
    _provenance(s)
    s.set_defaults(func=_train)

    s = sub.add_parser("evaluate", help="metrics of saved weights on a split")
    s.add_argument("--store", type=Path, required=True)
    s.add_argument("--weights", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--crf", action="store_true",
                   help="label with the dense CRF on the net's softmax (DeepLab's VOC values unless --crf-params)")
    s.add_argument("--crf-params", type=_json_object, default=None, metavar="JSON",
                   help="CRF weights and bandwidths at 500 px (segbench.evaluation.crf.CRFParams), e.g. "
                        "'{\"w1\": 4, \"theta_alpha\": 67, \"theta_beta\": 3, \"w2\": 3, \"theta_gamma\": 1}'")
    s.add_argument("--crf-iterations", type=int, help="mean-field iterations (default 10)")
    s.add_argument("--crf-scale", choices=("auto", "none"), default="auto",
                   help="auto: spatial bandwidths times the image's longer side / 500; none: as given")
    s.add_argument("--mode", default="fp32",
                   choices=("fp32", "channels_last", "bf16", "compile", "compile_fp32", "int8"),
                   help="inference mode (segbench.evaluation.inference); the default fp32 is what the tables use")
    s.add_argument("--calibration-store", type=Path, default=None,
                   help="int8: the training split's store, whose first 8 images calibrate the quantization")
    _model_options(s)
    _common(s, seed=False)
    _provenance(s)
    s.set_defaults(func=_evaluate)

    s = sub.add_parser("benchmark", help="forward time of a model (Table 1), in several execution modes")
    s.add_argument("model")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--size", type=int, default=500)
    s.add_argument("--width", type=float, default=1.0)
    s.add_argument("--trials", type=int, default=20)
    s.add_argument("--warmup", type=int, default=2, help="untimed passes first (0: the first pass is the first trial)")
    s.add_argument("--modes", default="fp32,channels_last,bf16,compile",
                   help="comma-separated: fp32, channels_last, bf16, compile, compile_fp32, int8, or auto (the "
                        "candidates this machine allows, timed; the JSON names the choice)")
    _model_options(s)
    _common(s, seed=False)
    _provenance(s)
    s.set_defaults(func=_benchmark)

    s = sub.add_parser("fig5", help="Figure 5: whole images vs patch sampling, figure and table")
    s.add_argument("--run", action="append", default=[], metavar="P=LOG_CSV[,LOG_CSV...]",
                   help="one log per seed, comma-separated, in the same seed order for every p")
    s.add_argument("--floor-from", type=Path, metavar="RUN_JSON",
                   help="a training run's run.json whose constant-prediction loss is drawn")
    s.add_argument("--model", default="fcn32s_vgg16")
    s.add_argument("--target-loss", type=float, help="common target loss (default: the highest final smoothed loss)")
    s.add_argument("--out-table", type=Path, required=True)
    s.add_argument("--out-figure", type=Path, required=True)
    _provenance(s)
    s.set_defaults(func=_fig5)

    s = sub.add_parser("table1", help="Table 1 beside the paper")
    s.add_argument("--run", action="append", default=[],
                   metavar='BACKBONE={"model":..,"metrics":[..one per seed..],"benchmark":..}')
    s.add_argument("--out-prefix", type=Path, required=True)
    s.add_argument("--note", default="")
    _provenance(s)
    s.set_defaults(func=_table1)

    for name, func, what in (("table2", _table2, "Table 2 beside the paper"),
                             ("table4", _table4, "Table 4 (NYUDv2 RGB-D) beside the paper"),
                             ("table5", _table5, "Table 5 (SIFT Flow, two-headed) beside the paper")):
        s = sub.add_parser(name, help=what)
        s.add_argument("--run", action="append", default=[], metavar="ROW=METRICS_JSON[,METRICS_JSON...]",
                       help="one evaluation per seed, comma-separated")
        s.add_argument("--out-prefix", type=Path, required=True)
        s.add_argument("--note", default="")
        _provenance(s)
        s.set_defaults(func=func)

    s = sub.add_parser("table-pretrain", help="the pretraining stand-ins' held-out accuracies")
    s.add_argument("--run", action="append", default=[], metavar="BACKBONE=PRETRAIN_JSON")
    s.add_argument("--out-prefix", type=Path, required=True)
    s.add_argument("--note", default="")
    _provenance(s)
    s.set_defaults(func=_table_pretrain)

    s = sub.add_parser("perclass", help="per-class IU and accuracy of one evaluation: CSV and bar figure")
    s.add_argument("--metrics", type=Path, required=True, help="evaluation JSON of segbench evaluate")
    s.add_argument("--out-csv", type=Path, required=True)
    s.add_argument("--out-figure", type=Path, required=True, help="prefix: writes .png and .pdf")
    s.add_argument("--published", type=Path, help="JSON {class name: published IU in percent}, drawn beside ours")
    s.add_argument("--label", default="ours", help="legend label of our bars")
    s.add_argument("--published-label", default="published", help="legend label of the published bars")
    s.add_argument("--title", default="")
    _provenance(s)
    s.set_defaults(func=_perclass)

    s = sub.add_parser("qualitative", help="Figure 4-like grid: image, ground truth and each model's prediction")
    s.add_argument("--store", type=Path, required=True, help="a preprocessed split (e.g. voc/val.h5)")
    s.add_argument("--model", action="append", default=[], metavar="TITLE=WEIGHTS", help="a column; repeat, in order")
    s.add_argument("--id", action="append", help="an image id of the store; repeat (default: --count evenly spaced)")
    s.add_argument("--count", type=int, default=4, help="images shown when no --id is given")
    s.add_argument("--out-figure", type=Path, required=True, help="prefix: writes .png and .pdf")
    s.add_argument("--title", default="")
    _common(s, seed=False)
    _provenance(s)
    s.set_defaults(func=_qualitative)

    s = sub.add_parser("curves", help="training curves of one run: loss and validation mean IU against iteration")
    s.add_argument("--log", type=Path, required=True, help="the run's log.csv")
    s.add_argument("--run", required=True, help="run name, for the title")
    s.add_argument("--out-figure", type=Path, required=True, help="prefix: writes .png and .pdf")
    s.add_argument("--window", type=int, default=20, help="running-mean window in iterations")
    _provenance(s)
    s.set_defaults(func=_curves)

    s = sub.add_parser("released-model", help="download (md5-checked) and convert an authors' released VOC model")
    s.add_argument("variant", choices=("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"))
    s.add_argument("--out", type=Path, required=True, help="segbench weights file to write")
    s.add_argument("--cache", type=Path, required=True, help="download folder (a verified copy there is reused)")
    _checksums(s)
    _provenance(s)
    s.set_defaults(func=_released_model)

    s = sub.add_parser("table-released", help="our scores of the released models beside the published ones")
    s.add_argument("--run", action="append", default=[], metavar="VARIANT=METRICS_JSON")
    s.add_argument("--out-prefix", type=Path, required=True)
    s.add_argument("--note", default="")
    _provenance(s)
    s.set_defaults(func=_table_released)

    s = sub.add_parser("submission", help="Table 3: VOC test predictions in the evaluation server's layout")
    s.add_argument("--store", type=Path, required=True, help="the test split's store")
    s.add_argument("--weights", type=Path, required=True)
    s.add_argument("--out-dir", type=Path, required=True, help="writes results/VOC<year>/Segmentation/comp6_test_cls/")
    s.add_argument("--year", default="2012", choices=("2011", "2012"))
    s.add_argument("--ids-list", type=Path, help="split list (ImageSets/Segmentation/test.txt) the store must match")
    s.add_argument("--archive", type=Path, help="also write this .tar.gz for upload")
    _common(s, seed=False)
    _provenance(s)
    s.set_defaults(func=_submission)

    s = sub.add_parser("table-successors", help="Beyond FCN: FCN-8s and its successors beside their papers")
    s.add_argument("--run", action="append", default=[],
                   metavar='MODEL={"metrics":[..one per seed..],"benchmark":..,"recipe":..,"iterations":..,"width":..}')
    s.add_argument("--out-prefix", type=Path, required=True)
    s.add_argument("--note", default="", help="the data the runs used, named in the caption")
    _provenance(s)
    s.set_defaults(func=_table_successors)


    s = sub.add_parser("perclass-all", help="per-class CSV beside each evaluation, and per-class IU figures")
    s.add_argument("--metrics", type=Path, nargs="+", required=True, help="evaluation JSONs; CSV beside each")
    s.add_argument("--figure", action="append", default=[], metavar="NAME=METRICS_JSON",
                   help="a bar figure FIGURE_DIR/NAME.{png,pdf} of that evaluation; repeat")
    s.add_argument("--figure-dir", type=Path)
    s.add_argument("--published", type=Path, help="JSON {class name: published IU in percent}, drawn beside ours")
    _provenance(s)
    s.set_defaults(func=_perclass_all)

    s = sub.add_parser("curves-all", help="training curves of many runs, one figure per run with every seed")
    s.add_argument("--run", action="append", default=[], metavar="RUN=LOG_CSV[,LOG_CSV...]", required=True)
    s.add_argument("--out-dir", type=Path, required=True, help="writes RUN.png and RUN.pdf there")
    s.add_argument("--window", type=int, default=20, help="running-mean window in iterations")
    _provenance(s)
    s.set_defaults(func=_curves_all)

    s = sub.add_parser("synth-voc-test", help="the twin of a VOC test archive: unlabelled images and test.txt")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--year", default="2012", choices=("2011", "2012"))
    s.add_argument("--n-images", type=int, default=4)
    s.add_argument("--image-size", type=int, default=96)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth_voc_test)

    s = sub.add_parser("voc-test-images", help="extract the evaluation server's VOC<year>test.tar (not downloadable)")
    s.add_argument("--year", default="2012", choices=("2011", "2012"))
    s.add_argument("--dest-dir", type=Path, required=True, help="extracts here; the archive may also lie here")
    s.add_argument("--data-root", type=Path, help="a folder holding VOC<year>test.tar (or its voc/ subfolder)")
    s.set_defaults(func=_voc_test_images)

    s = sub.add_parser("preprocess-voc-test", help="VOC<year> segmentation test images -> a store without labels")
    s.add_argument("--raw-dir", type=Path, required=True, help="a folder holding VOCdevkit/VOC<year> with test.txt")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--year", default="2012", choices=("2011", "2012"))
    _provenance(s)
    s.set_defaults(func=_preprocess_voc_test)

    s = sub.add_parser("table3", help="Table 3: the paper's VOC test rows beside our submission archives")
    s.add_argument("--submission", action="append", default=[], metavar="YEAR=ARCHIVE")
    s.add_argument("--net", default="FCN-8s")
    s.add_argument("--out-prefix", type=Path, required=True)
    s.add_argument("--note", default="")
    _provenance(s)
    s.set_defaults(func=_table3)

    s = sub.add_parser("report-pages", help="HTML pages of the tables and of the provenance, for the report")
    s.add_argument("--table", action="append", default=[], metavar="NAME=PREFIX",
                   help="a table written as PREFIX.md (and its sidecar); writes OUT_DIR/NAME.html")
    s.add_argument("--title", action="append", default=[], metavar="NAME=TITLE")
    s.add_argument("--figure", nargs="*", default=[], type=Path, help="figures whose sidecars the trace starts from")
    s.add_argument("--out-dir", type=Path, required=True, help="also writes provenance.html there")
    s.set_defaults(func=_report_pages)

    s = sub.add_parser("twin-msd", help="write the synthetic MSD-layout volumetric task (NIfTI, dataset.json)")
    s.add_argument("--out-dir", type=Path, required=True, help="writes OUT_DIR/Task505_TwinProstate/")
    s.add_argument("--n-train", type=int, default=24)
    s.add_argument("--n-test", type=int, default=8)
    s.add_argument("--shape", type=int, nargs=3, default=[64, 64, 32], metavar=("X", "Y", "Z"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_twin_msd)

    s = sub.add_parser("train-volumetric", help="train V-Net or 3D U-Net on an MSD-layout task")
    s.add_argument("--task-dir", type=Path, required=True)
    s.add_argument("--model", required=True, choices=sorted(n for n, e in models.MODELS.items() if e.dims == 3))
    s.add_argument("--out", type=Path, required=True, help="weights (.pt); the summary goes beside it (.json)")
    s.add_argument("--width", type=float, required=True)
    s.add_argument("--iterations", type=int, required=True)
    s.add_argument("--n-val", type=int, required=True, help="the last N training cases are held out")
    s.add_argument("--patch", type=int, nargs=3, default=[32, 32, 16], metavar=("X", "Y", "Z"))
    s.add_argument("--recipe", choices=["twin", "paper"], default="twin")
    s.add_argument("--lr", type=float)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--loss", choices=["dice", "sparse_ce"], help="default: dice for vnet, sparse_ce for unet3d")
    s.add_argument("--dice-form", choices=["squared", "plain", "generalised"], default="squared")
    s.add_argument("--dice-foreground-only", action="store_true",
                   help="Dice over the foreground classes only (V-Net's binary form); default: every class")
    s.add_argument("--annotate-every", type=int, help="keep every k-th z-slice of the labels (sparse annotation)")
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    _common(s, seed_default=0)
    s.set_defaults(func=_train_volumetric)

    s = sub.add_parser("evaluate-volumetric", help="Dice per class of volumetric weights on held-out cases")
    s.add_argument("--task-dir", type=Path, required=True)
    s.add_argument("--weights", type=Path, required=True)
    s.add_argument("--n-val", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    _common(s, seed=False)
    s.set_defaults(func=_evaluate_volumetric)

    s = sub.add_parser("table-volumetric", help="Dice per class of the volumetric nets, mean ± std over seeds")
    s.add_argument("--run", action="append", default=[], metavar="MODEL=EVAL_JSON", help="once per model and seed")
    s.add_argument("--out-prefix", type=Path, required=True)
    s.add_argument("--note", default="")
    s.set_defaults(func=_table_volumetric)

    return p


def _defaults(func) -> dict:
    """The keyword defaults of a library function: the one source of the CLI's defaults."""
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _provenance(s) -> None:
    s.add_argument("--provenance", type=Path, metavar="CONFIG_JSON",
                   help="the run's resolved configuration (written by the workflow): also write the provenance "
                        "sidecar <output>.provenance.json of each output")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of options, e.g. '{{\"output_stride\": 8}}'; "
                                         f"got {text!r}")
    return value


def _model_options(s) -> None:
    s.add_argument("--model-options", type=_json_object, default=None, metavar="JSON",
                   help="the model's options as a JSON object (its declaration's options; config "
                        "successors.model_options), e.g. '{\"output_stride\": 8}'")


def _common(s, seed: bool = True, seed_default: int | None = None) -> None:
    s.add_argument("--device", default="auto", help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N")
    s.add_argument("--threads", type=int)
    if seed:
        s.add_argument("--seed", type=int, default=seed_default)


def _checksums(s) -> None:
    s.add_argument("--checksums", type=Path, help="a checksum table (JSON {md5: {file: md5}}) that replaces the "
                   "published checksums: the rehearsal's twin files (segbench rehearsal-mirror)")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. An error the user can fix (``SegbenchError``, ``ValueError``) becomes one log line
    and exit code 1, a stop on a signal (``Preempted``) exit code 75; anything else is a bug and propagates
    with its traceback (the error stays the last line). A command that succeeds logs its peak memory last
    (``segbench.infra.memory``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args.func(args)
    except Preempted as err:
        log.error("%s", err)
        return Preempted.exit_code
    except (SegbenchError, ValueError) as err:
        log.error("%s: %s", type(err).__name__, err)
        return 1
    log.info("%s", peak_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
