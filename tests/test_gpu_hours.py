"""benchmarks/gpu_hours.py: dry-run parsing, what each job computes, and the FLOP counts (no snakemake run)."""

import math
import sys

import pytest
import torch
from conftest import ROOT

from segbench import models
from segbench.data import nyud, siftflow, voc
from segbench.models.cards import count_flops

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_hours as gh  # noqa: E402

W = 0.125  # narrow nets: the counts run on shapes only, but the test stays fast
RES = ("    resources: tmpdir=/tmp, disk_mb=50000, disk=50 GB, disk_mib=47684, mem_mb=16000, mem=16 GB, "
       "mem_mib=15259, runtime={runtime}, gpu=1, cpus_per_task=7")
CPU_RES = "    resources: tmpdir=/tmp, disk_mb=<TBD>, disk=<TBD>, mem_mb=2000, mem=2 GB, mem_mib=1908, runtime=15"
P = "results/paper"


def _train(run, model, store, *, modality="rgb", recipe="heavy", mode="full", iterations=1000, extra=""):
    return (f"rule train:\n    output: {P}/train/{run}/seed1337/model.pt\n    jobid: 1\n"
            f"    reason: Forced execution\n    wildcards: run={run}, seed=1337\n{RES.format(runtime=1440)}\n"
            f"Shell command: segbench train --train-store {P}/preprocessed/{store} --out-dir {P}/train/{run}/seed1337 "
            f"--model {model} --width {W} --mode {mode} --modality {modality} --init {P}/pretrain/vgg16.pt "
            f"--iterations {iterations} --sample-p 1.0 --recipe {recipe} --criterion cross_entropy --gamma 2.0 "
            "--lr-scale 1.0 --precision fp32 --num-workers 6 --checkpoint-every 1000 --seed 1337 --device cuda "
            f"{extra}--threads 1 --provenance {P}/provenance/config.json > {P}/logs/train/{run}/seed1337.log 2>&1\n")


def _evaluate(run, store):
    return (f"rule evaluate:\n    wildcards: run={run}, seed=1337\n{RES.format(runtime=120)}\n"
            f"Shell command: segbench evaluate --store {P}/preprocessed/{store} --weights "
            f"{P}/train/{run}/seed1337/model.pt --out {P}/evaluate/{run}/seed1337/val.json --device cuda --threads 1 "
            f"> {P}/logs/evaluate/{run}/seed1337.log 2>&1\n")


CANNED = "\n".join([
    "Building DAG of jobs...\nJob stats:\njob      count\n-----  -----\ntrain   4\n\n[Tue Dec  1 19:28:07 2026]",
    "localrule report_pages:\n    jobid: 2\n" + CPU_RES + "\nShell command: segbench report-pages --title "
    "'table1=Table 1: classifiers as FCNs' --run unet='{\"metrics\": [\"a.json\"], \"recipe\": \"unet\"}' "
    "--title 'it''s broken' \"unbalanced > results/paper/logs/trace/report_pages.log 2>&1\n",
    _train("fcn32s", "fcn32s_vgg16", "voc/train.h5", extra=f"--val-store {P}/preprocessed/voc/val.h5 --val-every 400 "),
    _train("nyud-rgb-hha", "fcn32s_rgbhha_vgg16", "nyud/train-hha.h5", modality="rgb_hha"),
    _train("siftflow-32s", "fcn32s_siftflow_vgg16", "siftflow/trainval.h5", iterations=10),
    _train("succ-unet", "unet", "voc/train.h5", recipe="unet", iterations=30),
    _evaluate("nyud-rgb-hha", "nyud/test-hha.h5"),
    _evaluate("fcn32s", "voc/val.h5"),
    "rule benchmark:\n    wildcards: model=fcn8s_vgg16\n" + RES.format(runtime=60) + "\nShell command: segbench "
    f"benchmark fcn8s_vgg16 --out {P}/benchmark/fcn8s_vgg16.json --size 64 --width {W} --trials 20 --warmup 2 "
    "--modes fp32,channels_last,bf16,compile --device cuda --threads 1 > x.log 2>&1\n",
    "rule all:\n    input: results/paper/report.html\n    jobid: 0\n" + CPU_RES + "\nShell command: None\n"
    "Job stats:\njob      count\n-----  -----\ntotal   9\n\nThis was a dry-run (flag -n).",
])


