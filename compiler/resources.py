"""Resource guards: refuse work that cannot fit in memory before anything is allocated.

A spec that validates can still ask for anything (a valid spec at its field limits needs
hundreds of GB to build; ``--input-size 1000000`` asks for terabytes of activations). The
analytic IR knows the parameter and activation counts without building a module, so every
command that builds (export, bench, a forward-pass score, training) first compares an estimate
with a limit and refuses with both numbers in the message.

The estimate is deliberately an upper bound of the peak, in float32:

- parameters: once for inference; weights + gradients + two AdamW moments for training;
  three copies for export (the module, the exported program, the ONNX proto);
- activations: every intermediate feature map of the network for the whole batch (the sum
  bounds the peak of a forward pass or an export's check run; training keeps them all for the
  backward pass, plus their gradients). A detector's neck and head are counted as much again as its backbone (FPN levels
  at the backbone's resolutions, towers of similar width).

The limit: ``--max-memory`` where a command has it, else ``$ARCHSPEC_MAX_MEMORY``, else half of
the memory this process can still get (available RAM, and the address-space limit when one is
set).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["inference", "export", "training"]

PARAM_COPIES: dict[str, int] = {"inference": 1, "export": 3, "training": 4}
"""float32 copies of the parameters each purpose holds at its peak."""
ACTIVATION_COPIES: dict[str, int] = {"inference": 1, "export": 1, "training": 2}
"""Copies of the activations (their sum already bounds a forward pass's peak); training keeps
the forward maps and their gradients."""
DETECTOR_ACTIVATION_FACTOR = 2
"""Neck and head feature maps relative to the backbone's."""
DEFAULT_FRACTION = 0.5
"""Share of the obtainable memory a command may plan to use by default."""
MEMORY_ENV = "ARCHSPEC_MAX_MEMORY"

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


class ResourceLimitError(ValueError):
    """Work refused because its estimated memory exceeds the limit."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of running a spec (see the module docstring)."""

    params: int
    activations: int
    """Elements of every feature map for the whole batch."""
    bytes: int
    purpose: str

    def describe(self) -> str:
        return (f"{format_bytes(self.bytes)} ({self.params:,} parameters, {self.activations:,} activation "
                f"values, {self.purpose})")


def estimate_memory(spec, input_size: tuple[int, int] | None = None, *, batch: int = 1,
                    purpose: Purpose = "inference") -> MemoryEstimate:
    """The estimated peak memory of `purpose` for `spec` at `input_size` (a detector: its own
    input size when None; a backbone: 224) and `batch` images, from the analytic costs only."""
    from archspec.compiler import costs

    counts = costs(spec, input_size)
    activations = counts.activations * batch
    if getattr(spec, "type", None) == "detector":
        activations *= DETECTOR_ACTIVATION_FACTOR
    total = 4 * (PARAM_COPIES[purpose] * counts.params + ACTIVATION_COPIES[purpose] * activations)
    return MemoryEstimate(counts.params, activations, total, purpose)


def memory_limit(option: str | int | None = None) -> int:
    """Bytes a command may plan to use: `option` (``--max-memory``), else the environment
    variable, else `DEFAULT_FRACTION` of the obtainable memory."""
    if option is None:
        option = os.environ.get(MEMORY_ENV) or None
    if option is not None:
        return parse_bytes(option)
    return int(DEFAULT_FRACTION * obtainable_memory())


def obtainable_memory() -> int:
    """Available RAM, or less when the process's address space is capped (RLIMIT_AS)."""
    available = _mem_available()
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        available = min(available, max(0, soft - _address_space_used()))
    return available


def _mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30


def _address_space_used() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def guard_memory(spec, input_size: tuple[int, int] | None = None, *, batch: int = 1,
                 purpose: Purpose = "inference", limit: str | int | None = None) -> MemoryEstimate:
    """The estimate, or `ResourceLimitError` stating the estimate and the limit when it is over."""
    estimate = estimate_memory(spec, input_size, batch=batch, purpose=purpose)
    allowed = memory_limit(limit)
    if estimate.bytes > allowed:
        name = getattr(spec, "name", "the spec")
        raise ResourceLimitError(f"{name}: {purpose} needs an estimated {estimate.describe()}, over the limit of "
                                 f"{format_bytes(allowed)} (--max-memory or {MEMORY_ENV} raises it)")
    return estimate


def parse_bytes(text: str | int) -> int:
    """``8G``, ``512MiB``, ``1.5GB``, ``1000000`` -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        raw = str(text).strip().upper().replace(" ", "")
        number = raw.rstrip("KMGTIB")
        unit = raw[len(number):]
        try:
            value = int(float(number) * _UNITS[unit])
        except (KeyError, ValueError, OverflowError):
            raise ValueError(f"memory size {text!r}: expected a number with an optional unit (K, M, G, T)") from None
    if value <= 0:
        raise ValueError(f"memory size {text!r}: must be positive")
    return value


def format_bytes(value: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} bytes"
