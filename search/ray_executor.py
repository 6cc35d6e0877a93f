"""The Ray executor: a search's evaluations on Ray actors, on this machine or on a cluster.

    executor = RayExecutor(workers=8, config=config, base=base, address="head-node:6379")
    run_search(config_path, out, executor=executor)   # the caller closes it
    executor.close()

or ``archspec search CFG --out RUN --executor ray [--address ADDR] --workers N``.

How it keeps the run's promises (search/executor.py):

* Each of `workers` actors builds its evaluator once, in its constructor. The search config and
  the base spec travel as canonical JSON (keys sorted, names kept) and are validated again on
  arrival, exactly as a config file is; specs are never pickled. (Genotypes and outcomes --
  tuples and a frozen dataclass of numbers and strings produced by this package -- travel as
  Ray's ordinary task arguments and results.)
* A round is cut into chunks (a few per actor, as the process pool does) and every idle actor
  takes the next chunk; outcomes are reassembled in job order, so completion order never shows.
* Actors only evaluate. The parent writes the trial store and measures latency kernels into
  its table (search/run.py, `judge`), so a cluster node's hardware never leaks into latencies.
* A dead actor (node lost, process killed, out of memory) is replaced, and the chunk it held is
  evaluated again by another actor. Evaluators are pure functions of the genotype, so the
  retried chunk's outcomes are the ones the dead actor would have returned.
* With no `address`, a private local Ray instance starts with the executor and stops with
  `close()`. An address that cannot be reached is a `RayClusterError` (one line). If Ray is
  already initialised in this process (a test fixture, a notebook), the executor uses that
  instance and leaves it running.

Ray is an optional dependency: ``pip install 'archspec-nas[ray]'``.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archspec.search.evaluators import Evaluator, Outcome
from archspec.search.executor import Job

INSTALL_HINT = "pip install 'archspec-nas[ray]' (or: pip install 'ray>=2.9')"
DEFAULT_FACTORY = "archspec.search.evaluators:make_evaluator"
"""``module:function`` building an evaluator from (config, base): what every actor calls once."""


class RayMissingError(ValueError):
    """`--executor ray` without Ray installed."""


class RayClusterError(ValueError):
    """The Ray cluster cannot be reached, or cannot give the actors what they ask for."""


@dataclass(frozen=True)
class ActorResources:
    """What each evaluation actor reserves on the cluster (Ray's logical resources)."""

    num_cpus: float = 1.0
    """CPUs per actor. The analytic evaluator is single-threaded; a training evaluator may want more."""
    num_gpus: float = 0.0
    """GPUs per actor: 0 for the analytic evaluator; 1 (or a fraction, to share a GPU) for
    evaluators that train or run a supernet."""


@dataclass(frozen=True)
class ActorFault:
    """A test hook: actor number `actor`, in its first life only, exits abruptly
    (``os._exit``, as a killed process would) when it starts its `job`-th job (1-based).
    Deterministic, unlike killing it from outside on a timer."""

    actor: int = 0
    job: int = 1


def import_ray():
    """The `ray` module, or a `RayMissingError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissingError(f"the ray executor needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# -- the wire format ---------------------------------------------------------------------------
def to_wire(model) -> str:
    """A config or spec as canonical JSON: every field (defaults filled in, names kept), keys sorted."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def from_wire(config_json: str, base_json: str):
    """The (config, base) a search config file would load to, validated again from their JSON."""
    from pydantic import TypeAdapter, ValidationError

    from archspec.io import _from_validation_error, validate
    from archspec.search_config import SearchConfig

    try:
        config = TypeAdapter(SearchConfig).validate_json(config_json)
    except ValidationError as exc:
        raise _from_validation_error(exc, "ray:config") from None
    return config, validate(json.loads(base_json), source="ray:base")


def resolve_factory(factory: str | Callable) -> Callable:
    """A ``module:function`` name (imported on the actor), or a callable that Ray ships itself."""
    if callable(factory):
        return factory
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)


class EvaluationActor:
    """One Ray actor's state: its evaluator, built once from the JSON it was started with."""

    def __init__(self, config_json: str, base_json: str, factory: str | Callable, fault_job: int | None):
        config, base = from_wire(config_json, base_json)
        self.evaluator: Evaluator = resolve_factory(factory)(config, base)
        self.fault_job = fault_job
        self.started = 0

    def ready(self) -> int:
        return os.getpid()

    def evaluate(self, jobs: Sequence[Job]) -> list[Outcome]:
        outcomes = []
        for _, genotype in jobs:
            self.started += 1
            if self.started == self.fault_job:
                os._exit(1)
            outcomes.append(self.evaluator.evaluate(genotype))
        return outcomes


