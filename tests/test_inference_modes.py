"""Inference modes: which ones a CPU's flags allow, the ceil-mode pooling rewrite of the int8 path, its shape
check, and int8's agreement with float32 on a trained net (tiny FCNs; the int8 tests export, calibrate and
compile one each, a minute or two on 2 cores)."""

import copy

import pytest
import torch
from torch import nn

from segbench import models
from segbench.evaluation import inference
from segbench.evaluation.benchmark import choose_mode
from segbench.infra import precision

CPU = torch.device("cpu")
ALWAYS = ["fp32", "channels_last", "compile_fp32"]
needs_torchao = pytest.mark.skipif(inference.torchao_missing() is not None,
                                   reason="torchao (the int8 extra) is not installed")


@pytest.mark.parametrize("flags, allowed", [
    (set(), ALWAYS),
    ({"avx2", "fma", "avx512f"}, ALWAYS),
    ({"avx512f", "avx512_vnni"}, ALWAYS + ["int8"]),  # the Xeon of issue 26: VNNI, bf16 emulated
    ({"avx2", "avx_vnni"}, ALWAYS + ["int8"]),
    ({"avx512f", "avx512_vnni", "avx512_bf16"}, ["fp32", "channels_last", "bf16", "compile", "compile_fp32", "int8"]),
    ({"amx_tile", "amx_bf16", "amx_int8"}, ["fp32", "channels_last", "bf16", "compile", "compile_fp32", "int8"]),
    ({"avx512_bf16"}, ["fp32", "channels_last", "bf16", "compile", "compile_fp32"]),
], ids=["none", "avx512", "vnni", "avx_vnni", "vnni_bf16", "amx", "bf16_only"])
@needs_torchao
def test_candidates_follow_the_cpu_flags(flags, allowed):
    got, excluded = inference.candidates(CPU, flags)
    assert got == allowed
    assert sorted(excluded) == sorted(set(inference.MODES) - set(allowed))
    if "bf16" in excluded:
        assert "emulated" in excluded["bf16"] and excluded["compile"] == excluded["bf16"]
    if "int8" in excluded:
        assert "avx512_vnni" in excluded["int8"]


def test_int8_is_no_candidate_without_torchao_or_on_a_gpu(monkeypatch):
    monkeypatch.setattr(inference.importlib.util, "find_spec", lambda name: None)
    allowed, excluded = inference.candidates(CPU, {"avx512_vnni"})
    assert "int8" not in allowed and "torchao is not installed" in excluded["int8"]
    monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda: True)
    allowed, excluded = inference.candidates(torch.device("cuda"), {"avx512_vnni"})
    assert allowed == ["fp32", "channels_last", "bf16", "compile", "compile_fp32"]
    assert excluded == {"int8": "the x86 int8 quantizer targets CPUs"}


@pytest.mark.parametrize("flags, expected", [
    (set(), "fp32"), ({"avx512f", "avx512_vnni"}, "fp32"), ({"amx_int8", "amx_tile"}, "fp32"),
    ({"avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")])
def test_training_precision_auto_is_bf16_only_with_bf16_in_hardware(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    assert precision.resolve("auto", CPU) == expected
    assert precision.native_bf16(CPU) == (expected == "bf16") == precision.native_bf16(CPU, flags)


def test_the_benchmarks_auto_never_chooses_bf16_where_it_is_emulated():
    timed = {"fp32": {"median_ms": 2000.0, "argmax_agreement": 1.0},
             "bf16": {"median_ms": 600.0, "argmax_agreement": 0.995},
             "compile": {"median_ms": 300.0, "argmax_agreement": 0.995},
             "compile_fp32": {"median_ms": 1500.0, "argmax_agreement": 1.0},
             "int8": {"median_ms": 700.0, "argmax_agreement": 0.985}}
    allowed, excluded = inference.candidates(CPU, {"avx512f"})  # no bf16, no VNNI
    chosen, why = choose_mode(timed, allowed, excluded, ["avx512f"])
    assert chosen == "compile_fp32"
    assert why["candidates"] == {"fp32": 2000.0, "compile_fp32": 1500.0}
    assert set(why["excluded"]) == {"bf16", "compile", "int8"} and "emulated" in why["excluded"]["compile"]
    assert why["flags"] == ["avx512f"]
    allowed, _ = inference.candidates(CPU, {"avx512_bf16", "avx512_vnni"})
    chosen, why = choose_mode(timed, allowed)  # bf16 in hardware: compile wins; int8 agrees too little
    assert chosen == "compile"
    assert why["excluded"] == {"int8": "argmax agreement with fp32 0.9850 below 0.99"}


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (3, 3)])
@pytest.mark.parametrize("size", [(7, 9), (8, 8), (13, 6), (3, 4)])
def test_ceil_mode_max_pool_rewrite_is_exact(kernel, stride, size):
    pool = nn.MaxPool2d(kernel, stride=stride, ceil_mode=True)
    x = torch.randn(2, 3, *size) - 1.0  # mostly negative: a zero pad would show
    got = inference.CeilModeMaxPool(pool)(x)
    assert got.shape == pool(x).shape
    assert torch.equal(got, pool(x))


