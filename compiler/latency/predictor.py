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
Every coefficient is non-negative (no negative costs), the fit needs `MIN_CALIBRATION_MODELS`
models and is validated by leave-one-out; a poor fit is refused with its figures
(`CalibrationWarning`) and the plain kernel sum is used instead.

A kernel missing from the table is predicted by its type's regression (`model.KernelPredictor`,
fitted on the measured kernels) when one exists; measured kernels always override predictions,
and `sources` says how many of a spec's kernels were measured and how many predicted. Without a
model for its type (or with ``predict_unseen=False``) a missing kernel raises
`MissingKernelError`.
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archspec.compiler.latency.kernels import KernelKey, describe, kernel_graph
from archspec.compiler.latency.kernels import kernels as spec_kernels
from archspec.compiler.latency.model import KernelPredictor, complete_features, has_features, kernel_type, key_features
from archspec.compiler.latency.probe import is_fast, speed_probe
from archspec.compiler.latency.table import CalibrationRun, Context, LatencyTable
from archspec.compiler.runtime import LatencyStats

RUNTIMES = ("ort", "torch")
MIN_POINTS_FULL_FIT = 8
"""Calibration models needed to fit every coefficient; fewer fit ``a + b * n`` (scale 1)."""
MIN_CALIBRATION_MODELS = 3
"""Fewer calibration models than this: no overhead fit at all (the plain kernel sum)."""
MAX_HELD_OUT_ERROR = 0.10
"""A fit whose leave-one-out median relative error exceeds this is refused."""
DESIGN_KERNELS_PER_TYPE = 24
"""Search with prediction: kernels of a type measured (in trial order) before its model predicts the rest."""


class CalibrationWarning(UserWarning):
    """An overhead fit was refused (too poor on held-out models); the plain kernel sum is used."""


