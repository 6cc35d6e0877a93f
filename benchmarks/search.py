"""Search throughput: MAE-DET's paper-scale evolution on a 2-core CPU.

    python benchmarks/search.py [--trials 100000] [--population 256] [--workers 1] [--batch N]
                                [--template-trials 5000] [--only-template]
                                [--latency-table PATH | --no-latency] [--clock wall|cpu] [--profile FILE]
                                [--out DIR]

Runs examples/search/maedet_r50_budget.yaml as it is: its space and strategy (population 256,
2 mutations per child), FLOPs budget of ResNet-50 at 480x480, layers budget 91, the latency
budget (at 224x224 through the kernel-table predictor) and the analytic multi-scale
entropy score, for `--trials` iterations. It prints candidates per second and where the time
went, from the run's own accounting (`RunResult.timings`):

* strategy: `propose` -- mutation and the space's rules -- and `feedback` (the population update);
* evaluation: the executor -- validate/decode, analytic costs, params/FLOPs budgets, score,
  latency kernel keys and the spec's fingerprint (with --workers N, the parent's wait for the
  pool, including the workers' start);
* latency: predictions from kernel keys, and kernels measured because the table lacked them;
* overhead: everything else between calling `run_search` and its return -- the run loop,
  duplicate checks, the trial store, the progress bar, loading the config,
  writing trials.csv, pareto.csv/.png, best.yaml and report.txt.

Kernel measurement: a fresh table lacks every kernel, and measuring one on ONNX Runtime takes a
few hundred ms (a paper-scale run meets tens of thousands), so without --latency-table the run
measures kernels with a stand-in (a made-up latency from the key's sizes, microseconds) and says
how many it measured; every key derivation, lookup, prediction and table write is real. With --latency-table (a table built by `archspec latency build-table`,
copied into the run directory first) kernels the table lacks are measured for real.

Then it measures the score's two forms on a few dozen candidates and prints their rank
correlation, and (``--template-trials N``, 0 to skip) compares a template space with the
hand-written MAE-DET space per candidate: a template of the same base with each stage's width,
kernel, bottleneck width and depth written as choices (`template_like_maedet`), searched by the
same evolution under the same FLOPs budget (no latency budget, so kernel measurement does not
blur the comparison) for N trials each; it prints both candidates-per-second figures, their
ratio (the issue asks for the template within 2x), and the decode cost alone of each space.
"""

from __future__ import annotations

import argparse
import cProfile
import random
import re
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `search` package: look in the project root instead.
sys.path[0] = str(ROOT)

import archspec  # noqa: E402
import archspec.compiler.latency.predictor as predictor_module  # noqa: E402
import archspec.search.run as run_module  # noqa: E402
from archspec.search_config import load_search_config  # noqa: E402
from archspec.search.run import run_search  # noqa: E402
from archspec.search.score import maedet_forward_score, maedet_score  # noqa: E402
from archspec.search.space import MaedetSearchSpace, Rejected  # noqa: E402

def stand_in_measure(counter: list):
    """A `measure_kernel` replacement: a made-up latency from the kernel key's sizes, computed
    in microseconds (no graph, no runtime). Its values mean nothing; the predictor's lookups,
    sums and table writes around it are the real ones."""
    import json

    from archspec.compiler.runtime import LatencyStats

    def measure(key, context, **_):
        data = json.loads(key)
        height, width = data.get("hw", (1, 1))
        work = data.get("in", 1) * data.get("out", data.get("classes", 1)) * height * width
        ms = 0.01 + work / 1e8 / data.get("stride", 1) ** 2
        counter[0] += 1
        stats = LatencyStats(ms, ms, ms, ms, 0.0, context.runtime, context.provider, context.threads, 1, 0)
        return stats, {"params": 0, "macs": work}

    return measure


def config_budget(text: str) -> str:
    """The config's latency budget as a phrase: "40 ms, 1 thread(s)"."""
    budgets = yaml.safe_load(text)["budgets"]
    threads = budgets.get("latency_threads")
    return f"{budgets['max_latency_ms']:g} ms, {f'{threads} thread(s)' if threads else 'all cores'}"


