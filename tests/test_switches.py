"""Training switches: precision (fp32, bf16, fp16), channels-last, torch.compile, deterministic algorithms,
each recorded in run.json. The CPU tests run everywhere; the CUDA tests run unchanged where a GPU is visible."""

import json

import pytest
import torch
from conftest import write_mixed_store

from segbench import cli
from segbench.infra import precision, runtime
from segbench.training.train import _TrainingForward, train

WIDTH = 0.0625
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_mixed_store(tmp_path_factory.mktemp("mixed") / "train.h5")


@pytest.fixture(scope="module")
def fp32(store, tmp_path_factory):
    """The reference run: every switch off."""
    return _train(store, tmp_path_factory.mktemp("fp32"))


@pytest.fixture
def restore_deterministic():
    yield
    runtime.set_deterministic(False)


def _train(store, out_dir, **kw):
    # SGD (the paper recipe) at a learning rate that moves the net, whose steps follow the gradients linearly (Adam's
    # first steps are the gradients' signs); no dropout, whose masks follow the memory format (channels-last)
    args = dict(train_store=store, out_dir=out_dir, model_name="fcn32s_vgg16", width=WIDTH, recipe="paper", lr=1e-2,
                batch_size=2, dropout=0.0, iterations=4, checkpoint_every=2, seed=2, device="cpu", threads=1,
                progress=False)
    args.update(kw)
    return train(**args)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _meta(path):
    return json.loads((path.parent / "run.json").read_text())


def _losses(path):
    return [float(line.split(",")[2]) for line in (path.parent / "log.csv").read_text().splitlines()[1:]]


def _identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_train_subcommand_takes_every_switch():
    args = cli.build_parser().parse_args(["train", "--train-store", "s.h5", "--out-dir", "o", "--model", "fcn32s_vgg16",
                                          "--precision", "fp16", "--channels-last", "--compile", "--deterministic",
                                          "--num-workers", "2", "--no-pin-memory"])
    assert (args.precision, args.channels_last, args.compile, args.deterministic, args.num_workers,
            args.pin_memory) == ("fp16", True, True, True, 2, False)
    defaults = cli.build_parser().parse_args(["train", "--train-store", "s.h5", "--out-dir", "o", "--model",
                                                              "fcn32s_vgg16"])
    assert (defaults.compile, defaults.deterministic, defaults.num_workers, defaults.pin_memory) == (False, False, 0,
                                                                                                     True)


def test_fp16_is_refused_off_cuda_before_anything_is_written(store, tmp_path):
    with pytest.raises(ValueError, match="fp16 .* needs a CUDA GPU, got device 'cpu'; use bf16 or fp32"):
        precision.resolve("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        _train(store, tmp_path / "fp16", precision_mode="fp16")
    assert not (tmp_path / "fp16").exists()
    assert cli.main(["train", "--train-store", str(store), "--out-dir", str(tmp_path / "cli"), "--model",
                     "fcn32s_vgg16", "--precision", "fp16", "--device", "cpu"]) == 1


def test_the_loss_scaler_is_a_pass_through_except_for_fp16():
    loss = torch.tensor(2.5)
    for prec in ("fp32", "bf16"):
        scaler = precision.grad_scaler(prec, torch.device("cpu"))
        assert not scaler.is_enabled() and scaler.scale(loss) is loss


def test_bf16_trains_on_the_cpu_and_is_recorded(store, fp32, tmp_path):
    path = _train(store, tmp_path / "bf16", precision_mode="bf16")
    assert _meta(path)["precision"] == "bf16" and _meta(fp32)["precision"] == "fp32"
    bf16, reference = _weights(path), _weights(fp32)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in bf16.values())  # float32 weights
    assert not _identical(bf16, reference)  # the convolutions ran in bfloat16
    # bfloat16 keeps 8 bits of mantissa: the losses of the same data and initial net agree to about 1%
    assert _losses(path) == pytest.approx(_losses(fp32), rel=2e-2)


def test_channels_last_gives_the_same_net_up_to_rounding(store, fp32, tmp_path):
    path = _train(store, tmp_path / "cl", channels_last=True)
    assert _meta(path)["channels_last"] is True and _meta(fp32)["channels_last"] is False
    trained, reference = _weights(path), _weights(fp32)
    for key in reference:
        torch.testing.assert_close(trained[key], reference[key], rtol=1e-5, atol=1e-6)
    assert _losses(path) == pytest.approx(_losses(fp32), rel=1e-5)


def test_compile_trains_through_torch_compile(store, fp32, tmp_path, monkeypatch):
    compiled = []
    real = torch.compile

    def eager_compile(module):  # the eager backend: dynamo's graphs without inductor's minutes of compilation
        compiled.append(module)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    path = _train(store, tmp_path / "compiled", compile=True)
    assert len(compiled) == 1 and isinstance(compiled[0], _TrainingForward)
    assert _meta(path)["compile"] is True and _meta(fp32)["compile"] is False
    trained, reference = _weights(path), _weights(fp32)
    assert trained.keys() == reference.keys()  # the net's own keys, not the compiled wrapper's
    for key in reference:
        torch.testing.assert_close(trained[key], reference[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compile_with_inductor_matches_the_eager_net(store, fp32, tmp_path):
    path = _train(store, tmp_path / "inductor", compile=True)  # compiles C++ kernels: minutes on 2 busy cores
    trained, reference = _weights(path), _weights(fp32)
    for key in reference:
        torch.testing.assert_close(trained[key], reference[key], rtol=1e-4, atol=1e-5)


def test_deterministic_is_recorded_and_leaves_cpu_results_unchanged(store, fp32, tmp_path, restore_deterministic):
    path = _train(store, tmp_path / "det", deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    assert _meta(path)["deterministic"] is True and _meta(fp32)["deterministic"] is False
    assert _identical(_weights(path), _weights(fp32))
    runtime.set_deterministic(False)  # PyTorch's defaults again
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    with pytest.raises(ValueError, match="deterministic must be True or False, got 'yes'"):
        runtime.set_deterministic("yes")


@CUDA
def test_fp16_trains_on_a_gpu_with_a_loss_scaler_in_the_checkpoint(store, tmp_path):
    path = _train(store, tmp_path / "fp16", precision_mode="fp16", device="cuda")
    assert _meta(path)["precision"] == "fp16"
    assert all(torch.isfinite(v).all() for v in _weights(path).values())
    record = torch.load(tmp_path / "fp16" / "checkpoint.pt", weights_only=True)
    assert record["extra"]["scaler"]["scale"] > 0


@CUDA
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_deterministic_gpu_runs_repeat_bit_for_bit(store, tmp_path, prec, restore_deterministic):
    runs = [_weights(_train(store, tmp_path / f"{prec}{k}", precision_mode=prec, device="cuda", deterministic=True,
                            channels_last=True)) for k in range(2)]
    assert _identical(*runs)


@CUDA
def test_pinned_batches_from_workers_give_the_same_gpu_weights(store, tmp_path, restore_deterministic):
    runs = [_weights(_train(store, tmp_path / f"w{workers}", device="cuda", deterministic=True, num_workers=workers,
                            pin_memory=True)) for workers in (0, 2)]
    assert _identical(*runs)
