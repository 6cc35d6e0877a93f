"""After the search: measure the Pareto front, choose the best, and write best.yaml, pareto.csv
and report.txt.

A latency budget is checked during the search on *predicted* latency (kernel sums, see
search/budgets.py): cheap enough for every candidate, but a prediction. Once the search is over
the front is small, so every member is measured end to end -- the whole backbone as one model, in
the runtime, provider, threads, clock and input size the budget predicts for (the latency
predictor's context and `latency_input_size`) -- and the best candidate is the highest-scoring
member whose *measured* latency fits the budget. Choosing among the front loses nothing: a trial
off the front has a front member with at least its score and at most its FLOPs. A member measured
over the budget is measured once more and keeps the lower median (load from other processes only
adds time).

Measurements are recorded in the trial store (one meta row per member and measuring context), so
a resumed or repeated run reuses them instead of measuring again, and writes the same outputs.

With a ``detector:`` template in the search config, best.yaml is the complete detector (the
template around the best backbone, inline), which `archspec train`, `export` and `detect` take as
it is; pareto.csv keeps the backbones' rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import archspec
from archspec.compiler.latency.table import CalibrationRun, default_table_path
from archspec.files import atomic_path, atomic_write_text
from archspec.search.store import Trial, TrialStore

MeasureFn = Callable[[object, tuple[int, int], object], float]
"""``measure(backbone_spec, (height, width), context) -> median ms``: how a front member is
measured (the default runs it in ONNX Runtime or torch; tests plant latencies through it)."""

MEASURE_REPEAT = 30
"""Most timed runs per front member (the median is kept)."""
MEASURE_MIN_REPEAT = 7
"""Fewest timed runs per front member."""
MEASURE_BUDGET_MS = 300.0
"""About this much timed running per member, from its predicted latency, within the repeat
bounds: a slow model gets fewer runs (its session set-up costs as much again, whatever the count)."""
MEASURE_WARMUP = 3
"""Untimed runs first (allocations, caches)."""
METRIC_NAMES = ("params", "macs", "flops", "latency_ms", "score")
"""Columns of pareto.csv without a latency budget (trials.csv has the same metrics)."""
MEASURED_KEY = "front_latency_ms"
"""Prefix of the trial store's meta rows holding measured front latencies."""


def measure_end_to_end_ms(spec, size: tuple[int, int], context, *, expected_ms: float | None = None,
                          limit_ms: float | None = None) -> float:
    """The median latency (ms) of `spec` run whole, batch 1, at `size`, in `context` (runtime,
    provider, threads, clock): the way the latency table's calibration runs are measured.
    `expected_ms` (the prediction) sets the number of runs (`MEASURE_BUDGET_MS`). A median over
    `limit_ms` is measured once more and the lower kept: other processes on the machine only
    ever add time, and a candidate should not lose its place to a burst of someone else's load."""
    from archspec.compiler.latency.predictor import measure_end_to_end

    repeat = MEASURE_REPEAT
    if expected_ms is not None and expected_ms > 0:
        repeat = int(min(MEASURE_REPEAT, max(MEASURE_MIN_REPEAT, MEASURE_BUDGET_MS / expected_ms)))
    ms = measure_end_to_end(spec, size, context, repeat=repeat, warmup=MEASURE_WARMUP).median_ms
    if limit_ms is not None and ms > limit_ms:
        ms = min(ms, measure_end_to_end(spec, size, context, repeat=repeat, warmup=MEASURE_WARMUP).median_ms)
    return ms


@dataclass
class Selection:
    """The front, its measured latencies and the chosen best candidate."""

    front: list[Trial]
    """Feasible trials not dominated in (higher score, fewer FLOPs), by FLOPs."""
    best: Trial | None
    """The chosen candidate: the top score, or with a latency budget the top score whose measured
    latency fits; None when nothing qualifies."""
    measured: dict[int, float] = field(default_factory=dict)
    """Trial id -> measured end-to-end latency (ms) of every front member (latency budget only)."""
    limit_ms: float | None = None
    """The budget's max_latency_ms (None: nothing was measured)."""
    setting: str = ""
    """Where the front was measured, for people: runtime, provider, threads, clock, input size."""
    top: Trial | None = None
    """The highest-scoring feasible trial, whatever its measured latency."""

    @property
    def fitting(self) -> list[Trial]:
        """Front members whose measured latency fits the budget."""
        return [t for t in self.front if self.limit_ms is None or self.measured[t.id] <= self.limit_ms]


