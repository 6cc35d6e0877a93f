"""Scale-out: evaluations per second of each executor (serial, process pool, Ray) with 1 and 2
workers, for a cheap evaluator and for one that trains.

    python benchmarks/scale.py [--analytic-jobs 400] [--training-jobs 8] [--steps 2] [--cpus 2]

Both evaluators judge the same candidates, drawn from examples/search/maedet_r50_budget.yaml's
MAE-DET space (seeded mutations of its base):

* analytic: the search's own training-free evaluator (rules, analytic params/FLOPs, MAE-DET
  score): about a millisecond per candidate, so what it measures is each executor's per-job
  overhead (messages, pickling, scheduling);
* training: the analytic checks, then a short proxy training of the candidate -- build it in
  PyTorch, `--steps` SGD steps of a linear classifier on its C5 features over a fixed, seeded
  batch of 32x32 images, one thread per worker -- scored by the final loss. Seconds per
  candidate: where scale-out pays.

Each executor is started and warmed up with one job per worker (process spawn, Ray actor start,
evaluator construction and that first job are reported apart, as "warm-up"), then timed on the
whole job list. Columns: evaluations per second; the speed-up over serial; the
evaluator's own time per job, as measured inside the worker (`Outcome.seconds`: on a busy
machine a worker's compute slows down too, and this shows it apart from the executor's cost);
and the executor's per-job overhead, (wall time x workers / jobs) - the evaluator's own time
per job: messages, pickling, scheduling, and idle workers waiting for the last chunk. Ray runs on a private
local instance with `--cpus` CPUs, started once (its start time is printed).

Every executor must return the same outcomes as the serial one; the benchmark checks it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # this folder's search.py must not shadow anything

from archspec.search.evaluators import Outcome, make_evaluator  # noqa: E402
from archspec.search.executor import PoolExecutor, SerialExecutor  # noqa: E402
from archspec.search_config import load_search_config  # noqa: E402

CONFIG = ROOT / "examples" / "search" / "maedet_r50_budget.yaml"


class ProxyTrainingEvaluator:
    """The analytic checks, then a short proxy training of the candidate (see the docstring)."""

    IMAGE_SIZE, BATCH, CLASSES, SEED = 32, 4, 10, 0

    def __init__(self, config, base, steps: int):
        import torch

        torch.set_num_threads(1)  # one core per worker: the executors, not torch, use the cores
        self.analytic = make_evaluator(config, base)
        self.space = self.analytic.space
        self.steps = steps
        generator = torch.Generator().manual_seed(self.SEED)
        self.images = torch.randn(self.BATCH, 3, self.IMAGE_SIZE, self.IMAGE_SIZE, generator=generator)
        self.labels = torch.randint(self.CLASSES, (self.BATCH,), generator=generator)

    def evaluate(self, genotype) -> Outcome:
        import torch

        from archspec import compiler

        start = time.perf_counter()
        outcome = self.analytic.evaluate(genotype)
        if outcome.status != "passed":
            return outcome
        torch.manual_seed(self.SEED)
        backbone = compiler.build(self.space.decode(genotype))
        with torch.no_grad():
            channels = backbone.eval()(self.images[:1])["C5"].shape[1]
        backbone.train()
        head = torch.nn.Linear(channels, self.CLASSES)
        optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
        for _ in range(self.steps):
            features = backbone(self.images)["C5"].mean(dim=(2, 3))
            loss = torch.nn.functional.cross_entropy(head(features), self.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return dataclasses.replace(outcome, score=-loss.item(), seconds=time.perf_counter() - start)


def candidates(config, base, count: int) -> list:
    """`count` distinct genotypes: seeded mutations of the base."""
    space = make_evaluator(config, base).space
    rng, found = random.Random(0), {}
    while len(found) < count:
        genotype = space.mutate(space.base, rng, rng.randint(1, 3))
        found.setdefault(genotype, None)
    return list(found)


def comparable(outcomes):
    return [dataclasses.replace(o, seconds=0.0) for o in outcomes]


def measure(make, jobs, workers: int) -> tuple[float, float, list]:
    """(start seconds, evaluation seconds, outcomes) of a fresh executor."""
    began = time.perf_counter()
    executor = make()
    executor.evaluate(jobs[:workers])  # warm-up: spawned workers, evaluators built
    started = time.perf_counter()
    outcomes = executor.evaluate(jobs)
    finished = time.perf_counter()
    executor.close()
    return started - began, finished - started, outcomes


def bench(name: str, factory, config, base, jobs, ray_executor) -> dict:
    rows, results = [], {}
    kinds = [("serial", 1, lambda: SerialExecutor(factory(config, base)))]
    kinds += [("pool", n, lambda n=n: PoolExecutor(n, config, base, factory)) for n in (1, 2)]
    if ray_executor is not None:
        kinds += [("ray", n, lambda n=n: ray_executor(n, config, base, factory=factory)) for n in (1, 2)]
    for kind, workers, make in kinds:
        start, seconds, outcomes = measure(make, jobs, workers)
        results[(kind, workers)] = (seconds, outcomes)
        rows.append((kind, workers, start, seconds))
    serial_seconds, serial_outcomes = results[("serial", 1)]
    print(f"\n{name} evaluator, {len(jobs)} candidates "
          f"({sum(o.status == 'passed' for o in serial_outcomes)} within budgets):")
    print(f"  {'executor':<8} {'workers':>7} {'warm-up s':>10} {'evals/s':>9} {'speed-up':>8} {'eval ms/job':>12} "
          f"{'overhead ms/job':>16}")
    for kind, workers, start, seconds in rows:
        outcomes = results[(kind, workers)][1]
        same = comparable(outcomes) == comparable(serial_outcomes)
        inside = sum(o.seconds for o in outcomes) / len(jobs)
        overhead = seconds * workers / len(jobs) - inside
        print(f"  {kind:<8} {workers:>7} {start:>10.2f} {len(jobs) / seconds:>9.2f} {serial_seconds / seconds:>7.2f}x "
              f"{inside * 1e3:>12.2f} {overhead * 1e3:>16.2f}" + ("" if same else "  OUTCOMES DIFFER"))
        if not same:
            raise SystemExit(f"{kind} with {workers} workers returned other outcomes than the serial executor")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analytic-jobs", type=int, default=400)
    parser.add_argument("--training-jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="SGD steps of the proxy training")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray (e.g. not installed)")
    args = parser.parse_args()

    config, base = load_search_config(CONFIG)
    ray_executor = None
    if not args.no_ray:
        from archspec.search.ray_executor import RayExecutor, import_ray

        ray = import_ray()
        began = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="error")
        print(f"local Ray instance ({args.cpus} CPUs) started in {time.perf_counter() - began:.1f} s")
        ray_executor = RayExecutor
    try:
        genotypes = candidates(config, base, max(args.analytic_jobs, args.training_jobs))
        bench("analytic", make_evaluator, config, base, list(enumerate(genotypes[:args.analytic_jobs])), ray_executor)
        # A partial of a module-level class: picklable for the pool, shipped by Ray.
        bench(f"training ({args.steps} proxy steps)", functools.partial(ProxyTrainingEvaluator, steps=args.steps),
              config, base,
              list(enumerate(genotypes[:args.training_jobs])), ray_executor)
    finally:
        if ray_executor is not None:
            ray.shutdown()


if __name__ == "__main__":
    main()
