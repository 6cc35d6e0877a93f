"""Latency prediction from a table of measured kernels.

    table = LatencyTable()                          # ~/.cache/archspec/latency.sqlite
    predictor = LatencyPredictor(table)             # ORT, CPU, physical cores, this machine
    predictor.measure_missing(spec, (224, 224))     # measure unseen kernels once
    predictor.calibrate([spec_a, spec_b, ...], (224, 224))   # a few models end to end
    ms = predictor.predict(spec, (224, 224))        # ~20 us per call: no torch, no graph

A model's latency is the sum of its kernels' latencies plus a per-model overhead fitted by
least squares on the calibration models (`Coefficients`): a constant, a per-kernel term
(what each isolated kernel measurement adds: a session run's fixed cost, ORT's layout reorders
at the kernel's edges), a scale and a per-parameter term (inside a model, weights come cold
from memory; alone, they stay in the cache between timed runs). The fit is folded into one
number per kernel, so a prediction is a sum of dictionary lookups over the spec's kernels.
Predicting with a kernel missing from the table raises `MissingKernelError`, never a guess.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archspec.compiler.latency.kernels import KernelKey, describe, kernel_graph
from archspec.compiler.latency.kernels import kernels as spec_kernels
from archspec.compiler.latency.table import CalibrationRun, Context, LatencyTable

RUNTIMES = ("ort", "torch")
MIN_POINTS_FULL_FIT = 8
"""Calibration models needed to fit every coefficient; fewer fit ``a + b * n`` (scale 1)."""


class MissingKernelError(ValueError):
    """The table lacks kernels a prediction needs. `.kernels` lists their keys."""

    def __init__(self, keys: Sequence[KernelKey], context: Context):
        self.kernels = list(keys)
        self.context = context
        shown = "; ".join(describe(k) for k in self.kernels[:8])
        more = f" and {len(self.kernels) - 8} more" if len(self.kernels) > 8 else ""
        super().__init__(f"{len(self.kernels)} kernel(s) not in the latency table for {context.runtime}/"
                         f"{context.provider}/{context.threads} threads on machine {context.machine}: {shown}{more} "
                         f"(measure them with `archspec latency build-table` or --measure-missing)")


@functools.lru_cache(maxsize=1)
def _current_machine() -> dict:
    from archspec.compiler.runtime import machine_fingerprint

    return machine_fingerprint()


class LatencyPredictor:
    """Predicts a spec's latency (ms) on this machine from a `LatencyTable`."""

    def __init__(self, table: LatencyTable, *, runtime: str = "ort", provider: str = "cpu",
                 threads: int | None = None, clock: str = "wall"):
        from archspec.compiler.runtime import physical_cores, provider_name, timer_for

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        provider_name(provider)
        if runtime == "torch" and provider != "cpu":
            raise ValueError("the torch runtime is measured on the CPU only (provider 'cpu')")
        machine = _current_machine()
        self.table = table
        self.context = Context(machine["hash"], runtime, provider, threads or physical_cores(), clock)
        timer_for(clock, self.context.threads)  # a clear error for clock 'cpu' with several threads
        table.add_machine(machine)
        self._ms = table.kernels(self.context)
        self._features = table.kernel_features(self.context)
        self._coefficients: Coefficients | None = None
        self._adjusted: dict[KernelKey, float] = {}
        self.measured = 0
        """Kernels this predictor measured itself (not read from another process's measurement)."""
        self._fit()

    # -- prediction ------------------------------------------------------------------------------
    def kernels(self, spec, input_size=(224, 224)) -> list[KernelKey]:
        """The kernel keys of `spec` at `input_size`, in order."""
        return spec_kernels(spec, _size(input_size))

    def _lookup_sum(self, table: dict, spec, input_size) -> tuple[float, int]:
        """(sum of `table` over the spec's kernels, number of kernels); `MissingKernelError`
        naming every absent kernel."""
        keys = self.kernels(spec, input_size)
        try:
            return sum([table[k] for k in keys]), len(keys)
        except KeyError:
            raise MissingKernelError(self.missing(spec, input_size), self.context) from None

    def kernel_sum(self, spec, input_size=(224, 224)) -> tuple[float, int]:
        """(sum of the measured kernel latencies in ms, number of kernels)."""
        return self._lookup_sum(self._ms, spec, input_size)

    def predict(self, spec, input_size=(224, 224)) -> float:
        """Predicted latency (ms) of one batch-1 forward pass at `input_size`."""
        return self.coefficients.constant + self._lookup_sum(self._adjusted, spec, input_size)[0]

    def missing(self, spec, input_size=(224, 224)) -> list[KernelKey]:
        """Unique kernel keys of `spec` the table lacks, in first-use order."""
        return _unique(k for k in self.kernels(spec, input_size) if k not in self._ms)

    @property
    def calibrated(self) -> bool:
        """Whether an overhead fit is in use (otherwise predictions are the plain kernel sums)."""
        return self._coefficients is not None

    @property
    def coefficients(self) -> "Coefficients":
        """The overhead model in use (identity when uncalibrated)."""
        return self._coefficients or Coefficients()

    # -- measuring -------------------------------------------------------------------------------
    def measure_kernel(self, key: KernelKey, *, budget_ms: float = 150.0) -> float:
        """Measure one kernel now, store it, return its median ms. Under the table's lock, a
        kernel another process stored meanwhile is read instead of measured again."""
        with self.table.measuring():
            stored = self.table.kernel(self.context, key)
            if stored is not None:
                median_ms, features = stored
            else:
                stats, features = measure_kernel(key, self.context, budget_ms=budget_ms)
                self.table.put_kernel(self.context, key, stats, features)
                median_ms = stats.median_ms
                self.measured += 1
        self._ms[key] = median_ms
        self._features[key] = features
        self._adjusted[key] = self.coefficients.adjust(median_ms, features)
        return median_ms

    def measure_keys(self, keys: Iterable[KernelKey], progress: Callable[[KernelKey], None] | None = None,
                     *, budget_ms: float = 150.0) -> int:
        """Measure every key not yet in the table (each committed at once); returns how many."""
        done = 0
        for key in _unique(keys):
            if key in self._ms:
                continue
            self.measure_kernel(key, budget_ms=budget_ms)
            done += 1
            if progress is not None:
                progress(key)
        return done

    def refine_keys(self, keys: Iterable[KernelKey], progress: Callable[[KernelKey], None] | None = None,
                    *, budget_ms: float = 150.0) -> int:
        """Measure kernels again and keep the lower of the two medians: a second sample taken at
        another time protects the table from load that lasted through one measurement (other
        processes on the machine only ever add time). Returns how many values went down."""
        lowered = 0
        for key in _unique(keys):
            previous = self._ms.get(key)
            stats, features = measure_kernel(key, self.context, budget_ms=budget_ms)
            if previous is None or stats.median_ms < previous:
                self.table.put_kernel(self.context, key, stats, features)
                self._ms[key] = stats.median_ms
                self._features[key] = features
                self._adjusted[key] = self.coefficients.adjust(stats.median_ms, features)
                lowered += previous is not None
            if progress is not None:
                progress(key)
        return lowered

    def measure_missing(self, spec, input_size=(224, 224), progress: Callable[[KernelKey], None] | None = None,
                        *, budget_ms: float = 150.0) -> int:
        """Measure the kernels of `spec` the table lacks; returns how many were measured."""
        return self.measure_keys(self.missing(spec, input_size), progress, budget_ms=budget_ms)

    # -- calibration -----------------------------------------------------------------------------
    def calibrate(self, specs: Iterable, input_size=(224, 224), *, refine: bool = False,
                  progress: Callable[[object], None] | None = None, repeat: int = 60) -> int:
        """Measure each spec end to end (kernels first, if missing), store the runs and refit.
        Specs already calibrated at this size are skipped, unless `refine`: then they are
        measured again and the lower median is kept (see `refine_keys`). Returns how many
        models were measured now."""
        from archspec.io import fingerprint

        size = _size(input_size)
        measured = 0
        for spec in specs:
            self.measure_missing(spec, size)
            digest = fingerprint(spec)
            previous = self.table.calibration_ms(self.context, digest, size)
            if refine or previous is None:
                stats = measure_end_to_end(spec, size, self.context, repeat=repeat)
                if previous is None or stats.median_ms < previous:
                    run = CalibrationRun(digest, size[0], size[1], spec.name, stats.median_ms,
                                         {"kernels": self.kernels(spec, size)})
                    self.table.put_calibration(self.context, run)
                measured += 1
            if progress is not None:
                progress(spec)
        self._fit()
        return measured

    def calibration_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows (`Coefficients.FEATURES`) and measured ms of the usable calibration runs."""
        rows, targets = [], []
        for run in self.table.calibration(self.context):
            keys = run.features.get("kernels", [])
            if keys and all(k in self._ms for k in keys):
                rows.append(model_features(keys, self._ms, self._features))
                targets.append(run.measured_ms)
        return np.array(rows, dtype=float).reshape(-1, len(Coefficients.FEATURES)), np.array(targets, dtype=float)

    def _fit(self) -> None:
        """Least-squares fit of the overhead model on the stored calibration runs."""
        rows, targets = self.calibration_rows()
        self._coefficients = fit_overhead(rows, targets) if len(targets) else None
        coefficients = self.coefficients
        self._adjusted = {k: coefficients.adjust(ms, self._features.get(k, {})) for k, ms in self._ms.items()}


@dataclass(frozen=True)
class Coefficients:
    """``ms = constant + sum over kernels of (scale * kernel_ms + per_kernel + per_mparam * params / 1e6)``.

    `per_kernel` absorbs what measuring a kernel alone adds (a session run's fixed cost, layout
    reorders at its edges); `scale` and `per_mparam` what running inside a model adds: weights
    come from memory cold instead of hot from the cache of the previous timed run."""

    constant: float = 0.0
    per_kernel: float = 0.0
    scale: float = 1.0
    per_mparam: float = 0.0
    FEATURES: ClassVar[tuple[str, ...]] = ("constant", "kernels", "kernel_ms", "mparams")

    def adjust(self, ms: float, features: dict) -> float:
        """One kernel's contribution to a model's latency."""
        return self.scale * ms + self.per_kernel + self.per_mparam * features.get("params", 0) / 1e6

    def as_dict(self) -> dict:
        return {"constant": self.constant, "per_kernel": self.per_kernel, "scale": self.scale,
                "per_mparam": self.per_mparam}


def model_features(keys: Sequence[KernelKey], ms: dict, features: dict) -> list[float]:
    """[1, n_kernels, sum of kernel ms, sum of kernel params in millions] of one model."""
    return [1.0, float(len(keys)), float(sum(ms[k] for k in keys)),
            float(sum(features.get(k, {}).get("params", 0) for k in keys)) / 1e6]


RIDGE = 0.5
"""Strength of the pull towards the plain kernel sum (constant 0, per-kernel 0, scale 1,
per-Mparam 0), against the calibration models' weighted squared relative errors: with a few
noisy models the fit stays near the sum instead of chasing noise; with many the data decide."""


def fit_overhead(rows: np.ndarray, targets: np.ndarray, ridge: float | None = None) -> Coefficients:
    """Fit `Coefficients` to calibration rows ``[1, n_kernels, kernel_ms, mparams]``: least
    squares on relative errors (rows weighted by 1 / target), ridge-regularised towards the
    plain sum. With fewer than `MIN_POINTS_FULL_FIT` models only ``constant + per_kernel * n``
    is fitted on the residual of the plain sum (scale 1), with fewer than 3 only the constant."""
    rows, targets = np.asarray(rows, dtype=float), np.asarray(targets, dtype=float)
    ridge = RIDGE if ridge is None else ridge
    weights = 1.0 / np.maximum(targets, 1e-6)
    if len(rows) >= MIN_POINTS_FULL_FIT:
        prior = np.array([0.0, 0.0, 1.0, 0.0])
        # Scale each column's penalty by its typical weighted size, so the pull is unit-free.
        scale = np.sqrt(np.mean((rows * weights[:, None]) ** 2, axis=0)) + 1e-12
        penalty = np.sqrt(ridge) * np.diag(scale)
        design = np.vstack([rows * weights[:, None], penalty])
        target = np.concatenate([targets * weights, penalty @ prior])
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        return Coefficients(*(float(v) for v in solution))
    residual = targets - rows[:, 2]
    if len(rows) >= 3:
        solution, *_ = np.linalg.lstsq(rows[:, :2] * weights[:, None], residual * weights, rcond=None)
        return Coefficients(float(solution[0]), float(solution[1]))
    return Coefficients(float(np.mean(residual)))


# -- measuring one kernel or model -----------------------------------------------------------
def measure_kernel(key: KernelKey, context: Context, *, budget_ms: float = 150.0, min_repeat: int = 15,
                   max_repeat: int = 400):
    """(`LatencyStats`, static features) of one kernel alone, in `context`'s runtime, provider and
    threads. The number of timed runs adapts to the kernel's speed (about `budget_ms` of timing)."""
    from archspec.compiler import costs

    graph, size = kernel_graph(key)
    channels = graph.nx.nodes[graph.input]["channels"]
    stats = _measure_graph(graph, size, channels, context, budget_ms=budget_ms, min_repeat=min_repeat,
                           max_repeat=max_repeat)
    counts = costs(graph, size)
    return stats, {"params": counts.params, "macs": counts.macs}


