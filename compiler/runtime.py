"""Latency measurement on ONNX Runtime and PyTorch, done the way that gives stable numbers.

* Providers are explicit (`cpu`, `cuda`, `tensorrt`). Asking for one that ONNX Runtime lacks, or
  that the session silently drops (onnxruntime-gpu lists CUDA even on machines without a GPU),
  is an error, never a quiet fall back to the CPU.
* Threads are pinned: `intra_op_num_threads` (default: the number of physical cores),
  one inter-op thread, sequential execution. Torch gets the same count via `set_num_threads`.
* Warm-up runs are discarded; statistics are robust (median, p10, p90, min) over `repeat` runs.
* Inputs and outputs are bound once on the device (I/O binding), so host/device copies are not
  timed on CUDA.

Every result carries the machine fingerprint (CPU model, core count, library versions), so
numbers from different machines are never mixed up.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
"""Short provider name -> ONNX Runtime execution provider."""

DEVICE_TYPES = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
"""Where a provider keeps its tensors (for I/O binding)."""

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
CLOCKS = ("wall", "cpu")


def timer_for(clock: str, threads: int):
    """The timer for `clock`. CPU time of the calling thread equals the latency of an idle
    machine when the work runs on that thread alone (1 thread: ORT and torch then compute
    inline), and it excludes the time other processes hold the core: on a shared machine it
    is far steadier than wall time. With more threads it would miss the workers' time."""
    if clock not in CLOCKS:
        raise ValueError(f"clock {clock!r}: expected one of {', '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise ValueError(f"clock 'cpu' measures the calling thread only, so it needs threads=1 (got {threads})")
    return time.perf_counter if clock == "wall" else time.thread_time


class ProviderError(ValueError):
    """An execution provider was asked for that this ONNX Runtime cannot give."""


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model on one runtime, in milliseconds per batch."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    std_ms: float
    runtime: str
    """``ort`` or ``torch``."""
    provider: str
    """``cpu``, ``cuda`` or ``tensorrt`` (``cpu`` for torch on the CPU)."""
    threads: int
    repeats: int
    warmup: int
    input_shape: tuple[int, ...] = ()
    machine: dict = field(default_factory=dict)
    clock: str = "wall"
    """``wall`` (elapsed time) or ``cpu`` (CPU time of the calling thread; single-threaded runs)."""

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], **context) -> "LatencyStats":
        """Statistics of per-run times (ms)."""
        if not samples_ms:
            raise ValueError("no timing samples (repeat must be at least 1)")
        ordered = sorted(samples_ms)
        return cls(median_ms=statistics.median(ordered), p10_ms=_percentile(ordered, 10),
                   p90_ms=_percentile(ordered, 90), min_ms=ordered[0],
                   std_ms=statistics.pstdev(ordered) if len(ordered) > 1 else 0.0, **context)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of sorted values."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- the machine ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        processor, package, core = None, "0", None
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                processor = int(value)
            elif key == "physical id":
                package = value
            elif key == "core id":
                core = value
            elif not key:
                if processor is not None and processor in allowed:
                    cores.add((package, core if core is not None else str(processor)))
                processor, package, core = None, "0", None
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) or len(allowed))