@pytest.fixture(scope="module")
def jobs():
    return gh.parse_dry_run(CANNED)


@pytest.fixture(scope="module")
def runs(jobs):
    return gh.training_runs(jobs)


def _job(jobs, rule, **wildcards):
    (job,) = [j for j in jobs if j["rule"] == rule and all(j["wildcards"].get(k) == v for k, v in wildcards.items())]
    return job


def test_parse_dry_run_parses_only_gpu_commands(jobs):
    assert [j["rule"] for j in jobs] == ["report_pages"] + ["train"] * 4 + ["evaluate"] * 2 + ["benchmark"]
    report = jobs[0]
    assert report["gpus"] == 0 and report["args"] is None  # its quoted JSON and broken quote are never split
    assert report["command"].startswith("segbench report-pages --title 'table1=Table 1")
    assert report["resources"]["mem_mb"] == "2000" and report["resources"]["disk"] == "<TBD>"
    train = _job(jobs, "train", run="fcn32s")
    assert train["wildcards"] == {"run": "fcn32s", "seed": "1337"}
    assert train["resources"]["gpu"] == "1" and train["resources"]["runtime"] == "1440" and train["gpus"] == 1
    a = train["args"]
    assert (a.command, a.model, a.mode, a.modality, a.iterations, a.val_every) == (
        "train", "fcn32s_vgg16", "full", "rgb", 1000, 400)
    assert a.width == W and str(a.val_store).endswith("voc/val.h5") and a.batch_size is None


def test_segbench_argv_stops_at_redirections_and_finds_torchrun():
    assert gh.segbench_argv("segbench evaluate --store a.h5 --weights b.pt --out c.json > log 2>&1") == [
        "evaluate", "--store", "a.h5", "--weights", "b.pt", "--out", "c.json"]
    assert gh.segbench_argv("torchrun --standalone --nproc-per-node 2 -m segbench.cli train --model x 2> e")[:3] == [
        "train", "--model", "x"]
    with pytest.raises(ValueError, match="no segbench command"):
        gh.segbench_argv("python -m snakemake --report r.html")


def test_gpu_count_reads_gpu_and_gres():
    assert gh.gpu_count({"gpu": "2"}) == 2
    assert gh.gpu_count({"gres": "gpu:a100:4"}) == 4
    assert gh.gpu_count({"mem_mb": "16000"}) == 0


def test_evaluate_maps_to_its_run_through_the_seed_folder(jobs, runs):
    assert set(runs) == {"fcn32s", "nyud-rgb-hha", "siftflow-32s", "succ-unet"}
    assert gh.run_name(f"{P}/train/nyud-rgb-hha/seed1337/model.pt") == "nyud-rgb-hha"
    assert gh.run_name(f"{P}/train/nyud-rgb-hha/seed7") == "nyud-rgb-hha"
    assert gh.run_name(f"{P}/train/fcn8s/model.pt") == "fcn8s"
    job = _job(jobs, "evaluate", run="nyud-rgb-hha")
    net = gh.weights_net(job["args"].weights, runs)
    assert net == gh.Net("fcn32s_rgbhha_vgg16", 40, 6, W, "full")
    work = gh.job_work(job, runs)
    assert work.forwards == nyud.REAL_COUNTS["test"] == 654
    assert work.flops == {"tf32": 654 * gh.forward_flops(net, 425, 560)}
    released = gh.weights_net(f"{P}/released/fcn16s/model.pt", runs)
    assert released == gh.Net("fcn16s_vgg16", 21)
    with pytest.raises(ValueError, match="no train job"):
        gh.weights_net(f"{P}/train/unknown/seed1/model.pt", runs)