def measure_end_to_end(spec, input_size, context: Context, *, repeat: int = 60, warmup: int = 10):
    """Latency of a whole spec, built the same way its kernels are (same writer, same session
    settings)."""
    from archspec.compiler import lower

    graph = lower(spec)
    return _measure_graph(graph, _size(input_size), spec.in_channels, context, budget_ms=None,
                          min_repeat=repeat, max_repeat=repeat, warmup=warmup)


def _measure_graph(graph, size, channels, context: Context, *, budget_ms: float | None, min_repeat: int,
                   max_repeat: int, warmup: int = 5):
    shape = (1, channels, *size)
    if context.runtime == "ort":
        from archspec.compiler.onnx_writer import graph_to_onnx
        from archspec.compiler.runtime import create_session, measure_session

        session = create_session(graph_to_onnx(graph, size).SerializeToString(), provider=context.provider,
                                 threads=context.threads)

        def run(repeat: int, warm: int):
            return measure_session(session, shape, provider=context.provider, threads=context.threads,
                                   warmup=warm, repeat=repeat, clock=context.clock)
    else:
        from archspec.compiler import build
        from archspec.compiler.runtime import measure_torch

        module = build(graph)

        def run(repeat: int, warm: int):
            return measure_torch(module, shape, threads=context.threads, warmup=warm, repeat=repeat,
                                 clock=context.clock)
    repeat = max_repeat
    if budget_ms is not None:
        probe = run(3, warmup)
        once = max(probe.min_ms, 1e-3)
        repeat = int(min(max_repeat, max(min_repeat, budget_ms / once)))
        warmup = 2
    return run(repeat, warmup)


def _unique(keys: Iterable[KernelKey]) -> list[KernelKey]:
    return list(dict.fromkeys(keys))


def _size(input_size) -> tuple[int, int]:
    if isinstance(input_size, tuple) and len(input_size) == 2 and all(isinstance(v, int) for v in input_size):
        return input_size  # the common case, without parsing
    from archspec.sizes import parse_input_size

    return parse_input_size(input_size)
