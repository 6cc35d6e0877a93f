"""The process table, for the tests' "no process left behind" checks (tests/conftest.py and
tests/forkrunner.py): which processes are a parent's children or a session's members, and a
blocking wait for processes to exit.

The wait blocks on pidfds (Linux 5.3+: a pidfd becomes readable when its process exits), so a
check that gives exiting processes a grace period sleeps in the kernel until the last one is
gone or the grace is over, instead of polling the process table.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def processes(select_fields: Callable[[list[str]], bool], width: int = 200) -> dict[int, str]:
    """Live (not zombie) processes whose /proc/PID/stat fields after the command name (state,
    ppid, pgrp, session, ...) satisfy `select_fields`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and select_fields(fields):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:width]
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was read
    return found


def children_of(pid: int) -> dict[int, str]:
    return processes(lambda fields: int(fields[1]) == pid)


def session_members(session: int) -> dict[int, str]:
    return processes(lambda fields: int(fields[3]) == session, width=120)


def wait_for_exit(pids: Iterable[int], deadline: float) -> None:
    """Block until every process of `pids` has exited (a child: become a zombie) or the
    `time.monotonic()` deadline has passed. Without pidfd support it returns at once (the caller
    then sees the processes still alive)."""
    poller, fds = select.poll(), []
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # already gone
            except (AttributeError, OSError):
                return  # no pidfds here: nothing to block on
            fds.append(fd)
            poller.register(fd, select.POLLIN)
        waiting = len(fds)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                waiting -= 1
    finally:
        for fd in fds:
            os.close(fd)


def wait_until_none_left(find: Callable[[], dict[int, str]], grace: float, reap: Callable[[], None] = lambda: None
                         ) -> dict[int, str]:
    """The processes `find` returns that are still alive after `grace` seconds, waiting (blocked,
    not polling) for those found to exit and looking again, since an exiting process may leave
    children of its own."""
    deadline = time.monotonic() + grace
    while True:
        reap()
        left = find()
        if not left or time.monotonic() >= deadline:
            return left
        wait_for_exit(left, deadline)
        if not _pidfds_available():
            reap()
            return find()


def _pidfds_available() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):
        return False
