"""The search report page (search/report.py, `archspec report`) and the readable drawings
(compiler/drawing.py, `archspec graph --format svg|html`); the page is checked in a real headless
Chromium (tests/browser.py)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archspec
from archspec.compiler import lower
from archspec.compiler.drawing import layout, to_svg
from archspec.search.report import ReportOptions, front, load_run, write_report
from archspec.search.run import run_search
from tests.browser import Browser, find_chromium
from tests.conftest import ROOT, cli_in_process

SEARCH_CONFIGS = sorted((ROOT / "examples" / "search").glob("*.yaml"))
# every shipped search config but those scored by a trained supernet (they need `archspec supernet
# train` first; tests/test_supernet.py runs that flow, report page included) or by proxy training
# (they need a data set and train every candidate; tests/test_proxy_train.py runs that flow)
SHIPPED = [p for p in SEARCH_CONFIGS if "type: search" in p.read_text()
           and not any(f"type: {kind}" in p.read_text() for kind in ("supernet", "proxy_train"))]


def cli(*args: str) -> subprocess.CompletedProcess:
    """`archspec ARGS` through the CLI's entry point, in this process (tests/test_cli.py runs it as a process)."""
    return cli_in_process(*args)


def page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1).replace("<\\/", "</"))


# -- the page from every shipped search config ------------------------------------------------------
def test_every_shipped_search_config_is_covered():
    names = {p.stem for p in SHIPPED}
    assert {"crnas_resnet50", "spinenet49_permute", "detnas_300m", "maedet_r50_budget"} <= names


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_search_writes_a_report_for_every_shipped_config(tmp_path, config):
    # The front's end-to-end times are planted within any budget: on a host with slow phases a real
    # timing of maedet_r50_budget's base (22 ms) came out over its 40 ms, and the best moved.
    result = run_search(config, tmp_path / "run", max_trials=6, progress=False, report=ReportOptions(),  # with ERF
                        measure_latency=lambda spec, size, context: 1.0)
    html = (tmp_path / "run" / "report.html").read_text()
    data = page_data(html)
    store = sqlite3.connect(tmp_path / "run" / "trials.sqlite")
    rows = store.execute("SELECT id, status, fingerprint, score FROM trials ORDER BY id").fetchall()
    store.close()
    # the page holds every trial as stored
    assert data["trials"]["id"] == [r[0] for r in rows]
    assert [data["statuses"][s] for s in data["trials"]["status"]] == [r[1] for r in rows]
    assert data["trials"]["fingerprint"] == [r[2] for r in rows]
    # self-contained: plotly inlined, no external reference (scripts, styles, images, fonts)
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs() in html
    ours = html.replace(get_plotlyjs(), "")  # the bundle's own strings name plotly.com (never fetched)
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', ours) and "<link" not in ours
    assert 'id="plot-progress"' in html and 'id="plot-flops"' in html
    feasible = [r for r in rows if r[1] == "feasible"]
    if feasible:
        best = max(feasible, key=lambda r: (r[3], -r[0]))
        assert data["best"] == best[0] == int(re.search(r"trial (\d+)", (tmp_path / "run" / "best.yaml")
                                                        .read_text()).group(1))
        # the best candidate's YAML is the spec of best.yaml (same architecture)
        shown = archspec.loads(data["yaml"][str(best[0])])
        assert archspec.fingerprint(shown) == best[2] == archspec.fingerprint(result.best_spec)
        assert 'class="archspec-drawing"' in html and 'id="erf-table"' in html
        assert ours.count("data:image/png;base64,") == len(lower(result.best_spec).outputs)  # ERF heat maps
    else:
        assert "No feasible candidate" in html


