"""The whole workflow at a tiny size, as a user runs it: `snakemake --cores N` from the repository root."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import tables_diff
import torch
from conftest import ROOT

from segbench.data.store import Store
from segbench.evaluation.submission import check_submission
from segbench.infra.provenance import config_sha256, provenance_path

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args, cwd=ROOT, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "results"
    args = ["--configfile", "config/config.yaml", "tests/tiny-config.yaml", "--config", f"results={out}",
            "--nolock"]
    _snakemake("--cores", "2", *args)
    return out, args


@pytest.mark.slow
def test_workflow_runs_end_to_end_and_writes_every_table(tiny_run):
    out, _ = tiny_run
    for name in ("table1", "table2", "fig5"):
        for ext in ("csv", "tex", "md"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert (out / "figures" / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "tables" / "table2.csv", newline="") as f:
        nets = [row["net"] for row in csv.DictReader(f)]
    assert nets == ["FCN-32s-fixed", "FCN-32s", "FCN-16s", "FCN-8s", "FCN-32s-fixed, random trunk"]
    assert (out / "logs" / "train" / "fcn8s" / "seed1.log").exists()
    with open(out / "tables" / "successors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["key"], row["n"], row["iterations"]) for row in rows] == [
        ("fcn8s_vgg16", "2", "4"), ("unet_same", "1", "3"), ("dilation8_vgg16", "1", "2"),
        ("dilation8_basic_vgg16", "1", "2"), ("icnet_resnet50", "1", "2")]
    context = json.loads((out / "train" / "succ-dilation8_basic_vgg16" / "seed1" / "run.json").read_text())
    assert (context["mode"], context["init"]) == ("context", str(out / "train/succ-dilation8_vgg16/seed1/model.pt"))
    with open(out / "tables" / "pretrain.csv", newline="") as f:
        pruned = {row["backbone"]: row for row in csv.DictReader(f)}["resnet50_half"]
    assert pruned["steps"] == "pruned from resnet50"
    # the three 224 px stand-ins (VGG16, GoogLeNet, ResNet-50) read one rendered file, deleted once they are done
    assert (out / "logs" / "pretrain" / "images-224px.log").exists()
    assert not (out / "pretrain" / "images-224px.h5").exists()
    caption = (out / "tables" / "successors.md").read_text()
    assert "from scratch: U-Net (same padding)" in caption
    assert ("seeds per model: 2 (FCN-8s); 1 (U-Net (same padding), Dilation8 front end, Dilation8 + basic context, "
            "ICNet (ResNet-50, half width)); one seed has no spread") in caption
    assert ("rows by trunk: vgg16 (FCN-8s, Dilation8 front end, Dilation8 + basic context), resnet50_half pruned "
            "from resnet50 (ICNet (ResNet-50, half width))") in caption


@pytest.mark.slow
def test_workflow_leaves_the_report_and_every_sidecar(tiny_run):
    out, _ = tiny_run
    report = (out / "report.html").read_text()
    for category in ("Table 1", "Table 2", "Table 3", "Figure 5", "Pretraining", "Successors", "Provenance"):
        assert f'"{category}"' in report
    config = json.loads((out / "provenance" / "config.json").read_text())
    assert config["results"] == str(out) and config["seeds"] == [1, 2]
    traced = [out / "evaluate" / "fcn8s" / "seed2" / "val.json", out / "train" / "fcn8s" / "seed1" / "model.pt",
              out / "train" / "fcn8s" / "seed1" / "log.csv", out / "pretrain" / "vgg16.pt",
              out / "benchmark" / "fcn32s_vgg16.json", out / "figures" / "fig5.png", out / "tables" / "table2",
              out / "figures" / "qualitative" / "voc.png", out / "figures" / "qualitative" / "nyud.png",
              out / "figures" / "qualitative" / "siftflow.png", out / "figures" / "curves" / "fig5-p0.5.png",
              out / "pretrain" / "resnet50_half.pt", out / "benchmark" / "icnet_resnet50.json",
              out / "figures" / "curves" / "succ-unet_same.png", out / "tables" / "successors"]
    for path in traced:
        record = json.loads(provenance_path(path).read_text())
        job = record.get("table_job", record)
        assert job["config_sha256"] == config_sha256(config) and set(job["git"]) == {"commit", "dirty"}
    train = json.loads(provenance_path(traced[1]).read_text())
    assert train["seeds"] == [1] and train["batch_size"] == 2 and train["precision"] in ("fp32", "bf16")
    assert [i["path"] for i in train["inputs"]] == [str(out / "preprocessed/voc/train.h5"),
                                                    str(out / "train/fcn16s/seed1/model.pt")]
    rows = json.loads(provenance_path(out / "tables" / "table2").read_text())["rows"]
    assert [e["path"] for e in rows["FCN-8s"]["metrics"]] == [str(out / f"evaluate/fcn8s/seed{s}/val.json")
                                                               for s in (1, 2)]
    for metrics in out.glob("evaluate/*/seed*/val.json"):
        assert metrics.with_name("val.perclass.csv").read_text().startswith("index,class,iu_percent")
    store = Store(out / "preprocessed" / "voc" / "test2012.h5")
    check_submission(out / "submission/results/VOC2012/Segmentation/comp6_test_cls",
                     {i: store.image(k).shape[:2] for k, i in enumerate(store.ids)})
    with tarfile.open(out / "submission" / "VOC2012.tar.gz") as tar:
        pngs = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert pngs == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in sorted(store.ids)]
    assert "FCN-8s (ours)" in (out / "tables" / "table3.md").read_text()
    assert "FCN-16s" in (out / "report" / "table2.html").read_text()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_run):
    _, args = tiny_run
    result = _snakemake("--cores", "2", "--dry-run", *args)
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_no_rule_log_holds_a_carriage_return(tiny_run):
    out, _ = tiny_run
    logs = list((out / "logs").rglob("*.log"))
    assert len(logs) > 50 and [p for p in logs if b"\r" in p.read_bytes()] == []
    assert "train fcn8s/seed1: 4/4 (100%)" in (out / "logs" / "train" / "fcn8s" / "seed1.log").read_text()


@pytest.fixture(scope="module")
def forced_rerun(tiny_run, tmp_path_factory):
    """The tiny run's tables, then the same run again with --forceall (in place)."""
    out, args = tiny_run
    before = tmp_path_factory.mktemp("before")
    shutil.copytree(out / "tables", before / "tables")
    started = time.time()
    _snakemake("--cores", "2", "--forceall", *args)
    return out, before, started


