"""Reproducibility of a latency-budgeted search: the same config run twice, once with a competing
CPU-bound process on the machine.

    .venv/bin/python benchmarks/latency_repro.py [--trials 5000] [--hogs 1] [--own]

Runs the shipped latency-budgeted MAE-DET search (examples/search/maedet_r50_budget.yaml) from
an empty latency table, then again with `--hogs` processes spinning on the CPU for the whole
second run. By default both runs are the config as shipped: its kernels go into the machine's
table (`budgets.latency_table: machine`; here a fresh file through $ARCHSPEC_LATENCY_TABLE, empty
when the first run starts), which the second run then shares, as every later run of the config
on one machine does. With `--own` each run measures into its own empty table
(`budgets.latency_table=run`: the hard case, every design kernel is measured again under load).

Prints, for each run, trials/s, kernels measured, kernels predicted, and then: the share of
candidates judged by both runs (same fingerprint) on which they agree about the latency budget,
whether both chose the same best spec, and whether the trial logs are identical.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "search" / "maedet_r50_budget.yaml"


def _spin(stop) -> None:
    """A competing CPU-bound process."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def run_once(config: Path, out: Path, trials: int, table: Path, overrides: tuple[str, ...] = ()) -> dict:
    """One run of `config` as it is (its own table choice); `table` is where its kernels go."""
    import sqlite3

    from archspec.compiler.latency import LatencyTable
    from archspec.search.run import run_search

    before = LatencyTable(table).count() if table.exists() else 0
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_search(config, out, max_trials=trials, progress=False, overrides=overrides)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    after = sqlite3.connect(table).execute("SELECT COUNT(*) FROM kernels").fetchone()[0]
    best = (out / "best.yaml").read_text() if (out / "best.yaml").exists() else ""
    # CPU time of this process: with 1 intra-op thread the search runs on one core, so on an idle
    # machine wall time equals it; on a shared machine it is the figure load does not inflate.
    return {"wall_s": wall, "cpu_s": cpu, "trials": trials, "trials_per_s": trials / wall,
            "trials_per_cpu_s": trials / cpu, "measured": after - before,
            "summary": getattr(result, "latency_kernels", ""),
            "best": best, "best_fingerprint": getattr(result, "best_fingerprint", None),
            "rows": _rows(out / "trials.csv")}


def _rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def agreement(budget: float, first: list[dict], second: list[dict]) -> tuple[int, float, int]:
    """(candidates judged on latency by both runs, share on which they agree, total distinct)."""
    def judged(rows):
        return {r["fingerprint"]: float(r["latency_ms"]) for r in rows if r.get("latency_ms") not in ("", None)}

    a, b = judged(first), judged(second)
    common = sorted(set(a) & set(b))
    agree = sum((a[f] <= budget) == (b[f] <= budget) for f in common)
    return len(common), (agree / len(common) if common else float("nan")), len(set(a) | set(b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--hogs", type=int, default=1, help="competing CPU-bound processes in the second run")
    parser.add_argument("--own", action="store_true",
                        help="each run measures into its own empty table (budgets.latency_table=run)")
    parser.add_argument("--keep", type=Path, help="keep the run folders here")
    parser.add_argument("--once", action="store_true", help="only the first run (search speed from an empty table)")
    parser.add_argument("--latency-threads", type=int, default=None,
                        help="override budgets.latency_threads (1: the CPU-time clock); default: the config's")
    args = parser.parse_args(argv)
    overrides = (f"budgets.latency_threads={args.latency_threads}",) if args.latency_threads else ()
    overrides += ("budgets.latency_table=run",) if args.own else ()

    text = CONFIG.read_text().replace("base: maedet_r50_base.yaml", f"base: {CONFIG.parent / 'maedet_r50_base.yaml'}")
    budgets = yaml.safe_load(text)["budgets"]
    budget = float(budgets["max_latency_ms"])
    threads = args.latency_threads or budgets.get("latency_threads") or "default (physical cores)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "search.yaml"
        config.write_text(text)
        print(f"{CONFIG.name}: {args.trials} trials per run, max_latency_ms {budget:g}, latency threads {threads}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        machine = folder / "machine.sqlite"
        os.environ["ARCHSPEC_LATENCY_TABLE"] = str(machine)  # the machine's table, empty at the start

        def table(run: str) -> Path:
            return folder / run / "latency.sqlite" if args.own else machine

        first = run_once(config, folder / "quiet", args.trials, table("quiet"), overrides)
        print(f"run 1 (empty table): {first['wall_s']:.1f} s, {first['trials_per_s']:.1f} trials/s "
              f"({first['cpu_s']:.1f} s of CPU time: {first['trials_per_cpu_s']:.1f} trials per CPU second), "
              f"{first['measured']} kernels measured; load average {os.getloadavg()[0]:.1f}\n  {first['summary']}",
              flush=True)
        if args.once:
            return 0
        stop = multiprocessing.Event()
        hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.hogs)]
        for hog in hogs:
            hog.start()
        try:
            second = run_once(config, folder / "loaded", args.trials, table("loaded"), overrides)
        finally:
            stop.set()
            for hog in hogs:
                hog.join(timeout=10)
        print(f"run 2 ({args.hogs} competing process(es), {'its own empty' if args.own else 'the shared machine'} table): "
              f"{second['wall_s']:.1f} s, {second['trials_per_s']:.1f} trials/s ({second['cpu_s']:.1f} s of CPU "
              f"time), {second['measured']} kernels measured; load average {os.getloadavg()[0]:.1f}\n  "
              f"{second['summary']}", flush=True)
    common, share, distinct = agreement(budget, first["rows"], second["rows"])
    identical = [{k: v for k, v in r.items() if k != "seconds"} for r in first["rows"]] == \
                [{k: v for k, v in r.items() if k != "seconds"} for r in second["rows"]]
    print(f"latency feasibility: the runs agree on {share:.2%} of the {common} candidates both judged on latency "
          f"({distinct} distinct candidates judged in all)")
    print(f"same best spec: {first['best'] == second['best'] and bool(first['best'])}; identical trial logs: {identical}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