def test_report_command_rebuilds_the_page_from_the_run_folder(tmp_path):
    config = ROOT / "examples" / "search" / "detnas_300m.yaml"
    run = tmp_path / "run"
    run_search(config, run, max_trials=8, progress=False)
    out = tmp_path / "again.html"
    result = cli("report", str(run), "-o", str(out), "--no-erf", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    html = out.read_text()
    assert "Not computed (--no-erf)" in html
    top_rows = re.findall(r'<tr data-trial="(\d+)">', html.split('id="top-table"')[1].split("</table>")[0])
    data = page_data(html)
    feasible = sorted((s, -i) for i, s, st in zip(data["trials"]["id"], data["trials"]["score"],
                                                   data["trials"]["status"]) if st == 0)
    assert [int(t) for t in top_rows] == [-i for _, i in sorted(feasible, reverse=True)[:3]]
    # an older run whose store lacks the config needs --config; without it, one line and exit 2
    db = sqlite3.connect(run / "trials.sqlite")
    with db:
        db.execute("DELETE FROM meta WHERE key = 'config'")
    db.close()
    missing = cli("report", str(run), "-o", str(out))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: {run / 'trials.sqlite'}: the run does not record its config (an older run); pass --config "
        f"CONFIG.yaml"]
    given = cli("report", str(run), "-o", str(out), "--no-erf", "--config", str(config))
    assert given.returncode == 0, given.stderr
    nothing = cli("report", str(tmp_path / "nowhere"))
    assert nothing.returncode == 2 and "no search run here" in nothing.stderr
    assert len(nothing.stderr.strip().splitlines()) == 1


def test_infeasible_candidates_name_the_budget_they_broke_and_measured_latency_is_shown(tmp_path):
    # SpineNet's FLOPs budget is the base's own: about one permutation in five breaks it
    config = ROOT / "examples" / "search" / "spinenet49_permute.yaml"
    run = tmp_path / "run"
    run_search(config, run, max_trials=12, progress=False)
    size = 640
    data = load_run(run)
    infeasible = [t for t in data.trials if t.status == "infeasible"]
    assert infeasible, "the budget should reject some candidates"
    # a calibration run of one feasible candidate in the run's latency table: its measured latency shows
    feasible = [t for t in data.trials if t.status == "feasible"]
    from archspec.compiler.latency import CalibrationRun, Context, LatencyTable

    other = next(t for t in feasible if t.fingerprint != feasible[0].fingerprint)
    with LatencyTable(run / "latency.sqlite") as table:
        table.put_calibration(Context("m", "ort", "cpu", 1),
                              CalibrationRun(feasible[0].fingerprint, size, size, "x", 12.5, {}))
        # one timed by the CPU-time clock (a latency-budgeted search's front, at 1 thread) shows too
        table.put_calibration(Context("m", "ort", "cpu", 1, "cpu"), CalibrationRun(other.fingerprint, size, size,
                                                                                   "y", 7.5, {}))
    html = write_report(run, tmp_path / "page.html", options=ReportOptions(erf=False)).read_text()
    section = html.split('id="infeasible-table"')[1].split("</table>")[0]
    for trial in infeasible[:20]:
        assert f'data-trial="{trial.id}"' in section
        assert trial.reason.startswith("max_flops: ") and trial.reason in section.replace("&gt;", ">")
    page = page_data(html)
    index = page["trials"]["id"].index(feasible[0].id)
    assert page["trials"]["measured"][index] == 12.5
    assert page["trials"]["measured"][page["trials"]["id"].index(other.id)] == 7.5
    twins = [fp in (feasible[0].fingerprint, other.fingerprint) for fp in page["trials"]["fingerprint"]]
    assert [m is not None for m in page["trials"]["measured"]] == twins
    assert 'id="plot-latency"' in html  # measured latencies get a plot even without a latency budget


def test_pareto_front_helper():
    points = [(1.0, 5.0, 0), (2.0, 4.0, 1), (2.0, 7.0, 2), (3.0, 6.0, 3), (4.0, 9.0, 4), (0.5, 1.0, 5)]
    assert front(points) == [5, 0, 2, 4]
    assert front([]) == []