@dataclass(frozen=True)
class CalibrationReport:
    """How the overhead fit did on models it was not fitted on (leave-one-out)."""

    models: int
    held_out_median_error: float
    held_out_within_10: float
    plain_median_error: float
    accepted: bool
    reason: str = ""

    def line(self) -> str:
        verdict = "accepted" if self.accepted else f"refused ({self.reason})"
        return (f"overhead fit on {self.models} models {verdict}: held-out median error "
                f"{self.held_out_median_error:.1%}, {self.held_out_within_10:.0%} within +/-10% "
                f"(plain kernel sum: {self.plain_median_error:.1%})")


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
                 threads: int | None = None, clock: str = "auto", predict_unseen: bool = True):
        from archspec.compiler.runtime import physical_cores, provider_name, timer_for

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        provider_name(provider)
        if runtime == "torch" and provider != "cpu":
            raise ValueError("the torch runtime is measured on the CPU only (provider 'cpu')")
        machine = _current_machine()
        self.table = table
        threads = threads or physical_cores()
        clock = default_clock(runtime, provider, threads) if clock == "auto" else clock
        self.context = Context(machine["hash"], runtime, provider, threads, clock)
        timer_for(clock, self.context.threads)  # a clear error for clock 'cpu' with several threads
        table.add_machine(machine)
        self.predict_unseen = predict_unseen
        self.measured = 0
        """Kernels this predictor measured itself (not read from another process's measurement)."""
        self.reload()

    def reload(self) -> None:
        """Read the table again (what other predictors or processes stored since), refit the
        kernel models and the overhead on it, and forget earlier predictions."""
        self._ms, features = self.starting_kernels()
        # a table written before a feature existed: computed from the keys, once per reload
        self._features = {k: complete_features(k, f) if has_features(f) else f for k, f in features.items()}
        self._coefficients: Coefficients | None = None
        self._adjusted: dict[KernelKey, float] = {}
        self._predicted: dict[KernelKey, float] = {}
        """Kernel -> predicted ms, for kernels not measured (a measurement replaces the entry)."""
        self.kernel_model = KernelPredictor({})
        self.calibration_report: CalibrationReport | None = None
        self.refit_kernel_model()
        self._fit()

    def starting_kernels(self) -> tuple[dict[KernelKey, float], dict[KernelKey, dict]]:
        """(kernel -> ms, kernel -> features) the predictor starts from: every kernel the table
        holds for its context."""
        return self.table.kernels(self.context), self.table.kernel_features(self.context)

    # -- prediction ------------------------------------------------------------------------------
    def kernels(self, spec, input_size=(224, 224)) -> list[KernelKey]:
        """The kernel keys of `spec` at `input_size`, in order."""
        return spec_kernels(spec, _size(input_size))

    def _predict_or_raise(self, keys: Sequence[KernelKey]) -> None:
        """Predict the kernels of `keys` not known yet; `MissingKernelError` naming every one no
        model applies to."""
        self.predict_missing(keys)
        unknown = self.unpredictable(keys)
        if unknown:
            raise MissingKernelError(unknown, self.context)

    def kernel_sum(self, spec, input_size=(224, 224)) -> tuple[float, int]:
        """(sum of the kernel latencies in ms, measured or predicted, number of kernels)."""
        keys = self.kernels(spec, input_size)
        values = self.kernel_values(keys)
        return sum([values[k] for k in keys]), len(keys)

    def kernel_values(self, keys: Iterable[KernelKey]) -> dict[KernelKey, float]:
        """Kernel -> ms before the overhead model: measured where the table has it, else predicted
        (predicting what is missing; `MissingKernelError` for a kernel no model applies to)."""
        keys = _unique(keys)
        self._predict_or_raise(keys)
        return {k: self._ms[k] if k in self._ms else self._predicted[k] for k in keys}

    def model_row(self, spec, input_size=(224, 224)) -> list[float]:
        """The spec's features of the overhead model (`Coefficients.FEATURES`), from its measured
        or predicted kernels: what a calibration run of it would contribute."""
        keys = self.kernels(spec, input_size)
        return model_features(keys, self.kernel_values(keys), self._features, self.block)

    def sources(self, spec, input_size=(224, 224)) -> tuple[int, int]:
        """(kernels of the spec taken from measurements, kernels predicted), counting repeats."""
        keys = self.kernels(spec, input_size)
        measured = sum(1 for k in keys if k in self._ms)
        return measured, len(keys) - measured

    # -- unseen kernels --------------------------------------------------------------------------
    def is_measured(self, key: KernelKey) -> bool:
        """Whether the table holds a measurement of `key` (a prediction does not count)."""
        return key in self._ms

    def refit_kernel_model(self) -> None:
        """Fit the per-type kernel models on the measured kernels (and forget earlier predictions)."""
        self.kernel_model = KernelPredictor.fit(self._ms, self._features)
        self._design_counts: dict[str, int] = {}
        """Kernel type -> measured kernels with features (the design set a type's model is fitted on)."""
        for key in self._ms:
            if has_features(self._features.get(key) or {}):
                kind = kernel_type(key)
                self._design_counts[kind] = self._design_counts.get(kind, 0) + 1
        for key in self._predicted:
            self._adjusted.pop(key, None)
        self._predicted = {}

    def can_predict(self, key: KernelKey) -> bool:
        return self.predict_unseen and self.kernel_model.model_for(key) is not None

    def predict_missing(self, keys: Iterable[KernelKey]) -> int:
        """Predict (once) every kernel of `keys` neither measured nor predicted yet, where a model
        applies; returns how many were predicted now."""
        if not self.predict_unseen or not self.kernel_model:
            return 0
        wanted = [k for k in _unique(keys) if k not in self._ms and k not in self._predicted]
        buildable = []
        for key in wanted:
            try:
                key_features(key)
                buildable.append(key)
            except (ValueError, KeyError):  # a key whose graph cannot be built: left missing
                pass
        predictions = self.kernel_model.predict_many(buildable)
        for key, (ms, features) in predictions.items():
            self._predicted[key] = ms
            self._features.setdefault(key, features)
            self._adjusted[key] = self._adjust(key, ms, features)
        return len(predictions)

    def judge_keys(self, keys: Iterable[KernelKey], *, design_per_type: int = DESIGN_KERNELS_PER_TYPE,
                   budget_ms: float = 150.0) -> int:
        """Make every key of `keys` known: a kernel of a type with fewer than `design_per_type`
        measured kernels (or without a model) is measured, the rest predicted. When a type's
        design set completes, the models are refitted; models never change otherwise, so which
        kernels get measured and every prediction depend only on the table and the order of
        the keys. Returns how many kernels were measured now."""
        if not self.predict_unseen:
            return self.measure_keys(keys, budget_ms=budget_ms)
        measured = 0
        for key in _unique(keys):
            if key in self._ms or key in self._predicted:
                continue
            kind = kernel_type(key)
            if self._design_counts.get(kind, 0) >= design_per_type and kind in self.kernel_model.models:
                continue  # predicted below
            self.measure_kernel(key, budget_ms=budget_ms)
            measured += 1
            if has_features(self._features.get(key) or {}):
                self._design_counts[kind] = self._design_counts.get(kind, 0) + 1
                if self._design_counts[kind] == design_per_type:
                    self.refit_kernel_model()  # the type's design set is complete: its model predicts from now on
        self.predict_missing(keys)
        return measured

    def unpredictable(self, keys: Iterable[KernelKey]) -> list[KernelKey]:
        """Unique keys neither measured nor predicted."""
        return _unique(k for k in keys if k not in self._adjusted)

    def predict(self, spec, input_size=(224, 224)) -> float:
        """Predicted latency (ms) of one batch-1 forward pass at `input_size`."""
        return self.predict_keys(self.kernels(spec, input_size))

    def predict_keys(self, keys: Sequence[KernelKey]) -> float:
        """Predicted latency (ms) of the model made of `keys` (kernels not known yet are
        predicted; `MissingKernelError` naming every one no model applies to)."""
        try:
            return self._model_ms(keys)
        except KeyError:
            pass
        self._predict_or_raise(keys)
        return self._model_ms(keys)

    def _model_ms(self, keys: Sequence[KernelKey]) -> float:
        """The fitted model over the kernels' folded shares; `KeyError` for a kernel not known."""
        return self.coefficients.constant + sum([self._adjusted[k] for k in keys]) + self.weights_term(keys)

    def weights_term(self, keys: Sequence[KernelKey]) -> float:
        """The overhead fit's term of a whole model (`Coefficients.weights`, `WEIGHTS_NOTE`): its
        weights beyond those that stay cached between runs. Zero without it; `keys` known."""
        if not self.coefficients.weights:
            return 0.0
        mparams = sum([self._features.get(k, {}).get("params", 0) for k in keys]) / 1e6
        return float(self.coefficients.weights_term(mparams))

    def missing(self, spec, input_size=(224, 224)) -> list[KernelKey]:
        """Unique kernel keys of `spec` the table lacks (not measured), in first-use order."""
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
                self.table.put_kernel(self.context, key, stats, features, getattr(stats, "conditions", None))
                median_ms = stats.median_ms
                self.measured += 1
        self._predicted.pop(key, None)  # a measurement overrides a prediction
        self._ms[key] = median_ms
        self._features[key] = features
        self._adjusted[key] = self._adjust(key, median_ms, features)
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
                self.table.put_kernel(self.context, key, stats, features, getattr(stats, "conditions", None))
                self._predicted.pop(key, None)
                self._ms[key] = stats.median_ms
                self._features[key] = features
                self._adjusted[key] = self._adjust(key, stats.median_ms, features)
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
                rows.append(model_features(keys, self._ms, self._features, self.block))
                targets.append(run.measured_ms)
        return np.array(rows, dtype=float).reshape(-1, len(Coefficients.FEATURES)), np.array(targets, dtype=float)

    def _fit(self) -> None:
        """Non-negative fit of the overhead model on the stored calibration runs, validated on
        held-out models; refused (plain kernel sum, `CalibrationWarning`) when poor."""
        rows, targets = self.calibration_rows()
        self._coefficients, self.calibration_report = None, None
        if len(targets) >= MIN_CALIBRATION_MODELS:
            report = validate_overhead(rows, targets)
            self.calibration_report = report
            if report.accepted:
                self._coefficients = fit_overhead(rows, targets)
            else:
                warnings.warn(CalibrationWarning(report.line()), stacklevel=2)
        features = self._features
        self._adjusted = {k: self._adjust(k, ms, features.get(k, {})) for k, ms in self._ms.items()}
        self._adjusted.update({k: self._adjust(k, ms, features.get(k, {})) for k, ms in self._predicted.items()})

    @property
    def block(self) -> int | None:
        """ONNX Runtime's NCHWc channel block in this predictor's runtime and provider (`nchwc_block`)."""
        return nchwc_block(self.context.runtime, self.context.provider)

    def _adjust(self, key: KernelKey, ms: float, features: dict) -> float:
        """One kernel's share of a model's latency under the fitted overhead (`Coefficients.adjust_key`)."""
        coefficients = self.coefficients
        aware = coefficients.unaligned or coefficients.reorder or coefficients.spill  # only these see the block
        return coefficients.adjust_key(key, ms, features, self.block if aware else None)