def test_late_fusion_trains_on_six_channels_and_forty_classes(jobs, runs):
    run = runs["nyud-rgb-hha"]
    assert run.net == gh.Net("fcn32s_rgbhha_vgg16", nyud.NUM_CLASSES, 6, W, "full")
    assert (run.dataset, run.size, run.images_per_iteration, run.validations) == ("nyud", (425, 560), 1, 0)
    work = gh.job_work(_job(jobs, "train", run="nyud-rgb-hha"), runs)
    assert work.flops == {"train": 1000 * gh.step_flops(run.net, 425, 560), "tf32": 0.0}
    assert work.input == "nyud 425 x 560 x 6"
    # two VGG16 streams: twice the single-stream net's step on 3 of the channels, less one upsampler (shared)
    single = gh.step_flops(gh.Net("fcn32s_vgg16", 40, 3, W), 425, 560)
    assert 1.9 < work.flops["train"] / 1000 / single < 2.0


def test_voc_training_adds_its_validations(jobs, runs):
    run = runs["fcn32s"]
    net = gh.Net("fcn32s_vgg16", len(voc.CLASS_NAMES), 3, W, "full")
    work = gh.job_work(_job(jobs, "train", run="fcn32s"), runs)
    # every 400 iterations and at the end: 400, 800, 1000
    assert run.validations == 3 and work.forwards == 3 * voc.PUBLISHED_COUNTS["val"]
    assert work.flops["train"] == 1000 * gh.step_flops(net, 375, 500)
    assert work.flops["tf32"] == 3 * 736 * gh.forward_flops(net, 375, 500)


def test_successor_trains_on_its_recipe_crop(jobs, runs):
    run = runs["succ-unet"]
    assert run.size == (388, 388) and run.recipe.crop == 388
    work = gh.job_work(_job(jobs, "train", run="succ-unet"), runs)
    assert work.input == "voc crop 388 x 388 x 3"
    assert work.flops["train"] == 30 * gh.step_flops(run.net, 388, 388)


def test_siftflow_counts_both_heads(runs):
    run = runs["siftflow-32s"]
    assert run.net.classes == len(siftflow.CLASSES) == 33 and run.size == (256, 256)
    with torch.device("meta"):
        net = models.build("fcn32s_siftflow_vgg16", 33, width=W)
    assert net(torch.zeros(1, 3, 64, 64, device="meta")).shape[1] == 36  # both heads' scores
    # the step runs and differentiates both heads on the shared trunk: more than a one-headed net's step
    one_head = gh.step_flops(gh.Net("fcn32s_vgg16", 33, 3, W), 256, 256)
    assert gh.step_flops(run.net, 256, 256) > one_head


def test_benchmark_counts_each_mode_at_its_precision(jobs, runs):
    work = gh.job_work(_job(jobs, "benchmark"), runs)
    fwd = gh.forward_flops(gh.Net("fcn8s_vgg16", 21, width=W), 64, 64)
    assert work.forwards == 22 * 4
    assert work.flops == {"tf32": 2 * 22 * fwd, "bf16": 2 * 22 * fwd}


def test_forward_equals_count_flops_of_a_real_net():
    net = models.build("fcn8s_vgg16", 21, width=W).eval()
    x = torch.zeros(1, 3, 96, 128)
    assert gh.forward_flops(gh.Net("fcn8s_vgg16", 21, width=W), 96, 128) == count_flops(net, x)
    # the fake-tensor counter agrees with count_flops on the forward part of a training step
    fake_forward, _ = gh._count_step(gh.Net("fcn8s_vgg16", 21, width=W), 96, 128, backward=False)
    assert fake_forward == count_flops(net.train(), x)


def test_training_step_is_about_three_forwards_and_fixed_about_one():
    full, fixed = gh.Net("fcn32s_vgg16", 21, width=W), gh.Net("fcn32s_vgg16", 21, width=W, mode="fixed")
    fwd = gh.forward_flops(full, 96, 128)
    assert 2.85 < gh.step_flops(full, 96, 128) / fwd < 3.05
    assert 1.0 <= gh.step_flops(fixed, 96, 128) / fwd < 1.02
    assert gh.kept_bytes(fixed, 96, 128) < gh.kept_bytes(full, 96, 128) / 10  # the frozen trunk keeps nothing
    context = gh.Net("dilation8_basic_vgg16", 21, width=W, mode="context")
    assert 1.0 <= gh.step_flops(context, 64, 64) / gh.forward_flops(context, 64, 64) < 1.05


