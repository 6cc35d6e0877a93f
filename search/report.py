"""The search report page: one self-contained HTML file per run (``OUT/report.html``).

What it shows, from the run folder alone (trials.sqlite, and latency.sqlite when the config has a
latency budget): the config and budgets; progress over the trials (score and feasibility against
the trial number); the Pareto fronts of score against FLOPs and against latency (predicted by the
run's latency table, and measured end to end where the table holds a calibration run of the
candidate); the top-k table with fingerprints and costs, and the infeasible candidates with the
budget each broke; the best architecture drawn (compiler/drawing.py); and the effective receptive
field of the best candidate's levels (compiler/erf.py, a small input and few random images, so it
stays cheap). Hovering a point shows the candidate, clicking it (or a table row) shows its YAML.

Plots are plotly.js (the `plotly` package's bundled ``plotly.min.js``), inlined: the page makes no
network request and works offline. Everything else is plain HTML, SVG and a few lines of script.

Candidates are recovered from their genotypes through the space (`space.decode`); the config with
its base spec inlined is stored in the trial store's metadata by `run_search` (key ``config``), so
`archspec report RUN` needs nothing else. Runs started before that key existed take ``--config``.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import archspec
from archspec.files import atomic_write_text
from archspec.search.space import undecided_blocks
from archspec.search.store import Trial, TrialStore

MAX_POINTS = 20_000
"""Most feasible candidates drawn per scatter (Pareto-front points always are): a paper-scale run's
70,000 SVG markers would make the page crawl; beyond this every n-th candidate is drawn."""
MAX_YAML = 300
"""Most candidates whose YAML is embedded (best first, the Pareto fronts and the tables always)."""
STATUSES = ("feasible", "infeasible", "rejected", "duplicate")
STATUS_COLORS = {"feasible": "#2e7d32", "infeasible": "#c62828", "rejected": "#9e9e9e", "duplicate": "#5c6bc0"}


@dataclass
class ReportOptions:
    """What `write_report` includes and how much it computes."""

    top_k: int = 20
    """Rows of the top-k table (and of the infeasible table)."""
    erf: bool = True
    """Whether to compute the best candidate's effective receptive fields."""
    erf_size: int = 128
    """Input side for the ERF (small keeps it cheap; the field is clipped by the image)."""
    erf_images: int = 2
    """Random images the ERF gradient is averaged over."""
    max_yaml: int = MAX_YAML
    """Most candidates whose YAML is embedded."""
    latency_table: Path | None = None
    """Table to read measured latencies (calibration runs) from; default: the one the run used
    (its own latency.sqlite, or the shared table it records)."""


@dataclass
class RunData:
    """Everything the page is made from."""

    name: str
    config: object
    base: object
    space: object
    trials: list[Trial]
    measured: dict[str, float] = field(default_factory=dict)
    """Fingerprint -> end-to-end latency (ms) measured for it: the run's measured Pareto front
    (search/front.py) and the latency table's calibration runs."""
    choice: dict | None = None
    """The run's choice of best when it measured its front (`FRONT_CHOICE_KEY`): ``best`` (a
    trial id, or None when no measured latency fits) and ``measured`` (fingerprint -> ms).
    None: the best is the top score."""
    latency_table: str | None = None
    """The latency table the run used when it was not its own RUN/latency.sqlite (a shared one,
    or the machine's), as the run folder records it."""


# -- loading -------------------------------------------------------------------------------------
def load_run(run: str | Path, config_path: str | Path | None = None) -> RunData:
    """The run folder's trials with its config, base spec and space. `config_path` for runs whose
    store does not hold the config (started before it did); `ValueError` names what is missing."""
    from archspec.search.space import make_space
    from archspec.search_config import load_search_config

    run = Path(run)
    db = run / "trials.sqlite"
    if not db.is_file():
        raise FileNotFoundError(f"{run}: no search run here (no trials.sqlite)")
    store = TrialStore(db)
    try:
        stored_config, trials, choice = store.meta("config"), store.trials(), store.meta(FRONT_CHOICE_KEY)
        latency_table = store.meta("latency_table")
    finally:
        store.close()
    if config_path is not None:
        config, base = load_search_config(config_path)
    elif stored_config is not None:
        config, base = config_from_meta(stored_config, f"{db}:config")
    else:
        raise ValueError(f"{db}: the run does not record its config (an older run); pass --config CONFIG.yaml")
    return RunData(config.name, config, base, make_space(config.space, base), trials,
                   choice=json.loads(choice) if choice else None, latency_table=latency_table)


