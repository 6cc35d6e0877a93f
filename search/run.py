"""The search run: propose -> decode (validate) -> budgets -> score -> store, with resume.

Resuming replays the stored trials through a fresh strategy (same seed): every proposal must
equal the stored genotype, and the stored outcome is fed back instead of re-evaluating. The
run then continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import archspec
from archspec.errors import SpecError
from archspec.search_config import load_search_config
from search.budgets import BudgetChecker
from search.score import config_score
from search.space import Rejected, make_space
from search.store import Trial, TrialStore
from search.strategies import make_strategy


@dataclass
class RunResult:
    out: Path
    trials: int
    feasible: int
    best_score: float | None
    best_spec: object | None


class Evaluator:
    """Turns a genotype into a stored trial. Plain functions of the spec do the work."""

    def __init__(self, space, checker: BudgetChecker, score=None):
        self.space = space
        self.checker = checker
        self.score = score or (lambda spec: config_score(spec, _MAEDET))
        self.seen: dict[tuple, Trial] = {}

    def __call__(self, trial_id: int, genotype, reason: str | None) -> Trial:
        start = time.perf_counter()
        if genotype is None:
            return Trial(trial_id, None, None, "rejected", reason, {}, None, 0.0)
        if genotype in self.seen:
            first = self.seen[genotype]
            return Trial(trial_id, genotype, first.fingerprint, "duplicate", f"same as trial {first.id}",
                         first.metrics, first.score, 0.0)
        try:
            self.space.check(genotype)
            spec = self.space.decode(genotype)
        except Rejected as exc:
            return Trial(trial_id, genotype, None, "rejected", str(exc), {}, None, time.perf_counter() - start)
        metrics, broken = self.checker.evaluate(spec)
        fingerprint = archspec.fingerprint(spec)
        if broken:
            trial = Trial(trial_id, genotype, fingerprint, "infeasible", broken, metrics, None,
                          time.perf_counter() - start)
        else:
            score = self.score(spec)
            trial = Trial(trial_id, genotype, fingerprint, "feasible", None, metrics | {"score": score}, score,
                          time.perf_counter() - start)
        self.seen[genotype] = trial
        return trial


def run_search(config_path: str | Path, out: str | Path, *, resume: bool = False, seed: int | None = None,
               max_trials: int | None = None, progress: bool = True) -> RunResult:
    config, base = load_search_config(config_path)
    seed = config.seed if seed is None else seed
    total = config.trials if max_trials is None else max_trials
    out = Path(out)
    db_path = out / "trials.sqlite"
    if db_path.exists() and not resume:
        raise ValueError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    store = TrialStore(db_path)
    identity = json.dumps({"config": archspec.canonical_json(config), "seed": seed})
    if store.meta("identity") not in (None, identity):
        raise ValueError(f"{out} holds a search with another config or seed; it cannot be resumed with this one")
    store.set_meta("identity", identity)
    space = make_space(config.space, base)
    checker = BudgetChecker(config.budgets, out / "latency.sqlite")

    def admit(genotype) -> bool:
        try:
            return checker.cheap_ok(space.decode(genotype))
        except Rejected:
            return False

    strategy = make_strategy(config.strategy, space, seed, admit)
    evaluator = Evaluator(space, checker, lambda spec: config_score(spec, config))
    done = _replay(store.trials(), strategy, evaluator)
    try:
        _loop(store, strategy, evaluator, len(done), total, progress)
    finally:
        trials = store.trials()
        store.close()
    return write_outputs(out, trials, space)


def _replay(trials: list[Trial], strategy, evaluator: Evaluator) -> list[Trial]:
    for trial in trials:
        proposal = strategy.propose()
        if proposal.genotype != trial.genotype:
            raise ValueError(f"trial {trial.id}: the stored genotype differs from the replayed proposal; "
                             f"the store was written by another version or config")
        if trial.status in ("feasible", "infeasible"):
            evaluator.seen[trial.genotype] = trial
        strategy.feedback(trial.genotype, trial.score)
    return trials


def _loop(store: TrialStore, strategy, evaluator: Evaluator, start: int, total: int, progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    counts = {"feasible": 0, "infeasible": 0, "rejected": 0, "duplicate": 0}
    best = None
    for trial in store.trials():
        counts[trial.status] += 1
        best = trial.score if trial.score is not None and (best is None or trial.score > best) else best
    columns = [TextColumn("search"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}")]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("search", total=total, completed=start, status="")
        for trial_id in range(start, total):
            if strategy.done:
                break
            proposal = strategy.propose()
            trial = evaluator(trial_id, proposal.genotype, proposal.reason)
            store.add(trial)
            strategy.feedback(trial.genotype, trial.score)
            counts[trial.status] += 1
            if trial.score is not None and (best is None or trial.score > best):
                best = trial.score
            if trial_id % 20 == 0 or trial_id == total - 1:
                shown = "-" if best is None else f"{best:.2f}"
                bar.update(task, completed=trial_id + 1,
                           status=f"best {shown}  feasible {counts['feasible']}  infeasible {counts['infeasible']}"
                                  f"  rejected {counts['rejected']}  duplicates {counts['duplicate']}")


class _MaedetOnly:
    score = "maedet"


_MAEDET = _MaedetOnly()


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
        for t in trials:
            writer.writerow([t.id, t.status, t.reason or "", t.fingerprint or "",
                             " ".join(map(str, t.genotype or ())), *[t.metrics.get(m, "") for m in metric_names],
                             f"{t.seconds:.6f}"])
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([t.metrics["flops"] / 1e9 for t in feasible], [t.score for t in feasible], s=6, alpha=0.4,
               label="feasible")
    ax.plot([t.metrics["flops"] / 1e9 for t in front], [t.score for t in front], "r.-", label="Pareto front")
    ax.set_xlabel("GFLOPs (2 x MACs)")
    ax.set_ylabel("MAE-DET score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["RunResult", "run_search", "pareto_front", "SpecError"]
