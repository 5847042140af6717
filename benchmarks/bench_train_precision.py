"""Training-step time of the embedded default's nets in fp32, fp32 channels-last and bf16 autocast
channels-last, side by side in one process (interleaved), on one thread as the workflow's training jobs run.

    python benchmarks/bench_train_precision.py [--threads 1] [--steps 8] [--size 128] [--batch 4]

Prints the CPU (model name and bf16/AMX flags from /proc/cpuinfo), then per net the median seconds per
step and the speed-up over fp32 (NCHW). The choice is the config key ``precision`` (``auto`` = bf16 where
the CPU has bf16 instructions); each run records what it used in ``run.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from segbench import models
from segbench.infra import precision, runtime
from segbench.infra.provenance import cpu_info

NETS = (("fcn32s_vgg16", 0.125), ("fcn8s_vgg16", 0.125), ("fcn32s_alexnet", 0.25), ("fcn32s_googlenet", 0.5))
MODES = ("fp32", "fp32 channels-last", "bf16 channels-last")


def _setup(name: str, width: float, mode: str, batch: int, size: int):
    torch.manual_seed(0)
    net = models.build(name, 21, width=width)
    x = torch.randn(batch, 3, size, size)
    if "channels-last" in mode:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    return net, x, torch.optim.Adam(params, lr=1e-6)


def _step(net, x, y, opt, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(x)
    F.cross_entropy(out.float(), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    runtime.setup(threads=a.threads)
    cpu = cpu_info()
    print(f"CPU: {cpu['name']}; flags {' '.join(cpu['cpu_flags']) or 'none of interest'}; precision auto -> "
          f"{precision.resolve('auto', torch.device('cpu'))}; threads {a.threads}; {a.size} px, batch {a.batch}")
    y = torch.randint(0, 21, (a.batch, a.size, a.size))
    for name, width in NETS:
        setups = {m: _setup(name, width, m, a.batch, a.size) for m in MODES}
        times = {m: [] for m in MODES}
        for k in range(a.steps + 2):  # round-robin, two warm-up rounds
            for m, (net, x, opt) in setups.items():
                t = _step(net, x, y, opt, bf16=m.startswith("bf16"))
                if k >= 2:
                    times[m].append(t)
        med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
        print(f"{name} width {width}: " + ", ".join(
            f"{m} {med[m]:.3f} s ({med['fp32'] / med[m]:.2f}x)" for m in MODES), flush=True)


if __name__ == "__main__":
    main()
