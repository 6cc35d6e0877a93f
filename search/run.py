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
from collections import Counter
from contextlib import contextmanager
from operator import attrgetter
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path

from archspec.compiler.latency.table import default_table_path
from archspec.errors import SpecError
from archspec.files import RunFolder, atomic_path
from archspec.search_config import load_search_config
from archspec.search.budgets import BudgetChecker
from archspec.search.evaluators import Outcome
from archspec.search.executor import Executor, make_executor
from archspec.search.front import (NEXT_FOLDER, MeasureFn, NextSteps, Selection, choice_record, measure_front, next_steps,
                                   report_lines, select, write_best, write_pareto, write_text_report)
from archspec.search.report import FRONT_CHOICE_KEY, ReportOptions, RunData, config_meta, write_report
from archspec.search.score import ScoreError, config_score
from archspec.search.space import Rejected, make_space, undecided_blocks
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
    feedback: float = 0.0
    """strategy.feedback: the strategy's own update from each trial (e.g. the evolution's
    population), the other half of its ask/tell."""
    evaluate: float = 0.0
    """Executor time: validate/decode, analytic costs and budgets, score, latency kernel keys,
    fingerprint (with a pool: the parent's wait for it, the workers' start included)."""
    latency: float = 0.0
    """Latency predictions from kernel keys, measuring kernels the table lacks, and measuring the
    Pareto front end to end after the search (search/front.py)."""
    outputs: float = 0.0
    """trials.csv, pareto.csv/.png, best.yaml, report.txt, report.html."""


@dataclass
class RunResult:
    out: Path
    trials: int
    feasible: int
    best_score: float | None
    best_spec: object | None
    """The best backbone (best.yaml holds the detector around it when the config has a template)."""
    timings: Timings = field(default_factory=Timings)
    best_id: int | None = None
    """The best candidate's trial id."""
    front_measured: dict[int, float] = field(default_factory=dict)
    """Trial id -> measured end-to-end latency (ms) of the Pareto front (latency budgets only)."""
    latency_kernels: str = ""
    """How the latency budget's kernels were obtained (measured now, from the table, predicted)."""


def run_search(config_path: str | Path, out: str | Path, *, resume: bool = False, seed: int | None = None,
               max_trials: int | None = None, progress: bool = True, workers: int = 1,
               batch: int | None = None, executor: Executor | None = None,
               overrides: Sequence[str] = (), report: ReportOptions | None = None,
               measure_latency: MeasureFn | None = None, latency_table: str | Path | None = None) -> RunResult:
    """Run (or with `resume`, continue) the search of a config into `out`. `workers` picks the
    executor (never the results); `batch` sets the proposals per round (see the module
    docstring). `executor` evaluates instead of one made from `workers` (e.g. a distributed
    one); the caller closes it. `overrides` (``key.path=value``, the CLI's ``--set``) change the
    config before it is validated; they are part of the config, so a resume must repeat them.

    `out` is a run folder (`archspec.files.RunFolder`): made by `archspec search` or empty, and
    held by one process at a time. The run ends by writing its report page (report.html) with
    `report`; by default without the effective-receptive-field section, which trains nothing but
    costs seconds of backward passes (`archspec search` asks for it). With a latency budget the
    Pareto front is measured end to end after the search (search/front.py); `measure_latency`
    replaces that measurement (tests plant latencies through it).

    `latency_table`: a persistent latency table shared across runs (default OUT/latency.sqlite);
    a resume without it keeps the table the run started with."""
    config, base = load_search_config(config_path, overrides=overrides)
    if max_trials is not None and max_trials < 1:
        raise ValueError(f"--max-trials must be at least 1, not {max_trials}")
    if batch is not None and batch < 1:
        raise ValueError(f"--batch must be at least 1, not {batch}")
    out = Path(out)
    with RunFolder(out, "search") as folder:
        folder.record(*SEARCH_OUTPUTS, NEXT_FOLDER, *config.evaluator.run_files)
        try:
            return _run_search(config, base, out, resume=resume, seed=seed, max_trials=max_trials,
                               progress=progress, workers=workers, batch=batch, executor=executor,
                               report=report or ReportOptions(erf=False), measure_latency=measure_latency,
                               latency_table=latency_table)
        except SpecError as exc:  # the space's own rules (e.g. too many CR-NAS allocations) name the config
            raise (exc if exc.source else exc.with_source(str(config_path))) from None


SEARCH_OUTPUTS = ("trials.sqlite", "latency.sqlite", "latency.sqlite.lock", "trials.csv", "pareto.csv",
                  "pareto.png", "best.yaml", "report.txt", "report.html")
