"""Budgets, checked in order of cost: parameters and FLOPs (analytic, microseconds), then
latency (a table lookup, or a kernel measurement the first time a kernel is seen).

The latency check is split in two so evaluation can run in worker processes: a worker derives
the spec's kernel keys (`latency_kernels`, a pure function of the spec) and the run's parent
process turns keys into a latency (`latency`), measuring missing kernels itself. The parent is
then the only writer of the latency table (OUT/latency.sqlite, or a shared one), and it measures
in trial order, as a serial run does.

Kernels are not all measured: per kernel type, the first `DESIGN_KERNELS_PER_TYPE` kernels
met (in trial order: a seeded design set drawn from the space's own candidates) are measured, or
read from the table when stored there, then the type's regression is fitted on them alone and
predicts the rest (`LatencyPredictor.judge_keys`, `KeyPredictor`). From an empty table a search
measures a few dozen kernels per type once, then runs at prediction speed; a run on a table that
holds its design sets measures nothing and judges every candidate as the run that measured them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from archspec.compiler.fastcosts import fast_costs
from archspec.compiler.latency import LatencyPredictor, LatencyTable
from archspec.compiler.latency.model import has_features
from archspec.compiler.latency.predictor import DESIGN_KERNELS_PER_TYPE, Coefficients
from archspec.compiler.latency.kernels import kernels
from archspec.sizes import parse_input_size


DESIGN_BUDGET_MS = 40.0
"""Timing per kernel and attempt while a search measures (batches until the median is stable)."""


class BudgetChecker:
    """Evaluates a spec against `Budgets`; returns its metrics and the first budget it breaks."""

    def __init__(self, budgets, latency_table: Path | None = None, *, predict_unseen: bool = True,
                 design_per_type: int = DESIGN_KERNELS_PER_TYPE, design: Sequence[str] = (),
                 on_design: Callable[[list[str]], None] | None = None):
        self.budgets = budgets
        size = budgets.input_size
        self.input_size = parse_input_size(size)
        latency_size = budgets.latency_input_size
        self.latency_size = parse_input_size(latency_size) if latency_size else self.input_size
        self.latency_table = latency_table
        self.predict_unseen = predict_unseen
        """False: every kernel a candidate needs is measured (the exact-match table of old)."""
        self.design_per_type = design_per_type
        self.design = list(design)
        """The design kernels the predictor starts from (a resumed run's, from its store)."""
        self.on_design = on_design
        """Called with `KeyPredictor.design` whenever it grows (the run records it, for a resume)."""
        self._predictor = None

    def predictor(self):
        if self._predictor is None:
            table = LatencyTable(self.latency_table) if self.latency_table else LatencyTable()
            self._predictor = KeyPredictor(table, runtime=self.budgets.latency_runtime,
                                           provider=self.budgets.latency_provider,
                                           threads=getattr(self.budgets, "latency_threads", None),
                                           predict_unseen=self.predict_unseen, design=self.design,
                                           on_design=self.on_design)
        return self._predictor

    def cheap_ok(self, spec) -> bool:
        """Whether the analytic budgets (params, FLOPs) hold: what strategies may pre-screen with."""
        return self.analytic(spec)[1] is None

    def analytic(self, spec) -> tuple[dict, str | None]:
        """(params/MACs/FLOPs metrics, the first params/FLOPs budget broken or None)."""
        b = self.budgets
        counts = fast_costs(spec, self.input_size)
        metrics = {"params": counts.params, "macs": counts.macs, "flops": counts.flops}
        for name, value in (("params", counts.params), ("flops", counts.flops)):
            high, low = getattr(b, f"max_{name}"), getattr(b, f"min_{name}")
            if high is not None and value > high:
                return metrics, f"max_{name}: {value:.4g} > {high:.4g}"
            if low is not None and value < low:
                return metrics, f"min_{name}: {value:.4g} < {low:.4g}"
        return metrics, None

    def latency_kernels(self, spec) -> tuple[str, ...] | None:
        """The spec's latency kernel keys at the latency input size; None without a latency budget."""
        if self.budgets.max_latency_ms is None:
            return None
        return tuple(kernels(spec, self.latency_size))

    def latency(self, keys) -> float:
        """Predicted latency (ms) of a spec from its kernel keys. Kernels the table lacks are
        measured while their type's design set is incomplete (each committed to the table as soon
        as it is measured), predicted by the type's regression after."""
        predictor = self.predictor()
        predictor.judge_keys(keys, design_per_type=self.design_per_type, budget_ms=DESIGN_BUDGET_MS)
        return predictor.predict_keys(keys)

    def latency_summary(self) -> str:
        """One line: the table, kernels measured by this run, kernels taken from the table,
        kernels predicted by the kernel models (empty without a latency budget)."""
        if self._predictor is None:
            return ""
        p = self._predictor
        models = ", ".join(f"{kind} ({m.kernels})" for kind, m in sorted(p.kernel_model.models.items()) if kind != "*")
        return (f"latency kernels: {p.measured} measured by this run, {len(p._ms) - p.measured} already in the "
                f"table, {len(p._predicted)} predicted by the kernel models (fitted on: {models or 'none'}); "
                f"table {p.table.path}")

    def latency_broken(self, latency: float) -> str | None:
        high = self.budgets.max_latency_ms
        return f"max_latency_ms: {latency:.3g} > {high:.3g}" if high is not None and latency > high else None

    def evaluate(self, spec) -> tuple[dict, str | None]:
        """(metrics, None) when feasible, else (metrics so far, which budget broke and how)."""
        metrics, broken = self.analytic(spec)
        keys = self.latency_kernels(spec)
        if broken or keys is None:
            return metrics, broken
        metrics["latency_ms"] = self.latency(keys)
        return metrics, self.latency_broken(metrics["latency_ms"])


class KeyPredictor(LatencyPredictor):
    """A search's predictor. It works from kernel keys, so the process holding the table never
    needs the spec (evaluation workers send keys).

    It judges from its design sets alone. It starts from none of the table's kernels and no
    overhead fit: each design kernel is read from the table when stored there (measured and
    stored otherwise), and every other kernel is predicted by its type's model, fitted on that
    type's design set. Which kernels form a design set depends only on the trial order, so a
    run's judgements depend only on its config, its seed and the stored values of its design
    kernels. Whatever else a shared table holds (other configs' design sets, `build-table`'s
    kernels and calibration runs, the run's own front measured end to end) never changes them:
    two runs of one config on one table agree on every candidate. A resumed run starts from the
    design kernels its run recorded (`design`), read from the table, and so judges as it did
    before the kill."""

    def __init__(self, table: LatencyTable, *, design: Sequence[str] = (),
                 on_design: Callable[[list[str]], None] | None = None, **settings):
        self._recorded = list(dict.fromkeys(design))
        self.on_design = on_design
        super().__init__(table, **settings)
        lost = [key for key in self._recorded if key not in self._ms]
        if lost:  # gone from the table since the run recorded them: measured again, the best a resume can do
            self.measure_keys(lost, budget_ms=DESIGN_BUDGET_MS)
            self.reload()  # the design kernels in their recorded order again, and the models refitted on them

    def starting_kernels(self):
        ms, features = {}, {}
        for key in self._recorded:
            stored = self.table.kernel(self.context, key)
            if stored is not None:
                ms[key], features[key] = stored
        return ms, features

    @property
    def design(self) -> list[str]:
        """The design sets' kernels in the order they were met: every kernel with features this
        predictor measured or read (while it predicts unseen kernels, it measures a kernel only
        while its type's design set is incomplete): what `refit_kernel_model` counts."""
        return [key for key in self._ms if has_features(self._features.get(key) or {})]

    def judge_keys(self, keys, **options) -> int:
        known = len(self._ms)
        measured = super().judge_keys(keys, **options)
        # Recorded only while unseen kernels are predicted: measuring every kernel needs no record
        # (a resume reads each from the table when met again), and its list would grow unbounded.
        if len(self._ms) > known and self.predict_unseen and self.on_design is not None:
            self.on_design(self.design)
        return measured

    def calibration_rows(self):
        return np.zeros((0, len(Coefficients.FEATURES))), np.zeros(0)
