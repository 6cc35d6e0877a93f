"""The search run: propose -> evaluate (validate, budgets, score) -> judge -> store, with resume.

The run proceeds in rounds: the strategy proposes a round of candidates, an executor evaluates
them (in this process, or in a pool with ``--workers N``: search/executor.py), and the trials
are judged, stored and fed back to the strategy in trial-id order. Completion order never
matters, so a run's trials are the same for any number of workers.

How big is a round? By default, as big as the strategy can propose without changing what a
serial propose/feedback loop would propose (`proposes_ahead`): a whole DetNAS generation, a
whole CR-NAS round, any number of random-walk candidates -- but one candidate for the two
evolutions (MAE-DET's and aging), whose every proposal depends on the previous feedback. With
``--batch N`` a round is N proposals whatever the strategy (the evolutions then draw N children
from the same population before any joins it): results then depend on N, never on the workers.

Resuming replays the stored trials through a fresh strategy (same seed): every proposal must
equal the stored genotype, and the stored outcome is fed back instead of re-evaluating. The
run then continues exactly as an uninterrupted one would (with any --workers; --batch must be
the one the run started with, and is checked). The store commits in batches
(search/store.py), so a killed run may lose its last fraction of a second of trials; those
are proposed and evaluated again, which gives the same trials since evaluation is a pure
function of the genotype (the latency table commits each kernel as it is measured, so the
re-evaluation reads the same kernel times).
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import archspec
from archspec.errors import SpecError
from archspec.search_config import load_search_config
from archspec.search.budgets import BudgetChecker
from archspec.search.evaluators import Outcome
from archspec.search.executor import Executor, make_executor
from archspec.search.report import RunData, config_meta, write_report
from archspec.search.score import ScoreError
from archspec.search.space import Rejected, make_space
from archspec.search.store import Trial, TrialStore
from archspec.search.strategies import (CrnasTwoStepStrategy, DetnasEvolutionStrategy, Proposal, RandomWalkStrategy,
                               make_strategy)

ROUND_LIMIT = 256
"""Most proposals per round when the strategy sets the round (no --batch); it never changes results."""
PROGRESS_SECONDS = 0.2
"""Shortest time between progress-bar updates."""


@dataclass
class Timings:
    """Where a run's time went, in seconds (benchmarks/search.py reports the shares)."""

    propose: float = 0.0
    """strategy.propose: mutations and the space's rules (DetNAS: its params/FLOPs pre-screen)."""
    evaluate: float = 0.0
    """Executor time: validate/decode, analytic costs and budgets, score, latency kernel keys,
    fingerprint (with a pool: the parent's wait for it, the workers' start included)."""
    latency: float = 0.0
    """Latency predictions from kernel keys, and measuring kernels the table lacks."""
    outputs: float = 0.0
    """trials.csv, pareto.csv/.png, best.yaml, report.txt, report.html."""


@dataclass
class RunResult:
    out: Path
    trials: int
    feasible: int
    best_score: float | None
    best_spec: object | None
    timings: Timings = field(default_factory=Timings)


def run_search(config_path: str | Path, out: str | Path, *, resume: bool = False, seed: int | None = None,
               max_trials: int | None = None, progress: bool = True, workers: int = 1,
               batch: int | None = None, executor: Executor | None = None) -> RunResult:
    """Run (or with `resume`, continue) the search of a config into `out`. `workers` picks the
    executor (never the results); `batch` sets the proposals per round (see the module
    docstring). `executor` evaluates instead of one made from `workers` (e.g. a distributed
    one); the caller closes it."""
    config, base = load_search_config(config_path)
    seed = config.seed if seed is None else seed
    total = config.trials if max_trials is None else max_trials
    if batch is not None and batch < 1:
        raise ValueError(f"--batch must be at least 1, not {batch}")
    out = Path(out)
    db_path = out / "trials.sqlite"
    if db_path.exists() and not resume:
        raise ValueError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    store = TrialStore(db_path)
    # --batch changes what is proposed, --workers never does: only the batch is part of the identity.
    identity = json.dumps({"config": archspec.canonical_json(config), "seed": seed} |
                          ({"batch": batch} if batch is not None else {}))
    if store.meta("identity") not in (None, identity):
        store.close()
        raise ValueError(f"{out} holds a search with another config or seed (or --batch); it cannot be resumed "
                         f"with this one")
    store.set_meta("identity", identity)
    store.set_meta("config", config_meta(config, base))  # what `archspec report RUN` rebuilds the space from
    space = make_space(config.space, base)
    checker = BudgetChecker(config.budgets, out / "latency.sqlite")

    def admit(genotype) -> bool:
        try:
            return checker.cheap_ok(space.decode(genotype))
        except Rejected:
            return False

    strategy = make_strategy(config.strategy, space, seed, admit)
    workers = executor.workers if executor is not None else workers
    if workers > 1 and batch is None and type(strategy) not in AHEAD:
        warnings.warn(f"the {config.strategy.type} strategy proposes from the previous candidate's feedback, so "
                      f"--workers {workers} still evaluates one candidate at a time; --batch N evaluates N at once "
                      f"(and changes the search: results depend on N)", stacklevel=2)
    timings = Timings()
    owned = executor is None
    executor = make_executor(workers, config, base, space) if owned else executor
    try:
        run = _Run(store, strategy, executor, checker, timings, store.trials())
        run.loop(total, batch, progress)
    finally:
        if owned:
            executor.close()
        store.close()
    start = time.perf_counter()
    result = write_outputs(out, run.trials, space)
    write_report(out, data=RunData(config.name, config, base, space, run.trials))
    timings.outputs = time.perf_counter() - start
    result.timings = timings
    return result