CROSS_SCALE_KINDS = frozenset({"resample", "merge"})
"""Kernel kinds of a scale-permuted model's cross-scale connections. Inside a whole SpineNet-like
model they cost more than alone: on the held-out benchmark, such models ran 1.20-1.48x the sum of
their measured kernels, staged models 0.79-1.26x. Each connection keeps a map of another level
alive and breaks ONNX Runtime's layout and fusion chains where it joins; a kernel timed alone
sees none of that. `Coefficients.cross_scale` is the extra share the fit gives them."""


@functools.lru_cache(maxsize=1 << 16)
def is_cross_scale(key: KernelKey) -> bool:
    return kernel_type(key) in CROSS_SCALE_KINDS


UNALIGNED_NOTE = """Kernels with an edge (input or output) channel count that is not a multiple of ONNX
Runtime's NCHWc block (`nchwc_block`) run their convolutions (or their successors') in the plain
layout. Timed alone, a kernel in the blocked layout pays a reorder into and out of it at its
edges, which a whole model pays only at its own edges; an unaligned kernel pays nothing alone
but, inside a model, sits between reorders of its neighbours and gets their layout's cold caches. On the held-out
benchmark (idle machine, 1 thread; averages per run) MAE-DET- and ResNet-like models, all
aligned, ran 0.84-0.95x the sum of their kernels, SpineNet-like models at width 0.5 0.87-1.03x,
and at width 0.65 (channels 41, 83, 166, 332) 1.06-1.27x. One scale cannot fit both:
`Coefficients.unaligned` is the unaligned kernels' extra share, `Coefficients.reorder` the
aligned ones' saving."""


@functools.lru_cache(maxsize=8)
def nchwc_block(runtime: str = "ort", provider: str = "cpu") -> int | None:
    """The channel block of ONNX Runtime's NCHWc layout here (8 or 16, by what its MLAS kernels
    use on this CPU); None where nothing runs blocked (another runtime or provider, or a CPU
    without NCHWc kernels). ORT's NCHWc transformer takes a convolution whose input channels are
    a multiple of the block (or fewer than one block), so the probe asks ORT's optimiser about a
    3x3 convolution with 24 input channels (blocked only with a block of 8), then with 16."""
    if runtime != "ort" or provider != "cpu":
        return None
    for channels, block in ((24, 8), (16, 16)):
        if _runs_blocked(channels):
            return block
    return None