def by_score(trials: list[Trial]) -> Trial | None:
    """The highest score; among equal scores the earliest trial."""
    return max(trials, key=lambda t: (t.score, -t.id)) if trials else None


def select(trials: list[Trial], front: list[Trial], *, limit_ms: float | None = None,
           measured: dict[int, float] | None = None, setting: str = "") -> Selection:
    """The best candidate: without a latency limit the top score of the feasible trials; with one,
    the top score among the front members whose `measured` latency (trial id -> ms) is within it."""
    top = by_score([t for t in trials if t.status == "feasible"])
    if limit_ms is None:
        return Selection(front, top, top=top)
    measured = dict(measured or {})
    # The front holds a top-scoring trial; among equal top scores, the front's (fewest FLOPs) is
    # the one that was measured.
    selection = Selection(front, None, measured, limit_ms, setting, by_score(front))
    selection.best = by_score(selection.fitting)
    return selection


def choice_record(selection: Selection) -> dict | None:
    """What the report page needs of the choice (`RunData.choice`): the best's trial id (None when
    no measured latency fits) and the front's measured latencies by fingerprint; None when nothing
    was measured (the page's best is then the top score, as here)."""
    if selection.limit_ms is None:
        return None
    return {"best": selection.best.id if selection.best is not None else None,
            "measured": {t.fingerprint: selection.measured[t.id] for t in selection.front}}


# -- measuring -----------------------------------------------------------------------------------
def context_digest(context, size: tuple[int, int]) -> str:
    """A short digest of the measuring context and input size: measurements taken on another
    machine, runtime, provider, thread count, clock or size are never reused."""
    text = json.dumps({"machine": context.machine, "runtime": context.runtime, "provider": context.provider,
                       "threads": context.threads, "clock": context.clock, "size": list(size)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure_front(front: list[Trial], space, checker, store: TrialStore,
                  measure: MeasureFn | None = None, limit_ms: float | None = None) -> tuple[dict[int, float], str]:
    """(trial id -> measured ms, the setting in words) for every front member, measured in the
    latency budget's context: the backbone, since that is what the budget's predictor sums
    kernels of. A member measured before in this context (same fingerprint) is read from the
    store, or from the latency table's calibration runs, where each measurement also goes: a run
    sharing a table with an earlier run of its config measures nothing and chooses the same best.
    A new measurement is committed at once, so a kill loses at most the one in progress."""
    predictor = checker.predictor()
    context, size = predictor.context, checker.latency_size
    digest = context_digest(context, size)
    setting = (f"{context.runtime}, provider {context.provider}, {context.threads} thread"
               f"{'s' if context.threads != 1 else ''}, {context.clock} clock, {size[0]}x{size[1]}")
    measured: dict[int, float] = {}
    for trial in front:
        key = f"{MEASURED_KEY}:{digest}:{trial.fingerprint}"
        stored = store.meta(key)
        if stored is None:
            ms = predictor.table.calibration_ms(context, trial.fingerprint, size)  # an earlier run's front
            if ms is None:
                spec = space.decode(trial.genotype)
                if measure is None:
                    ms = measure_end_to_end_ms(spec, size, context, expected_ms=trial.metrics.get("latency_ms"),
                                               limit_ms=limit_ms)
                else:
                    ms = float(measure(spec, size, context))
                predictor.table.put_calibration(context, CalibrationRun(
                    trial.fingerprint, size[0], size[1], spec.name, ms, {"kernels": checker.latency_kernels(spec)}))
            store.set_meta(key, json.dumps(ms))
        else:
            ms = float(json.loads(stored))
        measured[trial.id] = ms
    return measured, setting


# -- outputs -------------------------------------------------------------------------------------
NEXT_FOLDER = "next"
"""Subfolder of the run folder where report.txt's closing commands write (data, training run,
ONNX file, detections). The search's run marker lists it, so the folder stays resumable."""


@dataclass(frozen=True)
class NextSteps:
    """What report.txt's closing commands refer to. They are written to be run in the run folder
    and name no path outside it (but the evaluator's data folder): the report is the same
    wherever the run folder lies, and still right after the folder is moved."""

    data: str | None = None
    """The training data folder (the evaluator's, when it names one; absolute)."""
    input_size: str = "224"
    """The budgets' input size (H or HxW), at which the backbone's FLOPs were taken."""
    latency_input_size: str | None = None
    """The latency budget's input size; None without a latency budget."""
    latency_options: str = ""
    """The budget's runtime, provider and threads as `archspec latency` options (the context the
    run's kernels were measured in), with `--table` unless the run used the machine's table."""
    supernet: str | None = None
    """The supernet run folder of a one-shot search (absolute), whose weights fine-tuning may start from."""


def write_pareto(path: Path, selection: Selection) -> None:
    """pareto.csv: one row per front member (backbones); with a latency budget the predicted and
    measured latencies side by side, and whether the measured one fits."""
    names = list(METRIC_NAMES)
    if selection.limit_ms is not None:
        names[names.index("latency_ms")] = "latency_ms_predicted"
        names.insert(names.index("latency_ms_predicted") + 1, "latency_ms_measured")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "fingerprint", *names] + (["fits_budget"] if selection.limit_ms is not None else []))
        for t in selection.front:
            values = {**t.metrics, "latency_ms_predicted": t.metrics.get("latency_ms", "")}
            if selection.limit_ms is not None:
                values["latency_ms_measured"] = selection.measured[t.id]
            row = [t.id, t.fingerprint, *[values.get(m, "") for m in names]]
            if selection.limit_ms is not None:
                row.append("yes" if selection.measured[t.id] <= selection.limit_ms else "no")
            writer.writerow(row)


