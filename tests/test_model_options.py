"""Model declarations and options: a model declared in its family file is all the pipeline needs, and
config successors.model_options reach the net (build), the loss (train) and the scoring (evaluate)."""

import json

import pytest
import torch
from conftest import ROOT, write_mixed_store
from test_runs import _config

from segbench import models, runs
from segbench.evaluation.evaluate import evaluate
from segbench.models.registry import Declared, collect
from segbench.reporting.successors import table_successors
from segbench.training import recipes
from segbench.training.train import train

W = 1 / 16


def test_every_declared_model_builds_and_names_what_the_tables_need():
    assert len(models.MODELS) == 39 and "fcn8s_siftflow_vgg16" not in models.MODELS
    for name, entry in models.MODELS.items():
        assert entry.name == name and entry.display
        assert entry.backbone is None or entry.backbone in models.BACKBONES
        assert entry.recipe is None or entry.recipe in recipes.RECIPES
        assert entry.front_end is None or entry.front_end in models.MODELS
        if entry.published is not None:
            # mean_iu_crf: the paper's figure with the dense CRF (DeepLab v1 / v2), for the table's +CRF column
            assert set(entry.published) - {"mean_iu_crf"} == {"mean_iu", "pixel_acc", "split", "setting", "source"}
    with_figure = {n for n, e in models.MODELS.items() if e.published}
    assert with_figure == {"fcn8s_vgg16"} | {n for n, e in models.MODELS.items() if e.recipe}


def test_collect_refuses_a_name_declared_twice():
    with pytest.raises(ValueError, match="model 'unet' is declared twice"):
        collect(("unet", "unet"))


def test_options_are_checked_against_the_declaration():
    with pytest.raises(ValueError, match=r"model pspnet_resnet50 has no option 'output_stride'; its options: none"):
        models.build("pspnet_resnet50", 3, width=W, output_stride=8)
    with pytest.raises(ValueError, match=r"\['tile'\] of model unet are not build options"):
        models.build("unet", 3, width=W, tile=572)
    net = models.build("deeplabv3_resnet50", 3, width=W, output_stride=8)
    assert net.max_stride == 8


def test_config_model_options_reach_the_run_and_are_refused_when_undeclared():
    succ = {"models": ["deeplabv3_resnet50", "unet"],
            "model_options": {"deeplabv3_resnet50": {"output_stride": 8, "eval_output_stride": 8},
                              "unet": {"weighted_loss": True}}}
    table = runs.run_table(_config({"successors": succ}, files=("config/config.yaml", "config/successors.yaml")))
    deeplab = table["succ-deeplabv3_resnet50"]
    assert deeplab.model_options == {"eval_output_stride": 8, "output_stride": 8}
    assert deeplab.options_for("build", "train") == {"output_stride": 8}
    assert deeplab.options_for("evaluate") == {"eval_output_stride": 8}
    assert table["succ-unet"].model_options == {"weighted_loss": True}
    assert table["fcn8s"].options == ()
    bad = {"models": ["unet"], "model_options": {"unet": {"output_stride": 8}}}
    with pytest.raises(ValueError, match=r"successors.model_options.unet: model unet has no option 'output_stride'; "
                                         r"its options: weighted_loss \(train"):
        runs.run_table(_config({"successors": bad}, files=("config/config.yaml", "config/successors.yaml")))
    stray = {"models": ["unet"], "model_options": {"icnet_resnet5": {}}}
    with pytest.raises(ValueError, match=r"model_options names \['icnet_resnet5'\], which are not successor models; "
                                         r"expected names from \['attention_unet', "):
        runs.run_table(_config({"successors": stray}, files=("config/config.yaml", "config/successors.yaml")))
    # a listed model's options apply; an unlisted one's wait (the layer's DeepLab rates under a narrower list)
    waiting = runs.run_table(_config({"successors": {"models": ["unet"], "model_options": {"icnet_resnet50": {}}}},
                                     files=("config/config.yaml", "config/successors.yaml")))
    assert "succ-icnet_resnet50" not in waiting and "succ-deeplab_largefov_vgg16" not in waiting


def _train(tmp_path, store, name, model, **kw):
    return train(train_store=store, out_dir=tmp_path / name, model_name=model, width=W, recipe="short",
                 iterations=2, batch_size=2, seed=3, progress=False, checkpoint_every=0, **kw)


