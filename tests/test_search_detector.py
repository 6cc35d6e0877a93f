"""Search to detector in one flow (issue 19, parts 3 and 4): best.yaml as a complete detector when
the search config has a `detector:` template, the Pareto front measured end to end under a latency
budget (predicted and measured side by side in pareto.csv, the best chosen by measured latency),
report.txt's closing commands, and the whole flow search -> train -> export -> detect.

Nothing here depends on timing: kernels are "measured" by a deterministic stand-in, and the front's
end-to-end latencies are planted through run_search's `measure_latency` seam."""

from __future__ import annotations

import csv
import shlex

import pytest

import archspec
from archspec.search.run import run_search
from tests.conftest import ROOT
from tests.test_search import fake_kernel_measurement

EXAMPLE = ROOT / "examples" / "search" / "maedet_fcos_budget.yaml"
LIMIT = 3.0
"""The example's max_latency_ms."""
TRIALS = 40


@pytest.fixture(autouse=True)
def planted_kernels(monkeypatch):
    """Kernel latencies from a formula (the search's predicted latency is then exact), not timing."""
    import archspec.compiler.latency.predictor as predictor

    monkeypatch.setattr(predictor, "measure_kernel", fake_kernel_measurement([]))


def table(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def front_of(trials: list[dict]) -> list[dict]:
    """The Pareto front computed here from trials.csv: feasible trials that no other feasible trial
    beats on score without more FLOPs (ties: the lower FLOPs, then the earlier trial, stays)."""
    feasible = [t for t in trials if t["status"] == "feasible"]
    front, best = [], None
    for t in sorted(feasible, key=lambda t: (float(t["flops"]), -float(t["score"]), int(t["id"]))):
        if best is None or float(t["score"]) > best:
            front.append(t)
            best = float(t["score"])
    return front


class Planted:
    """A measuring function returning planted end-to-end latencies by fingerprint (default: a
    value that fits the budget), counting its calls."""

    def __init__(self, latencies: dict[str, float] | None = None, default: float = LIMIT / 2):
        self.latencies, self.default, self.calls = dict(latencies or {}), default, []

    def __call__(self, spec, size, context) -> float:
        fingerprint = archspec.fingerprint(spec)
        self.calls.append((fingerprint, size))
        return self.latencies.get(fingerprint, self.default)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An unmeasured look at the example's first trials: its trials.csv (the front and scores do
    not depend on the measured latencies, only the choice of the best does)."""
    from _pytest.monkeypatch import MonkeyPatch

    import archspec.compiler.latency.predictor as predictor

    out = tmp_path_factory.mktemp("reference") / "run"
    with MonkeyPatch.context() as patch:
        patch.setattr(predictor, "measure_kernel", fake_kernel_measurement([]))
        run_search(EXAMPLE, out, max_trials=TRIALS, progress=False, measure_latency=Planted())
    trials = table(out / "trials.csv")
    front = front_of(trials)
    assert len(front) >= 3  # enough members for the choice below to mean something
    return trials, front


def test_best_is_the_top_scorer_whose_measured_latency_fits_even_when_predicted_fits(tmp_path, reference):
    trials, front = reference
    by_score = sorted(front, key=lambda t: (-float(t["score"]), int(t["id"])))
    assert all(float(t["latency_ms"]) <= LIMIT for t in front)  # every member's *prediction* fits
    # The two best scorers measure over the budget; the third measures exactly at it (fits).
    planted = {by_score[0]["fingerprint"]: LIMIT * 1.5, by_score[1]["fingerprint"]: LIMIT + 0.01,
               by_score[2]["fingerprint"]: LIMIT}
    measure = Planted(planted)
    result = run_search(EXAMPLE, tmp_path / "run", max_trials=TRIALS, progress=False, measure_latency=measure)
    expected = by_score[2]
    assert result.best_id == int(expected["id"])
    assert result.best_score == pytest.approx(float(expected["score"]), abs=0)
    # Every front member measured once, at the budget's latency input size (the example: 128x128)
    assert sorted(f for f, _ in measure.calls) == sorted(t["fingerprint"] for t in front)
    assert {size for _, size in measure.calls} == {(128, 128)}
    # pareto.csv: the front's backbones, predicted (as trials.csv) and measured side by side
    rows = table(tmp_path / "run" / "pareto.csv")
    assert [r["id"] for r in rows] == [t["id"] for t in front]
    assert list(rows[0])[:9] == ["id", "fingerprint", "params", "macs", "flops", "latency_ms_predicted",
                                 "latency_ms_measured", "score", "fits_budget"]
    for row, trial in zip(rows, front):
        assert row["latency_ms_predicted"] == trial["latency_ms"]
        assert float(row["latency_ms_measured"]) == planted.get(trial["fingerprint"], LIMIT / 2)
        assert row["fits_budget"] == ("yes" if float(row["latency_ms_measured"]) <= LIMIT else "no")
    # best.yaml: the detector template around the chosen backbone
    best = archspec.load(tmp_path / "run" / "best.yaml")
    assert best.type == "detector" and best.num_classes == 3 and best.input_size == 128
    assert archspec.fingerprint(best.backbone) == expected["fingerprint"]
    assert archspec.fingerprint(result.best_spec) == expected["fingerprint"]
    report = (tmp_path / "run" / "report.txt").read_text()
    assert f"best: trial {expected['id']}," in report
    assert f"{len(front) - 2} of {len(front)} within max_latency_ms 3" in report
    assert f"the top score, trial {by_score[0]['id']}" in report and "over the budget" in report
    # The report page, as written by the run and as rebuilt from the store, names the same best
    from archspec.search.report import ReportOptions, write_report

    shown = f'data-trial="{expected["id"]}">trial {expected["id"]}</a>'
    assert shown in (tmp_path / "run" / "report.html").read_text()
    rebuilt = write_report(tmp_path / "run", tmp_path / "rebuilt.html", options=ReportOptions(erf=False))
    assert shown in rebuilt.read_text() and f"measured {LIMIT:.2f} ms" in rebuilt.read_text()


def test_resume_reuses_the_measured_front_and_writes_the_same_outputs(tmp_path, reference):
    _, front = reference
    top = max(front, key=lambda t: (float(t["score"]), -int(t["id"])))
    planted = {top["fingerprint"]: LIMIT * 2}
    first = Planted(planted)
    run_search(EXAMPLE, tmp_path / "run", max_trials=TRIALS, progress=False, measure_latency=first)
    outputs = {name: (tmp_path / "run" / name).read_bytes() for name in ("pareto.csv", "best.yaml", "report.txt")}
    assert len(first.calls) == len(front)
    # Resumed as it is: nothing is measured again, even by a measure that would disagree
    again = Planted(default=LIMIT * 10)
    result = run_search(EXAMPLE, tmp_path / "run", max_trials=TRIALS, resume=True, progress=False,
                        measure_latency=again)
    assert again.calls == []
    assert {name: (tmp_path / "run" / name).read_bytes() for name in outputs} == outputs
    assert result.front_measured[int(top["id"])] == LIMIT * 2
    # Resumed to more trials: only members never measured before are measured
    more = Planted(planted)
    result = run_search(EXAMPLE, tmp_path / "run", max_trials=TRIALS + 20, resume=True, progress=False,
                        measure_latency=more)
    new_front = front_of(table(tmp_path / "run" / "trials.csv"))
    old = {t["fingerprint"] for t in front}
    assert sorted(f for f, _ in more.calls) == sorted(t["fingerprint"] for t in new_front
                                                      if t["fingerprint"] not in old)
    assert sorted(result.front_measured) == sorted(int(t["id"]) for t in new_front)


def test_every_measurement_over_the_budget_leaves_no_best(tmp_path):
    out = tmp_path / "run"
    result = run_search(EXAMPLE, out, max_trials=TRIALS, progress=False, measure_latency=Planted(default=LIMIT * 4))
    assert result.feasible > 0 and result.best_spec is None and result.best_id is None
    assert not (out / "best.yaml").exists()
    report = (out / "report.txt").read_text()
    assert "no candidate: no front member's measured latency is within max_latency_ms 3" in report
    assert "0 of" in report and "best.yaml is not written" in report and "--resume" in report
    assert all(r["fits_budget"] == "no" for r in table(out / "pareto.csv"))
    assert "No candidate: no member of the Pareto front has a measured latency" in (out / "report.html").read_text()


def test_without_a_latency_budget_nothing_is_measured_and_best_is_the_top_score(tmp_path):
    def refuse(*_):
        raise AssertionError("measured without a latency budget")

    out = tmp_path / "run"
    result = run_search(EXAMPLE, out, max_trials=20, progress=False, measure_latency=refuse,
                        overrides=["budgets.max_latency_ms=null"])
    trials = table(out / "trials.csv")
    top = max((t for t in trials if t["status"] == "feasible"), key=lambda t: (float(t["score"]), -int(t["id"])))
    assert result.best_id == int(top["id"])
    assert list(table(out / "pareto.csv")[0]) == ["id", "fingerprint", "params", "macs", "flops", "latency_ms",
                                                   "score"]
    assert archspec.fingerprint(archspec.load(out / "best.yaml").backbone) == top["fingerprint"]


@pytest.mark.parametrize("table, options", [("machine", "--threads 1"), ("run", "--threads 1 --table latency.sqlite")])
def test_a_backbone_search_keeps_a_backbone_best_and_says_how_to_get_a_detector(tmp_path, monkeypatch, table, options):
    """The example without its detector template (the same base and space): best.yaml is the
    backbone, and report.txt's closing commands run as printed in the run folder. The latency
    command names the context the run's kernels were measured in (1 thread) and the table they
    are in: none for the machine's table (the example's), which is the command's default."""
    import yaml
    from click.testing import CliRunner

    from archspec.cli import cli

    data = yaml.safe_load(EXAMPLE.read_text())
    del data["detector"]
    data["budgets"]["latency_table"] = table
    config = tmp_path / "backbone.yaml"
    config.write_text(yaml.safe_dump(data))
    run_search(config, tmp_path / "run", max_trials=10, progress=False, measure_latency=Planted())
    best = archspec.load(tmp_path / "run" / "best.yaml")
    assert best.type == "staged" and best.name == "search_best"
    report = (tmp_path / "run" / "report.txt").read_text()
    commands = [line.strip() for line in report.splitlines() if line.startswith("  archspec ")]
    assert [shlex.split(c)[1] for c in commands] == ["summary", "export", "latency"]
    assert "--input-size 128" in commands[0]
    assert commands[2] == f"archspec latency predict best.yaml --input-size 128 {options}"
    assert "add a `detector:` template" in report
    monkeypatch.chdir(tmp_path / "run")
    for command in commands:
        done = CliRunner().invoke(cli, shlex.split(command)[1:])
        assert done.exit_code == 0, (command, done.output)
    # best.yaml's kernels are all in the run's design sets: found in that table and context
    assert "(7 kernels: 7 measured, 0 predicted" in done.output and "ort/cpu/1 threads, cpu clock" in done.output