def write_best(path: Path, selection: Selection, space, detector, trials: int) -> object | None:
    """best.yaml: the best backbone, or with a `detector` template the detector around it (the
    backbone inline). Without a best candidate, a best.yaml of an earlier state of the run is
    removed, so the folder never offers a spec the run no longer stands behind. Returns the
    backbone spec (or None)."""
    best = selection.best
    if best is None:
        path.unlink(missing_ok=True)
        return None
    backbone = space.decode(best.genotype)
    description = f"best of {trials} trials (trial {best.id})"
    if detector is None:
        archspec.save(backbone.model_copy(update={"name": "search_best", "description": description}), path)
    else:
        inner = backbone.model_copy(update={"name": "search_best_backbone", "description": description})
        archspec.save(detector.around(inner, name="search_best", description=f"{description}, as a detector"), path)
    return backbone


def report_lines(trials: list[Trial], selection: Selection, detector=None, steps: NextSteps | None = None) -> list[str]:
    """report.txt: counts, the best candidate, the front (measured, with a latency budget), then
    the commands to run next."""
    counts = {s: sum(t.status == s for t in trials) for s in ("feasible", "infeasible", "rejected", "duplicate")}
    lines = [f"trials: {len(trials)} ({', '.join(f'{k} {v}' for k, v in counts.items())})"]
    best = selection.best
    if best is not None:
        lines.append(f"best: trial {best.id}, score {best.score:.3f}, params {best.metrics['params']:,}, "
                     f"FLOPs {best.metrics['flops'] / 1e9:.2f} G" + _latency_text(best, selection))
    elif selection.top is None:
        lines.append("no feasible candidate")
    lines.append(f"pareto front (score vs FLOPs): {len(selection.front)} candidates")
    if selection.limit_ms is not None and selection.front:
        lines.extend(_measured_lines(selection))
    if steps is not None:
        lines.extend(next_commands(steps, detector, best is not None))
    return lines


def _latency_text(trial: Trial, selection: Selection) -> str:
    if "latency_ms" not in trial.metrics:
        return ""
    text = f", latency {trial.metrics['latency_ms']:.2f} ms"
    if trial.id in selection.measured:
        text += f" predicted, {selection.measured[trial.id]:.2f} ms measured"
    return text


def _measured_lines(selection: Selection) -> list[str]:
    fitting = selection.fitting
    limit = selection.limit_ms
    lines = [f"front measured end to end ({selection.setting}): {len(fitting)} of {len(selection.front)} "
             f"within max_latency_ms {limit:g}"]
    ratios = [selection.measured[t.id] / t.metrics["latency_ms"] for t in selection.front
              if t.metrics.get("latency_ms")]
    if ratios:
        lines.append(f"measured / predicted latency over the front: {min(ratios):.2f} to {max(ratios):.2f}")
    top, best = selection.top, selection.best
    if best is None:
        fastest = min(selection.front, key=lambda t: (selection.measured[t.id], t.id))
        lines.append(f"no candidate: no front member's measured latency is within max_latency_ms {limit:g} "
                     f"(the fastest, trial {fastest.id}, measured {selection.measured[fastest.id]:.2f} ms); "
                     f"best.yaml is not written. Raise max_latency_ms, lower max_flops so that the front "
                     f"moves to faster candidates, or measure in the budget's setting with `archspec bench`.")
    elif top is not None and best.id != top.id:
        lines.append(f"the top score, trial {top.id} (score {top.score:.3f}), was predicted "
                     f"{top.metrics.get('latency_ms', float('nan')):.2f} ms but measured "
                     f"{selection.measured.get(top.id, float('nan')):.2f} ms: over the budget, so best is "
                     f"trial {best.id}")
    return lines