@pytest.mark.slow
def test_forceall_retrains_every_run_from_iteration_0_and_gives_the_same_values(forced_rerun):
    out, before, started = forced_rerun
    runs = sorted(out.glob("train/*/seed*/run.json"))
    assert len(runs) >= 20
    for path in runs:
        record = json.loads(path.read_text())
        assert path.stat().st_mtime >= started and record["start_iteration"] == 0, path
        assert not path.with_name("checkpoint.pt").exists()
    names, problems = tables_diff.differences(before, out)
    assert problems == [] and {"table1.csv", "table2.csv", "fig5.csv", "successors.csv"} <= set(names)


def _hard_stop_args(results):
    """The tiny configuration with its fcn32s-fixed run long enough to be caught between two checkpoints."""
    longer = results.parent / f"{results.name}.yaml"
    longer.write_text("train: {iterations: {fcn32s-fixed: 60}, checkpoint_every: 2}\n")
    return ["--configfile", "config/config.yaml", "tests/tiny-config.yaml", str(longer), "--config",
            f"results={results}"]


@pytest.mark.slow
def test_a_hard_stop_recovers_as_the_readme_says_with_an_uninterrupted_runs_values(tmp_path):
    """kill -9 on the whole process group once the first checkpoint exists (an out-of-memory kill, a lost SSH
    session), then the README's recovery: `snakemake --unlock`, then the same command."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    target = "evaluate/fcn32s-fixed/seed1/val.json"
    run_dir = killed / "train" / "fcn32s-fixed" / "seed1"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen([*SNAKEMAKE, str(killed / target), "--cores", "2", *_hard_stop_args(killed)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while proc.poll() is None and not (run_dir / "checkpoint.pt").exists():
            os.sched_yield()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself (exit {proc.returncode}) before a checkpoint"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "model.pt").exists()
    locked = _snakemake(str(killed / target), "--cores", "2", *_hard_stop_args(killed), check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr  # what the user sees
    _snakemake("--unlock", *_hard_stop_args(killed))
    _snakemake(str(killed / target), "--cores", "2", *_hard_stop_args(killed))
    assert json.loads((run_dir / "run.json").read_text())["start_iteration"] > 0
    assert not (run_dir / "checkpoint.pt").exists()
    _snakemake(str(reference / target), "--cores", "2", *_hard_stop_args(reference))
    resumed, uninterrupted = (json.loads((r / target).read_text()) for r in (killed, reference))
    assert {k: resumed[k] for k in ("hist", "mean_iu", "loss")} == {k: uninterrupted[k] for k in ("hist", "mean_iu",
                                                                                                   "loss")}
    weights = [torch.load(r / "train/fcn32s-fixed/seed1/model.pt", weights_only=True)["state_dict"]
               for r in (killed, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_paper_dry_run_lists_released_models_and_the_test_submissions():
    result = _snakemake("--dry-run", "--configfile", "config/paper.yaml", "--config", "results=/nonexistent/paper",
                        "--quiet", "rules")
    counts = dict(line.split() for line in (result.stdout + result.stderr).splitlines() if len(line.split()) == 2)
    for rule, n in (("released_model", "3"), ("evaluate_released", "3"), ("table_released", "1"),
                    ("voc_test_images", "2"), ("submission", "2"), ("table3", "1"), ("report", "1")):
        assert counts.get(rule) == n, result.stdout


def _dry_run_outputs(*args) -> set[str]:
    """Every output path of a dry run of ``args`` (all jobs, as if nothing existed)."""
    result = _snakemake("--dry-run", "--forceall", "--nolock", *args)
    return {path for line in re.findall(r"^    output: (.*)$", result.stdout, flags=re.M) for path in line.split(", ")}


def test_paper_dry_run_trains_every_successor_with_imagenet_trunks_and_tables_them():
    outputs = _dry_run_outputs("--configfile", "config/config.yaml", "config/paper.yaml", "--config",
                               "results=/nonexistent/paper")
    successors = ["unet", "unet_same", "unetpp", "attention_unet", "dilation8_vgg16", "dilation8_basic_vgg16",
                  "dilation8_large_vgg16", "pspnet_resnet50", "pspnet_resnet101", "deeplabv3_resnet50",
                  "deeplabv3_resnet101", "deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "icnet_resnet50",
                  "deeplab_largefov_vgg16", "deeplab_aspp_vgg16", "deeplabv2_resnet101",
                  *[f"{h}_resnet{d}" for h in ("dilated_fcn", "glore", "ginet", "hdnet") for d in (50, 101)]]
    r = "/nonexistent/paper"
    assert {p for p in outputs if p.startswith(f"{r}/train/succ-") and p.endswith("model.pt")} == {
        f"{r}/train/succ-{m}/seed1337/model.pt" for m in successors}
    assert {f"{r}/benchmark/{m}.json" for m in ["fcn8s_vgg16", *successors]} <= outputs
    assert {p for p in outputs if p.startswith(f"{r}/pretrain/") and p.endswith(".pt")} == {
        f"{r}/pretrain/{b}.pt" for b in ("alexnet", "googlenet", "resnet101", "resnet50", "resnet50_half", "vgg16")}
    assert f"{r}/pretrain/resnet50_half.json" not in outputs  # pruned from ImageNet weights: no stand-in accuracy
    assert {f"{r}/tables/successors.md", f"{r}/tables/successors.provenance.json", f"{r}/report/successors.html",
            f"{r}/figures/curves/succ-icnet_resnet50.png"} <= outputs


def test_model_options_reach_train_and_evaluate_commands(tmp_path):
    """successors.model_options: build and train options on `segbench train`, evaluate options on `segbench
    evaluate`, nothing on the other runs' commands."""
    extra = tmp_path / "options.yaml"
    extra.write_text("successors:\n  model_options:\n"
                     "    deeplabv3plus_resnet50: {output_stride: 8, eval_output_stride: 8}\n"
                     "    unet_same: {weighted_loss: true}\n")
    result = _snakemake("--dry-run", "--forceall", "--nolock", "--printshellcmds", "--configfile", "config/config.yaml",
                        "config/successors.yaml", str(extra), "--config", f"results={tmp_path / 'r'}")
    commands = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith(("segbench ", "env "))
                or " segbench train " in line or "segbench evaluate " in line]
    flagged = {c.split("--model-options ", 1)[1].split("'", 2)[1] for c in commands if "--model-options" in c}
    layer = {'{"rates": [5]}', '{"rates": [2, 5, 7, 10]}', '{"windows": [3, 5, 7, 9]}'}  # successors.yaml's twin
    assert flagged == {'{"output_stride": 8}', '{"eval_output_stride": 8}', '{"weighted_loss": true}', *layer}, flagged
    deeplab = [c for c in commands if "succ-deeplabv3plus_resnet50" in c and "--model-options" in c]
    assert any("evaluate" in c and "eval_output_stride" in c for c in deeplab)
    assert any("--train-store" in c and '"output_stride": 8}' in c for c in deeplab)
    assert not [c for c in commands if "--model-options" in c and "succ-" not in c]


