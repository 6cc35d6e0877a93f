"""benchmarks/proxy_fidelity.py in miniature (2 candidates, 1 seed, one step per training on
64-pixel images): the table, CSVs and scatter plots appear, and a run interrupted after a fixed
number of trainings resumes without retraining them and ends with the same numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location("proxy_fidelity", ROOT / "benchmarks" / "proxy_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["proxy_fidelity"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


@pytest.fixture(scope="module")
def finished(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pf") / "run"
    bench.main(["--out", str(out), "--mini", "--threads", "1"])
    return out


def rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_mini_run_writes_the_table_csvs_and_plots(bench, finished):
    results = rows(finished / "results.csv")
    assert [r["name"] for r in results] == ["resnet18", "cand00", "cand01"]
    for r in results:
        assert 0 <= float(r["ap_mean"]) <= 1 and float(r["flops"]) > 0 and float(r["latency_measured"]) > 0
    budget = float(results[0]["flops"])
    assert all(0.6 * budget <= float(r["flops"]) <= budget for r in results[1:])
    correlations = {r["criterion"]: r for r in rows(finished / "correlations.csv")}
    assert list(correlations) == list(bench.CRITERIA)
    assert correlations["supernet"]["n"] == "0"  # no supernet given: skipped, said so
    for name in ("maedet", "maedet_rf", "flops", "params", "latency_pred", "proxy_train"):
        assert correlations[name]["n"] == "3"
        assert (finished / f"scatter_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (finished / "table.md").read_text()
    assert "| criterion | Kendall tau-b | Spearman |" in table and "beats R18?" in table


def test_an_interrupted_run_resumes_without_retraining(bench, finished, tmp_path):
    # the finished run's folder without its trainings and outputs: same data, candidates and
    # measured latencies (measurements are kept for resumes), so the tables must match exactly
    out = tmp_path / "run"
    outputs = {"runs", "table.md", "results.csv", "correlations.csv"}
    shutil.copytree(finished, out, ignore=lambda folder, names: [
        n for n in names if Path(folder) == finished and (n in outputs or n.startswith("scatter_"))])
    with pytest.raises(SystemExit) as stop:
        bench.main(["--out", str(out), "--mini", "--threads", "1", "--stop-after", "2"])
    assert stop.value.code == bench.STOPPED
    done = sorted(p.parent.name for p in (out / "runs").glob("*/result.json"))
    assert len(done) == 2 and not (out / "table.md").exists()
    stamps = {name: (out / "runs" / name / "result.json").stat().st_mtime_ns for name in done}
    bench.main(["--out", str(out), "--mini", "--threads", "1"])
    assert {name: (out / "runs" / name / "result.json").stat().st_mtime_ns for name in done} == stamps
    assert len(list((out / "runs").glob("*/result.json"))) == 6  # 3 backbones x (1 seed + 1 proxy)
    # seeded trainings: the same APs, so the same table and CSVs as the uninterrupted run
    assert (out / "table.md").read_text() == (finished / "table.md").read_text()
    assert (out / "results.csv").read_text() == (finished / "results.csv").read_text()
    assert (out / "correlations.csv").read_text() == (finished / "correlations.csv").read_text()


def test_rank_statistics_match_hand_counts(bench):
    # 5 concordant pairs, 1 discordant: tau = 4/6; rank differences 0,1,1,0: rho = 1 - 6*2/(4*15)
    assert bench.kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert bench.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # a tie in x: 2 concordant pairs, tau-b = 2 / sqrt(3 * 2)
    assert bench.kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert bench.ranks([10, 20, 10, 30]) == [1.5, 3.0, 1.5, 4.0]


def test_the_verdict_needs_a_margin_beyond_the_seed_noise(bench):
    base = {"name": "resnet18", "ap_mean": 0.40, "ap_std": 0.01}
    close = {"name": "a", "maedet": 2.0, "ap_mean": 0.41, "ap_std": 0.01}
    clear = {"name": "b", "maedet": 1.0, "ap_mean": 0.45, "ap_std": 0.01}
    assert bench.verdict("maedet", [close, clear], base, 3)["beats"] is False  # picks a: +0.01 < 2 x 0.0082
    assert bench.verdict("maedet", [clear], base, 3)["beats"] is True
    assert bench.verdict("maedet", [clear], base, 1)["beats"] is None  # one seed: no noise estimate
    assert json.dumps(bench.verdict("maedet", [], base, 3))  # nothing fits the latency: no pick