FRONT_CHOICE_KEY = "front_choice"
"""Trial store meta key of the run's choice of best after measuring its front (`RunData.choice`)."""


def config_meta(config, base) -> str:
    """The config with its base spec inlined, as stored in the trial store (`config_from_meta`)."""
    return json.dumps(config.model_dump(mode="json") | {"base": archspec.to_data(base)}, sort_keys=True)


def config_from_meta(text: str, source: str):
    from pydantic import TypeAdapter, ValidationError

    from archspec.errors import SpecError
    from archspec.search_config import SearchConfig

    try:
        config = TypeAdapter(SearchConfig).validate_python(json.loads(text))
        base = archspec.validate(config.base, source=f"{source}.base")
    except (ValidationError, json.JSONDecodeError) as exc:
        raise SpecError("config", f"unreadable stored config ({str(exc).splitlines()[0]})", source=source) from None
    return config, base


def measured_latencies(table_path: Path, fingerprints: set[str], budgets, size: tuple[int, int]) -> dict[str, float]:
    """Fingerprint -> measured end-to-end latency (ms) of the candidates with a calibration run in
    the table at the latency input size, runtime, provider and (when the budgets set them) threads
    of the budgets, by either clock (CPU-time rows are stored under `<runtime>:cpu`; latest first)."""
    import sqlite3

    if not table_path.is_file():
        return {}
    db = sqlite3.connect(f"file:{table_path}?mode=ro", uri=True)
    runtime, threads = budgets.latency_runtime, budgets.latency_threads
    try:
        rows = db.execute("SELECT fingerprint, measured_ms FROM calibration WHERE runtime IN (?, ?) AND provider = ? "
                          "AND height = ? AND width = ? AND (? IS NULL OR threads = ?) ORDER BY measured_at",
                          (runtime, f"{runtime}:cpu", budgets.latency_provider, *size, threads, threads)).fetchall()
    except sqlite3.DatabaseError:
        return {}
    finally:
        db.close()
    return {fp: ms for fp, ms in rows if fp in fingerprints}


# -- analysis ------------------------------------------------------------------------------------
def front(points: list[tuple[float, float, int]]) -> list[int]:
    """Indices (the third element) of the points not dominated in (lower x, higher y), by x."""
    kept, best = [], None
    for x, y, index in sorted(points, key=lambda p: (p[0], -p[1])):
        if best is None or y > best:
            kept.append(index)
            best = y
    return kept


def overshoot(trial: Trial, budgets) -> float:
    """How far an infeasible trial is past the budget it broke (ratio - 1; infinity if unknown)."""
    name = (trial.reason or "").split(":", 1)[0]
    metric = {"max_params": "params", "min_params": "params", "max_flops": "flops", "min_flops": "flops",
              "max_latency_ms": "latency_ms"}.get(name)
    limit = getattr(budgets, name, None) if metric else None
    value = trial.metrics.get(metric) if metric else None
    if limit is None or value is None or not limit:
        return math.inf
    return value / limit - 1 if name.startswith("max") else limit / max(value, 1e-12) - 1


