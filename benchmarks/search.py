"""Search throughput: MAE-DET's paper-scale evolution on a 2-core CPU.

    python benchmarks/search.py [--trials 100000] [--population 256]

Runs examples/search/maedet_r50_budget.yaml's space and strategy (population 256, FLOPs budget of
ResNet-50 at 480x480, layers budget 91, analytic multi-scale entropy score) for `--trials`
iterations without the latency budget (the latency predictor is benchmarked in
benchmarks/latency_predictor.py), and prints candidates per second, where the time goes
(evaluation = analytic costs + budgets + score; the rest = propose/mutate, validation and the
trial store), and the wall time. Then it measures the score's two forms on a few dozen
candidates and prints their rank correlation.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `search` package: look in the project root instead.
sys.path[0] = str(ROOT)

import search.run as run_module  # noqa: E402
from archspec.search_config import load_search_config
from search.run import run_search
from search.score import maedet_forward_score, maedet_score
from search.space import MaedetSearchSpace, Rejected


def timed_evaluator(totals: dict):
    original = run_module.Evaluator.__call__

    def wrapped(self, *args):
        start = time.perf_counter()
        try:
            return original(self, *args)
        finally:
            totals["evaluate"] += time.perf_counter() - start

    return original, wrapped


def paper_scale(trials: int, population: int) -> None:
    config_text = (ROOT / "examples/search/maedet_r50_budget.yaml").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "search.yaml"
        config.write_text(config_text.replace("base: maedet_r50_base.yaml", f"base: {ROOT}/examples/search/maedet_r50_base.yaml")
                          .replace("  max_latency_ms: 120\n", "").replace("population: 256", f"population: {population}"))
        totals = {"evaluate": 0.0}
        original, wrapped = timed_evaluator(totals)
        run_module.Evaluator.__call__ = wrapped
        try:
            start = time.perf_counter()
            result = run_search(config, Path(tmp) / "run", max_trials=trials, progress=False)
            wall = time.perf_counter() - start
        finally:
            run_module.Evaluator.__call__ = original
        report = (Path(tmp) / "run" / "report.txt").read_text()
    print(f"MAE-DET evolution, population {population}, {trials:,} trials at 480x480 (no latency budget):")
    print(f"  wall time {wall:.1f} s, {trials / wall:,.0f} candidates/s")
    print(f"  evaluation (validate+decode, analytic costs, budgets, score): {totals['evaluate']:.1f} s "
          f"({totals['evaluate'] / wall:.1%}); outside evaluation (propose/mutate, store, outputs): "
          f"{wall - totals['evaluate']:.1f} s ({1 - totals['evaluate'] / wall:.1%})")
    print("  " + report.replace("\n", "\n  ").rstrip())
    print(f"  best score {result.best_score:.2f}")


def rank_agreement(count: int) -> None:
    config, base = load_search_config(ROOT / "examples/search/maedet_r50_budget.yaml")
    space = MaedetSearchSpace(config.space, base)
    rng = random.Random(0)
    specs, seen = [], set()
    while len(specs) < count:
        try:
            genotype = space.mutate(space.base, rng, rng.randint(2, 12))
        except Rejected:
            continue
        if genotype not in seen:
            seen.add(genotype)
            specs.append(space.decode(genotype))
    start = time.perf_counter()
    analytic = [maedet_score(s) for s in specs]
    t_analytic = time.perf_counter() - start
    start = time.perf_counter()
    forward = [maedet_forward_score(s, (64, 64), batch=2, repeats=1) for s in specs]
    t_forward = time.perf_counter() - start
    rank = lambda xs: {i: r for r, i in enumerate(sorted(range(len(xs)), key=lambda i: xs[i]))}  # noqa: E731
    ra, rf = rank(analytic), rank(forward)
    rho = 1 - 6 * sum((ra[i] - rf[i]) ** 2 for i in range(count)) / (count * (count ** 2 - 1))
    print(f"\nScore forms on {count} candidates of the space: Spearman rank correlation {rho:.3f}; "
          f"analytic {t_analytic / count * 1e6:.0f} us/candidate, forward (64x64, batch 2) "
          f"{t_forward / count * 1e3:.0f} ms/candidate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--candidates", type=int, default=36)
    args = parser.parse_args()
    paper_scale(args.trials, args.population)
    rank_agreement(args.candidates)


if __name__ == "__main__":
    main()
