"""The run table (segbench.runs) as a function of the config: the successors' runs."""

import copy

import pytest
import yaml
from conftest import ROOT

from segbench import runs
from segbench.pretraining import imagenet as pretrained


def _merged(base: dict, layer: dict) -> dict:
    """``layer`` on top of ``base``, nested mappings merged key by key (as Snakemake layers config files)."""
    out = copy.deepcopy(base)
    for key, value in layer.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _config(*layers: dict, files=("config/config.yaml",)) -> dict:
    config = {}
    for name in files:
        config = _merged(config, yaml.safe_load((ROOT / name).read_text()))
    for layer in layers:
        config = _merged(config, layer)
    return config


def _successors(table):
    return {name: run for name, run in table.items() if "successors" in run.tags}


def test_figure_5_runs_take_every_seed_or_their_own():
    fig5 = {n: r.seeds for n, r in runs.run_table(_config()).items() if "fig5" in r.tags}
    assert fig5 == {"fig5-p1.0": None, "fig5-p0.5": None, "fig5-p0.25": None}  # None: the config's seeds
    fewer = runs.run_table(_config({"fig5": {"seeds": [2]}}))
    assert {r.seeds for r in fewer.values() if "fig5" in r.tags} == {(2,)} and fewer["fcn32s"].seeds is None
    paper = runs.run_table(_config(files=("config/config.yaml", "config/paper.yaml")))
    assert {r.seeds for r in paper.values() if "fig5" in r.tags} == {(1337,)}


def test_default_config_runs_the_successors_on_pretrained_trunks():
    succ = _successors(runs.run_table(_config()))
    assert list(succ) == ["succ-unet_vgg16", "succ-deeplab_largefov_vgg16", "succ-deeplab_aspp_vgg16",
                          "succ-icnet_resnet50"]
    assert all(run.init.kind != "random" for run in succ.values())
    # the heads on FCN-8s's trunk: the zoo's VGG16 at FCN-8s's width, DeepLab's rates scaled to the twin
    assert {n: (r.init, r.width, r.model_options) for n, r in succ.items() if "deeplab_" in n} == {
        "succ-deeplab_largefov_vgg16": (runs.Init("pretrained", "vgg16"), 0.125, {"rates": [5]}),
        "succ-deeplab_aspp_vgg16": (runs.Init("pretrained", "vgg16"), 0.125, {"rates": [2, 5, 7, 10]})}


def test_dilated_heads_layer_adds_deeplabv3plus_the_control_and_the_graph_heads_on_one_trunk():
    default = _successors(runs.run_table(_config()))
    succ = _successors(runs.run_table(_config(files=("config/config.yaml", "config/dilated_heads.yaml"))))
    heads = ["succ-deeplabv3plus_resnet50", "succ-dilated_fcn_resnet50", "succ-glore_resnet50", "succ-ginet_resnet50",
             "succ-hdnet_resnet50"]
    assert list(succ) == [*default, *heads]
    assert {n: succ[n] for n in default} == default  # the default's runs, reused
    assert {(succ[n].init, succ[n].width, succ[n].iterations) for n in heads} == {
        (runs.Init("pretrained", "resnet50"), 0.25, 800)}
    assert succ["succ-hdnet_resnet50"].model_options == {"windows": [3, 5, 7, 9]}


def test_crf_runs_are_those_of_the_configuration_and_a_typo_is_refused():
    table = runs.run_table(_config())
    assert runs.crf_runs(_config(), table) == ["succ-deeplab_largefov_vgg16", "succ-deeplab_aspp_vgg16"]
    layered = _config(files=("config/config.yaml", "config/successors.yaml"))
    assert runs.crf_runs(layered, runs.run_table(layered)) == [
        "fcn8s", "succ-deeplab_largefov_vgg16", "succ-deeplab_aspp_vgg16"]
    # a narrower model list: the DeepLab rows' CRF waits unused, as their options do
    narrow = _config({"successors": {"models": ["icnet_resnet50"]}, "crf": {"runs": layered["crf"]["runs"]}})
    assert runs.crf_runs(narrow, runs.run_table(narrow)) == ["fcn8s"]
    for name in ("fcn8z", "succ-deeplab_largefov"):
        typo = _config({"crf": {"runs": ["fcn8s", name]}})
        with pytest.raises(ValueError, match=rf"crf.runs names \['{name}'\], which are not runs"):
            runs.crf_runs(typo, table)


