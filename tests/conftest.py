"""Shared fixtures: the zoo and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "examples" / "backbones").glob("*.yaml"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


THREADS_VARIABLE = "OMP_NUM_THREADS"


def pytest_configure(config):
    """Under xdist, size torch's thread pool (and that of every process a test starts, which
    inherits the variable) to this worker's share of the cores: with `-n 2` on 2 cores, two
    workers of 2 OpenMP threads each would oversubscribe the machine, and OpenMP threads spin
    while they wait for a descheduled peer, burning several times the CPU the work needs. A
    value the user set is kept. Without xdist nothing changes."""
    import os
    import sys

    workers = getattr(config, "workerinput", {}).get("workercount")
    if not workers or THREADS_VARIABLE in os.environ:
        return
    threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
    os.environ[THREADS_VARIABLE] = str(threads)
    if "torch" in sys.modules:  # imported by a plugin already: it read the variable too early
        sys.modules["torch"].set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def no_speed_probe():
    """Measurements in tests run without the speed probe (`compiler/latency/probe.py`): it
    buys steadier figures, which no test reads, for a probe per batch and up to half a second
    of waiting per measurement on a noisy machine (a search test measuring its front took 16 s
    without it and 28 s with it). Session-wide, so that module-scoped fixtures run without it
    too (the proxy-fidelity benchmark's miniature run spent 12 of its 31 s in the probe). The
    tests of the probe and of a measurement's conditions put it back (`with_speed_probe`)."""
    import archspec.compiler.latency.predictor as predictor_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor_module, "speed_probe", lambda threads, clock: None)
        yield


@pytest.fixture(autouse=True, scope="session")
def session_latency_table(tmp_path_factory):
    """The machine's latency table (`budgets.latency_table: machine`, `--latency-table` alone,
    `latency predict`) is never the user's cache in tests. Session-wide for module fixtures;
    `own_latency_table` gives each test an empty one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARCHSPEC_LATENCY_TABLE", str(tmp_path_factory.mktemp("machine") / "latency.sqlite"))
        yield


@pytest.fixture(autouse=True)
def own_latency_table(session_latency_table, tmp_path_factory, monkeypatch):
    """Each test starts from an empty machine table: what one test measured never decides
    what another measures."""
    monkeypatch.setenv("ARCHSPEC_LATENCY_TABLE", str(tmp_path_factory.mktemp("machine") / "latency.sqlite"))


@pytest.fixture
def with_speed_probe(monkeypatch):
    """The real speed probe, as measurements outside the tests use it."""
    import archspec.compiler.latency.predictor as predictor_module
    from archspec.compiler.latency.probe import speed_probe

    monkeypatch.setattr(predictor_module, "speed_probe", speed_probe)


def zoo_ids(paths=ZOO):
    return [p.stem for p in paths]


def load_benchmark(name: str):
    """The module of benchmarks/<name>.py (benchmarks are scripts, not a package), registered under
    its name: dataclasses look their module up while the file runs."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cli_in_process(*args, cwd: Path = ROOT, env: dict | None = None):
    """Run `archspec ARGS` in this process through the CLI's real entry point (`archspec.cli.main`,
    the error boundary included): its exit status, stdout and stderr, like `subprocess.run`'s
    result. `env` is added to the environment while it runs. For tests of what a command prints and
    returns, not of the process itself (start-up, imports, signals, output written below Python):
    those run a subprocess."""
    import contextlib
    import io
    import os
    import subprocess

    from archspec.cli import main

    out, err = io.StringIO(), io.StringIO()
    code, before, saved = 0, os.getcwd(), {name: os.environ.get(name) for name in env or {}}
    os.chdir(cwd)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([str(arg) for arg in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(before)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# -- no process left behind ------------------------------------------------------------------------
# Every pytest process checks its own children at the end of its session: without xdist the one
# process; with xdist (`-n 2`) each worker, which reports what it found in its `workeroutput`, and
# the controller, which adopts the orphans of workers that have exited and fails the run for any
# leftover, its workers' included (a worker's own exit status does not reach the run's).
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_SECONDS = 20
"""How long finished tests' processes may take to exit (a pool's workers shut down after the run)."""
LEFTOVERS_KEY = "archspec_leftover_processes"
_workers_leftovers: dict[int, str] = {}


def pytest_sessionstart(session):
    """Adopt orphans: a process a test started that outlives its parent (a spawned pool worker of a
    killed run, a resource tracker) is re-parented to this process instead of init, so the check
    at the end of the session sees it."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _reap() -> None:
    import os

    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist, in the controller: keep what a finished worker found left behind."""
    output = getattr(node, "workeroutput", None) or {}
    _workers_leftovers.update({int(pid): f"(worker {node.gateway.id}) {cmd}"
                               for pid, cmd in output.get(LEFTOVERS_KEY, {}).items()})


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Fail the session if any process a test started is still alive (after a short grace for
    processes that are already exiting), and end those processes. Last of the hooks, so that in
    an xdist controller the workers have been shut down (their exit is part of the grace)."""
    import os
    import signal
    import sys

    from tests.processes import children_of, wait_until_none_left

    if not Path("/proc/self/stat").exists():
        return
    _stop_own_resource_tracker()
    me = os.getpid()
    left = wait_until_none_left(lambda: children_of(me), LEFTOVER_GRACE_SECONDS, _reap)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _reap()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports and fails the run
        workeroutput[LEFTOVERS_KEY] = {str(pid): cmd for pid, cmd in left.items()}
        return
    left |= _workers_leftovers
    if left:
        sys.stderr.write("\nprocesses left behind by the tests:\n" +
                         "".join(f"  {pid}: {cmd}\n" for pid, cmd in left.items()))
        session.exitstatus = 1


def _stop_own_resource_tracker() -> None:
    """This process's own multiprocessing resource tracker (started by tests that spawn) lives
    until this process ends; stop it now so that only true leftovers remain."""
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)
    if stop is not None:
        try:
            stop()
        except Exception:  # noqa: BLE001 - best effort; a tracker still running is then reported
            pass