"""Files a search writes in its run folder (SQLite's -wal/-shm companions go with the stores)."""


def run_identity(config, base, seed: int, batch: int | None) -> dict:
    """What a run's trials depend on: the resolved config's and base spec's full content (not the
    base's path: an edited base file is another run), the seed, and --batch (--workers never
    changes the trials, so it is not part of it)."""
    return {"config": config.model_dump(mode="json", exclude={"base"}), "base": base.model_dump(mode="json"),
            "seed": seed} | ({"batch": batch} if batch is not None else {})


def identity_changes(stored: dict, current: dict) -> list[str]:
    """What differs between a stored run identity and the current one, for the refusal."""
    changes = []
    for part, label in (("config", "the search config"), ("base", "the base spec"), ("seed", "the seed"),
                        ("batch", "--batch")):
        old, new = stored.get(part), current.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            changes.append(f"{label} ({', '.join(fields)})")
        else:
            changes.append(f"{label} ({old!r} -> {new!r})" if part in ("seed", "batch") else label)
    return changes


def _check_identity(store: TrialStore, out: Path, identity: dict) -> None:
    text = store.meta("identity")
    if text is None:
        store.set_meta("identity", json.dumps(identity, sort_keys=True))
        return
    try:
        stored = json.loads(text)
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise ValueError
    except ValueError:
        raise ValueError(f"{out}: the stored search was written by another archspec version; it cannot be "
                         f"resumed (choose another --out)") from None
    changes = identity_changes(stored, identity)
    if changes:
        raise ValueError(f"{out}: cannot resume: {'; '.join(changes)} changed since the run started "
                         f"(restore them or choose another --out)")


def _run_search(config, base, out: Path, *, resume: bool, seed: int | None, max_trials: int | None,
                progress: bool, workers: int, batch: int | None, executor: Executor | None,
                report: ReportOptions, measure_latency: MeasureFn | None = None,
                latency_table: str | Path | None = None) -> RunResult:
    seed = config.seed if seed is None else seed
    total = config.trials if max_trials is None else max_trials
    db_path = out / "trials.sqlite"
    if db_path.exists() and not resume:
        raise ValueError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    store = TrialStore(db_path)
    try:
        _check_identity(store, out, run_identity(config, base, seed, batch))
        space = make_space(config.space, base)
    except BaseException:
        store.close()
        raise
    store.set_meta("config", config_meta(config, base))  # what `archspec report RUN` rebuilds the space from
    latency_table = _latency_table(latency_table, store, config.budgets)
    if latency_table:
        store.set_meta("latency_table", str(latency_table))
    # The design kernels measured so far (a resume starts from them), recorded as they grow.
    checker = BudgetChecker(config.budgets, Path(latency_table) if latency_table else out / "latency.sqlite",
                            design=stored_design(store, db_path),
                            on_design=lambda keys: store.set_meta(DESIGN_KEY, json.dumps(keys)))

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
    # the evaluator may keep per-trial files in the run folder (proxy_train's score cache)
    config = config.model_copy(update={"evaluator": config.evaluator.in_run(out)})
    executor = make_executor(workers, config, base, space) if owned else executor
    try:
        run = _Run(store, strategy, executor, checker, timings, store.trials())
        run.loop(total, batch, progress)
        if owned:
            executor.close()
            owned = False
        selection = select_best(run.trials, config, space, checker, store, measure_latency, timings)
    finally:
        if owned:
            executor.close()
        store.close()
    start = time.perf_counter()
    result = write_outputs(out, run.trials, space, reference=PlotReference.of(config, base, checker),
                           selection=selection, detector=config.detector,
                           steps=next_steps(config, latency_table))
    write_report(out, data=RunData(config.name, config, base, space, run.trials, choice=choice_record(selection),
                                   latency_table=str(latency_table) if latency_table else None), options=report)
    timings.outputs = time.perf_counter() - start
    result.timings = timings
    result.latency_kernels = checker.latency_summary()
    return result


DESIGN_KEY = "latency_design"
"""Trial store meta key of the run's latency design kernels, in the order they were met (`KeyPredictor`)."""


def stored_design(store: TrialStore, path: Path) -> list[str]:
    """The design kernels a run recorded (`DESIGN_KEY`); `ValueError` naming the store and the key
    when the record is not a list of kernel keys (the store was edited or damaged)."""
    text = store.meta(DESIGN_KEY)
    if text is None:
        return []
    try:
        keys = json.loads(text)
        if isinstance(keys, list) and all(isinstance(json.loads(k), dict) for k in keys):
            return keys
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{path}: meta {DESIGN_KEY}: not a list of latency kernel keys (the store was edited or "
                     f"damaged; choose another --out)")