def _runs_blocked(channels: int) -> bool:
    """Whether ORT's optimiser puts a 3x3 convolution with `channels` in and out into NCHWc."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from archspec.compiler.runtime import session_options

    shape = [1, channels, 8, 8]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [channels, channels, 3, 3], [0.0] * channels * channels * 9)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(1)
        options.optimized_model_filepath = f"{tmp}/optimized.onnx"
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return any(node.domain == "com.microsoft.nchwc" for node in optimized.graph.node)


@functools.lru_cache(maxsize=1 << 16)
def is_unaligned(key: KernelKey, block: int | None) -> bool:
    """Whether a kernel's input or output channel count is off the NCHWc `block` (see
    `UNALIGNED_NOTE`); never without a block."""
    if not block:
        return False
    data = json.loads(key)
    edges = (data.get("in"), data.get("out"), data.get("channels"))
    # fewer channels than one block (an image, a narrow output) still run blocked
    return any(isinstance(c, int) and c > block and c % block for c in edges)


SPILL_NOTE = """Timed alone, a kernel in the blocked layout reorders its input into NCHWc and its output
back (and, with an identity shortcut, adds its input and activates unfused: `SKIP_NOTE`). While
such a pass stays in the core's L2 cache it costs little per element (`Coefficients.reorder`). A
pass reads a map and writes one as large, so once a map holds half of L2 or more (a 64-channel
map at 64x64 is 1 MB; L2 is 2 MB per core on the development machine) the pass runs out of the
L3 cache or memory, at about twice the cost per element; inside a whole model those passes do
not happen. Timed alone on the development machine (1 thread, CPU clock), a reorder into
NCHWc and back cost 0.22-0.31 ms per million elements for maps of 0.07-0.52 MB and 0.46-0.58
ms for maps of 1-4 MB, an unfused sum and activation 0.19-0.25 and 0.57-0.70 ms. On the held-out
predictor benchmark, MAE-DET-like models whose early stages are wide at high resolution ran
0.69-0.90x the sum of their kernels, those without such maps 0.90-1.03x. `Coefficients.spill`
is the extra saving per million elements of such maps, fitted on the calibration models like the
other terms. It first counted maps larger than the whole L2 cache; a map of exactly 2 MB was
left out, and seed 5's three misses with measured kernels were made of such maps."""


@functools.lru_cache(maxsize=1)
def spill_limit_elems() -> int | None:
    """float32 elements that fill the L2 cache of one core here (`SPILL_NOTE`); None where the
    size cannot be read (no term then)."""
    from archspec.compiler.runtime import l2_cache_bytes

    size = l2_cache_bytes()
    return None if size is None else size // 4


SKIP_NOTE = """A residual block whose shortcut is the identity adds its own input to its last
convolution's output. Inside a model that input is already in ONNX Runtime's blocked layout,
and the sum and the activation after it fuse into that convolution. Timed alone, the input is
the graph's plain-layout input: the convolution's output is reordered back, and the sum and the
activation run unfused in the plain layout, each a pass over the whole map. On the held-out
predictor benchmark (seed 5, 1 thread, CPU clock) a k1kxk1 block with 128 channels and a
32-wide bottleneck at 64x64 took 1.35 ms alone and 0.69-0.74 ms inside its model, and models
made of such blocks ran 0.69-0.80x the sum of their measured kernels. Timed alone on the
development machine, an unfused sum and activation cost 1.6-2.4 times a single reorder of the
same map per element (0.19-0.25 against 0.11-0.16 ms per million elements in L2, 0.57-0.70
against 0.23-0.29 beyond): two passes, as the operator count says. So `pass_melems` counts an
identity sum's map (`model.key_features`'s ``skip_elems``) twice beside the reordered input and
output, and `Coefficients.reorder` prices them all. A separate coefficient for the sums could
hardly be fitted: in such a block the input, the output and the sum are the same map."""

SKIP_PASSES = 2
"""Passes over the map of an identity sum, unfused, timed alone: the sum and the activation."""

ALONE_CALL_NOTE = """A kernel timed alone is a graph of its own: each timed run is one call into ONNX
Runtime (through its bindings, the timer read on both sides), with the layout reorders' and the
output's fixed costs. A model pays that once (in `Coefficients.constant`), not once per kernel,
so the plain sum counts it once per kernel too many. The per-element part of the reorders is
`Coefficients.reorder`'s; what is left is a cost per kernel. Timed directly (1 thread, CPU clock),
a one-node graph took 2.5 us a run, and a 3x3 convolution with its activation alone took
0.1-2.9 us more than its share of a chain of eight (16-128 channels at 8x8 and 16x16). On a
faster machine than the earlier runs', where the held-out benchmark's smallest ResNet-like models
run in 0.4-1.2 ms of 8-16 kernels, those models ran 0.85-0.88x the sum of their measured kernels
and came out 6-12% high (seed 23: five of them more than 8% high, one 12.0% high), the large
ones 4-8% low: a common `scale` cannot fit both. The fit gave `alone_call` 7.3 us a kernel
there (more than the call alone: it takes what else a model saves per kernel too), and scored
again with it (before `WEIGHTS_NOTE`'s term), seed 23's test models were 100% within +/-10% with measured kernels (98.3%
without; spread of the log-errors 0.040 to 0.030) and 100% from predicted kernels (98.3%;
0.046 to 0.036). It is a saving, so it enters the fit as minus the number of kernels with a
non-negative coefficient; `per_kernel`, the same count as a cost, stays for a runtime where
kernels cost more inside a model than alone."""