@functools.lru_cache(maxsize=1)
def l2_cache_bytes() -> int | None:
    """The L2 cache of one core in bytes (Linux: sysfs, else the C library's sysconf); None
    where neither says."""
    try:
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                return _cache_size((index / "size").read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return size if size > 0 else None


def _cache_size(text: str) -> int:
    """sysfs cache sizes: ``2048K``, ``4M`` or bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1:].upper() in units else int(text)


def _version(package: str) -> str:
    for name in (package, f"{package}-gpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


@functools.lru_cache(maxsize=1)
def machine_fingerprint() -> dict:
    """What latency numbers depend on: CPU model, cores, library versions; ``hash`` is a short
    digest of the rest (the key of latency tables). Library versions are read from package
    metadata, so torch is not imported."""
    info = {
        "cpu_model": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count() or 1,
        "machine": platform.machine(),
        "system": platform.system(),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
    }
    digest = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]
    return {**info, "hash": digest}


# -- ONNX Runtime --------------------------------------------------------------------------
def provider_name(provider: str) -> str:
    """``cpu|cuda|tensorrt`` -> the ORT provider name (an error naming the choices otherwise)."""
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise ProviderError(f"provider {provider!r}: expected one of {', '.join(PROVIDERS)}") from None


def session_options(threads: int | None = None, optimization: str = "all"):
    """ORT session options with pinned threads and sequential execution."""
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization {optimization!r}: expected one of {', '.join(OPTIMIZATION_LEVELS)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.log_severity_level = 3
    # Threads spin between runs by default; keep them spinning (steady state) but pinned in number.
    return options


def create_session(model: str | Path | bytes, *, provider: str = "cpu", threads: int | None = None,
                   optimization: str = "all"):
    """An `onnxruntime.InferenceSession` on exactly `provider`.

    Raises `ProviderError` when the provider is not available in this ONNX Runtime build, or
    when the session came up without it (ORT falls back to the CPU silently otherwise)."""
    import onnxruntime as ort

    wanted = provider_name(provider)
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(f"provider {provider!r} ({wanted}) is not available in this onnxruntime build "
                            f"(available: {', '.join(available)})")
    chain = {"cpu": [wanted], "cuda": [wanted, PROVIDERS["cpu"]],
             "tensorrt": [wanted, PROVIDERS["cuda"], PROVIDERS["cpu"]]}[provider]
    source = model if isinstance(model, bytes) else str(model)
    ort.set_default_logger_severity(3)  # a failed provider is reported by the error below, not a log splash
    log: list[str] = []
    try:
        # A GPU provider whose libraries are missing is logged by ORT's native code straight to
        # fd 2 (in red, at ERROR), whatever the logger severity: catch it, and explain it once below.
        with _native_stderr_captured(log, enabled=provider != "cpu"):
            session = ort.InferenceSession(source, session_options(threads, optimization), providers=chain)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        if provider != "cpu":
            raise ProviderError(f"provider {provider!r} ({wanted}) failed to start: {exc}") from exc
        raise
    if session.get_providers()[0] != wanted:
        reason = provider_load_failure("".join(log)) or "no usable device or libraries?"
        raise ProviderError(f"provider {provider!r} ({wanted}) is listed by onnxruntime but could not start, so "
                            f"the session fell back to {', '.join(session.get_providers())} ({reason})")
    return session


@contextlib.contextmanager
def _native_stderr_captured(sink: list[str], *, enabled: bool = True):
    """Redirect file descriptor 2 (where native libraries log) into `sink` for the block."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sink.append(captured.read().decode("utf-8", errors="replace"))


_LOAD_FAILURE = re.compile(r"Failed to load library (\S+) with error: ([^\n\x1b]+)")


def provider_load_failure(log: str) -> str | None:
    """The cause ORT logged for a provider library it could not load, in one line, e.g.
    ``libonnxruntime_providers_cuda.so needs libcublasLt.so.13: cannot open shared object file``."""
    match = _LOAD_FAILURE.search(log)
    if match is None:
        return None
    return f"{Path(match.group(1)).name} needs {match.group(2).strip()}"


def _input_shape_of(session) -> tuple[int, ...]:
    dims = session.get_inputs()[0].shape
    if any(not isinstance(d, int) for d in dims):
        raise ValueError(f"the model's input shape {dims} is symbolic; give input_shape")
    return tuple(dims)


def bind_random_input(session, shape: Sequence[int], device: str = "cpu", seed: int = 0):
    """An I/O binding of `session` with a seeded random input of `shape` and every output on
    `device`: bound once, so timed runs copy nothing between host and device."""
    import onnxruntime as ort

    data = np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(data, device, 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, device)
    return binding


def measure_session(session, input_shape: Sequence[int] | None = None, *, provider: str = "cpu",
                    threads: int | None = None, warmup: int = 10, repeat: int = 50, seed: int = 0,
                    clock: str = "wall") -> LatencyStats:
    """Time `session.run_with_iobinding` on a random input; inputs and outputs live on the
    provider's device and are bound once, so no copies are timed."""
    threads = threads or session.get_session_options().intra_op_num_threads
    if clock == "cpu" and provider != "cpu":
        raise ValueError("clock 'cpu' times the CPU provider only")
    timer = timer_for(clock, threads)

    shape = tuple(input_shape) if input_shape is not None else _input_shape_of(session)
    device = DEVICE_TYPES[provider]
    binding = bind_random_input(session, shape, device, seed)
    synchronize = binding.synchronize_outputs if device != "cpu" else (lambda: None)
    for _ in range(warmup):
        session.run_with_iobinding(binding)
        synchronize()
    samples = []
    for _ in range(repeat):
        start = timer()
        session.run_with_iobinding(binding)
        synchronize()
        samples.append((timer() - start) * 1e3)
    return LatencyStats.from_samples(samples, runtime="ort", provider=provider, threads=threads, repeats=repeat,
                                     warmup=warmup, input_shape=shape, machine=machine_fingerprint(), clock=clock)


def measure_onnx(model: str | Path | bytes, input_shape: Sequence[int] | None = None, *, provider: str = "cpu",
                 threads: int | None = None, warmup: int = 10, repeat: int = 50,
                 optimization: str = "all", clock: str = "wall") -> LatencyStats:
    """Latency of an ONNX model (file or serialized bytes) on ONNX Runtime. `input_shape`
    defaults to the model's (static) input shape."""
    threads = threads or physical_cores()
    timer_for(clock, threads)
    session = create_session(model, provider=provider, threads=threads, optimization=optimization)
    return measure_session(session, input_shape, provider=provider, threads=threads, warmup=warmup, repeat=repeat,
                           clock=clock)


# -- PyTorch -------------------------------------------------------------------------------
def measure_torch(module, input_shape: Sequence[int], *, threads: int | None = None, warmup: int = 10,
                  repeat: int = 50, seed: int = 0, clock: str = "wall") -> LatencyStats:
    """Latency of a torch module in eager mode on the CPU: eval, inference mode, pinned threads
    (`torch.set_num_threads`, restored afterwards)."""
    import torch

    threads = threads or physical_cores()
    timer = timer_for(clock, threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module = module.eval()
        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
        samples = []
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            for _ in range(repeat):
                start = timer()
                module(x)
                samples.append((timer() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return LatencyStats.from_samples(samples, runtime="torch", provider="cpu", threads=threads, repeats=repeat,
                                     warmup=warmup, input_shape=tuple(input_shape), machine=machine_fingerprint(),
                                     clock=clock)