def test_successors_config_adds_the_u_nets_from_scratch_dilation_and_pspnet_to_the_default_runs():
    default = _successors(runs.run_table(_config()))
    succ = _successors(runs.run_table(_config(files=("config/config.yaml", "config/successors.yaml"))))
    assert list(succ) == ["succ-unet_same", "succ-unetpp", "succ-attention_unet", "succ-unet_vgg16",
                          "succ-dilation8_vgg16", "succ-dilation8_basic_vgg16", "succ-pspnet_resnet50",
                          "succ-deeplabv3plus_resnet50", "succ-icnet_resnet50", "succ-deeplab_largefov_vgg16",
                          "succ-deeplab_aspp_vgg16", "succ-dilated_fcn_resnet50", "succ-glore_resnet50",
                          "succ-ginet_resnet50", "succ-hdnet_resnet50"]
    assert {n: succ[n] for n in default} == default  # the default's runs, reused
    assert {n: (r.model, r.width, r.init, r.mode) for n, r in succ.items()} == {
        "succ-unet_same": ("unet_same", 0.125, runs.Init("random"), "full"),
        "succ-unetpp": ("unetpp", 0.125, runs.Init("random"), "full"),
        "succ-attention_unet": ("attention_unet", 0.125, runs.Init("random"), "full"),
        "succ-unet_vgg16": ("unet_vgg16", 0.125, runs.Init("pretrained", "vgg16"), "full"),
        "succ-dilation8_vgg16": ("dilation8_vgg16", 0.125, runs.Init("pretrained", "vgg16"), "full"),
        "succ-dilation8_basic_vgg16": ("dilation8_basic_vgg16", 0.125, runs.Init("run", "succ-dilation8_vgg16"),
                                       "context"),
        "succ-pspnet_resnet50": ("pspnet_resnet50", 0.25, runs.Init("pretrained", "resnet50"), "full"),
        "succ-deeplabv3plus_resnet50": ("deeplabv3plus_resnet50", 0.25, runs.Init("pretrained", "resnet50"), "full"),
        "succ-icnet_resnet50": ("icnet_resnet50", 0.25, runs.Init("pretrained", "resnet50_half"), "full"),
        **{f"succ-deeplab_{v}_vgg16": (f"deeplab_{v}_vgg16", 0.125, runs.Init("pretrained", "vgg16"), "full")
           for v in ("largefov", "aspp")},
        **{f"succ-{h}_resnet50": (f"{h}_resnet50", 0.25, runs.Init("pretrained", "resnet50"), "full")
           for h in ("dilated_fcn", "glore", "ginet", "hdnet")},
    }
    assert succ["succ-deeplab_aspp_vgg16"].model_options == {"rates": [2, 5, 7, 10]}  # the twin's scaled rates
    # as many images as FCN-8s over its four stages (4 x 200 x 4 = 3,200); from scratch, plus the VGG16 zoo
    # stand-in's pretraining images ((1,600 + 1,500) x 32 = 99,200)
    scratch = ("succ-unet_same", "succ-unetpp", "succ-attention_unet")
    assert {n: r.iterations for n, r in succ.items()} == {**{n: 800 for n in succ}, **{n: 25_600 for n in scratch}}
    for run in succ.values():
        assert (run.recipe, run.seeds, run.dataset) == ("short", (1,), "voc")
        assert (run.lr, run.momentum, run.batch_size, run.tags) == (None, None, None, ("successors",))


