"""Forward-time benchmark of one FCN in every mode, printed as a table and written as JSON.

    .venv/bin/python benchmarks/bench_forward.py --model fcn8s_vgg16 --size 500 --trials 20 \
        --out results/benchmark/bench_forward_fcn8s_vgg16.json

Target (issue 3): on the 2-core CPU the fastest mode is >= 5x faster than eager fp32 in the same process
with >= 99.5% argmax agreement.
"""

import argparse

from segbench.evaluation.benchmark import MODES, run_benchmark, write_benchmark_json
from segbench.infra import runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fcn8s_vgg16")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = parser.parse_args()
    runtime.setup(threads=args.threads)
    result = run_benchmark(args.model, width=args.width, size=args.size, trials=args.trials, warmup=args.warmup,
                           modes=tuple(args.modes), device=args.device)
    print(f"{args.model} width {args.width} at {args.size}x{args.size}, {result['gflop']:.1f} GFLOP, "
          f"{result['device']} ({' '.join(result['instruction_sets'])}), torch {result['torch_version']}, "
          f"{result['threads']} threads; practical peak "
          + ", ".join(f"{p} {v['gflops_per_s']:.0f} GFLOP/s" for p, v in result["peak"].items()))
    print(f"{'mode':<14}{'mean ms':>10}{'median ms':>11}{'min ms':>9}{'speed-up':>10}{'agreement':>11}{'1st call s':>12}"
          f"{'GFLOP/s':>9}{'of peak':>9}")
    for mode, s in result["modes"].items():
        print(f"{mode:<14}{s['mean_ms']:>10.1f}{s['median_ms']:>11.1f}{s['min_ms']:>9.1f}{s['speedup_vs_fp32']:>9.2f}x"
              f"{100 * s['argmax_agreement']:>10.2f}%{s['first_call_s']:>12.1f}{s['gflops_per_s']:>9.0f}"
              f"{100 * s['peak_fraction']:>8.0f}%")
    if args.out:
        print("wrote", write_benchmark_json(result, args.out))


if __name__ == "__main__":
    main()
