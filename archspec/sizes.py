"""Input sizes: the one rule that turns what users write into ``(height, width)``.

A size is written as one number for a square input (``224``, ``"224"``), as ``"480x640"``
(height x width; ``"480,640"`` too) or as a pair / one-element list (``(480, 640)``, ``[224]``).
Every command, spec and search budget reads sizes through `parse_input_size`.
"""

from __future__ import annotations

from collections.abc import Sequence

InputSize = tuple[int, int]
"""(height, width) in pixels: exactly two positive integers."""

MAX_INPUT_SIDE = 8192
"""Largest input height or width any command takes (specs allow 4096; twice that for tools)."""


def parse_input_size(size: int | str | Sequence[int]) -> InputSize:
    """``224``, ``"224"``, ``"480x640"``, ``(480, 640)``, ``[224]`` -> (height, width);
    `ValueError` naming the input otherwise."""
    if isinstance(size, bool):
        raise ValueError(f"input size {size!r}: expected one or two positive integers")
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            if len(size) > 40:  # int() of a 5000-digit string is slow and its message names no input
                raise ValueError
            values = [int(p) for p in parts if p.strip()]
        except ValueError:
            raise ValueError(f"input size {size!r}: expected H or HxW") from None
    elif isinstance(size, int):
        values = [size]
    else:
        values = [int(v) for v in size]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"input size {size!r}: expected one or two positive integers")
    if max(values) > MAX_INPUT_SIDE:
        raise ValueError(f"input size {size!r}: at most {MAX_INPUT_SIDE} pixels a side")
    return values[0], values[1]