def test_without_ceil_mode_rewrites_every_ceil_pool_and_nothing_else():
    net = models.build("fcn8s_vgg16", 3, width=1 / 16).eval()
    rewritten = inference.without_ceil_mode(net)
    assert [n for n, m in rewritten.named_modules() if isinstance(m, inference.CeilModeMaxPool)] == \
        [f"pool{i}" for i in range(1, 6)]
    assert not any(isinstance(m, nn.MaxPool2d) for m in rewritten.modules())
    assert all(isinstance(getattr(net, f"pool{i}"), nn.MaxPool2d) for i in range(1, 6))  # the original is kept
    x = torch.randn(1, 3, 37, 41) * 50
    with torch.no_grad():
        assert torch.equal(rewritten(x), net(x))
    for pool in (nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), nn.MaxPool2d(1, 2, ceil_mode=True)):
        with pytest.raises(ValueError, match="unpadded, undilated pools whose window is at least their stride"):
            inference.CeilModeMaxPool(pool)
        assert isinstance(inference.without_ceil_mode(nn.Sequential(pool))[0], nn.MaxPool2d)  # left as it is


def test_check_shapes_refuses_a_changed_blob():
    net = models.build("fcn32s_vgg16", 3, width=1 / 16).eval()
    x = torch.zeros(1, 3, 45, 51)
    out, tap = torch.zeros(1, 3, 45, 51), torch.zeros(1, 3, 2, 2)  # score_fr of 45x51: 2x2 (ceil-mode pools)
    inference.check_shapes(net, x, out, tap)
    with pytest.raises(inference.UnusableMode, match=r"score_fr \(1, 3, 1, 1\), expected .* \(1, 3, 2, 2\)"):
        inference.check_shapes(net, x, out, torch.zeros(1, 3, 1, 1))


def test_an_unknown_mode_is_refused():
    net = models.build("fcn32s_vgg16", 3, width=1 / 16)
    with pytest.raises(ValueError, match="unknown inference mode 'fp16'"):
        inference.prepare(net, "fp16", torch.zeros(1, 3, 40, 40))


@needs_torchao
def test_int8_needs_calibration_images():
    net = models.build("fcn32s_vgg16", 3, width=1 / 16)
    with pytest.raises(ValueError, match="at least one calibration batch"):
        inference.prepare(net, "int8", torch.zeros(1, 3, 40, 40), calibration=[])


def scenes(n: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy images with three rectangles each, of one of ``classes - 1`` colours, and their labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 8
    y = torch.zeros(n, size, size, dtype=torch.long)
    colours = torch.linspace(-100, 100, classes)[:, None] * torch.tensor([1.0, -0.5, 0.7])
    for i in range(n):
        for _ in range(3):
            c = int(torch.randint(1, classes, (1,), generator=g))
            top, left = (int(v) for v in torch.randint(0, size - 16, (2,), generator=g))
            h, w = (int(v) for v in torch.randint(12, size // 2, (2,), generator=g))
            x[i, :, top:top + h, left:left + w] += colours[c][:, None, None]
            y[i, top:top + h, left:left + w] = c
    return x, y


@pytest.fixture(scope="module")
def trained_twin():
    """An FCN-8s at the embedded default's VGG16 width (1/8) trained for 80 Adam steps on 8 synthetic 61x61 scenes,
    and its training images. (At 1/16, 4-channel first layers, per-tensor int8 activations agreed on 98.6-99.4%
    of the pixels from run to run; at 1/8 on 99.7%.)"""
    torch.manual_seed(0)
    net = models.build("fcn8s_vgg16", 4, width=1 / 8)
    x, y = scenes(8, 61, 4, seed=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(80):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval(), x


@needs_torchao
@pytest.mark.parametrize("size", [(61, 61), (53, 59)], ids=["61x61", "53x59"])  # 53x59: odd at every pool
def test_int8_agrees_with_fp32_on_a_trained_net(trained_twin, size):
    net, train_images = trained_twin
    crop = train_images[..., :size[0], :size[1]]
    calibration = [crop[:4].contiguous(), crop[4:].contiguous()]  # the training images, two batches
    x = scenes(4, max(size), 4, seed=1)[0][..., :size[0], :size[1]].contiguous()  # new scenes
    run = inference.prepare(net, "int8", x, calibration=calibration)
    with torch.no_grad():
        expected = net(x)
    got = run(x)
    assert got.shape == expected.shape == (4, 4, *size)
    agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
    assert agreement >= 0.99, f"int8 argmax agrees with fp32 on {agreement:.4f} of the pixels at {size}, want >= 0.99"
    with pytest.raises(ValueError, match=r"exported for inputs of shape \(4, 3, "):
        run(x[:1])


@needs_torchao
def test_int8_refuses_a_net_whose_pools_lost_ceil_mode(monkeypatch):
    """Without the rewrite, inductor's quantized max pool drops ceil_mode (torch 2.14): FCN-32s keeps its output
    size (the final crop) but its score_fr shrinks, and the check refuses the net instead of scoring it shifted."""
    monkeypatch.setattr(inference, "without_ceil_mode", copy.deepcopy)
    torch.manual_seed(0)
    net = models.build("fcn32s_vgg16", 3, width=1 / 16).eval()
    x = torch.randn(1, 3, 45, 51) * 50
    run = inference.prepare(net, "int8", x, calibration=[x])
    with pytest.raises(inference.UnusableMode, match=r"changed shapes .* expected float32's \(1, 3, 45, 51\)"):
        run(x)