def test_no_successor_models_means_no_successor_jobs_and_no_table(tmp_path):
    outputs = _dry_run_outputs("--configfile", "config/config.yaml", "tests/tiny-config.yaml", "--config",
                               f"results={tmp_path}", "successors={'models': []}")
    relative = {os.path.relpath(p, tmp_path) for p in outputs}
    assert [p for p in relative if "succ" in p or "resnet" in p] == []
    assert "tables/table2.md" in relative and "report/table2.html" in relative


def test_the_default_takes_its_stand_ins_from_the_zoo_and_trains_none(tmp_path):
    result = _snakemake("--dry-run", "--forceall", "--nolock", "--printshellcmds", "--config", f"results={tmp_path}")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout.split("Job stats:")[1].split("total")[0], flags=re.M))
    assert int(jobs["zoo_standin"]) == 5 and not {"pretrain", "standin_images", "prune_trunk"} & set(jobs)
    commands = re.findall(r"segbench zoo-standin .*$", result.stdout, flags=re.M)
    assert any("vgg16 " in c and "--zoo zoo" in c and "--width 0.125" in c for c in commands), commands
    assert any("resnet50_half " in c and "--width 0.25" in c for c in commands), commands  # ICNet's, fine-tuned
    layered = _snakemake("--dry-run", "--forceall", "--nolock", "--configfile", "config/config.yaml",
                         "config/successors.yaml", "--config", f"results={tmp_path}")  # U-Net from scratch: none
    assert not re.search(r"^(pretrain|standin_images|prune_trunk)\s", layered.stdout, flags=re.M)