def test_the_pages_yaml_is_the_spec_loaders_text():
    """The page's specs go through libyaml's emitter when PyYAML has it (search/report.py): the
    text is archspec.dumps's for every shipped spec and candidates of the MAE-DET space, and the
    same document where libyaml wraps a long quoted string elsewhere."""
    import random

    from archspec.search.report import _yaml_text
    from archspec.search.space import Rejected, make_space
    from archspec.search_config import load_search_config

    specs = []
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        try:
            specs.append(archspec.load(path))
        except archspec.SpecError:  # search configs, supernet configs
            continue
    config, base = load_search_config(ROOT / "examples" / "search" / "maedet_r50_budget.yaml")
    space, rng = make_space(config.space, base), random.Random(0)
    while len(specs) < 140:
        try:
            specs.append(space.decode(space.mutate(space.base, rng, rng.randint(2, 12))))
        except Rejected:
            continue
    import yaml

    for spec in specs:
        assert _yaml_text(spec) == archspec.dumps(spec), spec.name
    # a long quoted string may wrap elsewhere: the same document all the same
    odd = specs[0].model_copy(update={"description": "a description: with 'quotes', unicode (×) and a tail " * 3})
    assert yaml.safe_load(_yaml_text(odd)) == yaml.safe_load(archspec.dumps(odd)) == archspec.to_data(odd)


# -- drawings -------------------------------------------------------------------------------------
def test_drawing_rows_kinds_dilations_and_resampling():
    spec = archspec.load(ROOT / "examples" / "backbones" / "cr_resnet50.yaml")
    boxes, edges = layout(lower(spec))
    stages = [b for b in boxes if b.kind == "bottleneck"]
    # one collapsed box per stage, on its level's row, with the stage's dilations and width
    assert [(b.level, len(b.names), b.channels, b.dilations) for b in stages] == [
        (2, 2, 256, [1, 1]), (3, 4, 512, [1, 1, 2, 1]), (4, 6, 1024, [1, 2, 1, 3, 2, 3]), (5, 4, 2048, [1, 2, 3, 3])]
    assert [b.outputs for b in stages] == [["C2"], ["C3"], ["C4"], ["C5"]]
    svg = to_svg(lower(spec))
    assert "d 1,2,1,3,2,3" in svg and "bottleneck ×6" in svg and "1024ch · k3" in svg and "64ch · k7" in svg
    assert svg.count('class="edge edge-down"') == 5  # stem conv, pool, stages 1..3
    assert 'class="edge edge-up"' not in svg


def test_drawing_of_a_scale_permuted_graph_marks_up_and_down_sampling():
    spec = archspec.load(ROOT / "examples" / "backbones" / "spinenet49.yaml")
    graph = lower(spec)
    boxes, edges = layout(graph)
    column = {name: box.column for box in boxes for name in box.names}
    for u, v in edges:  # every edge points right
        assert boxes[u].column < boxes[v].column
    up = sum(boxes[v].level < boxes[u].level for u, v in edges)
    down = sum(boxes[v].level > boxes[u].level for u, v in edges)
    svg = to_svg(graph)
    assert svg.count('class="edge edge-up"') == up > 0 and svg.count('class="edge edge-down"') == down > 0
    assert {"basic", "bottleneck"} <= {b.kind for b in boxes}
    assert "block-basic" in svg and "block-bottleneck" in svg
    assert column["block2"] < column["block4"]


def test_graph_command_svg_and_html(tmp_path):
    spec = str(ROOT / "examples" / "backbones" / "spinenet49s.yaml")
    svg = cli("graph", spec, "--format", "svg")
    assert svg.returncode == 0 and svg.stdout.startswith("<svg") and svg.stdout.rstrip().endswith("</svg>")
    import xml.etree.ElementTree as ElementTree

    ElementTree.fromstring(svg.stdout)  # well-formed
    html = cli("graph", spec, "--format", "html", "-o", str(tmp_path / "g.html"))
    assert html.returncode == 0 and (tmp_path / "g.html").read_text().startswith("<!DOCTYPE html>")


# -- in a real browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed here (apt-get install -y chromium); CI runs this test")
    return path