def paper_scale(args) -> None:
    text = (ROOT / "examples/search/maedet_r50_budget.yaml").read_text()
    text = text.replace("base: maedet_r50_base.yaml", f"base: {ROOT}/examples/search/maedet_r50_base.yaml")
    text = text.replace("population: 256", f"population: {args.population}")
    # The run's own table: the stand-in's times must never reach the machine's table (the config's own setting).
    text = text.replace("latency_table: machine", "latency_table: run")
    if args.no_latency:
        text = re.sub(r"\n  max_latency_ms: [^\n]*", "", text)
    measured = [0]
    original = predictor_module.measure_kernel
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "search.yaml", args.out or Path(tmp) / "run"
        config.write_text(text)
        if args.latency_table:
            out.mkdir(parents=True)
            shutil.copy(args.latency_table, out / "latency.sqlite")
        else:
            predictor_module.measure_kernel = stand_in_measure(measured)
        profile = cProfile.Profile() if args.profile else None
        # --clock cpu: the run's own accounting (search/run.py reads time.perf_counter) and the
        # total on this process's CPU clock, which a busy machine's other processes do not inflate
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        run_module.time = types.SimpleNamespace(perf_counter=clock)
        try:
            start = clock()
            if profile:
                profile.enable()
            result = run_search(config, out, max_trials=args.trials, progress=False, workers=args.workers,
                                batch=args.batch)
            if profile:
                profile.disable()
            wall = clock() - start
        finally:
            predictor_module.measure_kernel = original
            run_module.time = time
        if profile:
            profile.dump_stats(args.profile)
        report = (out / "report.txt").read_text()
    t = result.timings
    feedback = getattr(t, "feedback", 0.0)  # (timed since the strategy's feedback got its own pass)
    strategy = t.propose + feedback
    overhead = wall - strategy - t.evaluate - t.latency
    if args.no_latency:
        latency = "no latency budget"
    elif args.latency_table:
        latency = f"latency budget {config_budget(text)} at 224x224, measured table"
    else:
        latency = f"latency budget {config_budget(text)} at 224x224, {measured[0]:,} kernels measured by the stand-in"
    batch = f", batch {args.batch}" if args.batch else ""
    print(f"MAE-DET evolution, population {args.population}, {result.trials:,} trials at 480x480 ({latency}), "
          f"workers {args.workers}{batch}:")
    print(f"  {'CPU' if args.clock == 'cpu' else 'wall'} time {wall:.1f} s, {result.trials / wall:,.0f} candidates/s"
          + (" (CPU clock: shares of this process's CPU time)" if args.clock == "cpu" else ""))
    rows = [("strategy (propose: mutation, the space's rules; feedback: the population)", strategy),
            ("  of which feedback", feedback),
            ("evaluation (validate/decode, costs, params/FLOPs budgets, score, kernel keys, fingerprint)", t.evaluate),
            ("latency (predictor lookups, kernel measurements)", t.latency),
            ("overhead (the rest: run loop, store, progress, config, outputs)", overhead),
            ("  of which outputs (trials.csv, pareto.csv/.png, best.yaml, report.txt/.html)", t.outputs)]
    for name, seconds in rows:
        print(f"  {name:<93} {seconds:7.2f} s  {seconds / wall:6.1%}")
    print(f"  search overhead (outside proposing and evaluating, outputs included): {overhead / wall:.1%} "
          f"(target 2%: {'met' if overhead / wall < 0.02 else 'NOT met'})")
    print("  " + report.replace("\n", "\n  ").rstrip())
    if not args.latency_table and not args.no_latency:
        print("  (the front's predictions come from the stand-in's made-up kernel times and its end-to-end "
              "times are real,\n   so their ratio says nothing of the predictor: benchmarks/latency_predictor.py "
              "measures that)")


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


def template_like_maedet(base) -> dict:
    """A template over MAE-DET's base: per stage, widths and bottleneck widths at the space's
    width ratios of the base's (rounded to multiples of 8), kernels 3 or 5, depth within 2."""
    from archspec.search.space import smart_round

    ratios = [0.5, 0.6, 0.8, 1.0, 1.25, 1.5]
    widths = lambda w: {"choice": sorted({smart_round(w * r) for r in ratios})}  # noqa: E731
    data = archspec.to_data(base)
    data["stem"][0]["out_channels"] = widths(base.stem[0].out_channels)
    for stage, spec in zip(data["stages"], base.stages):
        stage["out_channels"] = widths(spec.out_channels)
        stage["depth"] = {"int": [max(1, spec.depth - 2), spec.depth + 2]}
        stage["block"] = {**stage["block"], "kernel": {"choice": [3, 5]},
                          "bottleneck_channels": widths(spec.block.bottleneck_channels)}
    return data


