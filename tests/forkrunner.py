"""Run many `archspec` CLI invocations, each in its own process, without paying for the
interpreter and torch start-up each time.

Started as ``python -m tests.forkrunner``, it imports the CLI and the heavy libraries once, then
reads one JSON job per line on stdin and answers one JSON line per job on stdout. Each job runs
in a forked child: its own working directory and environment, an address-space cap
(``RLIMIT_AS``) and a CPU/wall time limit, stdout and stderr redirected to files, and the
CLI's real entry point (`archspec.cli.main`), so the child behaves as ``archspec ARGS`` would.
The parent never runs a job's code, so every child starts from the same clean state.

Job: ``{"argv": [...], "cwd": str, "env": {name: value}, "memory": bytes, "seconds": int,
"stdout": path, "stderr": path}``. Answer: ``{"status": exit code, or -signal when killed}``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys


def preload() -> None:
    """Import what the commands import, once, in the parent."""
    import archspec.cli  # noqa: F401
    import archspec.cli.deploy_commands  # noqa: F401
    import archspec.cli.detection_commands  # noqa: F401
    import archspec.cli.search_commands  # noqa: F401
    import archspec.cli.spec_commands  # noqa: F401
    import archspec.compiler.export  # noqa: F401
    import archspec.compiler.onnx_writer  # noqa: F401
    import archspec.detection  # noqa: F401
    import archspec.detection.deploy  # noqa: F401
    import archspec.detection.export  # noqa: F401 - imported by the commands that export (with onnx: ~1.5 s)
    import archspec.detection.train  # noqa: F401
    import archspec.search.run  # noqa: F401
    import matplotlib.backends.backend_agg  # noqa: F401 - a search's pareto.png, its report page's heat maps
    import matplotlib.figure  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401 - what a torch optimizer imports on first use (~3 s: most of a train case)


def run_child(job: dict) -> None:
    """In the forked child: set the limits and run the CLI; never returns."""
    try:
        os.setsid()
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        memory = int(job["memory"])
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        seconds = int(job["seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))
        signal.alarm(seconds)  # wall clock: SIGALRM's default action ends the process
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(os.devnull)
        from archspec.cli import main

        code = 0
        try:
            main(job["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - anything escaping the CLI is reported as status 99
        try:
            os.write(2, f"forkrunner: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(99)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve() -> None:
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(job)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        left = _session_left(pid, float(job.get("grace", 0)))
        try:  # a job's own children (its session) must not outlive it
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        print(json.dumps({"status": code, "left": left}), flush=True)


def _session_left(session: int, grace: float) -> list[str]:
    """Processes still alive in a finished job's session after `grace` seconds (what the job left
    behind: e.g. the pool workers of a killed search). They are not this server's children, so
    they are waited for on pidfds (tests/processes.py), blocked rather than polled."""
    from tests.processes import session_members, wait_until_none_left

    return list(wait_until_none_left(lambda: session_members(session), grace).values())


class ForkRunner:
    """The test side: start the server once, send jobs, get exit statuses."""

    def __init__(self, root: str):
        import subprocess

        self.process = subprocess.Popen([sys.executable, "-m", "tests.forkrunner"], cwd=root, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": root})
        ready = self.process.stdout.readline()
        if "ready" not in ready:
            raise RuntimeError(f"forkrunner did not start: {ready!r}")

    def run(self, argv: list[str], *, cwd: str, env: dict, memory: int, seconds: int, stdout: str,
            stderr: str) -> int:
        return self.run_job(argv, cwd=cwd, env=env, memory=memory, seconds=seconds, stdout=stdout,
                            stderr=stderr)["status"]

    def run_job(self, argv: list[str], *, cwd: str, env: dict, memory: int, seconds: int, stdout: str,
                stderr: str, grace: float = 0.0) -> dict:
        """``{"status": ..., "left": [processes of the job still alive after `grace` s]}``."""
        job = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env, "memory": memory, "seconds": seconds,
               "stdout": str(stdout), "stderr": str(stderr), "grace": grace}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


if __name__ == "__main__":
    serve()
