"""Evaluators: a genotype in, an `Outcome` out.

An evaluator is what the run's executor calls for every candidate that is neither a duplicate
nor already stored (search/executor.py). It must be a pure function of the genotype once it is
built: the run feeds outcomes back in trial order, so whichever process evaluates a candidate,
and whenever it finishes, the trials are the same. It is built once per process from the
search config and base spec (`make_evaluator`), never once per trial.

What stays in the run's parent process (search/run.py, `judge`): the latency budget, since
missing kernels are measured into one SQLite table that only the parent writes; duplicates;
and the verdict. An evaluator therefore returns ``passed`` for a candidate within the analytic
budgets, with the kernel keys the latency check needs and its score; the parent decides
``feasible`` or ``infeasible``.

`AnalyticEvaluator` is the training-free one (validate, analytic params/FLOPs, MAE-DET score,
microseconds per candidate).

How a supernet evaluator (DetNAS, CR-NAS one-shot) plugs in (implemented in search/supernet_eval.py):

* `make_evaluator` would build it when the config names one, once per worker process: load the
  trained supernet's weights (a path in the config, `torch.load(..., weights_only=True)`), put
  it on the worker's device (one GPU per worker), and fix the calibration and validation
  batches (a seeded subset of the training and validation sets).
* `evaluate(genotype)`: check the space's rules and the analytic budgets first, as the analytic
  evaluator does, so no GPU time goes to candidates that break them; then select the path the
  genotype names, recompute BatchNorm statistics for that path on the calibration batches
  (DetNAS: the shared supernet statistics are wrong for any single path), and evaluate it (e.g.
  mAP on the validation subset); that number is the score.
* Determinism: the calibration and validation batches must not depend on the worker, the trial
  id or the completion order (seed them from the config; with cuDNN's nondeterminism off), or
  `--workers` changes results and a resumed run re-evaluates a tail differently.
* Cost: seconds per candidate instead of microseconds, so the pool matters and per-trial
  framework overhead does not; expensive evaluators should also skip the score of candidates
  the latency budget will reject (e.g. by reading a latency table built beforehand with
  `archspec latency build-table`), which the analytic one does not bother to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import archspec
from archspec.registry import Registry
from archspec.search.budgets import BudgetChecker
from archspec.search.score import ScoreError, config_score
from archspec.search.space import Genotype, Rejected, make_space
from archspec.search_config import EVALUATOR_CONFIGS


@dataclass(frozen=True)
class Outcome:
    """What evaluating one genotype found (picklable: it travels back from worker processes)."""

    status: str
    """``rejected`` (breaks a rule of the space), ``infeasible`` (breaks params/FLOPs), or
    ``passed`` (within them; the latency budget and the verdict are the parent's)."""
    reason: str | None = None
    fingerprint: str | None = None
    metrics: dict = field(default_factory=dict)
    score: float | None = None
    kernels: tuple[str, ...] | None = None
    """Latency kernel keys, when the config has a latency budget and the candidate passed."""
    score_error: str | None = None
    """Why the score could not be computed; the run raises it only if the candidate is feasible
    (as a serial check-then-score run would)."""
    seconds: float = 0.0


class Evaluator(Protocol):
    """Evaluates genotypes; built once per process with ``from_config(config, base, space)``
    (the search config, its validated base spec, the space), then a pure function of the
    genotype."""

    @classmethod
    def from_config(cls, config, base, space) -> "Evaluator": ...

    def evaluate(self, genotype: Genotype) -> Outcome: ...


EVALUATORS: Registry[type] = Registry("search evaluator")
"""Evaluator ``type`` tag (the search config's ``evaluator.type``) -> implementation."""


def register_evaluator(tag: str):
    """Class decorator: register the implementation of the evaluator config registered as `tag`."""
    def decorator(cls: type) -> type:
        EVALUATOR_CONFIGS.get(tag)  # the config must exist: a clear error otherwise
        # an entry is what `from_config` is called on; what it returns evaluates
        for method in ("from_config",):
            if not callable(getattr(cls, method, None)):
                raise TypeError(f"evaluator {tag!r}: {cls.__name__} lacks {method}")
        EVALUATORS.register(tag, cls)
        return cls
    return decorator


def checked_spec(space, genotype: Genotype):
    """The candidate's spec, or its ``rejected`` `Outcome` when it breaks a rule of the space:
    the first step of every evaluator, before any cost is paid."""
    start = time.perf_counter()
    try:
        space.check(genotype)
        return space.decode(genotype)
    except Rejected as exc:
        return Outcome("rejected", str(exc), seconds=time.perf_counter() - start)


@register_evaluator("analytic")
class AnalyticEvaluator:
    """Rules of the space -> validated spec -> analytic params/FLOPs budgets -> score and the
    latency kernel keys."""

    def __init__(self, space, checker: BudgetChecker, objective: Callable[[object], float]):
        self.space = space
        self.checker = checker
        self.objective = objective

    @classmethod
    def from_config(cls, config, base, space) -> "AnalyticEvaluator":
        # No latency table here: evaluators only derive kernel keys (see the module docstring).
        return cls(space, BudgetChecker(config.budgets), lambda spec: config_score(spec, config))

    def evaluate(self, genotype: Genotype) -> Outcome:
        start = time.perf_counter()
        spec = checked_spec(self.space, genotype)
        if isinstance(spec, Outcome):
            return spec
        metrics, broken = self.checker.analytic(spec)
        fingerprint = archspec.fingerprint(spec)
        if broken:
            return Outcome("infeasible", broken, fingerprint, metrics, seconds=time.perf_counter() - start)
        score, error = None, None
        try:
            score = self.objective(spec)
        except ScoreError as exc:
            error = str(exc)
        return Outcome("passed", None, fingerprint, metrics, score, self.checker.latency_kernels(spec), error,
                       time.perf_counter() - start)


@register_evaluator("supernet")
class SupernetEvaluatorEntry:
    """The one-shot supernet evaluator (`archspec.search.supernet_eval.SupernetEvaluator`),
    imported only when a config asks for it: it needs torch and a trained supernet."""

    @classmethod
    def from_config(cls, config, base, space) -> Evaluator:
        from archspec.search.supernet_eval import SupernetEvaluator

        return SupernetEvaluator(config, base, space)


@register_evaluator("proxy_train")
class ProxyTrainEvaluatorEntry:
    """The proxy-training evaluator (`archspec.search.proxy_train.ProxyTrainEvaluator`), imported
    only when a config asks for it: it needs torch and trains every candidate."""

    @classmethod
    def from_config(cls, config, base, space) -> Evaluator:
        from archspec.search.proxy_train import ProxyTrainEvaluator

        return ProxyTrainEvaluator(config, base, space)


def make_evaluator(config, base, space=None) -> Evaluator:
    """The evaluator a search config asks for (a registry lookup of ``evaluator.type``), built
    once per process. `config` and `base` are what `load_search_config` returns; `space` reuses
    one already built."""
    space = space if space is not None else make_space(config.space, base)
    return EVALUATORS.get(config.evaluator.type).from_config(config, base, space)
