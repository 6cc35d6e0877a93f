"""Latency tables and prediction: a spec's latency as the sum of its measured kernels plus a
calibrated per-model overhead. See docs/latency.md.

    from archspec.compiler.latency import LatencyTable, LatencyPredictor
    predictor = LatencyPredictor(LatencyTable())
    predictor.measure_missing(spec, (224, 224))
    ms = predictor.predict(spec, (224, 224))

Spec kinds provide their kernels through `DECOMPOSERS` (spec type -> kernel keys) and kernel
kinds their measurable graphs through `KERNEL_GRAPHS`.
"""

from __future__ import annotations

from archspec.compiler.latency import scale_permuted as _scale_permuted  # noqa: F401 - registers SpineNet kernels
from archspec.compiler.latency.kernels import DECOMPOSERS, KERNEL_GRAPHS, KernelKey, describe, kernel_graph, kernels
from archspec.compiler.latency.model import KernelModel, KernelPredictor, kernel_type, key_features
from archspec.compiler.latency.predictor import (CalibrationReport, CalibrationWarning, Coefficients, LatencyPredictor,
                                                 MeasuredStats, MissingKernelError, default_clock, fit_overhead,
                                                 measure_end_to_end, measure_kernel, validate_overhead)
from archspec.compiler.latency.table import CalibrationRun, Context, LatencyTable, default_table_path

__all__ = [
    "CalibrationReport", "CalibrationWarning", "KernelModel", "KernelPredictor", "MeasuredStats", "default_clock",
    "kernel_type", "key_features", "validate_overhead",
    "CalibrationRun", "Coefficients", "Context", "DECOMPOSERS", "KERNEL_GRAPHS", "KernelKey", "LatencyPredictor", "LatencyTable",
    "MissingKernelError", "default_table_path", "describe", "fit_overhead", "kernel_graph", "kernels",
    "measure_end_to_end", "measure_kernel",
]
