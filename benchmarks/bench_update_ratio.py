"""Update-to-weight ratios ||w_t - w_0|| / ||w_0|| per layer over the first iterations of the ``heavy`` recipe:
torchvision-convention trunks (``make_optimizer``'s first-conv lr multiplier) against the Caffe VGG16 run.

    python benchmarks/bench_update_ratio.py [--iterations 3] [--size 500x375] [--weights-dir DIR] [--json OUT] \
        [--threads 1] [--caffe-mean voc|imagenet] [--width 1.0] [--seed 0]

1. Equivalence (exact without ImageNet weights). One FCN-32s VGG16 in Caffe's convention (BGR, 0-255, minus the
   VOC mean colour) and the same function in torchvision's (:func:`to_torchvision`: conv1_1's filters flipped to
   RGB and scaled by 255 x std per input channel, the mean offset folded into its bias) are trained for
   ``--iterations`` steps on the same SBD-like image (``segbench.data.synthetic.objects.render_scene``) with the
   same dropout masks, through ``recipes.make_optimizer`` with ``input_norm`` "caffe" and "torchvision", and
   once more in torchvision's convention without the multiplier (``input_norm="caffe"`` for the torchvision
   net). The quotient torchvision / Caffe is 1 for every layer from conv1_2 on; conv1_1's gradient part is
   within the per-channel bound (:func:`per_channel_bound`, about [0.974, 1.018]: the multiplier k^2 uses the
   mean of the three channels' (255 std)^2) and its weight-decay part is k^2 (``make_optimizer`` multiplies
   conv1's decay step too). Without the multiplier conv1_1's gradient part is 1 / k^2 of Caffe's (same bound).
   ``--caffe-mean imagenet`` makes Caffe's mean colour ImageNet's: the zero padding then means the same colour
   in both conventions and the quotients from conv1_2 on are 1 to rounding; with ``voc`` (the reference's
   input) they differ by the mean offset, which reaches the padded border only.
2. Across trunks: FCN-32s AlexNet (torchvision's single tower, Table 1's torchvision row) and FCN-32s GoogLeNet
   in torchvision's convention, with the multiplier and the heavy recipe's lr for them
   (``recipes.recipe("heavy", model_name=...)``: VGG16's 1e-10, the reference has none of its own), beside the
   Caffe VGG16 run: first conv, median over the trunk's layers, last trunk layer, score layer. With
   ``--weights-dir`` holding torchvision's ``alexnet-owt-7be5be79.pth`` and ``googlenet-1378be20.pth`` and
   pytorch-fcn's ``vgg16_from_caffe.pth``, those weights are transplanted (checked and converted as
   ``segbench.pretraining.imagenet.fetch_weights`` does: sha256 prefix, ``convert_caffe``, GoogLeNet's input transform
   folded into conv1); without it every net keeps its random initialisation (``models.build``: He-normal for
   VGG16, PyTorch's defaults for AlexNet, torchvision's truncated normal for GoogLeNet) and only part 1 is
   meaningful.

A layer is a trunk module (GoogLeNet: an inception block, all its convolutions) or ``score_fr``; its weights are
the convolution filters (biases and batch-norm scales left out). ``score_fr`` starts at zero (||w_0|| = 0), so
its row gives ||w_t - w_0|| itself; while it is zero the trunk gets no gradient (iteration 1 moves the trunk by
weight decay only). The update is the one SGD computes (lr x momentum buffer per step), booked apart from the
weights as a gradient part and a weight-decay part (SGD with momentum is linear in them; their sum is checked
against the optimizer's own momentum buffer at every step): at lr 1e-10 much of it is below a float32
weight's rounding step, so differencing the stored weights would measure rounding instead.

Measured on a shared 2-core AMD EPYC, one thread, at the defaults (3 iterations, 500 x 375, random weights):
about 16 s per VGG16 iteration, 2.5 minutes in all; see the JSON written with ``--json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segbench import models
from segbench.data.synthetic.objects import render_scene
from segbench.data.tensors import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, caffe_scale, first_conv_lr_mult, to_input
from segbench.data.voc import MEAN_BGR
from segbench.errors import MissingInputError
from segbench.evaluation.losses import segmentation_loss
from segbench.infra import runtime
from segbench.infra.atomic import write_json
from segbench.infra.cpuinfo import cpu_info
from segbench.pretraining.imagenet import fetch_weights, weights_file
from segbench.training import recipes
from segbench.training.train import set_train_mode
from segbench.weights import read_weights_file

VGG = "fcn32s_vgg16"
# Table 1's torchvision rows: backbone -> (model, row name)
TRUNKS = {"alexnet": ("fcn32s_alexnet_tv", "FCN-32s AlexNet"), "googlenet": ("fcn32s_googlenet", "FCN-32s GoogLeNet")}
WEIGHT_FILES = {"vgg16": weights_file("vgg16", "caffe"), "alexnet": weights_file("alexnet"),
                "googlenet": weights_file("googlenet")}
NUM_CLASSES = 21
RECIPE = "heavy"
RANDOM_NOTE = "random weights: only the equivalence part is meaningful"
# Caffe's mean colour (BGR): the reference's (VOC), or ImageNet's, which makes the two conventions' padding agree
MEANS = {"voc": tuple(MEAN_BGR),
         "imagenet": tuple(float(v) for v in 255.0 * IMAGENET_MEAN_RGB.astype(np.float64)[::-1])}
# the runs of part 1: (input convention of the net and its input, input_norm given to make_optimizer)
EQUIVALENCE_RUNS = {"caffe": ("caffe", "caffe"), "torchvision": ("torchvision", "torchvision"),
                    "torchvision, no multiplier": ("torchvision", "caffe")}


def to_torchvision(conv: nn.Conv2d, mean_bgr=MEAN_BGR) -> nn.Conv2d:
    """Rewrite, in place, a first conv on Caffe's input (BGR, 0-255, minus ``mean_bgr``) into one on torchvision's
    (RGB, (pixel / 255 - mean) / std) with the same output wherever its window lies inside the image; returns it.

    x_caffe[bgr c] = 255 std_c x_tv[c] + 255 mean_c - mean_bgr[c], so W_tv[:, c] = 255 std_c W[:, bgr c] and the
    bias takes W . (255 mean - mean_bgr) (nothing when ``mean_bgr`` is ImageNet's mean colour; otherwise the zero
    padding differs: it stands for ``mean_bgr`` in Caffe's net and for ImageNet's mean in torchvision's).
    """
    with torch.no_grad():
        w = conv.weight.double().flip(1)  # BGR -> RGB input channels
        scale = torch.as_tensor(255.0 * IMAGENET_STD_RGB.astype(np.float64)).view(1, 3, 1, 1)
        offset = torch.as_tensor(255.0 * IMAGENET_MEAN_RGB.astype(np.float64) - np.asarray(mean_bgr)[::-1])
        if conv.bias is not None:
            conv.bias.copy_(conv.bias.double() + (w * offset.view(1, 3, 1, 1)).sum(dim=(1, 2, 3)))
        elif np.any(offset.numpy() != 0):
            raise ValueError("a first conv without a bias cannot absorb the mean offset: use ImageNet's mean colour")
        conv.weight.copy_(w * scale)
    return conv


def first_conv(net: nn.Module) -> nn.Conv2d:
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


def per_channel_bound(optimizer: str = "sgd") -> tuple[float, float]:
    """The range of conv1's gradient-part quotient torchvision / Caffe under ``make_optimizer``'s multiplier:
    channel c's step is mult / (255 std_c)^2 of the exact translation's, and the norm quotient of a tensor whose
    slices are scaled by factors in [a, b] lies in [a, b]."""
    mult = first_conv_lr_mult("torchvision", optimizer)
    factors = mult / (255.0 * IMAGENET_STD_RGB.astype(np.float64)) ** 2
    return float(factors.min()), float(factors.max())


def layer_params(net: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Per trunk module (``net.trunk_names``) and ``score_fr``: its trainable weights of >= 2 dimensions
    (convolution filters; biases and batch-norm scales left out), in order."""
    out = {}
    for name in [*net.trunk_names, "score_fr"]:
        params = [(f"{name}.{k}", p) for k, p in getattr(net, name).named_parameters()
                  if p.requires_grad and p.dim() >= 2]
        if params:
            out[name] = params
    return out


def _norm(tensors) -> float:
    return float(torch.sqrt(sum(t.double().pow(2).sum() for t in tensors)))


class UpdateMeter:
    """Per layer (``layer_params``), ||w_t - w_0|| / ||w_0|| for the update SGD computes, in parts: ``gradient``
    and ``decay`` (weight decay), each with a momentum buffer of its own (SGD with momentum is linear in them),
    and ``total``, their sum. A layer with ||w_0|| = 0 (``score_fr``) gets ||w_t - w_0|| itself.
    ``mismatch`` is the largest relative difference, over steps and layers, between the optimizer's momentum
    buffer and the sum of the two parts' (rounding only, unless the optimizer is not plain SGD with momentum)."""

    PARTS = ("total", "gradient", "decay")

    def __init__(self, net: nn.Module, optimizer: torch.optim.SGD):
        self.layers = layer_params(net)
        self.optimizer = optimizer
        self.group = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self.norm0 = {layer: _norm(p.detach() for _, p in ps) for layer, ps in self.layers.items()}
        params = [p for ps in self.layers.values() for _, p in ps]
        # per part: [momentum buffer, summed update] of each parameter, in its own dtype (no rounding against w)
        self.state = {part: {id(p): [torch.zeros_like(p), torch.zeros_like(p)] for p in params}
                      for part in ("gradient", "decay")}
        self.mismatch = 0.0

    def before_step(self) -> None:
        """Call between ``backward()`` and ``optimizer.step()``: books this step's parts."""
        for ps in self.layers.values():
            for _, p in ps:
                g = self.group[id(p)]
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                for part, d in (("gradient", grad), ("decay", g["weight_decay"] * p.detach())):
                    buf, delta = self.state[part][id(p)]
                    buf.mul_(g["momentum"]).add_(d)
                    delta.add_(buf, alpha=g["lr"])

    def after_step(self) -> dict[str, dict[str, float]]:
        """Call after ``optimizer.step()``: checks the parts against the optimizer's buffer; returns ``ratios()``."""
        for ps in self.layers.values():
            for _, p in ps:
                buf = self.optimizer.state[p]["momentum_buffer"]
                ours = self.state["gradient"][id(p)][0] + self.state["decay"][id(p)][0]
                scale = float(buf.abs().max())
                if scale > 0:
                    self.mismatch = max(self.mismatch, float((buf - ours).abs().max()) / scale)
        return self.ratios()

    def ratios(self) -> dict[str, dict[str, float]]:
        """``{part: {layer: ratio}}`` for every part of ``PARTS``."""
        out = {part: {} for part in self.PARTS}
        for layer, ps in self.layers.items():
            deltas = {part: [self.state[part][id(p)][1] for _, p in ps] for part in ("gradient", "decay")}
            moved = {"total": _norm(g + d for g, d in zip(deltas["gradient"], deltas["decay"])),
                     "gradient": _norm(deltas["gradient"]), "decay": _norm(deltas["decay"])}
            for part in self.PARTS:
                out[part][layer] = moved[part] / self.norm0[layer] if self.norm0[layer] > 0 else moved[part]
        return out


def train_ratios(net: nn.Module, model_name: str, x: torch.Tensor, y: torch.Tensor, *, input_norm: str,
                 iterations: int, seed: int = 0) -> dict:
    """``iterations`` steps of ``heavy`` (segbench's recipe and ``make_optimizer(..., input_norm=)``) on one batch.

    Returns ``{"ratios": [per iteration {part: {layer: ratio}}], "lr": {group name: lr}, "loss": [...],
    "mismatch", "seconds"}``. Dropout masks come from ``seed`` + iteration, so two nets of one architecture draw
    the same ones.
    """
    rec = recipes.recipe(RECIPE, model_name=model_name)
    optimizer = recipes.make_optimizer(net, rec, input_norm=input_norm)
    meter = UpdateMeter(net, optimizer)
    ratios, loss_values = [], []
    start = time.perf_counter()
    for it in range(iterations):
        set_train_mode(net, rec.bn)
        torch.manual_seed(seed + it)
        optimizer.zero_grad(set_to_none=True)
        loss = segmentation_loss(net(x), y, reduction=rec.reduction)
        loss.backward()
        meter.before_step()
        optimizer.step()
        ratios.append(meter.after_step())
        loss_values.append(float(loss.detach()))
    return {"ratios": ratios, "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "loss": loss_values,
            "mismatch": meter.mismatch, "seconds": time.perf_counter() - start}


def scene(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic SBD-like sample: uint8 height x width x 3 RGB image and uint8 label (0..20)."""
    image, label = render_scene(np.random.default_rng(seed), max(width, height))
    return np.ascontiguousarray(image[:height, :width]), np.ascontiguousarray(label[:height, :width])


def inputs(image: np.ndarray, label: np.ndarray, mean_bgr) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"caffe": x, "torchvision": x}, y)``: the image in both input conventions (``data.tensors.to_input``)."""
    x = {norm: to_input([image], mean_bgr, norm) for norm in ("caffe", "torchvision")}
    return x, torch.from_numpy(label[None].astype(np.int64))


def load_weights(backbone: str, weights_dir: str | Path, tmp: str | Path) -> dict[str, torch.Tensor]:
    """The ImageNet classifier state dict of ``backbone`` from ``weights_dir`` (``WEIGHT_FILES``), through
    ``segbench.pretraining.imagenet.fetch_weights`` with ``weights_dir`` as its cache: checked and converted as
    the pipeline does (Caffe's VGG16 converted, torchvision's sha256 prefix, GoogLeNet's input transform
    folded into conv1). Nothing is downloaded for a file that is there."""
    source = "caffe" if backbone == "vgg16" else "torchvision"
    if not (Path(weights_dir) / WEIGHT_FILES[backbone]).is_file():
        raise MissingInputError(f"{Path(weights_dir) / WEIGHT_FILES[backbone]} is missing: put "
                                f"{WEIGHT_FILES[backbone]} there (segbench fetch-weights downloads it into its cache)")
    record = fetch_weights(backbone, Path(tmp) / f"{backbone}.pt", cache=weights_dir, source=source)
    return read_weights_file(record)["state_dict"]


def build(model_name: str, width: float, state: dict | None, seed: int) -> nn.Module:
    """``models.build`` (seeded), with ``state`` (a classifier state dict) transplanted when given."""
    torch.manual_seed(seed)
    net = models.build(model_name, NUM_CLASSES, width=width)
    return models.transplant(state, net) if state is not None else net


def equivalence(x: dict, y: torch.Tensor, *, width: float, state: dict | None, mean_bgr, iterations: int,
                seed: int = 0) -> dict:
    """Part 1: the runs ``EQUIVALENCE_RUNS`` of one FCN-32s VGG16 (the Caffe net, and its torchvision twin with
    and without the multiplier), each from the same starting weights; ``{run: train_ratios(...)}``."""
    torch.manual_seed(seed)
    start = {k: v.clone() for k, v in build(VGG, width, state, seed).state_dict().items()}
    out = {}
    for run, (convention, input_norm) in EQUIVALENCE_RUNS.items():
        net = models.build(VGG, NUM_CLASSES, width=width)
        net.load_state_dict(start)
        if convention == "torchvision":
            to_torchvision(first_conv(net), mean_bgr)
        out[run] = train_ratios(net, VGG, x[convention], y, input_norm=input_norm, iterations=iterations, seed=seed)
        del net
    return out


def summary(ratios: dict[str, float]) -> dict[str, float]:
    """First conv, median over the trunk's layers, last trunk layer and score layer (||w_t - w_0||) of one run."""
    trunk = [v for k, v in ratios.items() if k != "score_fr"]
    first, last = next(iter(ratios)), [k for k in ratios if k != "score_fr"][-1]
    return {"first_conv": ratios[first], "first_conv_name": first, "trunk_median": statistics.median(trunk),
            "last_trunk": ratios[last], "last_trunk_name": last, "score_fr": ratios["score_fr"]}


def _q(a: float, b: float) -> str:
    return f"{a / b:.5g}" if b else "-"


def markdown(result: dict) -> str:
    """The three tables of ``result`` (``run``'s dict) in Markdown."""
    eq, n = result["equivalence"], result["iterations"]
    caffe, tv, bare = (eq[r]["ratios"] for r in EQUIVALENCE_RUNS)
    layers = list(caffe[-1]["total"])
    its = range(n)
    lines = [f"Equivalence: FCN-32s VGG16 (width {result['width']}), Caffe convention against the same net in "
             f"torchvision's; ratio ||w_t - w_0|| / ||w_0|| after each iteration (score_fr: ||w_t - w_0||, it "
             f"starts at 0), tv = torchvision with the first-conv multiplier, no mult = without it", "",
             "| layer | " + " | ".join(f"it {i + 1} Caffe | it {i + 1} tv / Caffe" for i in its)
             + f" | it {n} no mult / Caffe |",
             "|---|" + "---:|" * (2 * n + 1)]
    for layer in layers:
        cells = [f"{caffe[i]['total'][layer]:.3e} | {_q(tv[i]['total'][layer], caffe[i]['total'][layer])}"
                 for i in its]
        lines.append(f"| {layer} | " + " | ".join(cells)
                     + f" | {_q(bare[-1]['total'][layer], caffe[-1]['total'][layer])} |")
    first = layers[0]
    lines += ["", f"{first} after iteration {n} by part (gradient; weight decay), quotients against Caffe; "
              f"k^2 = {result['first_conv_lr_mult']:.1f}, per-channel bound of the gradient part "
              f"[{result['per_channel_bound'][0]:.4f}, {result['per_channel_bound'][1]:.4f}] (x 1/k^2 without "
              "the multiplier)", "",
              "| run | lr of conv1 weights | total | gradient | decay | total / Caffe | gradient / Caffe "
              "| decay / Caffe |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in EQUIVALENCE_RUNS:
        r, c = eq[run]["ratios"][-1], caffe[-1]
        lr = eq[run]["lr"].get("first conv weights", eq[run]["lr"]["weights"])
        lines.append(f"| {run} | {lr:.4g} | " + " | ".join(f"{r[p][first]:.3e}" for p in UpdateMeter.PARTS) + " | "
                     + " | ".join(_q(r[p][first], c[p][first]) for p in UpdateMeter.PARTS) + " |")
    lines += ["", f"Across trunks after {n} iterations of {RECIPE} (weights: {result['weights']})"
              + (f". **{RANDOM_NOTE}**" if result["weights"] == "random" else ""), "",
              "| net | input | lr (first conv weights) | first conv | trunk median | last trunk layer "
              "| score_fr: norm of w_t - w_0 |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in result["trunks"].items():
        s = row["summary"]
        lines.append(f"| {name} | {row['input_norm']} | {row['lr']:.3g} ({row['first_conv_lr']:.3g}) | "
                     f"{s['first_conv']:.3e} ({s['first_conv_name']}) | {s['trunk_median']:.3e} | "
                     f"{s['last_trunk']:.3e} ({s['last_trunk_name']}) | {s['score_fr']:.3e} |")
    return "\n".join(lines)


def run(*, iterations: int, size: tuple[int, int], weights_dir: str | None = None, width: float = 1.0,
        caffe_mean: str = "voc", seed: int = 0, log=print) -> dict:
    """Parts 1 and 2; the result as a JSON-ready dict (``markdown`` prints it)."""
    if weights_dir is not None and width != 1.0:
        raise ValueError(f"ImageNet weights are full width: --width {width} needs no --weights-dir")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    mean_bgr = MEANS[caffe_mean]
    image, label = scene(*size, seed=seed)
    x, y = inputs(image, label, mean_bgr)
    with tempfile.TemporaryDirectory() as tmp:
        states = ({b: load_weights(b, weights_dir, tmp) for b in WEIGHT_FILES} if weights_dir is not None
                  else dict.fromkeys(WEIGHT_FILES))
    log(f"equivalence: 3 runs of {VGG} width {width}, {iterations} iterations each ...")
    eq = equivalence(x, y, width=width, state=states["vgg16"], mean_bgr=mean_bgr, iterations=iterations, seed=seed)
    rec = recipes.recipe(RECIPE, model_name=VGG)
    trunks = {"FCN-32s VGG16 (Caffe)": {"model": VGG, "input_norm": "caffe", "lr": rec.lr,
                                        "first_conv_lr": eq["caffe"]["lr"]["weights"],
                                        "ratios": eq["caffe"]["ratios"][-1]["total"],
                                        "seconds": eq["caffe"]["seconds"]}}
    for backbone, (model_name, display) in TRUNKS.items():
        log(f"across trunks: {model_name} ...")
        net = build(model_name, width, states[backbone], seed)
        r = train_ratios(net, model_name, x["torchvision"], y, input_norm="torchvision", iterations=iterations,
                         seed=seed)
        trunks[f"{display} (torchvision)"] = {
            "model": model_name, "input_norm": "torchvision", "lr": recipes.recipe(RECIPE, model_name=model_name).lr,
            "first_conv_lr": r["lr"]["first conv weights"], "ratios": r["ratios"][-1]["total"],
            "seconds": r["seconds"], "mismatch": r["mismatch"]}
        del net
    for row in trunks.values():
        row["summary"] = summary(row["ratios"])
    return {"iterations": iterations, "size": {"width": size[0], "height": size[1]}, "width": width,
            "recipe": RECIPE, "seed": seed, "caffe_mean": caffe_mean, "mean_bgr": list(mean_bgr),
            "weights": "random" if weights_dir is None else str(weights_dir),
            "note": RANDOM_NOTE if weights_dir is None else None,
            "k": caffe_scale("torchvision"), "first_conv_lr_mult": first_conv_lr_mult("torchvision"),
            "per_channel_bound": list(per_channel_bound()), "equivalence": eq, "trunks": trunks}


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT in pixels (500x375), got {text!r}")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=3, help="training steps per run (default 3: ~16 s each for "
                   "full-width VGG16 at 500x375 on one core; three VGG16 runs)")
    p.add_argument("--size", type=_size, default=(500, 375), help="image WIDTHxHEIGHT (default 500x375)")
    p.add_argument("--weights-dir", default=None, help=f"folder with {', '.join(WEIGHT_FILES.values())}")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=float, default=1.0, help="channel width of every net (tests: 0.125)")
    p.add_argument("--caffe-mean", choices=sorted(MEANS), default="voc",
                   help="mean colour of Caffe's input: voc (the reference's) or imagenet (no mean offset)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    runtime.setup(threads=a.threads)
    cpu = cpu_info()
    print(f"CPU: {cpu['name']}; flags {' '.join(cpu['cpu_flags']) or 'none of interest'}; torch {torch.__version__}; "
          f"threads {a.threads}; image {a.size[0]}x{a.size[1]} (synthetic scene, seed {a.seed}); {a.iterations} "
          f"iterations of {RECIPE}; Caffe mean colour {a.caffe_mean}; weights "
          f"{a.weights_dir or f'random ({RANDOM_NOTE})'}", flush=True)
    start = time.perf_counter()
    result = run(iterations=a.iterations, size=a.size, weights_dir=a.weights_dir, width=a.width,
                 caffe_mean=a.caffe_mean, seed=a.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    result.update(cpu=cpu, torch=torch.__version__, threads=a.threads, seconds=time.perf_counter() - start,
                  command=" ".join(["python", "benchmarks/bench_update_ratio.py", *(argv or sys.argv[1:])]))
    print()
    print(markdown(result))
    mismatch = max([r["mismatch"] for r in result["equivalence"].values()]
                   + [r.get("mismatch", 0.0) for r in result["trunks"].values()])
    print(f"\n{result['seconds']:.0f} s in all; largest relative mismatch of the booked parts against the "
          f"optimizer's momentum buffer {mismatch:.1e}")
    if a.json:
        print("wrote", write_json(a.json, result))
    return result


if __name__ == "__main__":
    main()
