import pytest
import torch

from segbench import models
from segbench.recipes import RECIPES, apply_schedule, make_optimizer, recipe


@pytest.mark.parametrize("name, model_name, lr", [
    ("heavy", "fcn32s_vgg16", 1e-10), ("heavy", "fcn16s_vgg16", 1e-12), ("heavy", "fcn8s_vgg16", 1e-14),
    ("heavy", "fcn8s_atonce_vgg16", 1e-10),
    ("paper", "fcn32s_vgg16", 1e-4), ("paper", "fcn16s_vgg16", 1e-6), ("paper", "fcn8s_vgg16", 1e-6),
    ("paper", "fcn32s_alexnet", 1e-3), ("paper", "fcn32s_alexnet_tv", 1e-3), ("paper", "fcn32s_googlenet", 5e-5),
])
def test_learning_rate_per_model(name, model_name, lr):
    assert recipe(name, model_name=model_name).lr == pytest.approx(lr, rel=1e-12)


def test_recipe_settings():
    heavy, paper = recipe("heavy", model_name="fcn32s_vgg16"), recipe("paper", model_name="fcn32s_vgg16")
    assert (heavy.batch_size, heavy.momentum, heavy.weight_decay, heavy.reduction) == (1, 0.99, 5e-4, "sum")
    assert (paper.batch_size, paper.momentum, paper.weight_decay, paper.reduction) == (20, 0.9, 5e-4, "mean")


@pytest.mark.parametrize("name", ["heavy", "paper"])
def test_staged_nets_divide_the_base_lr_and_overrides_apply(name):
    # base_lr replaces the 32s value; 16s is 100x lower in both recipes; lr_scale multiplies last
    r32 = recipe(name, model_name="fcn32s_vgg16", base_lr=1e-6, lr_scale=3.0, batch_size=4, momentum=0.5)
    r16 = recipe(name, model_name="fcn16s_vgg16", base_lr=1e-6, lr_scale=3.0)
    r8 = recipe(name, model_name="fcn8s_vgg16", base_lr=1e-6, lr_scale=3.0)
    assert r32.lr == pytest.approx(3e-6) and r16.lr == pytest.approx(3e-8)
    assert r8.lr == pytest.approx({"heavy": 3e-10, "paper": 3e-8}[name])
    assert (r32.batch_size, r32.momentum) == (4, 0.5)


@pytest.mark.parametrize("model_name", ["fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn32s_alexnet"])
def test_short_recipe_divides_by_width_not_by_stage(model_name):
    rec = recipe("short", model_name=model_name, width=0.125)
    assert rec.lr == pytest.approx(2.5e-5 / 0.125)
    assert (rec.batch_size, rec.momentum, rec.reduction, rec.optimizer, rec.schedule) == (4, 0.9, "mean", "adam",
                                                                                         "poly")
    assert recipe("short", model_name=model_name, width=0.25, base_lr=1e-4, lr_scale=2.0).lr == pytest.approx(8e-4)


def test_poly_schedule_decays_to_zero_and_fixed_stays():
    short, heavy = recipe("short", model_name="fcn32s_vgg16"), recipe("heavy", model_name="fcn32s_vgg16")
    assert short.lr_factor(0, 100) == 1.0 and short.lr_factor(50, 100) == pytest.approx(0.5 ** 0.9)
    assert short.lr_factor(99, 100) == pytest.approx(0.01 ** 0.9)
    assert heavy.lr_factor(99, 100) == 1.0
    model = models.build("fcn32s_vgg16", 3, width=1 / 16)
    opt = make_optimizer(model, short)
    assert isinstance(opt, torch.optim.AdamW)
    apply_schedule(opt, short, 50, 100)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"weights": short.lr * 0.5 ** 0.9, "biases": 2 * short.lr * 0.5 ** 0.9})


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown recipe 'adam'; expected one of \['heavy', 'paper', 'short'\]"):
        recipe("adam", model_name="fcn32s_vgg16")
    with pytest.raises(ValueError, match=r"unknown model 'fcn4s_vgg16'; expected one of \[.*'fcn32s_vgg16'"):
        recipe("heavy", model_name="fcn4s_vgg16")
    with pytest.raises(ValueError, match="lr_scale must be > 0"):
        recipe("heavy", model_name="fcn32s_vgg16", lr_scale=0.0)


def _groups(optimizer):
    return {g["name"]: g for g in optimizer.param_groups}


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("model_name", ["fcn8s_vgg16", "fcn32s_alexnet"])
def test_parameter_groups(name, model_name):
    torch.manual_seed(0)
    model = models.build(model_name, 3, width=0.0625)
    rec = recipe(name, model_name=model_name)
    groups = _groups(make_optimizer(model, rec))
    assert groups["weights"]["lr"] == rec.lr and groups["weights"]["weight_decay"] == 5e-4
    assert groups["biases"]["lr"] == 2 * rec.lr and groups["biases"]["weight_decay"] == 0.0
    momentum = [g["betas"][0] if rec.optimizer == "adam" else g["momentum"] for g in groups.values()]
    assert momentum == [rec.momentum, rec.momentum]
    named = dict(model.named_parameters())
    ids = {k: {id(p) for p in g["params"]} for k, g in groups.items()}
    trainable = {n for n, p in named.items() if p.requires_grad}
    frozen = set(named) - trainable
    assert any("upscore" in n for n in frozen)  # the bilinear upsamplers exist and are frozen
    assert ids["biases"] == {id(named[n]) for n in trainable if n.endswith(".bias")}
    assert ids["weights"] == {id(named[n]) for n in trainable if not n.endswith(".bias")}
    assert not {id(named[n]) for n in frozen} & (ids["weights"] | ids["biases"])
    assert {id(named["score_fr.weight"])} <= ids["weights"] and {id(named["score_fr.bias"])} <= ids["biases"]


def test_frozen_trunk_leaves_only_score_fr():
    model = models.freeze_trunk(models.build("fcn32s_vgg16", 3, width=0.0625))
    groups = _groups(make_optimizer(model, recipe("heavy", model_name="fcn32s_vgg16")))
    assert [p is model.score_fr.weight for p in groups["weights"]["params"]] == [True]
    assert [p is model.score_fr.bias for p in groups["biases"]["params"]] == [True]


def test_one_step_applies_bias_lr_x2_and_no_bias_decay():
    # a 1x1 conv: after one SGD step from zero momentum, the update is -lr * (grad + wd * w)
    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(3.0)
    rec = recipe("paper", model_name="fcn32s_vgg16", base_lr=0.1)
    optimizer = make_optimizer(conv, rec)
    conv(torch.ones(1, 1, 1, 1)).sum().backward()  # d/dw = 1, d/db = 1
    optimizer.step()
    assert conv.weight.item() == pytest.approx(2.0 - 0.1 * (1.0 + 5e-4 * 2.0))
    assert conv.bias.item() == pytest.approx(3.0 - 0.2 * 1.0)


def test_no_trainable_parameter_raises():
    conv = torch.nn.Conv2d(1, 1, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(conv, recipe("heavy", model_name="fcn32s_vgg16"))