# -- the page ------------------------------------------------------------------------------------
def write_report(run: str | Path, output: str | Path | None = None, *, data: RunData | None = None,
                 config_path: str | Path | None = None, options: ReportOptions | None = None) -> Path:
    """Write the report page of a run (default ``RUN/report.html``), atomically; returns its path.
    `data` skips reading the run folder (what `run_search` passes)."""
    run = Path(run)
    options = options or ReportOptions()
    data = data or load_run(run, config_path)
    if options.latency_table is not None and not Path(options.latency_table).is_file():
        raise FileNotFoundError(f"{options.latency_table}: no such latency table")
    table = options.latency_table or data.latency_table or run / "latency.sqlite"
    budgets = data.config.budgets
    latency_size = budgets.latency_input_size or budgets.input_size
    size = (latency_size, latency_size) if isinstance(latency_size, int) else (latency_size[0], latency_size[-1])
    data.measured = measured_latencies(Path(table), {t.fingerprint for t in data.trials if t.fingerprint}, budgets,
                                       size) | (data.choice or {}).get("measured", {})
    html = render_page(data, options)
    output = Path(output) if output is not None else run / "report.html"
    atomic_write_text(output, html)
    return output


def render_page(data: RunData, options: ReportOptions) -> str:
    trials = data.trials
    feasible = [t for t in trials if t.status == "feasible"]
    by_score = sorted(feasible, key=lambda t: (-t.score, t.id))
    # the run's best.yaml: a complete genotype (CR-NAS's partial architectures are no answer)
    best = next((t for t in by_score if not undecided_blocks(data.space, t.genotype)), None)
    if data.choice is not None:  # the run measured its front: its best is the top score that fits
        best = next((t for t in feasible if t.id == data.choice.get("best")), None)
    budgets = data.config.budgets
    infeasible = sorted((t for t in trials if t.status == "infeasible"), key=lambda t: (overshoot(t, budgets), t.id))
    fronts = {
        "flops": front([(t.metrics["flops"], t.score, t.id) for t in feasible]),
        "latency": front([(t.metrics["latency_ms"], t.score, t.id) for t in feasible if "latency_ms" in t.metrics]),
        "measured": front([(data.measured[t.fingerprint], t.score, t.id) for t in feasible
                           if t.fingerprint in data.measured]),
    }
    top = by_score[:options.top_k]
    shown_infeasible = infeasible[:options.top_k]
    yaml_ids = _yaml_ids(by_score, fronts, top, shown_infeasible, options.max_yaml)
    payload = {
        "trials": _trial_columns(trials, data.measured),
        "yaml": {str(i): text for i, text in _yamls(data, trials, yaml_ids).items()},
        "fronts": fronts,
        "best": best.id if best else None,
        "maxPoints": MAX_POINTS,
        "statuses": list(STATUSES),
        "colors": STATUS_COLORS,
    }
    sections = [
        _summary_section(data, best),
        _config_section(data),
        _plot_section(data, fronts),
        _tables_section(data, top, shown_infeasible, infeasible),
        _architecture_section(data, best),
        _erf_section(data, best, options),
    ]
    return PAGE.format(title=escape(f"archspec search report: {data.name}"), css=CSS,
                       body="\n".join(sections), plotly=_plotly_js(), data=_script_json(payload), script=SCRIPT)


def _yaml_ids(by_score, fronts, top, infeasible, limit: int) -> list[int]:
    must = [t.id for t in top] + [t.id for t in infeasible] + [i for ids in fronts.values() for i in ids]
    ids = list(dict.fromkeys(must))
    for trial in by_score:
        if len(ids) >= max(limit, len(must)):
            break
        if trial.id not in ids:
            ids.append(trial.id)
    return ids


def _yamls(data: RunData, trials: list[Trial], ids: list[int]) -> dict[int, str]:
    from archspec.search.space import Rejected

    found = {}
    for trial_id in ids:
        trial = trials[trial_id]
        try:
            spec = data.space.decode(trial.genotype)
        except Rejected as exc:  # cannot happen for a feasible or infeasible trial of this space
            found[trial_id] = f"# not decodable: {exc}\n"
            continue
        named = spec.model_copy(update={"name": f"{data.name}_trial{trial_id}"})
        found[trial_id] = _yaml_text(named)
    return found


