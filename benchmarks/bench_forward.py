"""Forward-time benchmark of one FCN in every mode, printed as a table and written as JSON.

    .venv/bin/python benchmarks/bench_forward.py --model fcn8s_vgg16 --size 500 --trials 20 --threads 2 \
        --modes auto --reference --out results/benchmark/bench_forward_fcn8s_vgg16.json

``--modes auto`` times the modes this machine's instruction set allows (``segbench.evaluation.inference``)
and names the one it chooses and why. ``--reference`` also times pytorch-fcn's FCN8s (torchfcn where it
imports, else ``reference_fcn8s.py``'s re-implementation of its layer layout) in eager fp32 in the same
round-robin, with the same weights, and reports each mode's ratio to it.

Targets (issue 26), as ratios to the reference's eager fp32 in the same process: at least 3x on CPUs without
bf16, 5x with AVX512_BF16, 10x with AMX; every mode reported usable agrees with fp32 on >= 99% of pixels.
"""

import argparse
import sys
from pathlib import Path

from segbench.evaluation.benchmark import SELECTIONS, run_benchmark, write_benchmark_json
from segbench.infra import runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fcn8s_vgg16")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["auto"], choices=SELECTIONS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--reference", action="store_true",
                        help="also time pytorch-fcn's FCN8s in eager fp32 (FCN-8s VGG16 at full width only)")
    parser.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = parser.parse_args()
    reference = None
    if args.reference:
        if args.model != "fcn8s_vgg16" or args.width != 1.0:
            parser.error(f"--reference is pytorch-fcn's FCN8s: needs --model fcn8s_vgg16 --width 1.0, got "
                         f"{args.model} at width {args.width}")
        sys.path.insert(0, str(Path(__file__).parent))
        from reference_fcn8s import reference as reference_fcn8s
        reference = reference_fcn8s()
    runtime.setup(threads=args.threads)
    result = run_benchmark(args.model, width=args.width, size=args.size, trials=args.trials, warmup=args.warmup,
                           modes=tuple(args.modes), device=args.device, reference=reference)
    print(f"{args.model} width {args.width} at {args.size}x{args.size}, {result['gflop']:.1f} GFLOP, "
          f"{result['device']} ({' '.join(result['why']['flags'])}), torch {result['torch_version']}, "
          f"{result['threads']} threads; practical peak "
          + ", ".join(f"{p} {v['gflops_per_s']:.0f} GFLOP/s" for p, v in result["peak"].items()))
    print(f"{'mode':<14}{'mean ms':>10}{'median ms':>11}{'min ms':>9}{'vs fp32':>9}{'vs ref':>8}{'agreement':>11}"
          f"{'1st call s':>12}{'GFLOP/s':>9}{'of peak':>9}")
    ref = result["reference"]
    if ref:
        print(f"{'reference':<14}{ref['mean_ms']:>10.1f}{ref['median_ms']:>11.1f}{ref['min_ms']:>9.1f}"
              f"{ref['speedup_vs_fp32']:>8.2f}x{1:>7.2f}x{100 * ref['argmax_agreement']:>10.2f}%  {ref['name']}")
    for mode, s in result["modes"].items():
        if "error" in s:
            print(f"{mode:<14}unusable: {s['error']}")
            continue
        vs_ref = f"{s['ratio_vs_reference']:>7.2f}x" if s["ratio_vs_reference"] else f"{'-':>8}"
        print(f"{mode:<14}{s['mean_ms']:>10.1f}{s['median_ms']:>11.1f}{s['min_ms']:>9.1f}{s['speedup_vs_fp32']:>8.2f}x"
              f"{vs_ref}{100 * s['argmax_agreement']:>10.2f}%{s['first_call_s']:>12.1f}{s['gflops_per_s']:>9.0f}"
              f"{100 * s['peak_fraction']:>8.0f}%")
    why = result["why"]
    print(f"chosen: {result['chosen_mode']} ({why['rule']}); excluded: "
          + ("; ".join(f"{m}: {r}" for m, r in why["excluded"].items()) or "none"))
    if args.out:
        print("wrote", write_benchmark_json(result, args.out))


if __name__ == "__main__":
    main()