@pytest.mark.xdist_group("chromium")  # one browser at a time under xdist
def test_report_page_in_headless_chromium(tmp_path, chromium):
    run = tmp_path / "run"
    run_search(ROOT / "examples" / "search" / "spinenet49_permute.yaml", run, max_trials=10, progress=False,
               report=ReportOptions())
    page = run / "report.html"
    data = page_data(page.read_text())
    with Browser(chromium) as browser:
        browser.open(page.resolve().as_uri())
        assert browser.evaluate("window.reportReady", await_promise=True) == 2  # progress and FLOPs plots
        assert browser.evaluate("document.body.getAttribute('data-ready')") == "yes"
        plots = browser.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => "
                                 "[d.id, d.querySelectorAll('svg.main-svg').length, d.querySelectorAll('.point').length])")
        assert {p[0] for p in plots} == {"plot-progress", "plot-flops"}
        assert all(svgs > 0 and points > 0 for _, svgs, points in plots), plots
        # hovering a front point shows the candidate
        browser.evaluate("Plotly.Fx.hover('plot-flops', [{curveNumber: 1, pointNumber: 0}])")
        hover = browser.evaluate("document.querySelector('#plot-flops .hoverlayer').textContent")
        first_front = data["fronts"]["flops"][0]
        assert f"trial {first_front}" in hover and "score" in hover
        # clicking a point (the event plotly emits) and a table row show the candidate's YAML
        browser.evaluate(f"document.getElementById('plot-flops').emit('plotly_click', "
                         f"{{points: [{{customdata: {first_front}}}]}})")
        assert browser.evaluate("document.getElementById('yaml-text').textContent") == data["yaml"][str(first_front)]
        row = browser.evaluate("(() => { const r = document.querySelector('#top-table tr[data-trial]'); r.click(); "
                               "return Number(r.getAttribute('data-trial')); })()")
        assert browser.evaluate("document.getElementById('yaml-text').textContent") == data["yaml"][str(row)]
        assert browser.evaluate("document.querySelectorAll('svg.archspec-drawing').length") == 2  # best, base
        assert browser.evaluate("Array.from(document.querySelectorAll('#erf img')).every(i => i.naturalWidth > 100)")
        shot = browser.screenshot(tmp_path / "report.png")
        problems, requests = browser.problems(), browser.requests()
    assert problems == []
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests
    _assert_not_blank(shot)


@pytest.mark.xdist_group("chromium")  # one browser at a time under xdist
def test_report_without_feasible_candidates_in_headless_chromium(tmp_path, chromium):
    config = tmp_path / "impossible.yaml"
    text = (ROOT / "examples" / "search" / "detnas_300m.yaml").read_text()
    config.write_text(re.sub(r"max_flops: [0-9.e+-]+", "max_flops: 1.0e+6",
                             text.replace("base: ../backbones/", f"base: {ROOT / 'examples' / 'backbones'}/")))
    run = tmp_path / "run"
    run_search(config, run, max_trials=4, progress=False)
    with Browser(chromium) as browser:
        browser.open((run / "report.html").resolve().as_uri())
        assert browser.evaluate("window.reportReady", await_promise=True) == 2
        assert "No feasible candidate" in browser.evaluate("document.body.textContent")
        shot = browser.screenshot(tmp_path / "empty.png")
        assert browser.problems() == []
    _assert_not_blank(shot)


def _assert_not_blank(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] >= 800 and image.size[1] >= 600
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10, f"{path} looks blank (pixel std {pixels.std():.2f})"
    assert len(np.unique(pixels)) > 50


@pytest.mark.xdist_group("chromium")  # one browser at a time under xdist
def test_the_browser_check_sees_console_errors_exceptions_and_network_requests(tmp_path, chromium):
    """The checks above are only as good as the client: a page that logs an error, throws and
    fetches from the network must be caught by each of them."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><p>bad</p><script>console.error('broken page');"
                    "fetch('http://127.0.0.1:9/never').catch(() => {});"
                    "setTimeout(() => { throw new Error('thrown later'); }, 0);</script></body></html>")
    with Browser(chromium) as browser:
        browser.open(page.resolve().as_uri())
        browser.evaluate("new Promise(done => setTimeout(done, 0))", await_promise=True)  # let the timer fire
        problems, requests = browser.problems(), browser.requests()
    assert any("broken page" in p for p in problems), problems
    assert any("thrown later" in p for p in problems), problems
    assert "http://127.0.0.1:9/never" in requests
