"""Executors: where evaluations run. The run loop hands one a round of jobs (trial id, genotype)
and gets the outcomes back in job order; it never sees completion order, so results do not
depend on which executor ran them (search/run.py feeds them back in trial-id order).

* `SerialExecutor`: in this process (``--workers 1``).
* `PoolExecutor`: a local process pool (``--workers N``). Each worker builds its evaluator once,
  in the pool's initializer (space, budget checker, score caches warm up per worker), and a
  round is split into one chunk per worker and a few more, so a round costs a handful of
  messages, not one per candidate. Workers are spawned, not forked: the parent has threads
  (the progress bar) and a SQLite connection open, neither of which survives a fork safely.

* `RayExecutor` (search/ray_executor.py, ``--executor ray``): Ray actors, local or on a cluster.

A distributed engine (Ray, Dask, a job queue) plugs in as another `Executor`: start each remote
worker with `init_worker(config, base)` (the config and base can travel as canonical JSON,
`archspec.canonical_json`, and be re-validated there instead of pickled), send it jobs with
`evaluate_jobs`, and return outcomes in job order. Whatever it is, it must not write the run's
stores: trials and the latency table are written by the parent alone.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from archspec.registry import Registry
from archspec.search.evaluators import Evaluator, Outcome, make_evaluator
from archspec.search.space import Genotype

Job = tuple[int, Genotype]
"""(trial id, genotype). The id is for evaluators that log or key work per trial; an outcome
must not depend on it."""


class Executor(Protocol):
    """Runs evaluations; built with ``from_config(workers, config, base, space)``."""

    workers: int

    @classmethod
    def from_config(cls, workers: int, config, base, space) -> "Executor": ...

    def evaluate(self, jobs: Sequence[Job]) -> list[Outcome]:
        """The outcomes of `jobs`, in the order of `jobs`."""
        ...

    def close(self) -> None: ...


EXECUTORS: Registry[type] = Registry("search executor")
"""Executor name -> implementation. `make_executor` picks ``serial`` for one worker and ``pool``
for more; another executor (Ray, a job queue) registers here and is passed to `run_search`."""


@EXECUTORS.register("serial")
class SerialExecutor:
    """Evaluates in the calling process."""

    workers = 1

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    @classmethod
    def from_config(cls, workers: int, config, base, space=None) -> "SerialExecutor":
        if workers != 1:
            raise ValueError(f"a serial executor has 1 worker, not {workers}")
        return cls(make_evaluator(config, base, space))

    def evaluate(self, jobs: Sequence[Job]) -> list[Outcome]:
        return [self.evaluator.evaluate(genotype) for _, genotype in jobs]

    def close(self) -> None:
        pass


@EXECUTORS.register("pool")
class PoolExecutor:
    """Evaluates in `workers` spawned processes, each with its own evaluator (evaluators,
    spaces and strategies registered by a plug-in must be registered when the worker imports
    the modules it needs, e.g. at import of the plug-in's package)."""

    CHUNKS_PER_WORKER = 2
    """Chunks per worker and round: a little slack for uneven chunks, few messages."""

    def __init__(self, workers: int, config, base, factory=None):
        # One worker is allowed (benchmarks/scale.py measures the pool's per-job overhead with it);
        # make_executor picks SerialExecutor for one.
        if workers < 1:
            raise ValueError(f"a pool needs at least 1 worker, not {workers}")
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=init_worker, initargs=(config, base, os.getpid(), factory))

    @classmethod
    def from_config(cls, workers: int, config, base, space=None) -> "PoolExecutor":
        return cls(workers, config, base)  # each worker builds its own space

    def evaluate(self, jobs: Sequence[Job]) -> list[Outcome]:
        if not jobs:
            return []
        size = -(-len(jobs) // (self.workers * self.CHUNKS_PER_WORKER))
        chunks = [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]
        try:
            return [outcome for chunk in self.pool.map(evaluate_jobs, chunks) for outcome in chunk]
        except BrokenProcessPool as exc:
            raise RuntimeError(f"an evaluation worker process died ({exc}) -- if a script started this search, "
                               f"it must do so under `if __name__ == '__main__':`, since spawned workers import "
                               f"the script") from exc

    def close(self) -> None:
        # Idle workers take ~0.5 s to exit (interpreter teardown); let them, while the run writes
        # its outputs. Python joins them at exit.
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_executor(workers: int, config, base, space=None) -> Executor:
    """`SerialExecutor` for one worker, `PoolExecutor` for more."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    return EXECUTORS.get("serial" if workers == 1 else "pool").from_config(workers, config, base, space)


# -- the worker side ---------------------------------------------------------------------------
_evaluator: Evaluator | None = None


def init_worker(config, base, parent: int | None = None, factory=None) -> None:
    """Build this process's evaluator (once per worker process); `factory(config, base)` instead
    of `make_evaluator` builds another kind (it must be picklable: a module-level function). A
    worker dies with its parent (the pid of the process that made the pool): a killed run must
    not leave evaluation processes behind."""
    global _evaluator
    if parent is not None:
        _die_with_parent(parent)
    _evaluator = (factory or make_evaluator)(config, base)


PR_SET_PDEATHSIG = 1
"""prctl option: the signal the kernel sends this process when its parent dies (Linux)."""


def _die_with_parent(parent: int) -> None:
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the worker exits when its pipe to the parent closes
            return
    if os.getppid() != parent:  # the parent died before the request took effect (e.g. while we imported)
        os._exit(1)


def evaluate_jobs(jobs: Sequence[Job]) -> list[Outcome]:
    if _evaluator is None:
        raise RuntimeError("evaluate_jobs called in a process without init_worker")
    return [_evaluator.evaluate(genotype) for _, genotype in jobs]
