"""Shared fixtures: the zoo and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "examples" / "backbones").glob("*.yaml"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def zoo_ids(paths=ZOO):
    return [p.stem for p in paths]


# -- no process left behind ------------------------------------------------------------------------
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_SECONDS = 20
"""How long finished tests' processes may take to exit (a pool's workers shut down after the run)."""


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


def _children() -> dict[int, str]:
    """Live child processes of this process: pid -> command line."""
    import os

    me, found = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == me and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except (OSError, ValueError):
            continue
    return found


def _reap() -> None:
    import os

    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if any process a test started is still alive (after a short grace for
    processes that are already exiting), and end those processes."""
    import os
    import signal
    import sys
    import time

    if not Path("/proc/self/stat").exists():
        return
    _stop_own_resource_tracker()
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    left = {}
    while True:
        _reap()
        left = _children()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if left:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
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