def test_weighted_loss_changes_training_and_is_recorded(tmp_path):
    store = write_mixed_store(tmp_path / "train.h5", n=4)
    plain = _train(tmp_path, store, "plain", "unet_same")
    weighted = _train(tmp_path, store, "weighted", "unet_same", model_options={"weighted_loss": True})
    meta = json.loads((weighted.parent / "run.json").read_text())
    assert meta["model_options"] == {"weighted_loss": True}
    a, b = (torch.load(p, weights_only=True) for p in (plain, weighted))
    assert b["options"] == {}  # a train option is not a build option
    assert not torch.equal(a["state_dict"]["score.weight"], b["state_dict"]["score.weight"])


def test_evaluate_options_score_the_same_weights_differently(tmp_path):
    store = write_mixed_store(tmp_path / "train.h5", sizes=((64, 64),), n=4)
    weights = _train(tmp_path, store, "deeplab", "deeplabv3_resnet50", model_options={"output_stride": 16})
    os16 = evaluate(store_path=store, model_path=weights, out_json=tmp_path / "os16.json", progress=False)
    os8 = evaluate(store_path=store, model_path=weights, out_json=tmp_path / "os8.json", progress=False,
                   model_options={"output_stride": 16, "eval_output_stride": 8})
    assert os8["model_options"] == {"output_stride": 16, "eval_output_stride": 8} and "model_options" not in os16
    assert os8["hist"] != os16["hist"] or os8["loss"] != pytest.approx(os16["loss"], rel=1e-6)
    # U-Net's overlap tiles score exactly as the whole image does (the default step keeps the pooling grid)
    unet = _train(tmp_path, store, "unet", "unet")
    whole = evaluate(store_path=store, model_path=unet, out_json=tmp_path / "whole.json", progress=False)
    tiled = evaluate(store_path=store, model_path=unet, out_json=tmp_path / "tiled.json", progress=False,
                     model_options={"tile": 188 + 16})
    assert tiled["hist"] == whole["hist"] and tiled["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_cli_refuses_model_options_that_are_no_json_object(capsys):
    from segbench.cli import main

    for text, says in (("[8]", "expected a JSON object of options"), ("{output_stride: 8", "not JSON")):
        with pytest.raises(SystemExit):
            main(["evaluate", "--store", "s", "--weights", "w", "--out", "o", "--model-options", text])
        assert says in capsys.readouterr().err


def test_a_toy_model_needs_its_declaration_and_the_config_that_names_it(monkeypatch, tmp_path):
    """What "adding a model" in the README promises: the declaration (here put into the registry as the
    registration line would) is enough for the run table, the recipe and the successors table."""
    toy = Declared("toy_unet", models.MODELS["unet_same"].build, display="Toy U-Net", backbone=None,
                   recipe="toy", fixed={"padding": "same"},
                   published={"mean_iu": 12.5, "pixel_acc": None, "split": "toy val", "setting": "a test",
                              "source": "this test"})
    settings = dict(models.RECIPES["unet"], lr=5e-4, iterations=1234)
    monkeypatch.setitem(models.MODELS, "toy_unet", toy)
    monkeypatch.setitem(models.RECIPES, "toy", settings)
    config = _config({"successors": {"models": ["toy_unet"], "recipe": None, "iterations": None,
                                     "scratch_iterations": None}},
                     files=("config/config.yaml", "config/successors.yaml"))
    run = runs.run_table(config)["succ-toy_unet"]
    assert (run.model, run.recipe, run.iterations, run.init) == ("toy_unet", "toy", 1234, runs.Init("random"))
    assert recipes.recipe("toy", model_name="toy_unet").lr == 5e-4
    metrics = tmp_path / "val.json"
    metrics.write_text(json.dumps({"mean_iu": 0.2, "pixel_acc": 0.5, "train": {"learned": True}}))
    paths = table_successors({"toy_unet": {"metrics": [metrics], "recipe": "toy", "iterations": 10}},
                             tmp_path / "succ")
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "| Toy U-Net | 1 | 20.0 | -- |" in md and "| 12.5 | -- | toy val | a test | this test |" in md


def test_readme_adding_a_model_names_the_three_places():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Adding a model"):]
    section = section[:section.index("\n## ", 4)]
    for needle in ("MODELS = [", "FAMILY_MODULES", "successors:"):
        assert needle in section