# -- rounds --------------------------------------------------------------------------------------
AHEAD = {
    RandomWalkStrategy: lambda s: True,
    DetnasEvolutionStrategy: lambda s: bool(s.queue),
    CrnasTwoStepStrategy: lambda s: bool(s.pending),
}
"""Strategy class -> whether its next proposal is independent of feedback still outstanding (the
random walk ignores feedback; DetNAS pops its current generation; CR-NAS its current round).
Strategies not listed need feedback after every proposal. (This belongs on the strategies as a
method; it is kept here, next to its only user, until they grow one.)"""


def proposes_ahead(strategy) -> bool:
    check = AHEAD.get(type(strategy))
    return check is not None and check(strategy)


def propose_round(strategy, remaining: int, batch: int | None) -> list[Proposal]:
    """The proposals to evaluate together next, at most `remaining` (see the module docstring)."""
    limit = min(remaining, batch or ROUND_LIMIT)
    proposals: list[Proposal] = []
    while len(proposals) < limit and not strategy.done:
        if proposals and batch is None and not proposes_ahead(strategy):
            break
        proposal = strategy.propose()
        if proposal.wait:
            if not proposals:
                raise RuntimeError(f"{type(strategy).__name__} waits for feedback, but none is outstanding")
            break
        proposals.append(proposal)
    return proposals


def judge(trial_id: int, genotype, outcome: Outcome, checker: BudgetChecker, timings: Timings) -> Trial:
    """The trial of an evaluated genotype: the latency budget is checked here, in the parent
    process, which alone measures missing kernels into the latency table."""
    if outcome.status != "passed":
        return Trial(trial_id, genotype, outcome.fingerprint, outcome.status, outcome.reason, outcome.metrics, None,
                     outcome.seconds)
    metrics, seconds = outcome.metrics, outcome.seconds
    if outcome.kernels is not None:
        start = time.perf_counter()
        latency = checker.latency(outcome.kernels)
        elapsed = time.perf_counter() - start
        timings.latency += elapsed
        seconds += elapsed
        metrics = metrics | {"latency_ms": latency}
        broken = checker.latency_broken(latency)
        if broken:
            return Trial(trial_id, genotype, outcome.fingerprint, "infeasible", broken, metrics, None, seconds)
    if outcome.score_error is not None:
        raise ScoreError(outcome.score_error)
    return Trial(trial_id, genotype, outcome.fingerprint, "feasible", None, metrics | {"score": outcome.score},
                 outcome.score, seconds)