def template_comparison(args) -> None:
    import yaml

    from archspec.search.space import AnnotatedSearchSpace, make_space
    from archspec.search_config import AnnotatedSpace

    config, base = load_search_config(ROOT / "examples/search/maedet_r50_budget.yaml")
    strategy = f"{{type: maedet_evolution, population: {args.population}, mutations_per_child: 2}}"
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "template.yaml").write_text(yaml.safe_dump(template_like_maedet(base), sort_keys=False))
        spaces = {"hand-written maedet": f"base: {ROOT}/examples/search/maedet_r50_base.yaml\n"
                                         f"space: {{type: maedet, kernels: [3, 5], max_layers: 91}}",
                  "annotated template": "space: {type: annotated, template: template.yaml}"}
        for name, space in spaces.items():
            path = tmp / f"{name.split()[0]}.yaml"
            path.write_text(f"type: search\n{space}\nstrategy: {strategy}\n"
                            f"budgets: {{input_size: 480, max_flops: 37.6e9}}\nseed: 0\n")
            start = time.perf_counter()
            result = run_search(path, tmp / f"run-{name.split()[0]}", max_trials=args.template_trials,
                                progress=False)
            rates[name] = (result.trials / (time.perf_counter() - start), result)
        template = AnnotatedSearchSpace(AnnotatedSpace(type="annotated", template=template_like_maedet(base)), base)
        hand = make_space(config.space, base)
        decode_us = {}
        for name, space in (("hand-written maedet", hand), ("annotated template", template)):
            rng, genotypes = random.Random(0), []
            while len(genotypes) < 200:
                try:
                    genotypes.append(space.mutate(space.base, rng, 2))
                except Rejected:
                    continue
            start = time.perf_counter()
            for genotype in genotypes:
                try:
                    space.decode(genotype)
                except Rejected:
                    pass
            decode_us[name] = (time.perf_counter() - start) / len(genotypes) * 1e6
    print(f"\nTemplate space vs hand-written MAE-DET space: maedet_evolution (population {args.population}), "
          f"{args.template_trials:,} trials each, FLOPs budget 37.6 G at 480x480, no latency budget:")
    for name, (rate, result) in rates.items():
        print(f"  {name:<20} {rate:8,.0f} candidates/s   decode {decode_us[name]:6.0f} us/candidate   "
              f"({result.feasible:,} feasible, best score {result.best_score:.1f})")
    ratio = rates["hand-written maedet"][0] / rates["annotated template"][0]
    print(f"  per candidate, the template space costs {ratio:.2f}x the hand-written one "
          f"({'within' if ratio <= 2 else 'NOT within'} 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="proposals per round (changes the search)")
    latency = parser.add_mutually_exclusive_group()
    latency.add_argument("--latency-table", type=Path, help="a latency table to start from (copied)")
    latency.add_argument("--no-latency", action="store_true", help="drop the latency budget")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time the paper-scale run by the wall clock or this process's CPU clock (steadier on a "
                             "busy machine; with --workers > 1 it misses the pool's work)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run to this file")
    parser.add_argument("--out", type=Path, help="keep the run directory here (default: a temporary one)")
    parser.add_argument("--candidates", type=int, default=36, help="candidates for the score-form comparison "
                                                                   "(0: skip it)")
    parser.add_argument("--template-trials", type=int, default=5000,
                        help="trials per space for the template-vs-MAE-DET comparison (0: skip it)")
    parser.add_argument("--only-template", action="store_true", help="run only the template comparison")
    args = parser.parse_args()
    if not args.only_template:
        paper_scale(args)
        if args.candidates > 1:
            rank_agreement(args.candidates)
    if args.template_trials > 0:
        template_comparison(args)


if __name__ == "__main__":
    main()