def _latency_table(option: str | Path | None, store: TrialStore, budgets) -> str | Path | None:
    """The latency table a run uses: --latency-table (shared across runs), else the one the run
    started with, else the machine's (`budgets.latency_table: machine`), else None: its own."""
    if option:
        return Path(option).expanduser().resolve()
    if store.meta("latency_table"):
        return store.meta("latency_table")
    if budgets.latency_table == "machine" and budgets.max_latency_ms is not None:
        return default_table_path().expanduser().resolve()
    return None


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
        with progress_bar(total, progress) as bar:
            strategy, timings, clock = self.strategy, self.timings, time.perf_counter
            # One proposal per round (the evolutions, no --batch): proposed and evaluated without
            # the round's lists, sets and dicts, which cost more than the bookkeeping they save.
            single = batch is None and type(strategy) not in AHEAD
            shown = 0.0
            while len(self.trials) < total:
                start = clock()
                if single:
                    proposal = None if strategy.done else strategy.propose()
                    if proposal is not None and proposal.wait:
                        raise RuntimeError(f"{type(strategy).__name__} waits for feedback, but none is outstanding")
                else:
                    proposals = propose_round(strategy, total - len(self.trials), batch)
                    proposal = proposals[0] if proposals else None
                now = clock()
                timings.propose += now - start
                if proposal is None:
                    break
                if single:
                    self.one(proposal)
                else:
                    self.round(proposals)
                if now - shown >= PROGRESS_SECONDS:  # a bar update costs more than a candidate
                    bar(len(self.trials), self.status())
                    shown = now
            bar(len(self.trials), self.status())

    def one(self, proposal: Proposal) -> None:
        """`round` for a round of one proposal: the same steps, in the same order."""
        trial_id, genotype = len(self.trials), proposal.genotype
        outcome = None
        if self.needs_evaluation(trial_id, genotype):
            start = time.perf_counter()
            outcome = self.executor.evaluate([(trial_id, genotype)])[0]
            self.timings.evaluate += time.perf_counter() - start
        trial = self.record(trial_id, proposal, outcome)
        start = time.perf_counter()
        self.strategy.feedback(trial.genotype, trial.score)
        self.timings.feedback += time.perf_counter() - start

    def round(self, proposals: list[Proposal]) -> None:
        """Evaluate a round, then judge, store and feed back its trials in trial-id order."""
        first = len(self.trials)
        outcomes = self.evaluate(proposals, first)
        record = self.record
        for trial_id, proposal in enumerate(proposals, first):
            genotype = proposal.genotype
            record(trial_id, proposal, outcomes.get(genotype))
        # The strategy learns of the round's trials after they are judged and stored (judging
        # never reads the strategy, so the order of the two passes changes nothing), timed apart.
        feedback = self.strategy.feedback
        start = time.perf_counter()
        for trial in self.trials[first:]:
            feedback(trial.genotype, trial.score)
        self.timings.feedback += time.perf_counter() - start

    def record(self, trial_id: int, proposal: Proposal, outcome: Outcome | None) -> Trial:
        """Judge, store and count one proposal's trial: the stored one when resuming, else
        rejected, a duplicate of an earlier trial, or judged from its `outcome` (the hot path of a
        paper-scale run: locals, no further helper calls)."""
        genotype, stored, seen = proposal.genotype, self.stored, self.seen
        if trial_id < len(stored):
            trial = stored[trial_id]
        else:
            if genotype is None:
                trial = Trial(trial_id, None, None, "rejected", proposal.reason, {}, None, 0.0)
            elif (twin := seen.get(genotype)) is not None:
                trial = Trial(trial_id, genotype, twin.fingerprint, "duplicate", f"same as trial {twin.id}",
                              twin.metrics, twin.score, 0.0)
            else:
                trial = judge(trial_id, genotype, outcome, self.checker, self.timings)
            # A slow trial (kernels measured) is committed at once; the rest in the store's batches.
            store = self.store
            store.add(trial, flush=trial.seconds >= store.flush_seconds)
        status, score = trial.status, trial.score
        if status == "feasible" or status == "infeasible":
            seen[genotype] = trial
        self.trials.append(trial)
        self.counts[status] += 1
        if score is not None and (self.best is None or score > self.best):
            self.best = score
        return trial

    def evaluate(self, proposals: list[Proposal], first: int) -> dict:
        """Genotype -> outcome for the round's proposals that need evaluating: not stored (a
        stored trial must match its replayed proposal), not seen, each genotype once."""
        jobs, queued = [], set()
        for trial_id, proposal in enumerate(proposals, first):
            genotype = proposal.genotype
            if self.needs_evaluation(trial_id, genotype) and genotype not in queued:
                jobs.append((trial_id, genotype))
                queued.add(genotype)
        if not jobs:
            return {}
        start = time.perf_counter()
        outcomes = self.executor.evaluate(jobs)
        self.timings.evaluate += time.perf_counter() - start
        return {genotype: outcome for (_, genotype), outcome in zip(jobs, outcomes)}

    def needs_evaluation(self, trial_id: int, genotype) -> bool:
        """Whether trial `trial_id` must be evaluated: not stored (when resuming, the stored trial
        must match the replayed proposal: a `ValueError` otherwise), not rejected, not seen."""
        stored = self.stored
        if trial_id < len(stored):
            if stored[trial_id].genotype != genotype:
                raise ValueError(STORED_MISMATCH.format(trial_id))
            return False
        return genotype is not None and genotype not in self.seen

    def status(self) -> str:
        """The progress bar's status line."""
        c = self.counts
        best = "-" if self.best is None else f"{self.best:.2f}"
        return (f"best {best}, {c['feasible']} ok, {c['infeasible']} over budget, {c['rejected']} rejected, "
                f"{c['duplicate']} dup")