def test_search_to_detector_runs_the_report_commands_end_to_end(tmp_path, monkeypatch):
    """The README's flow: search with the shipped example (a detector template and a latency
    budget), then the commands report.txt ends with, as printed, in the run folder: synthetic data,
    validate, train best.yaml, eval, export with the trained weights, detect (only the data and the
    schedule made small). The search folder stays resumable with their outputs in it."""
    from click.testing import CliRunner

    from archspec.cli import cli

    out = tmp_path / "run"
    runner = CliRunner()
    # Real end-to-end measurement of the front here (ONNX Runtime), under a budget nothing misses.
    search = ["search", str(EXAMPLE), "--out", str(out), "--quiet", "--max-trials", "12",
              "--set", "budgets.max_latency_ms=1000"]
    searched = runner.invoke(cli, search)
    assert searched.exit_code == 0, searched.output
    rows = table(out / "pareto.csv")
    assert rows and all(float(r["latency_ms_measured"]) > 0 and r["fits_budget"] == "yes" for r in rows)
    report = (out / "report.txt").read_text()
    assert str(tmp_path) not in report  # the same report wherever the run folder lies
    commands = [line.split("#")[0].strip() for line in report.splitlines() if line.startswith("  archspec ")]
    verbs = [shlex.split(c)[1] for c in commands]
    assert verbs == ["data", "validate", "train", "eval", "export", "detect"]
    monkeypatch.chdir(out)
    small = {"data": ["--train", "8", "--val", "4"], "train": ["--epochs", "1", "--batch-size", "4",
                                                              "--max-steps-per-epoch", "2"]}
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] == "train":
            argv = [a for a in argv if a not in ("--epochs", "12")]
        done = runner.invoke(cli, argv + small.get(argv[0], []))
        assert done.exit_code == 0, (command, done.output)
    assert (out / "next" / "train" / "best.pt").is_file() and (out / "next" / "best.onnx").is_file()
    assert (out / "next" / "detections" / "detections.json").is_file()
    resumed = runner.invoke(cli, search + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "report.txt").read_text() == report