BYTES_PER_PARAM = 4
"""float32 weights."""
MIB_PER_MPARAM = 1e6 * BYTES_PER_PARAM / 2**20
"""MiB of weights per million parameters."""
WEIGHTS_CACHED_MIB = (4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
"""The sizes the fit tries for the weights that stay cached between a model's runs (`WEIGHTS_NOTE`)."""
WEIGHTS_MIN_GAIN = 0.01
"""The share by which the weights term must lower the fit's objective to be kept: a bend the
calibration models do not show is not fitted to their noise."""
WEIGHTS_NOTE = """A model reads each of its weights once a run. Timed alone, a kernel reads the same
weights run after run, and even a 10 MiB block's stay in the L3 cache. Inside a model they stay
cached from one run to the next only while the whole model's weights fit, beside its feature
maps, in the part of the cache the core gets; beyond that, each run reads what does not fit
from memory. On the held-out benchmark (seed 24, 1 thread, CPU clock, a 32 MiB L3 shared by the
host), ResNet-like models with 2-5 MiB of weights ran 0.82-0.90x the sum of their measured
kernels, those with 8-19 MiB 0.92-1.12x, and those with 32-37 MiB 1.06-1.31x. The linear
`per_mparam` cannot follow that bend: fitted on the largest, it put five test models of 8-16
MiB 9-15% high. So the fit adds ``weights * max(0, MiB - cached)``, trying each size in
`WEIGHTS_CACHED_MIB` for ``cached`` and keeping the fit with the least objective where it
lowers the objective of the fit without the term by `WEIGHTS_MIN_GAIN` or more: the size is
fitted like the coefficients, on the calibration models alone, since how much of the cache a
core gets depends on the host. Scored again on seeds 23 and 24 (with `alone_call`
either way), the spread of the test models' log-errors with measured kernels went from 0.030
and 0.044 to 0.027 and 0.034 (cached 12 and 8 MiB), from predicted kernels from 0.036 and 0.074
to 0.033 and 0.072; on seed 25, measured afterwards, from 0.047 to 0.042 both ways (cached 6 and
4 MiB), every test model within +/-10% (docs/latency.md)."""


def alone_passes(features: Mapping) -> tuple[tuple[int, int], ...]:
    """(elements of a map, passes over it) that a kernel timed alone makes and a model does not:
    the NCHWc reorders of its input and output, and an identity shortcut's unfused sum and
    activation (`SKIP_NOTE`)."""
    return ((features.get("in_elems", 0), 1), (features.get("out_elems", 0), 1),
            (features.get("skip_elems", 0), SKIP_PASSES))


def spilled_melems(features: Mapping, limit: int | None) -> float:
    """The part of `pass_melems` over maps whose pass, alone, does not stay in an L2 cache of
    `limit` elements: maps of at least half of `limit` elements. A pass over such a map reads it
    and writes a map of the same size, so half the cache is where the two stop fitting
    (`SPILL_NOTE`)."""
    if not limit:
        return 0.0
    return sum(e * n for e, n in alone_passes(features) if e >= limit // 2) / 1e6


@dataclass(frozen=True)
class Coefficients:
    """``ms = constant + sum over kernels of (scale * kernel_ms + per_kernel + per_mparam * params / 1e6)
    + cross_scale * (sum of the cross-scale kernels' ms) + unaligned * (sum of the unaligned kernels' ms)
    - reorder * (sum of the other kernels' pass elements, in millions: `pass_melems`)
    - spill * (those over maps of at least half the L2 cache, in millions: `spilled_melems`)
    - alone_call * (number of kernels)``, each kernel's share at least 0,
    ``+ weights * max(0, the model's weights in MiB - weights_cached_mib)`` once per model.

    `per_kernel` is a cost per kernel that running inside a model adds and a kernel timed alone
    lacks; `scale` and `per_mparam` what running inside a model adds: weights come from memory cold
    instead of hot from the cache of the previous timed run; `cross_scale` what a cross-scale
    connection adds beyond its kernel (`CROSS_SCALE_KINDS`); `unaligned` what a kernel off the
    NCHWc channel block adds (`UNALIGNED_NOTE`); `reorder` the cost per million elements of the
    passes a kernel in the blocked layout makes when timed alone and not inside a model: the
    layout reorders at its edges, which a whole model pays only at its own, and an identity
    shortcut's unfused sum and activation (`SKIP_NOTE`); `spill` the extra cost per million
    elements of such passes over maps of at least half the L2 cache (`SPILL_NOTE`);
    `alone_call` the fixed cost each kernel's time includes for being timed as a graph of its
    own, which a model pays once and not per kernel (`ALONE_CALL_NOTE`). `per_kernel` and
    `alone_call` price the same count with opposite signs; the fit's pull towards zero keeps one
    of them at zero. `weights` is the cost per MiB of a model's weights beyond the
    `weights_cached_mib` that stay cached from one run to the next, which a kernel timed alone
    never reads from memory (`WEIGHTS_NOTE`); it is the one term of a whole model rather than of
    its kernels. Every coefficient is a cost, so none is negative."""

    constant: float = 0.0
    per_kernel: float = 0.0
    scale: float = 1.0
    per_mparam: float = 0.0
    cross_scale: float = 0.0
    unaligned: float = 0.0
    reorder: float = 0.0
    spill: float = 0.0
    alone_call: float = 0.0
    weights: float = 0.0
    weights_cached_mib: float = 0.0
    FEATURES: ClassVar[tuple[str, ...]] = ("constant", "kernels", "kernel_ms", "mparams", "cross_ms", "unaligned_ms",
                                           "minus_pass_melems", "minus_spilled_melems", "minus_kernels")

    def adjust(self, ms: float, features: dict, cross_scale: bool = False, unaligned: bool = False) -> float:
        """One kernel's contribution to a model's latency (`cross_scale`: the kernel is one of
        `CROSS_SCALE_KINDS`; `unaligned`: its edges are off the NCHWc block; otherwise its edges'
        passes, timed alone, are no cost inside a model: `pass_melems`). Never below zero."""
        value = (self.scale * ms + self.per_kernel - self.alone_call
                 + self.per_mparam * features.get("params", 0) / 1e6)
        if cross_scale:
            value += self.cross_scale * ms
        if unaligned:
            value += self.unaligned * ms
        else:
            if self.reorder:
                value -= self.reorder * pass_melems(features)
            if self.spill:
                value -= self.spill * spilled_melems(features, spill_limit_elems())
        return max(value, 0.0)

    def adjust_key(self, key: KernelKey, ms: float, features: dict, block: int | None = None) -> float:
        return self.adjust(ms, features, is_cross_scale(key), is_unaligned(key, block))

    def as_dict(self) -> dict:
        return {"constant": self.constant, "per_kernel": self.per_kernel, "scale": self.scale,
                "per_mparam": self.per_mparam, "cross_scale": self.cross_scale, "unaligned": self.unaligned,
                "reorder": self.reorder, "spill": self.spill, "alone_call": self.alone_call,
                "weights": self.weights, "weights_cached_mib": self.weights_cached_mib}

    def weights_term(self, mparams: float | np.ndarray) -> float | np.ndarray:
        """The model-level term for a model of `mparams` million parameters (`WEIGHTS_NOTE`)."""
        return self.weights * np.maximum(np.asarray(mparams) * MIB_PER_MPARAM - self.weights_cached_mib, 0.0)


def pass_melems(features: Mapping) -> float:
    """Millions of elements that the passes of a kernel timed alone move and a model does not
    (`alone_passes`)."""
    return sum(e * n for e, n in alone_passes(features)) / 1e6


def model_features(keys: Sequence[KernelKey], ms: dict, features: dict, block: int | None = None) -> list[float]:
    """[1, n_kernels, sum of kernel ms, sum of kernel params in millions, sum of the cross-scale
    kernels' ms, sum of the unaligned kernels' ms, minus the pass elements (millions) of the others
    (`pass_melems`), minus those over maps of at least half the L2 cache, minus n_kernels] of one
    model (`Coefficients.FEATURES`;
    `block`: the NCHWc channel block, `nchwc_block`)."""
    unaligned = [is_unaligned(k, block) for k in keys]
    aligned = [features.get(k, {}) for k, off in zip(keys, unaligned) if not off]
    limit = spill_limit_elems()
    return [1.0, float(len(keys)), float(sum(ms[k] for k in keys)),
            float(sum(features.get(k, {}).get("params", 0) for k in keys)) / 1e6,
            float(sum(ms[k] for k in keys if is_cross_scale(k))),
            float(sum(ms[k] for k, off in zip(keys, unaligned) if off)),
            -float(sum(pass_melems(f) for f in aligned)),
            -float(sum(spilled_melems(f, limit) for f in aligned)), -float(len(keys))]


RIDGE = 0.5
"""Strength of the pull towards the plain kernel sum (constant 0, per-kernel 0, scale 1,
per-Mparam 0), against the calibration models' weighted squared relative errors: with a few
noisy models the fit stays near the sum instead of chasing noise; with many the data decide."""


def _nnls(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """argmin ||design @ x - target|| with x >= 0 (scikit-learn's positive least squares)."""
    from sklearn.linear_model import LinearRegression

    scale = np.abs(design).max(axis=0) + 1e-12  # unit-free columns for the solver
    model = LinearRegression(positive=True, fit_intercept=False).fit(design / scale, target)
    return np.maximum(model.coef_, 0.0) / scale


def fit_overhead(rows: np.ndarray, targets: np.ndarray, ridge: float | None = None) -> Coefficients:
    """Fit `Coefficients` to calibration rows (`Coefficients.FEATURES`, as `model_features` makes them): least
    squares on relative errors (rows weighted by 1 / target), ridge-regularised towards the
    plain sum, every coefficient constrained non-negative (no negative costs); the weights term
    is fitted for each size in `WEIGHTS_CACHED_MIB` and kept, with the best size, where it lowers
    the objective by `WEIGHTS_MIN_GAIN` or more (`WEIGHTS_NOTE`). With fewer than
    `MIN_POINTS_FULL_FIT` models only ``constant + per_kernel * n`` is fitted on the residual
    of the plain sum (scale 1), with fewer than 3 only the constant."""
    rows, targets = np.asarray(rows, dtype=float), np.asarray(targets, dtype=float)
    ridge = RIDGE if ridge is None else ridge
    weights = 1.0 / np.maximum(targets, 1e-6)
    if len(rows) >= MIN_POINTS_FULL_FIT:
        plain = _full_fit(rows, targets, weights, ridge, None)
        best = min((_full_fit(rows, targets, weights, ridge, cached) for cached in WEIGHTS_CACHED_MIB),
                   key=lambda fit: fit[0])  # the first of equals: the smallest size
        # (an exact fit without the term leaves nothing to gain, whatever rounding says)
        return best[1] if best[0] < plain[0] * (1.0 - WEIGHTS_MIN_GAIN) - 1e-12 else plain[1]
    residual = targets - rows[:, 2]
    if len(rows) >= 3:
        solution = _nnls(rows[:, :2] * weights[:, None], residual * weights)
        return Coefficients(float(solution[0]), float(solution[1]))
    return Coefficients(max(float(np.mean(residual)), 0.0))


def _full_fit(rows: np.ndarray, targets: np.ndarray, weights: np.ndarray, ridge: float,
              cached_mib: float | None) -> tuple[float, Coefficients]:
    """(objective, `Coefficients`) of the ridge-pulled non-negative fit, with the weights term
    for `cached_mib` MiB of cached weights (none with None: `WEIGHTS_NOTE`)."""
    beyond = (np.zeros(len(rows)) if cached_mib is None
              else np.maximum(rows[:, 3] * MIB_PER_MPARAM - cached_mib, 0.0))
    columns = np.column_stack([rows, beyond])
    prior = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    # Scale each column's penalty by its typical weighted size, so the pull is unit-free.
    scale = np.sqrt(np.mean((columns * weights[:, None]) ** 2, axis=0)) + 1e-12
    penalty = np.sqrt(ridge) * np.diag(scale)
    design = np.vstack([columns * weights[:, None], penalty])
    target = np.concatenate([targets * weights, penalty @ prior])
    solution = _nnls(design, target)
    objective = float(np.sum((design @ solution - target) ** 2))
    values = [float(v) for v in solution]
    return objective, Coefficients(*values[:9], weights=values[9] if cached_mib is not None else 0.0,
                                   weights_cached_mib=float(cached_mib or 0.0))


def predict_rows(coefficients: Coefficients, rows: np.ndarray) -> np.ndarray:
    """Model latencies of calibration rows (`Coefficients.FEATURES`)."""
    c, rows = coefficients, np.asarray(rows, dtype=float)
    return (c.constant * rows[:, 0] + c.per_kernel * rows[:, 1] + c.scale * rows[:, 2] + c.per_mparam * rows[:, 3]
            + c.cross_scale * rows[:, 4] + c.unaligned * rows[:, 5] + c.reorder * rows[:, 6] + c.spill * rows[:, 7]
            + c.alone_call * rows[:, 8] + c.weights_term(rows[:, 3]))


def validate_overhead(rows: np.ndarray, targets: np.ndarray, *, max_error: float | None = None) -> CalibrationReport:
    """Leave-one-out validation of `fit_overhead`: each model predicted by a fit on the others.
    Refused when the held-out median relative error exceeds `MAX_HELD_OUT_ERROR`, or when the
    fit does worse on held-out models than the plain kernel sum."""
    rows, targets = np.asarray(rows, dtype=float), np.asarray(targets, dtype=float)
    max_error = MAX_HELD_OUT_ERROR if max_error is None else max_error
    errors = []
    for i in range(len(targets)):
        keep = np.arange(len(targets)) != i
        fitted = fit_overhead(rows[keep], targets[keep])
        errors.append(abs(float(predict_rows(fitted, rows[i:i + 1])[0]) / targets[i] - 1.0))
    held_out = float(np.median(errors))
    within = float(np.mean(np.array(errors) <= 0.10))
    plain = float(np.median(np.abs(rows[:, 2] / targets - 1.0)))
    reason = ""
    if held_out > max_error:
        reason = f"held-out median error above {max_error:.0%}"
    elif held_out > plain:
        reason = "worse on held-out models than the plain kernel sum"
    return CalibrationReport(len(targets), held_out, within, plain, not reason, reason)


# -- measuring one kernel or model -----------------------------------------------------------
def default_clock(runtime: str, provider: str, threads: int) -> str:
    """The steadier clock where it is valid: the calling thread's CPU time on the CPU with one
    intra-op thread (the work then runs on that thread alone), wall time otherwise."""
    return "cpu" if provider == "cpu" and threads == 1 else "wall"


STABLE_TOLERANCE = 0.03
"""Batches stop once another batch agrees with the lowest fast-phase median within this
(relative; `_settled`)..."""
STABLE_SLACK_MS = 0.001
"""... or within this (absolute): a CPU timer does not pin a kernel of a few microseconds to 3%."""
MAX_BATCHES = 6
MAX_ATTEMPTS = 2
MAX_WAIT_S = 0.5
"""Seconds one measurement may wait in all for fast phases of the machine (`probe.SpeedProbe.wait_fast`)."""
DISTURBED_RATIO = 0.85
"""A batch whose process CPU time is below this share of threads x wall time was disturbed:
another process held a core the measurement needed."""


@dataclass(frozen=True)
class MeasuredStats(LatencyStats):
    """`LatencyStats` of the kept batch, with the conditions of the whole measurement."""

    conditions: dict | None = None


def _measure_graph(graph, size, channels, context: Context, *, budget_ms: float | None, min_repeat: int,
                   max_repeat: int, warmup: int = 5):
    """Time a graph robustly against load from other processes and the host's slow phases.

    Timed runs come in batches; each batch also records wall time and the process's CPU time.
    On the CPU a speed probe (`probe.SpeedProbe`) is timed just before and after each batch, and
    a batch starts only once the probe says the machine is in a fast phase (`wait_fast`, at most
    `MAX_WAIT_S` of waiting per measurement); a batch whose probe, before or after it, ran more
    than `probe.SLOW_TOLERANCE` above the process's fastest was taken in a slow phase. Batches
    continue until another batch agrees with the lowest fast-phase median within
    `STABLE_TOLERANCE` (`_settled`; at most `MAX_BATCHES`). A batch whose CPU time falls short
    of threads x wall time by more than `DISTURBED_RATIO` was disturbed (another process held a
    core). An attempt that is disturbed or unsettled is repeated (up to `MAX_ATTEMPTS`), and the lowest median of the
    fast-phase batches is kept (of all batches, when none was fast): load only ever adds time.
    The kept batch's statistics come back as `MeasuredStats` with the conditions (clock,
    repeats, batches, attempts, spread, CPU/wall ratio, probe ratio, slow phase, load average)."""
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
    probe = speed_probe(context.threads, context.clock) if context.provider == "cpu" else None
    if budget_ms is not None:
        probe_run = run(3, warmup)
        once = max(probe_run.min_ms, 1e-3)
        total = int(min(max_repeat, max(min_repeat, budget_ms / once)))
    else:
        run(0 if warmup == 0 else 1, warmup)
        total = max_repeat
    batch = max(3, total // 3)
    deadline = time.perf_counter() + MAX_WAIT_S
    best, best_rank, best_conditions, attempts, total_repeats = None, None, None, 0, 0
    for attempt in range(MAX_ATTEMPTS):
        attempts += 1
        batches = []  # (stats, CPU/wall ratio, probe ratio)
        before = probe.wait_fast(deadline) if probe else 1.0
        for _ in range(MAX_BATCHES):
            if probe and not is_fast(before):
                before = probe.wait_fast(deadline)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            stats = run(batch, 1 if probe else 0)  # one untimed run: the probe just used the caches
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            after = probe.ratio() if probe else 1.0
            batches.append((stats, cpu / max(wall, 1e-9), max(before, after)))
            before = after  # the probe after one batch is the probe before the next
            total_repeats += batch
            if len(batches) >= 3 and _settled(batches, time.perf_counter() >= deadline):
                break
        fast = [item for item in batches if is_fast(item[2])]
        stable = _settled(batches, time.perf_counter() >= deadline)
        ratio = min(r for _, r, _ in batches) / context.threads
        disturbed = ratio < DISTURBED_RATIO and context.clock == "wall"
        kept, _, probe_ratio = min(fast or batches, key=lambda item: item[0].median_ms)
        rank = (not fast, kept.median_ms)  # a fast-phase batch beats any batch of a slow phase
        if best is None or rank < best_rank:
            best, best_rank = kept, rank
            best_conditions = {"clock": context.clock, "stable": stable, "disturbed": disturbed,
                               "slow_phase": not fast, "probe_ratio": round(probe_ratio, 3),
                               "cpu_wall_ratio": round(ratio, 3),
                               "spread": round((kept.p90_ms - kept.p10_ms) / max(kept.median_ms, 1e-9), 4),
                               "batch_medians_ms": sorted(round(s.median_ms, 5) for s, _, _ in batches)}
        if stable and not disturbed:
            break
        time.sleep(0.05)  # let a burst of load pass
    best_conditions.update(repeats=total_repeats, batch=batch, attempts=attempts,
                           load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)
    fields = {name: getattr(best, name) for name in best.__dataclass_fields__}
    return MeasuredStats(**fields, conditions=best_conditions)


def _settled(batches, waited_out: bool) -> bool:
    """Whether another batch agrees with the lowest fast-phase median within `STABLE_TOLERANCE`
    (or `STABLE_SLACK_MS`); a slow-phase batch that agrees counts (the phase did not slow this
    graph). Without a fast-phase batch, once the wait for one ran out, whether the two lowest
    medians of all batches agree (the machine is slow throughout, and no wait will change that)."""
    medians = sorted(s.median_ms for s, _, _ in batches)
    fast = [s.median_ms for s, _, probe_ratio in batches if is_fast(probe_ratio)]
    if fast:
        lowest = min(fast)
        return sum(1 for m in medians if m <= lowest * (1 + STABLE_TOLERANCE) + STABLE_SLACK_MS) >= 2
    return waited_out and len(medians) >= 2 and medians[1] <= medians[0] * (1 + STABLE_TOLERANCE) + STABLE_SLACK_MS


def measure_kernel(key: KernelKey, context: Context, *, budget_ms: float = 150.0, min_repeat: int = 15,
                   max_repeat: int = 400):
    """(`MeasuredStats`, static features) of one kernel alone, in `context`'s runtime, provider and
    threads. The number of timed runs adapts to the kernel's speed (about `budget_ms` of timing
    per attempt); the features are `model.key_features` (what the kernel models use)."""
    graph, size = kernel_graph(key)
    channels = graph.nx.nodes[graph.input]["channels"]
    stats = _measure_graph(graph, size, channels, context, budget_ms=budget_ms, min_repeat=min_repeat,
                           max_repeat=max_repeat)
    return stats, dict(key_features(key))


def measure_end_to_end(spec, input_size, context: Context, *, repeat: int = 60, warmup: int = 10):
    """Latency of a whole spec, built the same way its kernels are (same writer, same session
    settings), measured as robustly as a kernel (`_measure_graph`)."""
    from archspec.compiler import lower

    graph = lower(spec)
    return _measure_graph(graph, _size(input_size), spec.in_channels, context, budget_ms=None,
                          min_repeat=repeat, max_repeat=repeat, warmup=warmup)


def _unique(keys: Iterable[KernelKey]) -> list[KernelKey]:
    return list(dict.fromkeys(keys))


def _size(input_size) -> tuple[int, int]:
    if isinstance(input_size, tuple) and len(input_size) == 2 and all(isinstance(v, int) for v in input_size):
        return input_size  # the common case, without parsing
    from archspec.sizes import parse_input_size

    return parse_input_size(input_size)
