"""Budgets, checked in order of cost: parameters and FLOPs (analytic, microseconds), then
latency (a table lookup, or a kernel measurement the first time a kernel is seen)."""

from __future__ import annotations

from pathlib import Path

from compiler.fastcosts import fast_costs


class BudgetChecker:
    """Evaluates a spec against `Budgets`; returns its metrics and the first budget it breaks."""

    def __init__(self, budgets, latency_table: Path | None = None):
        self.budgets = budgets
        size = budgets.input_size
        self.input_size = (size, size) if isinstance(size, int) else (size[0], size[-1])
        latency_size = budgets.latency_input_size
        self.latency_size = (latency_size, latency_size) if latency_size else self.input_size
        self.latency_table = latency_table
        self._predictor = None

    def predictor(self):
        if self._predictor is None:
            from compiler.latency import LatencyPredictor, LatencyTable

            table = LatencyTable(self.latency_table) if self.latency_table else LatencyTable()
            self._predictor = LatencyPredictor(table, runtime=self.budgets.latency_runtime,
                                               provider=self.budgets.latency_provider)
        return self._predictor

    def cheap_ok(self, spec) -> bool:
        """Whether the analytic budgets (params, FLOPs) hold: what strategies may pre-screen with."""
        b = self.budgets
        counts = fast_costs(spec, self.input_size)
        for name, value in (("params", counts.params), ("flops", counts.flops)):
            high, low = getattr(b, f"max_{name}"), getattr(b, f"min_{name}")
            if (high is not None and value > high) or (low is not None and value < low):
                return False
        return True

    def evaluate(self, spec) -> tuple[dict, str | None]:
        """(metrics, None) when feasible, else (metrics so far, which budget broke and how)."""
        b = self.budgets
        counts = fast_costs(spec, self.input_size)
        metrics = {"params": counts.params, "macs": counts.macs, "flops": counts.flops}
        for name, value in (("params", counts.params), ("flops", counts.flops)):
            high, low = getattr(b, f"max_{name}"), getattr(b, f"min_{name}")
            if high is not None and value > high:
                return metrics, f"max_{name}: {value:.4g} > {high:.4g}"
            if low is not None and value < low:
                return metrics, f"min_{name}: {value:.4g} < {low:.4g}"
        if b.max_latency_ms is not None:
            predictor = self.predictor()
            if predictor.missing(spec, self.latency_size):
                predictor.measure_missing(spec, self.latency_size)
            latency = predictor.predict(spec, self.latency_size)
            metrics["latency_ms"] = latency
            if latency > b.max_latency_ms:
                return metrics, f"max_latency_ms: {latency:.3g} > {b.max_latency_ms:.3g}"
        return metrics, None