def test_an_interrupted_measurement_resumes_with_the_members_not_yet_measured(tmp_path, reference):
    """Each measurement is committed as it is taken: a run stopped while measuring its front (here
    by Ctrl-C in the third measurement) measures only the rest when resumed, and ends as an
    uninterrupted run with the same measurements does."""
    _, front = reference
    planted = {t["fingerprint"]: LIMIT / 3 + 0.01 * i for i, t in enumerate(front)}

    class Interrupted(Planted):
        def __call__(self, spec, size, context):
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return super().__call__(spec, size, context)

    stopped = Interrupted(planted)
    with pytest.raises(KeyboardInterrupt):
        run_search(EXAMPLE, tmp_path / "stopped", max_trials=TRIALS, progress=False, measure_latency=stopped)
    rest = Planted(planted)
    run_search(EXAMPLE, tmp_path / "stopped", max_trials=TRIALS, resume=True, progress=False, measure_latency=rest)
    first_two = [f for f, _ in stopped.calls[:2]]
    assert sorted(f for f, _ in rest.calls) == sorted(t["fingerprint"] for t in front if t["fingerprint"] not in first_two)
    run_search(EXAMPLE, tmp_path / "whole", max_trials=TRIALS, progress=False, measure_latency=Planted(planted))
    for name in ("pareto.csv", "best.yaml", "report.txt"):
        assert (tmp_path / "stopped" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