STORED_MISMATCH = ("trial {}: the stored genotype differs from the replayed proposal; the store was written by "
                   "another version or config")


@contextmanager
def progress_bar(total: int, shown: bool):
    """A context giving ``update(completed, status)``, which moves the bar. One
    line that fits 80 columns: a short bar, and a status cut at its end rather than wrapped
    mid-word. No bar at all in a pipe or a log (it would only add noise there), and without
    `shown` not even the import of the bar's library."""
    if not shown:
        yield lambda completed, status: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Column

    console = Console(stderr=True)
    columns = [TextColumn("search"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True, overflow="ellipsis"))]
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=False) as bar:
        task = bar.add_task("search", total=total, completed=0, status="")
        yield lambda completed, status: bar.update(task, completed=completed, status=status)


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """Feasible trials not dominated in (higher score, fewer FLOPs)."""
    feasible = sorted((t for t in trials if t.status == "feasible"), key=lambda t: (t.metrics["flops"], -t.score))
    front, best = [], None
    for trial in feasible:
        if best is None or trial.score > best:
            front.append(trial)
            best = trial.score
    return front


@dataclass(frozen=True)
class PlotReference:
    """What pareto.png draws beside the trials: the FLOPs budget and the base model."""

    max_flops: float | None = None
    min_flops: float | None = None
    base_flops: float | None = None
    base_score: float | None = None
    base_name: str = "base"
    score_label: str = "MAE-DET score"

    @classmethod
    def of(cls, config, base, checker: BudgetChecker) -> "PlotReference":
        metrics, _ = checker.analytic(base)
        # an evaluator with its own scores (AP): the base's analytic score does not belong on that axis
        if config.evaluator.score_label is not None:
            return cls(config.budgets.max_flops, config.budgets.min_flops, metrics["flops"], None, base.name,
                       config.evaluator.score_label)
        try:
            score = config_score(base, config)
        except ScoreError:  # a base the score cannot read (no C3..C5) is drawn without its point
            score = None
        label = "MAE-DET score" + (" + receptive-field term" if config.score == "maedet_rf" else "")
        return cls(config.budgets.max_flops, config.budgets.min_flops, metrics["flops"], score, base.name, label)


def answers(trials: list[Trial], space) -> list[Trial]:
    """The trials that can be a search's answer: those of complete genotypes."""
    return [t for t in trials if not undecided_blocks(space, t.genotype)]


def select_best(trials: list[Trial], config, space, checker: BudgetChecker, store: TrialStore,
                measure: MeasureFn | None = None, timings: Timings | None = None) -> Selection:
    """The Pareto front and the best candidate; with a latency budget the front is measured end
    to end first and the best is the top score whose measured latency fits (search/front.py).
    Only complete genotypes are answers: CR-NAS's partial architectures (undecided blocks
    sampled) are scored but never chosen."""
    trials = answers(trials, space)
    front = pareto_front(trials)
    limit = config.budgets.max_latency_ms
    if limit is None:
        return select(trials, front)
    start = time.perf_counter()
    measured, setting = measure_front(front, space, checker, store, measure, limit)
    if timings is not None:  # the measurement alone: choosing the front is the run's bookkeeping
        timings.latency += time.perf_counter() - start
    selection = select(trials, front, limit_ms=limit, measured=measured, setting=setting)
    store.set_meta(FRONT_CHOICE_KEY, json.dumps(choice_record(selection), sort_keys=True))  # for `archspec report`
    return selection