# -- the executor ------------------------------------------------------------------------------
class RayExecutor:
    """Evaluates on `workers` Ray actors (see the module docstring)."""

    CHUNKS_PER_WORKER = 2
    """Chunks per actor and round: slack for uneven chunks, few Ray tasks per round."""
    START_TIMEOUT_S = 300.0
    """How long the actors may take to start (placement, imports, evaluator construction)."""

    def __init__(self, workers: int, config, base, *, address: str | None = None,
                 resources: ActorResources = ActorResources(), factory: str | Callable = DEFAULT_FACTORY,
                 max_actor_failures: int | None = None, fault: ActorFault | None = None):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, not {workers}")
        self.ray = import_ray()
        self.workers = workers
        self.address = address
        self.resources = resources
        self.failures = 0
        self.max_actor_failures = 2 * workers if max_actor_failures is None else max_actor_failures
        self.owns_ray = _connect(self.ray, address, workers, resources)
        try:
            self.actor_class = self.ray.remote(num_cpus=resources.num_cpus,
                                               num_gpus=resources.num_gpus)(EvaluationActor)
            self.wire = (to_wire(config), to_wire(base), factory)
            self.actors = [self._start(fault.job if fault and fault.actor == index else None)
                           for index in range(workers)]
            self._wait_until_started()
        except BaseException:
            self.close()
            raise

    def _start(self, fault_job: int | None = None):
        return self.actor_class.remote(*self.wire, fault_job)

    def _wait_until_started(self) -> None:
        ray = self.ray
        pending = [actor.ready.remote() for actor in self.actors]
        ready, not_ready = ray.wait(pending, num_returns=len(pending), timeout=self.START_TIMEOUT_S)
        if not_ready:
            cluster = ray.cluster_resources()
            raise RayClusterError(
                f"only {len(ready)} of {self.workers} Ray actors started within {self.START_TIMEOUT_S:.0f} s, each "
                f"asking for {self.resources.num_cpus:g} CPU and {self.resources.num_gpus:g} GPU; the cluster has "
                f"{cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} GPU")
        try:
            ray.get(ready)
        except ray.exceptions.RayActorError as exc:
            cause = _creation_error(exc)
            if isinstance(cause, ValueError):  # e.g. the config failed validation on the node: a SpecError
                raise cause from None
            raise RuntimeError(f"a Ray evaluation actor failed to start: "
                               f"{_cause(exc) if cause is None else f'{type(cause).__name__}: {cause}'}") from None

    def evaluate(self, jobs: Sequence[Job]) -> list[Outcome]:
        if not jobs:
            return []
        ray = self.ray
        size = -(-len(jobs) // (self.workers * self.CHUNKS_PER_WORKER))
        chunks = [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]
        results: list[list[Outcome] | None] = [None] * len(chunks)
        queue = deque(range(len(chunks)))
        idle = list(range(len(self.actors)))
        running: dict = {}  # object ref -> (actor index, chunk index)
        while queue or running:
            while queue and idle:
                slot, chunk = idle.pop(0), queue.popleft()
                running[self.actors[slot].evaluate.remote(chunks[chunk])] = (slot, chunk)
            done, _ = ray.wait(list(running), num_returns=1)
            slot, chunk = running.pop(done[0])
            try:
                results[chunk] = ray.get(done[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                self._replace(slot, exc)
                queue.appendleft(chunk)  # another actor (or the replacement) evaluates it again
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            idle.append(slot)
        return [outcome for chunk in results for outcome in chunk]

    def _replace(self, slot: int, exc: Exception) -> None:
        self.failures += 1
        if self.failures > self.max_actor_failures:
            raise RuntimeError(f"{self.failures} Ray evaluation actors died in this run (the last: "
                               f"{_cause(exc)}); giving up") from None
        self.ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._start()  # a second life: no fault hook

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node; nothing left to release
                pass
        self.actors = []
        if getattr(self, "owns_ray", False):
            self.ray.shutdown()
            self.owns_ray = False


def _connect(ray, address: str | None, workers: int, resources: ActorResources) -> bool:
    """Start a private local Ray (no address) or join a cluster; True if the executor started it."""
    if ray.is_initialized():
        return False
    if address is None:
        # "local" starts a new instance even when another runs on this machine (never joins it);
        # its GPUs are detected only if the actors ask for GPUs.
        ray.init(address="local", num_cpus=max(1, round(workers * resources.num_cpus)),
                 num_gpus=None if resources.num_gpus > 0 else 0, include_dashboard=False, log_to_driver=False,
                 logging_level="error", configure_logging=True)
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="error")
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types here
        raise RayClusterError(f"cannot reach the Ray cluster at --address {address}: {_cause(exc)} (start it with "
                              f"`ray start --head`; the address is the head's host:6379, or ray://host:10001 "
                              f"for Ray Client)") from None
    return True


CONNECT_TIMEOUT_S = 10.0
"""How long to wait for the cluster's head to accept a connection: Ray itself retries for minutes."""


def _check_reachable(address: str) -> None:
    """Fail fast, in one line, when nothing listens at a ``host:port`` or ``ray://host:port``
    address (Ray's own client retries for minutes, logging every attempt). "auto" is Ray's."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayClusterError(f"cannot reach the Ray cluster at --address {address}: {exc.strerror or exc} (is "
                              f"`ray start --head` running there? the address is the head's host:6379, or "
                              f"ray://host:10001 for Ray Client)") from None


def _creation_error(exc: BaseException) -> BaseException | None:
    """The exception an actor's constructor raised, if that is why it died."""
    for arg in exc.args:
        cause = getattr(arg, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return None


def _cause(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