class _Run:
    """The state of one run between rounds: every trial so far, and what the progress bar shows."""

    def __init__(self, store: TrialStore, strategy, executor: Executor, checker: BudgetChecker, timings: Timings,
                 stored: list[Trial]):
        self.store, self.strategy, self.executor, self.checker, self.timings = store, strategy, executor, checker, timings
        self.stored = stored
        self.trials: list[Trial] = []
        self.seen: dict[tuple, Trial] = {}
        self.counts = {"feasible": 0, "infeasible": 0, "rejected": 0, "duplicate": 0}
        self.best: float | None = None

    def loop(self, total: int, batch: int | None, progress: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("search"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[status]}")]
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("search", total=total, completed=0, status="")
            shown = 0.0
            while len(self.trials) < total:
                start = time.perf_counter()
                proposals = propose_round(self.strategy, total - len(self.trials), batch)
                now = time.perf_counter()
                self.timings.propose += now - start
                if not proposals:
                    break
                self.round(proposals)
                if now - shown >= PROGRESS_SECONDS:  # a bar update costs more than a candidate
                    self.show(bar, task)
                    shown = now
            self.show(bar, task)

    def round(self, proposals: list[Proposal]) -> None:
        """Evaluate a round, then judge, store and feed back its trials in trial-id order.
        (The hot loop of a paper-scale run: one pass, locals, no per-trial helper calls.)"""
        first = len(self.trials)
        outcomes = self.evaluate(proposals, first)
        stored, seen, counts, store, feedback = self.stored, self.seen, self.counts, self.store, self.strategy.feedback
        for trial_id, proposal in enumerate(proposals, first):
            genotype = proposal.genotype
            if trial_id < len(stored):
                trial = stored[trial_id]
            else:
                if genotype is None:
                    trial = Trial(trial_id, None, None, "rejected", proposal.reason, {}, None, 0.0)
                elif genotype in seen:
                    twin = seen[genotype]
                    trial = Trial(trial_id, genotype, twin.fingerprint, "duplicate", f"same as trial {twin.id}",
                                  twin.metrics, twin.score, 0.0)
                else:
                    trial = judge(trial_id, genotype, outcomes[genotype], self.checker, self.timings)
                # A slow trial (kernels measured) is committed at once; the rest in the store's batches.
                store.add(trial, flush=trial.seconds >= store.flush_seconds)
            status, score = trial.status, trial.score
            if status == "feasible" or status == "infeasible":
                seen[genotype] = trial
            self.trials.append(trial)
            counts[status] += 1
            if score is not None and (self.best is None or score > self.best):
                self.best = score
            feedback(genotype, score)

    def evaluate(self, proposals: list[Proposal], first: int) -> dict:
        """Genotype -> outcome for the round's proposals that need evaluating: not stored (a
        stored trial must match its replayed proposal), not seen, each genotype once."""
        jobs, queued = [], set()
        for trial_id, proposal in enumerate(proposals, first):
            genotype = proposal.genotype
            if trial_id < len(self.stored):
                if self.stored[trial_id].genotype != genotype:
                    raise ValueError(f"trial {trial_id}: the stored genotype differs from the replayed proposal; "
                                     f"the store was written by another version or config")
            elif genotype is not None and genotype not in self.seen and genotype not in queued:
                jobs.append((trial_id, genotype))
                queued.add(genotype)
        if not jobs:
            return {}
        start = time.perf_counter()
        outcomes = self.executor.evaluate(jobs)
        self.timings.evaluate += time.perf_counter() - start
        return {genotype: outcome for (_, genotype), outcome in zip(jobs, outcomes)}

    def show(self, bar, task) -> None:
        c = self.counts
        best = "-" if self.best is None else f"{self.best:.2f}"
        bar.update(task, completed=len(self.trials),
                   status=f"best {best}  feasible {c['feasible']}  infeasible {c['infeasible']}  "
                          f"rejected {c['rejected']}  duplicates {c['duplicate']}")


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """Feasible trials not dominated in (higher score, fewer FLOPs)."""
    feasible = sorted((t for t in trials if t.status == "feasible"), key=lambda t: (t.metrics["flops"], -t.score))
    front, best = [], None
    for trial in feasible:
        if best is None or trial.score > best:
            front.append(trial)
            best = trial.score
    return front


def write_outputs(out: Path, trials: list[Trial], space) -> RunResult:
    metric_names = ["params", "macs", "flops", "latency_ms", "score"]
    with open(out / "trials.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "status", "reason", "fingerprint", "genotype", *metric_names, "seconds"])
        writer.writerows((t.id, t.status, t.reason or "", t.fingerprint or "",
                          " ".join(map(str, t.genotype)) if t.genotype else "",
                          *[t.metrics.get(m, "") for m in metric_names], f"{t.seconds:.6f}") for t in trials)
    front = pareto_front(trials)
    with open(out / "pareto.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "fingerprint", *metric_names])
        for t in front:
            writer.writerow([t.id, t.fingerprint, *[t.metrics.get(m, "") for m in metric_names]])
    feasible = [t for t in trials if t.status == "feasible"]
    best = max(feasible, key=lambda t: (t.score, -t.id)) if feasible else None
    best_spec = None
    if best is not None:
        best_spec = space.decode(best.genotype)
        archspec.save(best_spec.model_copy(update={"name": "search_best", "description":
                                                    f"best of {len(trials)} trials (trial {best.id})"}),
                      out / "best.yaml")
        _plot(out / "pareto.png", feasible, front)
    counts = {s: sum(t.status == s for t in trials) for s in ("feasible", "infeasible", "rejected", "duplicate")}
    lines = [f"trials: {len(trials)} ({', '.join(f'{k} {v}' for k, v in counts.items())})"]
    if best is not None:
        lines.append(f"best: trial {best.id}, score {best.score:.3f}, params {best.metrics['params']:,}, "
                     f"FLOPs {best.metrics['flops'] / 1e9:.2f} G" +
                     (f", latency {best.metrics['latency_ms']:.2f} ms" if "latency_ms" in best.metrics else ""))
        lines.append(f"pareto front (score vs FLOPs): {len(front)} candidates")
    else:
        lines.append("no feasible candidate")
    (out / "report.txt").write_text("\n".join(lines) + "\n")
    return RunResult(out, len(trials), counts["feasible"], best.score if best else None, best_spec)


def _plot(path: Path, feasible: list[Trial], front: list[Trial]) -> None:
    # The Figure API, not pyplot (no global figure state), and markers drawn as one line
    # artist, not a scatter collection: four times faster for a paper-scale run's 70,000 points.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([t.metrics["flops"] / 1e9 for t in feasible], [t.score for t in feasible], ".", markersize=2.5,
            alpha=0.4, label="feasible")
    ax.plot([t.metrics["flops"] / 1e9 for t in front], [t.score for t in front], "r.-", label="Pareto front")
    ax.set_xlabel("GFLOPs (2 x MACs)")
    ax.set_ylabel("MAE-DET score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


__all__ = ["RunResult", "run_search", "pareto_front", "SpecError"]