def _yaml_text(spec) -> str:
    """`archspec.dumps(spec)`, through libyaml's emitter when PyYAML has it: the same options and
    the same document (the same text but where a long quoted string wraps; tests/test_report.py
    compares the two), four times faster, and a paper-scale report embeds hundreds of specs."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", None)
    if dumper is None:
        return archspec.dumps(spec)
    return yaml.dump(archspec.to_data(spec), Dumper=dumper, sort_keys=False, default_flow_style=None, width=100)


def _trial_columns(trials: list[Trial], measured: dict[str, float]) -> dict:
    """The trials as columns (compact JSON): id, status index, score, params, FLOPs, latency,
    measured latency, fingerprint, reason."""
    status_index = {s: i for i, s in enumerate(STATUSES)}

    def num(value):
        return None if value is None else (round(value, 6) if isinstance(value, float) else value)

    return {
        "id": [t.id for t in trials],
        "status": [status_index[t.status] for t in trials],
        "score": [num(t.score) for t in trials],
        "params": [t.metrics.get("params") for t in trials],
        "flops": [t.metrics.get("flops") for t in trials],
        "latency": [num(t.metrics.get("latency_ms")) for t in trials],
        "measured": [num(measured.get(t.fingerprint)) if t.fingerprint else None for t in trials],
        "fingerprint": [t.fingerprint for t in trials],
        "reason": [t.reason for t in trials],
    }


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _script_json(payload: dict) -> str:
    # "</" would end the script element early; JSON allows "<\/" for it
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _fmt_count(value) -> str:
    if value is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g}"


def _summary_section(data: RunData, best: Trial | None) -> str:
    counts = {s: sum(t.status == s for t in data.trials) for s in STATUSES}
    chips = "".join(f'<span class="chip" style="border-color:{STATUS_COLORS[s]}">{s} <b>{n}</b></span>'
                    for s, n in counts.items())
    if best is None and data.choice is not None and counts["feasible"]:
        best_text = ("<p class=\"warn\">No candidate: no member of the Pareto front has a measured latency "
                     "within the budget (see report.txt).</p>")
    elif best is None:
        best_text = "<p class=\"warn\">No feasible candidate: every candidate broke a budget or a rule.</p>"
    else:
        latency = best.metrics.get("latency_ms")
        best_text = (f'<p>Best: <a href="#" data-trial="{best.id}">trial {best.id}</a> '
                     f'(<code>{escape(best.fingerprint or "")}</code>), score <b>{best.score:.3f}</b>, '
                     f'params {_fmt_count(best.metrics.get("params"))}, FLOPs {_fmt_count(best.metrics.get("flops"))}'
                     + (f", predicted latency {latency:.2f} ms" if latency is not None else "")
                     + (f", measured {data.measured[best.fingerprint]:.2f} ms" if best.fingerprint in data.measured
                        else "") + "</p>")
    return (f'<header><h1>Search report: {escape(data.name)}</h1>'
            f'<p>{len(data.trials)} trials {chips}</p>{best_text}</header>')


def _config_section(data: RunData) -> str:
    config = data.config
    budgets = config.budgets
    rows = [("input size", budgets.input_size)]
    for name in ("max_params", "min_params", "max_flops", "min_flops", "max_latency_ms"):
        value = getattr(budgets, name)
        if value is not None:
            rows.append((name, _fmt_count(value) if "latency" not in name else f"{value:g} ms"))
    if budgets.max_latency_ms is not None:
        rows.append(("latency on", f"{budgets.latency_runtime}/{budgets.latency_provider} at "
                                   f"{budgets.latency_input_size or budgets.input_size}"))
    if len(rows) == 1:
        rows.append(("budgets", "none (every valid candidate is feasible)"))
    budget_rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    shown = config.model_dump(mode="json", exclude_defaults=True) | {
        "base": f"{data.base.name} ({archspec.fingerprint(data.base)})"}
    import yaml

    config_yaml = yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, width=100)
    score = config.evaluator.score_label or config.score
    facts = [("space", config.space.type), ("strategy", config.strategy.type), ("score", score),
             ("trials asked", config.trials), ("seed", config.seed),
             ("base", f"{data.base.name} ({data.base.type})")]
    fact_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    return (f'<section id="config"><h2>Config and budgets</h2><div class="row">'
            f'<table class="kv">{fact_rows}</table><table class="kv budgets">{budget_rows}</table></div>'
            f'<details><summary>search config</summary><pre>{escape(config_yaml)}</pre></details>'
            f'<details><summary>base spec</summary><pre>{escape(archspec.dumps(data.base))}</pre></details>'
            f'</section>')


def _plot_section(data: RunData, fronts: dict) -> str:
    has_latency = any("latency_ms" in t.metrics for t in data.trials)
    latency_note = "" if has_latency else (
        '<p class="note">No predicted latency in this run (the config has no latency budget).</p>')
    measured_note = "" if data.measured else (
        '<p class="note">No measured latencies: none of the candidates has an end-to-end calibration run in the '
        'latency table (<code>archspec latency build-table CONFIG --calibrate</code> measures the base and '
        'candidates near it).</p>' if has_latency else "")
    latency_plot = '<div class="plot" id="plot-latency"></div>' if has_latency or data.measured else ""
    return (f'<section id="plots"><h2>Progress and Pareto fronts</h2>'
            f'<p class="note">Hover a point for the candidate; click it to see its YAML below the plots.</p>'
            f'<div class="plot" id="plot-progress"></div>'
            f'<div class="plot" id="plot-flops"></div>{latency_plot}{latency_note}{measured_note}'
            f'<div id="yaml-panel"><h3 id="yaml-title">Click a point or a table row</h3>'
            f'<pre id="yaml-text"></pre></div></section>')


def _tables_section(data: RunData, top: list[Trial], infeasible: list[Trial], all_infeasible: list[Trial]) -> str:
    measured = data.measured

    def latency(t: Trial) -> str:
        value = t.metrics.get("latency_ms")
        return "–" if value is None else f"{value:.2f}"

    head = ("<tr><th>#</th><th>trial</th><th>fingerprint</th><th>score</th><th>params</th><th>FLOPs</th>"
            "<th>latency ms (pred.)</th><th>latency ms (meas.)</th></tr>")
    rows = "".join(
        f'<tr data-trial="{t.id}"><td>{rank}</td><td>{t.id}</td><td><code>{escape(t.fingerprint or "")}</code></td>'
        f"<td>{t.score:.3f}</td><td>{_fmt_count(t.metrics.get('params'))}</td>"
        f"<td>{_fmt_count(t.metrics.get('flops'))}</td><td>{latency(t)}</td>"
        f"<td>{'–' if t.fingerprint not in measured else f'{measured[t.fingerprint]:.2f}'}</td></tr>"
        for rank, t in enumerate(top, 1))
    top_table = (f'<h3>Top {len(top)} feasible candidates</h3><table class="grid" id="top-table">{head}{rows}</table>'
                 if top else "<p>No feasible candidate.</p>")
    broken: dict[str, int] = {}
    for t in all_infeasible:
        key = (t.reason or "?").split(":", 1)[0]
        broken[key] = broken.get(key, 0) + 1
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(broken.items(), key=lambda kv: -kv[1]))
    infeasible_rows = "".join(
        f'<tr data-trial="{t.id}"><td>{t.id}</td><td><code>{escape(t.fingerprint or "")}</code></td>'
        f"<td>{_fmt_count(t.metrics.get('params'))}</td><td>{_fmt_count(t.metrics.get('flops'))}</td>"
        f"<td>{latency(t)}</td><td class=\"broken\">{escape(t.reason or '')}</td></tr>" for t in infeasible)
    infeasible_table = (
        f'<h3>Infeasible candidates: {len(all_infeasible)} ({escape(summary)})</h3>'
        f'<p class="note">The {len(infeasible)} nearest misses (smallest overshoot of the budget they broke).</p>'
        f'<table class="grid" id="infeasible-table"><tr><th>trial</th><th>fingerprint</th><th>params</th>'
        f'<th>FLOPs</th><th>latency ms (pred.)</th><th>budget broken</th></tr>{infeasible_rows}</table>'
        if all_infeasible else "<h3>Infeasible candidates: none</h3>")
    rejected: dict[str, int] = {}
    for t in data.trials:
        if t.status == "rejected":
            rejected[t.reason or "?"] = rejected.get(t.reason or "?", 0) + 1
    rejected_rows = "".join(f"<tr><td>{n}</td><td>{escape(reason)}</td></tr>"
                            for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1])[:10])
    rejected_table = (f'<details><summary>Rejected proposals (rules of the space): {sum(rejected.values())}'
                      f'</summary><table class="grid"><tr><th>count</th><th>reason</th></tr>{rejected_rows}'
                      f'</table></details>' if rejected else "")
    return f'<section id="tables"><h2>Candidates</h2>{top_table}{infeasible_table}{rejected_table}</section>'


def _best_spec(data: RunData, best: Trial | None):
    return data.space.decode(best.genotype) if best is not None else None


def _architecture_section(data: RunData, best: Trial | None) -> str:
    from archspec.compiler import lower
    from archspec.compiler.drawing import to_svg

    base_svg = to_svg(lower(data.base), title=f"base: {data.base.name}", ids="base")
    if best is None:
        return (f'<section id="architecture"><h2>Architecture</h2><p>No feasible candidate; the base:</p>'
                f'<div class="drawing">{base_svg}</div></section>')
    best_svg = to_svg(lower(_best_spec(data, best)), title=f"best: trial {best.id} ({best.fingerprint})", ids="best")
    return (f'<section id="architecture"><h2>Best architecture</h2><div class="drawing">{best_svg}</div>'
            f'<details><summary>the base, for comparison</summary><div class="drawing">{base_svg}</div></details>'
            f'</section>')


def _erf_section(data: RunData, best: Trial | None, options: ReportOptions) -> str:
    if not options.erf:
        return ('<section id="erf"><h2>Effective receptive fields</h2><p class="note">Not computed (--no-erf).'
                '</p></section>')
    if best is None:
        return ""
    from archspec.compiler.erf import ERF_COLUMNS, effective_receptive_fields, erf_table, save_heatmap
    from archspec.compiler.graph import GraphError

    size = (options.erf_size, options.erf_size)
    try:
        erfs = effective_receptive_fields(_best_spec(data, best), size, count=options.erf_images, seed=0)
    except (ValueError, RuntimeError, GraphError) as exc:  # e.g. an input too small for the deepest level
        return (f'<section id="erf"><h2>Effective receptive fields</h2><p class="warn">Not computed at '
                f'{size[0]}x{size[1]}: {escape(str(exc))}</p></section>')
    head = "".join(f"<th>{escape(c)}</th>" for c in ERF_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in erf_table(erfs))
    images = []
    for erf in erfs:
        buffer = io.BytesIO()
        save_heatmap(erf, buffer)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        images.append(f'<figure><img alt="ERF heat map of {escape(erf.name)}" src="data:image/png;base64,{encoded}">'
                      f'<figcaption>{escape(erf.name)}</figcaption></figure>')
    return (f'<section id="erf"><h2>Effective receptive fields of the best candidate</h2>'
            f'<p class="note">Gradient of each output\'s centre unit with respect to the input (Luo et al., NeurIPS '
            f'2016), averaged over {erfs[0].images} random images at {size[0]}x{size[1]}, random weights (seed 0). '
            f'r50/r90: half-side of the square around the field\'s centre holding 50%/90% of the gradient mass; '
            f'anchors: RetinaNet\'s 4·2<sup>k</sup> at scales 2<sup>i/3</sup>. The field is clipped by the small '
            f'image; <code>archspec erf best.yaml --input-size S</code> measures at the search\'s size.</p>'
            f'<table class="grid" id="erf-table"><tr>{head}</tr>{rows}</table>'
            f'<div class="heatmaps">{"".join(images)}</div></section>')


CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1280px;padding:12px 20px;color:#212121}
h1{font-size:22px;margin:6px 0}h2{font-size:18px;border-bottom:1px solid #cfd8dc;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px}
.chip{display:inline-block;border:2px solid;border-radius:12px;padding:1px 9px;margin:0 4px;font-size:13px}
.note{color:#546e7a;font-size:13px}.warn{color:#c62828}
.row{display:flex;gap:32px;flex-wrap:wrap}
table.kv th{text-align:left;padding:2px 12px 2px 0;font-weight:normal;color:#546e7a}
table.grid{border-collapse:collapse;font-size:13px}
table.grid th,table.grid td{border:1px solid #cfd8dc;padding:3px 8px;text-align:right}
table.grid td.broken{text-align:left;color:#c62828}
table.grid tr[data-trial]{cursor:pointer}table.grid tr[data-trial]:hover{background:#e3f2fd}
.plot{width:100%;height:430px;margin:8px 0}
#yaml-panel{border:1px solid #cfd8dc;border-radius:6px;padding:4px 12px;background:#fafafa}
#yaml-text{max-height:420px;overflow:auto;font-size:12px}
.drawing{overflow-x:auto;border:1px solid #eceff1;border-radius:6px;margin:8px 0}
.heatmaps{display:flex;flex-wrap:wrap;gap:8px}.heatmaps figure{margin:0}.heatmaps img{width:300px}
pre{font-size:12px;background:#fafafa;padding:8px;overflow:auto}
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:; font-src data:">
<title>{title}</title><style>{css}</style>
<script>{plotly}</script>
</head><body>
{body}
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body></html>
"""

SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const T = D.trials, n = T.id.length;
  const fmt = (v, d) => (v === null || v === undefined) ? "–" : Number(v).toFixed(d);
  const big = v => v === null ? "–" : v >= 1e9 ? (v / 1e9).toFixed(2) + " G" : v >= 1e6 ? (v / 1e6).toFixed(2) + " M" : String(v);
  function hover(i) {
    return "trial " + T.id[i] + " · " + (T.fingerprint[i] || "") + "<br>score " + fmt(T.score[i], 3) +
      "<br>params " + big(T.params[i]) + " · FLOPs " + big(T.flops[i]) +
      (T.latency[i] !== null ? "<br>latency " + fmt(T.latency[i], 2) + " ms (pred.)" : "") +
      (T.measured[i] !== null ? " · " + fmt(T.measured[i], 2) + " ms (meas.)" : "") +
      (T.reason[i] ? "<br>" + T.reason[i] : "");
  }
  function thin(idx) {
    if (idx.length <= D.maxPoints) return idx;
    const step = Math.ceil(idx.length / D.maxPoints);
    return idx.filter((_, k) => k % step === 0);
  }
  function scatter(idx, x, name, extra) {
    return Object.assign({type: "scatter", mode: "markers", name: name, x: idx.map(x), y: idx.map(i => T.score[i]),
      text: idx.map(hover), hoverinfo: "text", customdata: idx.map(i => T.id[i])}, extra || {});
  }
  const feasible = [];
  for (let i = 0; i < n; i++) if (T.status[i] === 0) feasible.push(i);
  const layoutBase = {margin: {l: 60, r: 20, t: 36, b: 50}, hovermode: "closest", legend: {orientation: "h", y: -0.18}};
  const plots = [];
  // progress: score per trial with the running best, and the cumulative count of every status
  const best = [], bestX = [];
  let running = null;
  for (let i = 0; i < n; i++) {
    if (T.status[i] === 0 && (running === null || T.score[i] > running)) { running = T.score[i]; bestX.push(T.id[i]); best.push(running); }
  }
  if (running !== null) { bestX.push(T.id[n - 1]); best.push(running); }
  const counts = D.statuses.map(() => 0), cum = D.statuses.map(() => []), cumX = [];
  const every = Math.max(1, Math.ceil(n / 2000));
  for (let i = 0; i < n; i++) {
    counts[T.status[i]]++;
    if (i % every === 0 || i === n - 1) { cumX.push(T.id[i]); D.statuses.forEach((s, k) => cum[k].push(counts[k])); }
  }
  // the best-so-far line under the points, so every point stays visible and hoverable
  const progress = [{type: "scatter", mode: "lines", line: {shape: "hv", color: "#ef6c00", width: 2}, name: "best so far", x: bestX, y: best, hoverinfo: "x+y"},
    scatter(thin(feasible), i => T.id[i], "feasible score", {marker: {size: 7, color: D.colors.feasible, opacity: 0.7}})];
  D.statuses.forEach((s, k) => progress.push({type: "scatter", mode: "lines", name: s + " (count)", x: cumX, y: cum[k],
    xaxis: "x2", yaxis: "y2", line: {color: D.colors[s], width: 1.5}, hoverinfo: "x+y+name"}));
  plots.push(["plot-progress", progress, Object.assign({}, layoutBase, {title: {text: "Progress over trials"},
    grid: {rows: 2, columns: 1, pattern: "independent", roworder: "top to bottom"},
    xaxis: {matches: "x2"}, yaxis: {title: {text: "score"}, domain: [0.42, 1]},
    xaxis2: {title: {text: "trial"}}, yaxis2: {title: {text: "trials so far"}, domain: [0, 0.3]}})]);
  function frontPlot(div, key, x, label, title, measuredToo, what) {
    const has = feasible.filter(i => x(i) !== null);
    const f = D.fronts[key].map(id => T.id.indexOf(id));
    const data = [scatter(thin(has), x, what, {marker: {size: 5, color: "#90a4ae", opacity: 0.55}}),
      scatter(f, x, what === "feasible" ? "Pareto front" : what + " front", {mode: "lines+markers", line: {color: "#d32f2f", shape: "hv"}, marker: {size: 8, color: "#d32f2f"}})];
    if (measuredToo) {
      const m = feasible.filter(i => T.measured[i] !== null);
      const mf = D.fronts.measured.map(id => T.id.indexOf(id));
      data.push(scatter(m, i => T.measured[i], "measured", {marker: {size: 9, symbol: "diamond", color: "#1565c0"}}));
      data.push(scatter(mf, i => T.measured[i], "measured front", {mode: "lines", line: {color: "#1565c0", dash: "dot", shape: "hv"}}));
    }
    if (D.best !== null) {
      const b = T.id.indexOf(D.best);
      if (x(b) !== null) data.push(scatter([b], x, "best", {marker: {size: 15, symbol: "star", color: "#ffb300", line: {color: "#000", width: 1}}}));
    }
    plots.push([div, data, Object.assign({}, layoutBase, {title: {text: title}, xaxis: {title: {text: label}}, yaxis: {title: {text: "score"}}})]);
  }
  frontPlot("plot-flops", "flops", i => T.flops[i] === null ? null : T.flops[i] / 1e9, "GFLOPs (2 x MACs)", "Score against FLOPs", false, "feasible");
  if (document.getElementById("plot-latency"))
    frontPlot("plot-latency", "latency", i => T.latency[i], "latency (ms)", "Score against latency: " +
      [D.fronts.latency.length ? "predicted" : "", D.fronts.measured.length ? "measured" : ""].filter(Boolean).join(" and "),
      D.fronts.measured.length > 0, "predicted");
  function show(id) {
    const yaml = D.yaml[String(id)];
    const i = T.id.indexOf(id);
    document.getElementById("yaml-title").textContent = "trial " + id + " (" + (T.fingerprint[i] || "no fingerprint") + ", " +
      ["feasible", "infeasible", "rejected", "duplicate"][T.status[i]] + ")";
    document.getElementById("yaml-text").textContent = yaml !== undefined ? yaml :
      "# This candidate's YAML is not embedded (the page keeps the best ones, the fronts and the tables).\n" +
      "# Its genotype is in trials.csv (trial " + id + ").";
    document.getElementById("yaml-panel").scrollIntoView({block: "nearest"});
  }
  window.showTrial = show;
  document.querySelectorAll("[data-trial]").forEach(el => el.addEventListener("click", ev => {
    ev.preventDefault(); show(Number(el.getAttribute("data-trial")));
  }));
  const config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"]};
  window.reportReady = Promise.all(plots.map(([div, data, layout]) =>
    Plotly.newPlot(div, data, layout, config).then(el => {
      el.on("plotly_click", ev => { if (ev.points.length && ev.points[0].customdata !== undefined) show(ev.points[0].customdata); });
      return el;
    }))).then(() => { document.body.setAttribute("data-ready", "yes"); if (D.best !== null) show(D.best); return plots.length; });
})();
"""


__all__ = ["ReportOptions", "RunData", "config_meta", "front", "load_run", "render_page", "write_report"]