def next_commands(steps: NextSteps, detector, has_best: bool) -> list[str]:
    """The commands to run after the search, ready to paste in the run folder (outputs go to its
    `NEXT_FOLDER`; paths quoted for the shell)."""
    if not has_best:
        return ["", "next: no best.yaml to take further; change the budgets and search again (another --out), "
                    "or run the same search command with --resume --max-trials N (more trials)"]
    folder = NEXT_FOLDER
    if detector is not None:
        lines = ["", f"next, in this run folder (outputs go to {folder}/): best.yaml is a complete detector; "
                     "train it, export it, detect with it:"]
        if steps.data is None:
            data, image = f"{folder}/data", f"{folder}/data/val/val_000001.png"
            classes = detector.num_classes
            lines.append(f"  archspec data synth --out {data} --classes {classes}    # synthetic shapes; or any "
                         f"COCO-format folder as --data" if classes <= SYNTH_CLASSES else
                         f"  # {classes} classes: use a COCO-format folder of yours as --data {data}")
        else:
            data, image = shlex.quote(steps.data), "IMAGE.png"
        if steps.supernet is not None:
            lines.append(f"  # from the supernet's weights instead of from scratch: archspec supernet extract "
                         f"{shlex.quote(steps.supernet)} best.yaml -o {folder}/extracted, then train "
                         f"{folder}/extracted/spec.yaml with --init {folder}/extracted/weights.pt")
        return lines + [
            "  archspec validate best.yaml",
            f"  archspec train best.yaml --data {data} --out {folder}/train --epochs 12",
            f"  archspec eval {folder}/train --data {data}",
            f"  archspec export best.yaml --weights {folder}/train/best.pt -o {folder}/best.onnx",
            f"  archspec detect {folder}/best.onnx {image} --out {folder}/detections"]
    latency = (f"  archspec latency predict best.yaml --input-size {steps.latency_input_size}{steps.latency_options}"
               if steps.latency_input_size else
               f"  archspec latency predict best.yaml --input-size {steps.input_size} --measure-missing")
    return ["", "next, in this run folder: best.yaml is a backbone; inspect, export and time it:",
            f"  archspec summary best.yaml --input-size {steps.input_size}",
            f"  archspec export best.yaml -o {folder}/best.onnx --input-size {steps.input_size}",
            latency,
            "to get a detector: add a `detector:` template to the search config (neck, head, num_classes, "
            "input_size; examples/search/maedet_fcos_budget.yaml has one) and search again into another --out, "
            "or write a detector file whose `backbone:` is this best.yaml (as examples/detectors/fcos_tiny.yaml "
            "names its backbone file)."]


SYNTH_CLASSES = 6
"""Most classes `archspec data synth` draws."""


def next_steps(config, latency_table: str | Path | None = None) -> NextSteps:
    """The closing commands' settings for a run of `config` (`latency_table`: a shared table, when
    the run used one instead of its own)."""
    budgets = config.budgets
    size = _size_text(budgets.input_size)
    latency = (_size_text(budgets.latency_input_size or budgets.input_size)
               if budgets.max_latency_ms is not None else None)
    options = "".join(f" --{name} {value}" for name, value, default in
                      (("runtime", budgets.latency_runtime, "ort"), ("provider", budgets.latency_provider, "cpu"),
                       ("threads", budgets.latency_threads, None), ("table", _table_option(latency_table), None))
                      if value != default)
    data = getattr(config.evaluator, "data", None)  # a trained evaluator's data folder (absolute once resolved)
    supernet = config.evaluator.run if config.evaluator.type == "supernet" else None
    return NextSteps(str(data) if data else None, size, latency, options, supernet)


def _table_option(latency_table: str | Path | None) -> str | None:
    """`--table` of the commands run in the run folder: the run's own table, a shared one, or
    none for the machine's table (`archspec latency`'s default)."""
    if not latency_table:
        return "latency.sqlite"
    if Path(latency_table).resolve() == default_table_path().expanduser().resolve():
        return None
    return shlex.quote(str(latency_table))


def _size_text(size) -> str:
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def write_text_report(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "\n".join(lines) + "\n")


__all__ = ["MeasureFn", "NEXT_FOLDER", "NextSteps", "Selection", "choice_record", "measure_end_to_end_ms", "measure_front", "select",
           "write_best", "write_pareto", "report_lines", "next_commands"]