def test_auxiliary_heads_count_in_training_only():
    net = gh.Net("pspnet_resnet50", 21, width=W)
    train_forward, _ = gh._count_step(net, 64, 64, backward=False)
    assert train_forward > gh.forward_flops(net, 64, 64)  # the aux head runs in training mode only


def test_gpu_hours_arithmetic():
    rate = {"tf32": 1e12, "bf16": 2e12}
    hours = gh.gpu_hours({"train": 3600e12, "tf32": 3600e12, "bf16": 7200e12}, rate)
    assert hours == {"tf32": pytest.approx(1 + 1 + 1), "bf16": pytest.approx(0.5 + 1 + 1)}


def test_main_prints_the_tables(monkeypatch, capsys, jobs):
    monkeypatch.setattr(gh, "dry_run_jobs", lambda configfiles: jobs)
    gh.main(["--gpu", "a100"])
    out = capsys.readouterr().out
    assert out.startswith("8 jobs (and `all`): 7 ask for a GPU; the 1 jobs of 1 CPU rules (report_pages) ask for none")
    rows = [line for line in out.splitlines() if line.startswith("| train |") or line.startswith("| evaluate |")]
    assert len(rows) == 6
    total = next(line for line in out.splitlines() if line.startswith("| **total** |"))
    rate = {"tf32": 0.40 * 156e12, "bf16": 0.35 * 312e12}
    runs = gh.training_runs(jobs)
    expected = sum(gh.gpu_hours(gh.job_work(j, runs).flops, rate)["tf32"] for j in jobs if j["gpus"])
    assert f"**{expected:.1f}**" in total
    assert math.isfinite(expected) and expected > 0


def test_cpu_jobs_of_network_rules_are_parsed_too():
    text = _train("fcn8s", "fcn8s_vgg16", "voc/train.h5").replace(", gpu=1", "").replace("--device cuda",
                                                                                           "--device cpu")
    (job,) = gh.parse_dry_run(text)
    assert job["gpus"] == 0 and job["args"].model == "fcn8s_vgg16"


def test_measured_table_divides_the_counted_step_by_the_second_iterations_time(jobs, runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / P / "train" / "fcn32s" / "seed1337" / "log.csv"
    log.parent.mkdir(parents=True)
    log.write_text("iteration,images_seen,train_loss,wall_s,val_loss,val_mean_iu\n"
                   "1,1,3.0,9.5,,\n2,2,2.9,13.5,2.8,0.01\n")
    rule_log = tmp_path / P / "logs" / "train" / "fcn32s" / "seed1337.log"
    rule_log.parent.mkdir(parents=True)
    rule_log.write_text("...\npeak memory: 3072 MB (largest child process 10 MB)\n")
    lines = gh.measured_table(jobs, runs)
    assert len(lines) == 3  # header, rule, and the one run with a log (the others have none here)
    run = runs["fcn32s"]
    h, w = run.size
    gflop = gh.step_flops(run.net, h, w) * run.images_per_iteration / 1e9
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "fcn32s" and cells[2] == str(run.images_per_iteration)
    assert cells[3] == f"{gflop:,.0f}" and cells[4] == "4.00" and cells[5] == f"{gflop / 4.0:.0f}"
    assert cells[6] == f"{gh.train_memory_gb(run.net, h, w, 1):.1f}" and cells[7] == "3.0"
    paper = {"fcn32s": run._replace(iterations=100_000, images_per_iteration=20)}
    (extended,) = [line for line in gh.measured_table(jobs, runs, paper=paper)[2:]]
    assert extended.endswith(f"| 3.0 | 100,000 x 20 | {4.0 * 20:.1f} | {80 * 100_000 / 86400:,.1f} |")
    log.write_text("iteration,images_seen,train_loss,wall_s,val_loss,val_mean_iu\n1,1,3.0,9.5,,\n")
    assert len(gh.measured_table(jobs, runs)) == 2  # one iteration: nothing measured after the warm-up
