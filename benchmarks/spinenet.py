"""SpineNet-49S/49/96/143/190 next to ResNet-50, each at the variant's paper input size.

    python benchmarks/spinenet.py [--threads 2] [--budget 6] [--size N]

Per variant: backbone params and MACs (conv + linear multiply-adds; FLOPs = 2 x MACs), compile
time (validate + lower + build), torch eager forward latency at batch 1 (best of the timed
repeats after one warm-up; the repeat count is printed, fewer for the slow ones), and ResNet-50
(examples/backbones/resnet50.yaml) at the same size, timed alternately with the variant. Then
the comparison with the paper: backbone + an analytic RetinaNet head against MODEL_ZOO.md's
detector totals. Other processes share the CPU: read latencies as ratios within one run; when
another process keeps a core busy, ``--threads 1`` avoids the 5-10x stalls that two threads
waiting on each other suffer (measured here: SpineNet-49 at 640 took 6.7 s with 2 threads and
1.3 s with 1 while another benchmark ran).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import archspec
from archspec import compiler

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "examples" / "backbones"

# name: (paper input size, paper params M, paper 'FLOPs' B (multiply-adds), head width, head convs per branch)
PAPER = {
    "spinenet49s": (640, 11.9, 33.8, 128, 4),
    "spinenet49": (640, 28.5, 85.4, 256, 4),
    "spinenet96": (1024, 43.0, 265.4, 256, 4),
    "spinenet143": (1280, 67.0, 524.0, 256, 4),
    "spinenet190": (1280, 163.6, 1885.0, 512, 7),
}


def retinanet_head(width: int, convs: int, size: int, classes: int = 91, anchors: int = 9) -> tuple[int, int]:
    """Params and MACs of the TF RetinaNet head (levels 3..7, size x size input): per branch
    `convs` 3x3 convs with bias, shared across levels, with one BN per level; then a 3x3
    prediction conv with bias (classes x anchors outputs, and 4 x anchors for boxes)."""
    tower = convs * (9 * width * width + width) + convs * 5 * 2 * width
    predict = sum(9 * width * outs + outs for outs in (classes * anchors, 4 * anchors))
    positions = sum((-(-size // 2 ** level)) ** 2 for level in range(3, 8))
    macs = positions * (2 * convs * 9 * width * width + 9 * width * (classes + 4) * anchors)
    return 2 * tower + predict, macs


def compile_seconds(path: Path) -> tuple[object, object, float]:
    """(spec, module, seconds for validate + lower + build)."""
    start = time.perf_counter()
    spec = archspec.load(path)
    module = compiler.build(compiler.lower(spec)).eval()
    return spec, module, time.perf_counter() - start


def paired_latency_ms(first, second, size: int, budget_s: float) -> tuple[float, float, int]:
    """Best-of-n eager latencies (ms, batch 1) of two modules timed alternately, so both see the
    same CPU load (the minimum is the figure least disturbed by other processes), and n (from the
    budget and the warm-up time)."""
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        start = time.perf_counter()
        first(x)  # warm-ups
        second(x)
        warm = time.perf_counter() - start
        repeats = max(1, min(10, int(budget_s / max(warm, 1e-6))))
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            for module, out in ((first, times[0]), (second, times[1])):
                start = time.perf_counter()
                module(x)
                out.append(time.perf_counter() - start)
    return 1000 * min(times[0]), 1000 * min(times[1]), repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timed repeats per model (>= 1 repeat)")
    parser.add_argument("--size", type=int, default=None, help="use this input size for all (default: paper sizes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {args.threads} threads; MACs = conv + linear multiply-adds, FLOPs = 2 x MACs")
    header = (f"{'model':<12} {'input':>5} {'params':>12} {'GMACs':>9} {'compile s':>9} {'latency ms':>10} "
              f"{'reps':>4} | {'R50 GMACs':>9} {'R50 ms':>8} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for name, (paper_size, *_rest) in PAPER.items():
        size = args.size or paper_size
        spec, module, seconds = compile_seconds(ZOO / f"{name}.yaml")
        counts = compiler.costs(spec, size)
        r50_spec, r50, r50_seconds = compile_seconds(ZOO / "resnet50.yaml")
        r50_macs = compiler.costs(r50_spec, size).macs
        ms, r50_ms, reps = paired_latency_ms(module, r50, size, args.budget)
        del module, r50
        rows.append((name, size, counts))
        print(f"{name:<12} {size:>5} {counts.params:>12,} {counts.macs / 1e9:>9.2f} {seconds:>9.2f} {ms:>10.1f} "
              f"{reps:>4} | {r50_macs / 1e9:>9.2f} {r50_ms:>8.1f} {ms / r50_ms:>6.2f}", flush=True)

    print("\nBackbone + analytic RetinaNet head vs MODEL_ZOO.md detector totals (params M, 'FLOPs' B = multiply-adds)")
    print(f"{'model':<12} {'input':>5} {'head':>9} {'params M':>9} {'paper':>6} {'diff':>7} "
          f"{'GMACs':>8} {'paper':>7} {'diff':>7}")
    for name, size, counts in rows:
        paper_size, params_m, flops_b, width, convs = PAPER[name]
        if size != paper_size:
            continue
        head_params, head_macs = retinanet_head(width, convs, size)
        total_p, total_m = (counts.params + head_params) / 1e6, (counts.macs + head_macs) / 1e9
        print(f"{name:<12} {size:>5} {f'{convs}x{width}':>9} {total_p:>9.2f} {params_m:>6.1f} "
              f"{100 * (total_p / params_m - 1):>+6.2f}% {total_m:>8.1f} {flops_b:>7.1f} "
              f"{100 * (total_m / flops_b - 1):>+6.2f}%")


if __name__ == "__main__":
    main()