def write_outputs(out: Path, trials: list[Trial], space, reference: PlotReference | None = None, *,
                  selection: Selection | None = None, detector=None, steps: NextSteps | None = None) -> RunResult:
    """trials.csv, pareto.csv, best.yaml, pareto.png and report.txt, each written atomically.
    `selection` is the front and best chosen by `select_best` (default: the top score, nothing
    measured); with a `detector` template best.yaml is the detector around the best backbone;
    `steps` ends report.txt with the commands to run next."""
    metric_names = ["params", "macs", "flops", "latency_ms", "score"]
    with atomic_path(out / "trials.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "status", "reason", "fingerprint", "genotype", *metric_names, "seconds"])
        # one tuple per trial, no inner comprehension (its frame would cost as much as the row)
        writer.writerows((t.id, t.status, t.reason or "", t.fingerprint or "",
                          " ".join(map(str, t.genotype)) if t.genotype else "",
                          (get := t.metrics.get)("params", ""), get("macs", ""), get("flops", ""),
                          get("latency_ms", ""), get("score", ""), f"{t.seconds:.6f}") for t in trials)
    if selection is None:
        complete = answers(trials, space)
        selection = select(complete, pareto_front(complete))
    write_pareto(out / "pareto.csv", selection)
    feasible = [t for t in trials if t.status == "feasible"]
    best = selection.best
    best_spec = write_best(out / "best.yaml", selection, space, detector, len(trials))
    if feasible:
        _plot(out / "pareto.png", feasible, selection.front, reference or PlotReference())
    counts = Counter(map(attrgetter("status"), trials))
    write_text_report(out / "report.txt", report_lines(trials, selection, detector, steps))
    return RunResult(out, len(trials), counts["feasible"], best.score if best else None, best_spec,
                     best_id=best.id if best else None, front_measured=dict(selection.measured))


def _plot(path: Path, feasible: list[Trial], front: list[Trial], reference: PlotReference):
    """Draw pareto.png; returns the figure (tests read its axes)."""
    # The Figure API, not pyplot (no global figure state), and markers drawn as one line
    # artist, not a scatter collection: four times faster for a paper-scale run's 70,000 points.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if shares_flops(feasible):
        _plot_by_trial(ax, feasible, reference)
    else:
        _plot_by_flops(ax, feasible, front, reference)
    ax.set_ylabel(reference.score_label)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return fig


def shares_flops(trials: list[Trial]) -> bool:
    """Whether every trial has the same FLOPs (to 0.1%): CR-NAS reallocates a fixed budget, so a
    score-vs-FLOPs plot would be one vertical line."""
    flops = [t.metrics["flops"] for t in trials]
    return len(flops) > 1 and max(flops) - min(flops) <= 1e-3 * max(flops)


def _plot_by_flops(ax, feasible: list[Trial], front: list[Trial], reference: PlotReference) -> None:
    ax.plot([t.metrics["flops"] / 1e9 for t in feasible], [t.score for t in feasible], ".", markersize=2.5,
            alpha=0.4, label="feasible")
    ax.plot([t.metrics["flops"] / 1e9 for t in front], [t.score for t in front], "r.-", label="Pareto front")
    for bound, name in ((reference.max_flops, "max"), (reference.min_flops, "min")):
        if bound is not None:
            ax.axvline(bound / 1e9, color="black", linestyle="--", linewidth=1, label=f"{name}_flops budget")
    if reference.base_flops is not None and reference.base_score is not None:
        ax.plot([reference.base_flops / 1e9], [reference.base_score], "k*", markersize=11,
                label=f"base ({reference.base_name})")
    ax.set_xlabel("GFLOPs (2 x MACs)")


def _plot_by_trial(ax, feasible: list[Trial], reference: PlotReference) -> None:
    ids = [t.id for t in feasible]
    scores = [t.score for t in feasible]
    ax.plot(ids, scores, ".", markersize=3, alpha=0.5,
            label=f"feasible (all {feasible[0].metrics['flops'] / 1e9:.2f} GFLOPs)")
    running, best = [], None
    for score in scores:
        best = score if best is None else max(best, score)
        running.append(best)
    ax.plot(ids, running, "r-", label="best so far")
    if reference.base_score is not None:
        ax.axhline(reference.base_score, color="black", linestyle="--", linewidth=1,
                   label=f"base ({reference.base_name})")
    ax.set_xlabel("trial")


__all__ = ["PlotReference", "RunResult", "run_search", "pareto_front", "shares_flops", "SpecError"]