@pytest.mark.parametrize("config, message", [
    ("models:\n  width: {vgg16: 0.25}\n", "models.width builds vgg16 at 0.25, the zoo's are at 0.125"),
])
def test_what_the_zoo_cannot_give_stops_the_workflow_before_any_job(tmp_path, config, message):
    (tmp_path / "over.yaml").write_text(config)
    result = _snakemake("--dry-run", "--nolock", "--configfile", "config/config.yaml", str(tmp_path / "over.yaml"),
                        "--config", f"results={tmp_path}", check=False)
    assert result.returncode != 0
    assert f"pretrain.source is zoo, but {message}: set pretrain.source: synthetic" in result.stdout + result.stderr


@pytest.mark.parametrize("overrides, rendered", [
    ([], True),  # VGG16 and GoogLeNet take 224 px: one shared file
    (["successors={'models': []}", "table1={'backbones': ['alexnet', 'vgg16']}"], False),  # one 224 px stand-in
])
def test_stand_ins_share_rendered_images_only_where_two_take_one_size(tmp_path, overrides, rendered):
    outputs = _dry_run_outputs("--configfile", "config/config.yaml", "--config", f"results={tmp_path}",
                               "pretrain={'source': 'synthetic'}", *overrides)
    images = {os.path.relpath(p, tmp_path) for p in outputs if "/pretrain/images-" in p}
    assert images == ({"pretrain/images-224px.h5"} if rendered else set())


def test_lint_is_clean():
    result = _snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("override, key", [
    ("train={'iterationz': 3}", "iterationz"),
    ("seed=abc", "seed"),
])
def test_bad_config_fails_naming_the_key(override, key):
    result = _snakemake("--dry-run", "--config", override, check=False)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr
