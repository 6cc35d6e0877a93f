"""Options and behaviours shared by several commands: ``--set`` overrides, the memory guard, the
resume hint on Ctrl-C, and rich consoles that stay readable at 80 columns and in pipes."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from contextlib import contextmanager

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
    help="Override a field of the file before it is validated, e.g. --set stages[2].depth=8 or "
         "--set budgets.max_flops=3e9 (values are YAML; repeatable).")


@contextmanager
def resume_hint_on_interrupt(command: str) -> None:
    """Ctrl-C inside the block prints the exact command that continues the run (this one's
    arguments, with ``--resume``) and exits with 130, the shell's code for SIGINT."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with:\n  {resume_command(command, sys.argv[1:])}", err=True)
        sys.exit(130)


def resume_command(command: str, argv: Sequence[str]) -> str:
    """``archspec <argv> --resume``: the arguments as given (quoted for a POSIX shell), starting at
    `command` (so ``python -m archspec`` and the script give the same line), ``--resume`` added once."""
    args = list(argv)
    if command in args:
        args = args[args.index(command):]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["archspec", *args])


def console(stderr: bool = False):
    """A rich console: the terminal's width on a terminal, 80 columns in a pipe or a log (rich's
    default there), no colour codes unless it is a terminal."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def table(*headers: str, title: str | None = None):
    """A rich table for narrow terminals and pipes: cells fold rather than end in an ellipsis
    (a name is never cut short), and callers keep header words short, so headers wrap between
    words, not inside them."""
    from rich.table import Table

    result = Table(title=title)
    for header in headers:
        result.add_column(header, overflow="fold")
    return result

max_memory_option = click.option(
    "--max-memory", default=None, metavar="SIZE",
    help="Refuse work whose estimated memory exceeds SIZE (e.g. 8G) [default: $ARCHSPEC_MAX_MEMORY, else half "
         "of the memory available].")


def guard(spec, input_size=None, *, batch: int = 1, purpose: str = "inference", max_memory: str | None = None):
    """Refuse (exit 2, estimate and limit named) before building what cannot fit."""
    from archspec.compiler.resources import guard_memory

    return guard_memory(spec, input_size, batch=batch, purpose=purpose, limit=max_memory)
