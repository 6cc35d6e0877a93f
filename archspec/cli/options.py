"""Options shared by the commands that build networks."""

from __future__ import annotations

import click

max_memory_option = click.option(
    "--max-memory", default=None, metavar="SIZE",
    help="Refuse work whose estimated memory exceeds SIZE (e.g. 8G) [default: $ARCHSPEC_MAX_MEMORY, else half "
         "of the memory available].")


def guard(spec, input_size=None, *, batch: int = 1, purpose: str = "inference", max_memory: str | None = None):
    """Refuse (exit 2, estimate and limit named) before building what cannot fit."""
    from archspec.compiler.resources import guard_memory

    return guard_memory(spec, input_size, batch=batch, purpose=purpose, limit=max_memory)