def test_successor_lengths_follow_their_rules():
    config = _config()
    assert runs.fcn8s_images(config) == (200 + 200 + 200 + 200) * 4
    assert runs.fcn8s_images(_config({"train": {"from_fixed": False, "batch_size": 2}})) == 600 * 2
    assert runs.standin_images(config) == (1600 + 1500) * 32  # the zoo's VGG16 recipe
    synthetic = _config({"pretrain": {"source": "synthetic"}})
    assert runs.standin_images(synthetic) == (400 + 150) * 32  # the config's pretrain settings
    odd = _config({"successors": {"batch_size": 3, "models": ["unet_same", "pspnet_resnet50"]}})
    assert {n: r.iterations for n, r in _successors(runs.run_table(odd)).items()} == {
        "succ-unet_same": -(-(3200 + 99_200) // 3), "succ-pspnet_resnet50": -(-3200 // 3)}  # rounded up
    plain = _config({"successors": {"iterations": 7, "scratch_iterations": None, "models": ["unet_same"]}})
    assert runs.run_table(plain)["succ-unet_same"].iterations == 7
    with pytest.raises(ValueError, match="pretrain.source is torchvision"):
        runs.run_table(_config({"pretrain": {"source": "torchvision"}, "successors": {"models": ["unet_same"]}}))
    with pytest.raises(ValueError, match=r"successors iterations 'many': expected a positive integer, null, fcn8s"):
        runs.run_table(_config({"successors": {"iterations": "many"}}))


def test_rows_share_the_trunk_they_descend_from():
    table = runs.run_table(_config(files=("config/config.yaml", "config/successors.yaml")))
    assert {n: runs.trunk_of(table, n) for n in ("fcn8s", *_successors(table))} == {
        "fcn8s": "vgg16", "succ-unet_same": None, "succ-unetpp": None, "succ-attention_unet": None,
        "succ-unet_vgg16": "vgg16", "succ-dilation8_vgg16": "vgg16",
        "succ-dilation8_basic_vgg16": "vgg16", "succ-pspnet_resnet50": "resnet50",
        "succ-deeplabv3plus_resnet50": "resnet50", "succ-icnet_resnet50": "resnet50_half",
        "succ-deeplab_largefov_vgg16": "vgg16", "succ-deeplab_aspp_vgg16": "vgg16",
        **{f"succ-{h}_resnet50": "resnet50" for h in ("dilated_fcn", "glore", "ginet", "hdnet")}}
    assert runs.trunk_of(table, "nyud-rgb-hha") == "vgg16"  # a late fusion: through its colour stream


SUCCESSORS = ("config/config.yaml", "config/successors.yaml")


def test_the_stand_ins_of_the_resnet_trunks_are_pretrained():
    table = runs.run_table(_config(files=SUCCESSORS))
    assert runs.pretrained_backbones(runs.run_table(_config())) == runs.pretrained_backbones(table) == [
        "alexnet_caffe", "googlenet", "resnet50", "resnet50_half", "vgg16"]
    paths = runs.RunPaths("r")
    assert paths.init(table["succ-pspnet_resnet50"], 1) == ["r/pretrain/resnet50.pt"]
    assert paths.init(table["succ-unet_same"], 1) == []


def test_paper_config_trains_every_successor_with_its_own_recipe_from_imagenet_weights():
    table = runs.run_table(_config(files=("config/config.yaml", "config/paper.yaml")))
    scratch, vgg, r50, r101 = (runs.Init("random"), runs.Init("pretrained", "vgg16"),
                               runs.Init("pretrained", "resnet50"), runs.Init("pretrained", "resnet101"))
    front = runs.Init("run", "succ-dilation8_vgg16")
    assert {n: (r.recipe, r.iterations, r.init) for n, r in _successors(table).items()} == {
        "succ-unet": ("unet", 30_000, scratch),
        "succ-unet_same": ("unet", 30_000, scratch),
        "succ-unetpp": ("unetpp", 30_000, scratch),
        "succ-attention_unet": ("attention_unet", 30_000, scratch),
        "succ-dilation8_vgg16": ("dilation", 60_000, vgg),
        "succ-dilation8_basic_vgg16": ("dilation", 60_000, front),
        "succ-dilation8_large_vgg16": ("dilation", 60_000, front),
        "succ-pspnet_resnet50": ("pspnet", 30_000, r50),
        "succ-pspnet_resnet101": ("pspnet", 30_000, r101),
        "succ-deeplabv3_resnet50": ("deeplabv3", 30_000, r50),
        "succ-deeplabv3_resnet101": ("deeplabv3", 30_000, r101),
        "succ-deeplabv3plus_resnet50": ("deeplabv3plus", 30_000, r50),
        "succ-deeplabv3plus_resnet101": ("deeplabv3plus", 30_000, r101),
        "succ-icnet_resnet50": ("icnet", 30_000, runs.Init("pretrained", "resnet50_half")),  # pruned ImageNet R50
        "succ-deeplab_largefov_vgg16": ("deeplab_v1", 6_000, vgg),
        "succ-deeplab_aspp_vgg16": ("deeplab_v2", 20_000, vgg),
        "succ-deeplabv2_resnet101": ("deeplab_v2", 20_000, r101),
        "succ-dilated_fcn_resnet50": ("pspnet", 30_000, r50),  # the control: PSPNet's recipe, as its ablation
        "succ-dilated_fcn_resnet101": ("pspnet", 30_000, r101),
        "succ-glore_resnet50": ("glore", 40_000, r50),
        "succ-glore_resnet101": ("glore", 40_000, r101),
        "succ-ginet_resnet50": ("ginet", 40_000, r50),
        "succ-ginet_resnet101": ("ginet", 40_000, r101),
        "succ-hdnet_resnet50": ("hdnet", 30_000, r50),
        "succ-hdnet_resnet101": ("hdnet", 30_000, r101),
    }
    assert table["succ-deeplab_largefov_vgg16"].model_options == {"rates": [12]}  # the published rates
    assert {(r.width, r.seeds, r.batch_size) for r in _successors(table).values()} == {(1.0, (1337,), None)}
    assert runs.pretrained_backbones(table) == ["alexnet", "googlenet", "resnet101", "resnet50", "resnet50_half",
                                                "vgg16"]


def test_torchvision_backbones_are_those_with_weights():
    assert runs.TORCHVISION_BACKBONES == tuple(sorted(pretrained.WEIGHTS))


def test_section_settings_reach_every_successor_run():
    config = _config({"successors": {"models": ["icnet_resnet50", "deeplabv3_resnet101"], "seeds": [3, 4],
                                     "iterations": None, "recipe": "pspnet", "batch_size": 2}})
    succ = _successors(runs.run_table(config))
    assert [(r.name, r.recipe, r.iterations, r.seeds, r.batch_size, r.init.name) for r in succ.values()] == [
        ("succ-icnet_resnet50", "pspnet", 30_000, (3, 4), 2, "resnet50_half"),
        ("succ-deeplabv3_resnet101", "pspnet", 30_000, (3, 4), 2, "resnet101")]


@pytest.mark.parametrize("models", [["dilation8_large_vgg16", "dilation8_vgg16", "dilation8_basic_vgg16"],
                                    ["dilation8_vgg16", "dilation8_basic_vgg16"]])
def test_a_context_module_trains_on_one_front_end_run(models):
    succ = _successors(runs.run_table(_config({"successors": {"models": models}}, files=SUCCESSORS)))
    front = "succ-dilation8_vgg16"
    assert sorted(succ) == sorted([front, *(f"succ-{m}" for m in models if m != "dilation8_vgg16")])
    assert list(succ)[0] == front  # before the runs that start from it
    assert (succ[front].init, succ[front].mode) == (runs.Init("pretrained", "vgg16"), "full")
    for name in set(succ) - {front}:
        assert (succ[name].init, succ[name].mode) == (runs.Init("run", front), "context")
    paths = runs.RunPaths("r")
    assert paths.init(succ["succ-dilation8_basic_vgg16"], 2) == ["r/train/succ-dilation8_vgg16/seed2/model.pt"]


def test_icnet_alone_still_needs_the_resnet50_it_is_pruned_from():
    table = runs.run_table(_config({"successors": {"models": ["icnet_resnet50"]}}, files=SUCCESSORS))
    assert runs.pretrained_backbones(table) == ["alexnet_caffe", "googlenet", "resnet50", "resnet50_half", "vgg16"]


def test_no_successor_models_means_no_successor_runs():
    table = runs.run_table(_config({"successors": {"models": []}}))
    assert _successors(table) == {}
    assert "resnet50" not in runs.pretrained_backbones(table)


def test_a_null_length_needs_a_recipe_that_has_one():
    config = _config({"successors": {"iterations": None}}, files=SUCCESSORS)  # recipe short
    with pytest.raises(ValueError, match=r"successors.iterations is null \(the recipe's published length\) but "
                                         r"recipe 'short' has none"):
        runs.run_table(config)


def test_an_fcn_recipe_is_refused_for_a_successor():
    with pytest.raises(ValueError, match=r"successors.recipe 'heavy' does not fit unet_same: model 'unet_same' is "
                                         r"not an FCN-32s"):
        runs.run_table(_config({"successors": {"recipe": "heavy"}}, files=SUCCESSORS))


def test_an_fcn_among_the_successor_models_is_refused():
    with pytest.raises(ValueError, match=r"successors.models has 'fcn8s_vgg16', which is not a successor model"):
        runs.run_table(_config({"successors": {"models": ["fcn8s_vgg16"]}}))


def test_a_single_image_batch_is_refused_where_batch_norm_pools_the_whole_image():
    config = _config({"successors": {"models": ["unet_same", "pspnet_resnet50"], "batch_size": 1}})
    with pytest.raises(ValueError, match=r"pspnet_resnet50 trains with batch size 1 \(successors.batch_size or "
                                         r"recipe 'short'\), but its pooling branch's batch norm needs at least 2"):
        runs.run_table(config)
    assert runs.run_table(_config({"successors": {"models": ["unet_same"], "batch_size": 1}}))[
        "succ-unet_same"].batch_size == 1


def test_training_jobs_are_ordered_by_the_work_left_on_their_chain():
    config = _config()
    table = runs.run_table(config)
    work, priority = runs.chain_work(table, config), runs.train_priorities(table, config)
    px = 128 * 128
    assert work["fcn8s"] == 200 * 4 * px
    assert work["fcn32s-fixed"] == 4 * 200 * 4 * px  # its chain: 32s-fixed, 32s, 16s, 8s
    assert work["fig5-p0.25"] == 80 * 8 * px  # batch 2 / p images per iteration
    assert work["siftflow-32s"] == 2 * 60 * 4 * 256 * 256
    assert work["nyud-rgb"] == 80 * 4 * 120 * 160 + work["nyud-rgb-hha"]  # then the late fusion of both streams
    assert work["nyud-hha"] == work["nyud-rgb"]
    assert [priority[n] for n in ("fcn32s-fixed", "fcn32s", "fcn16s", "fcn8s")] == [49, 37, 24, 12]
    assert max(priority.values()) == 49 and min(priority.values()) >= 1
    assert 2 * 49 < runs.BENCHMARK_PRIORITY  # two one-core training jobs never outrank one all-core benchmark
