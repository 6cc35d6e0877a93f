"""benchmarks/proxy_fidelity.py in miniature (2 candidates, 1 seed, one step per training on
64-pixel images): the table, CSVs and scatter plots appear; the proxy criterion is the proxy_train
evaluator's score; a run folder of the earlier benchmark resumes, interrupted after a fixed number
of trainings, without retraining what it holds and ends with the same numbers; the detnas space
adds the supernet criteria (a supernet trained in the run folder, or one given by --supernet);
the one-seed verdict pools ResNet-18's seed noise."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_benchmark

# the module's fixtures run whole (miniature) benchmarks: one xdist worker runs every test here, so
# each fixture runs once instead of once per worker
pytestmark = pytest.mark.xdist_group("proxy-fidelity")

MINI = ["--mini", "--threads", "1"]

OLD_MINI_SETTINGS = {
    "data_seed": 0, "image_size": 64, "kernel_budget_ms": 2.0, "latency_repeat": 3, "min_flops_fraction": 0.6,
    "preset_knobs": {"max_objects": 3, "min_side_px": 6.0},
    "proxy": {"batch_size": 2, "epochs": 1, "input_size": 64, "learning_rate": 0.002, "max_steps_per_epoch": 1,
              "train_images": 2, "val_images": 2},
    "sample_seed": 0,
    "standalone": {"batch_size": 2, "epochs": 1, "input_size": 64, "learning_rate": 0.002, "max_steps_per_epoch": 1,
                   "train_images": 4, "val_images": 2},
    "supernet": None}
"""config.json of a --mini run as the benchmark wrote it before --space and --baseline-seeds."""

OLD_MARKER_FILES = ["candidates.json", "config.json", "correlations.csv", "criteria.json", "data", "latency.sqlite",
                    "latency.sqlite.lock", "results.csv", "runs", "scatter_flops.png", "scatter_latency_pred.png",
                    "scatter_maedet.png", "scatter_maedet_rf.png", "scatter_params.png", "scatter_proxy_train.png",
                    "scatter_supernet.png", "scatter_supernet_bn.png", "table.md"]
"""The run marker's file list the earlier benchmark wrote."""


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("proxy_fidelity")


@pytest.fixture(scope="module")
def finished(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pf") / "run"
    bench.main(["--out", str(out), *MINI])
    return out


@pytest.fixture(scope="module")
def detnas(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pf_detnas") / "run"
    bench.main(["--out", str(out), *MINI, "--space", "detnas"])
    return out


def rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def copy_without(source: Path, target: Path, names: set[str]) -> None:
    """`source` copied to `target`, leaving out the top-level entries in `names` and the plots."""
    shutil.copytree(source, target, ignore=lambda folder, entries: [
        n for n in entries if Path(folder) == source and (n in names or n.startswith("scatter_"))])


def test_the_mini_run_writes_the_table_csvs_and_plots(bench, finished):
    results = rows(finished / "results.csv")
    assert [r["name"] for r in results] == ["resnet18", "cand00", "cand01"]
    for r in results:
        assert 0 <= float(r["ap_mean"]) <= 1 and float(r["flops"]) > 0 and float(r["latency_measured"]) > 0
    budget = float(results[0]["flops"])
    assert all(0.6 * budget <= float(r["flops"]) <= budget for r in results[1:])
    correlations = {r["criterion"]: r for r in rows(finished / "correlations.csv")}
    assert list(correlations) == list(bench.CRITERIA)
    assert correlations["supernet_recal"]["n"] == correlations["supernet_shared"]["n"] == "0"  # maedet: none
    for name in ("maedet", "maedet_rf", "flops", "params", "latency_pred", "proxy_train"):
        assert correlations[name]["n"] == "3"
        assert (finished / f"scatter_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (finished / "table.md").read_text()
    assert "| criterion | Kendall tau-b | Spearman |" in table and "beats R18?" in table
    # the maedet space stores its settings as the earlier benchmark did (no space, no supernet training)
    assert json.loads((finished / "config.json").read_text()) == OLD_MINI_SETTINGS
    # one proxy_train score per backbone in the evaluator's cache, one training each
    assert len(list((finished / "proxy_train").glob("*.json"))) == 3
    assert len((finished / "proxy_train" / "trainings.log").read_text().splitlines()) == 3


def test_the_proxy_criterion_is_the_proxy_train_evaluators_score(finished):
    # the evaluator called directly, as a search config with these settings would call it
    import archspec
    from archspec.detector import DetectorTemplate
    from archspec.search.proxy_train import candidate_seed, proxy_train_ap
    from archspec.search_config import ProxyTrainEvaluatorConfig

    data = finished / "data" / "full"
    classes = [c["name"] for c in json.loads((data / "annotations" / "instances_val.json").read_text())["categories"]]
    fcos = archspec.to_data(archspec.load(ROOT / "examples" / "detectors" / "fcos_tiny.yaml"))
    template = DetectorTemplate(**{**{k: fcos[k] for k in ("neck", "head", "postprocess")},
                                   "num_classes": len(classes), "class_names": classes, "input_size": 64})
    settings = ProxyTrainEvaluatorConfig(type="proxy_train", data=str(data), epochs=1, input_size=64, train_images=2,
                                         validation_images=2, batch_size=2, lr=0.002)
    candidate = json.loads((finished / "candidates.json").read_text())[0]
    backbone = archspec.validate(candidate["backbone"])
    expected = proxy_train_ap(backbone, template, data, settings, candidate_seed(0, archspec.fingerprint(backbone)))
    assert float(rows(finished / "results.csv")[1]["proxy_train"]) == expected


def test_a_run_folder_of_the_earlier_benchmark_resumes_and_keeps_its_trainings(bench, finished, tmp_path):
    # the finished run as the earlier benchmark left it after two stand-alone trainings: its
    # config.json and marker, no proxy_train cache, no outputs, cand01 not trained yet
    out = tmp_path / "run"
    copy_without(finished, out, {"proxy_train", "table.md", "results.csv", "correlations.csv"})
    shutil.rmtree(out / "runs" / "cand01_seed0")
    old_settings = json.dumps(OLD_MINI_SETTINGS, indent=1, sort_keys=True)
    (out / "config.json").write_text(old_settings)
    marker = json.loads((out / ".archspec-run.json").read_text())
    (out / ".archspec-run.json").write_text(json.dumps({**marker, "files": OLD_MARKER_FILES}, indent=1) + "\n")
    kept = {name: (out / "runs" / name / "result.json").stat().st_mtime_ns for name in ("resnet18_seed0",
                                                                                          "cand00_seed0")}
    with pytest.raises(SystemExit) as stop:  # trains cand01, then the first proxy
        bench.main(["--out", str(out), *MINI, "--stop-after", "2"])
    assert stop.value.code == bench.STOPPED
    assert (out / "runs" / "cand01_seed0" / "result.json").exists() and not (out / "table.md").exists()
    assert len(list((out / "proxy_train").glob("*.json"))) == 1
    bench.main(["--out", str(out), *MINI])
    assert {name: (out / "runs" / name / "result.json").stat().st_mtime_ns for name in kept} == kept
    assert len(list((out / "runs").glob("*/result.json"))) == 3
    assert len((out / "proxy_train" / "trainings.log").read_text().splitlines()) == 3  # no proxy trained twice
    assert (out / "config.json").read_text() == old_settings
    # seeded trainings: the same APs, so the same table and CSVs as the uninterrupted run
    assert (out / "table.md").read_text() == (finished / "table.md").read_text()
    assert (out / "results.csv").read_text() == (finished / "results.csv").read_text()
    assert (out / "correlations.csv").read_text() == (finished / "correlations.csv").read_text()


def test_the_running_benchmarks_settings_are_those_it_stored(bench):
    # config.json of the run started before --space and --baseline-seeds existed (its command line
    # below, with --seeds 1 --baseline-seeds 3 as it is to be resumed): byte for byte
    stored = {"data_seed": 0, "image_size": 128, "kernel_budget_ms": 150.0, "latency_repeat": 40,
              "min_flops_fraction": 0.6, "preset_knobs": {},
              "proxy": {"batch_size": 16, "epochs": 8, "input_size": 128, "learning_rate": 0.002,
                        "max_steps_per_epoch": None, "train_images": 256, "val_images": 64},
              "sample_seed": 0,
              "standalone": {"batch_size": 16, "epochs": 24, "input_size": 128, "learning_rate": 0.002,
                             "max_steps_per_epoch": None, "train_images": 512, "val_images": 128},
              "supernet": None}
    for seeds in (["--seeds", "3"], ["--seeds", "1", "--baseline-seeds", "3"]):
        _, config, *_ = bench.parse_args(["--out", "x", "--candidates", "12", *seeds, "--proxy-epochs", "8",
                                          "--proxy-size", "128", "--proxy-train-images", "256",
                                          "--proxy-val-images", "64", "--jobs", "2", "--threads", "1"])
        assert bench.stored_settings(config) == json.dumps(stored, indent=1, sort_keys=True)
    _, detnas_config, *_ = bench.parse_args(["--out", "x", "--space", "detnas"])
    assert json.loads(bench.stored_settings(detnas_config))["supernet_training"]["epochs"] == 24


def test_training_order_puts_the_baselines_seeds_before_the_proxies(bench, tmp_path):
    backbones = [bench.baseline(), *({"name": f"cand{i:02d}", "genotype": [i], "backbone": bench.baseline()["backbone"]}
                                     for i in range(2))]
    _, config, *_ = bench.parse_args(["--out", "x", *MINI, "--seeds", "2", "--baseline-seeds", "3"])
    keys = [task.key for task in bench.tasks_of(backbones, config, ["a"], tmp_path)]
    assert keys == ["resnet18:0", "cand00:0", "cand01:0", "resnet18:1", "resnet18:2",
                    "resnet18:proxy", "cand00:proxy", "cand01:proxy", "cand00:1", "cand01:1"]


def test_the_detnas_run_adds_the_supernet_criteria(bench, detnas):
    results = rows(detnas / "results.csv")
    assert [r["name"] for r in results] == ["resnet18", "cand00", "cand01"]
    budget = float(results[0]["flops"])
    for r in results[1:]:
        genotype = json.loads(r["genotype"])
        assert len(genotype) == 40 and set(genotype) <= {0, 1, 2, 3}  # DetNAS 1.3G: 40 layers, 4 choices
        assert 0.6 * budget <= float(r["flops"]) <= budget
        assert 0 <= float(r["supernet_recal"]) <= 1 and 0 <= float(r["supernet_shared"]) <= 1
    assert results[0]["supernet_recal"] == results[0]["supernet_shared"] == ""  # ResNet-18: no path
    correlations = {r["criterion"]: r for r in rows(detnas / "correlations.csv")}
    assert correlations["supernet_recal"]["n"] == correlations["supernet_shared"]["n"] == "2"
    for name in ("maedet", "maedet_rf", "flops", "params", "latency_pred", "proxy_train"):  # as for maedet
        assert correlations[name]["n"] == "3"
    # the supernet was trained in the run folder by the project's trainer: 2 steps of 2 images
    history = (detnas / "supernet" / "history.jsonl").read_text().splitlines()
    assert len(history) == 1 and (detnas / "supernet" / "last.pt").is_file()
    assert json.loads((detnas / "supernet" / "supernet.json").read_text())["config"]["space"]["type"] == "detnas"
    table = (detnas / "table.md").read_text()
    assert "supernet AP recal | supernet AP shared" in table and "| supernet_recal |" in table
    assert json.loads((detnas / "config.json").read_text())["space"] == "detnas"


def test_a_given_supernet_is_used_instead_of_training_one(bench, detnas, tmp_path):
    out = tmp_path / "run"
    copy_without(detnas, out, {"supernet", "config.json", "table.md", "results.csv", "correlations.csv"})
    bench.main(["--out", str(out), *MINI, "--space", "detnas", "--supernet", str(detnas / "supernet")])
    assert not (out / "supernet").exists()
    assert (out / "results.csv").read_text() == (detnas / "results.csv").read_text()


def test_a_supernet_that_does_not_fit_is_refused_in_one_line(bench, finished, detnas, tmp_path, capsys):
    out = tmp_path / "run"
    copy_without(detnas, out, {"supernet", "config.json", "table.md", "results.csv", "correlations.csv"})
    with pytest.raises(SystemExit) as refused:
        bench.main(["--out", str(out), *MINI, "--space", "detnas", "--supernet", str(finished)])
    assert refused.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"--supernet: {finished}: not a supernet run folder")
    with pytest.raises(SystemExit) as refused:
        bench.main(["--out", str(tmp_path / "other"), *MINI, "--supernet", str(detnas / "supernet")])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip() == "--supernet: the maedet space has no supernet (use --space detnas)"


def test_rank_statistics_match_hand_counts(bench):
    # 5 concordant pairs, 1 discordant: tau = 4/6; rank differences 0,1,1,0: rho = 1 - 6*2/(4*15)
    assert bench.kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert bench.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # a tie in x: 2 concordant pairs, tau-b = 2 / sqrt(3 * 2)
    assert bench.kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert bench.ranks([10, 20, 10, 30]) == [1.5, 3.0, 1.5, 4.0]


def backbone_row(name: str, aps: list[float], **criteria) -> dict:
    """A results row as the benchmark builds it: APs per seed, their mean and sample std."""
    import statistics

    return {"name": name, "aps": aps, "ap_mean": statistics.mean(aps),
            "ap_std": statistics.stdev(aps) if len(aps) > 1 else 0.0, **criteria}


def test_the_verdict_needs_a_margin_beyond_the_seed_noise(bench):
    base = {"name": "resnet18", "aps": [0.39, 0.40, 0.41], "ap_mean": 0.40, "ap_std": 0.01}
    close = {"name": "a", "maedet": 2.0, "aps": [0.40, 0.41, 0.42], "ap_mean": 0.41, "ap_std": 0.01}
    clear = {"name": "b", "maedet": 1.0, "aps": [0.44, 0.45, 0.46], "ap_mean": 0.45, "ap_std": 0.01}
    picked = bench.verdict("maedet", [close, clear], base)  # picks a: +0.01 < 2 x sqrt(2 x 0.01^2 / 3) = 0.0163
    assert picked["pick"] == "a" and picked["beats"] is False and picked["pooled"] is False
    assert picked["noise"] == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 3))
    assert bench.verdict("maedet", [clear], base)["beats"] is True
    once = {"name": "resnet18", "aps": [0.40], "ap_mean": 0.40, "ap_std": 0.0}
    single = {"name": "b", "maedet": 1.0, "aps": [0.45], "ap_mean": 0.45, "ap_std": 0.0}
    assert bench.verdict("maedet", [single], once)["beats"] is None  # no seed spread anywhere: no verdict
    assert json.dumps(bench.verdict("maedet", [], base))  # nothing fits the latency: no pick


def test_one_seed_candidates_are_judged_with_resnet18s_pooled_seed_noise(bench):
    # ResNet-18 over 3 seeds: mean 0.32, std 0.02; a candidate trained once takes that std:
    # noise = sqrt(0.02^2/1 + 0.02^2/3) = 0.02309, so a pick must lead by more than 0.04619
    base = backbone_row("resnet18", [0.30, 0.32, 0.34], maedet=0.0, latency_measured=10.0)
    near = backbone_row("cand00", [0.36], maedet=2.0, latency_measured=5.0)  # +0.04: within the noise
    far = backbone_row("cand01", [0.37], maedet=1.0, latency_measured=5.0)  # +0.05: beyond it
    assert base["ap_std"] == pytest.approx(0.02)
    first = bench.verdict("maedet", [near, far], base)
    assert first["pick"] == "cand00" and first["pooled"] is True and first["beats"] is False
    assert first["noise"] == pytest.approx(0.0230940, abs=1e-7)
    assert bench.verdict("maedet", [far], base)["beats"] is True
    # the table says the noise was pooled
    config = bench.BenchConfig(seeds=1, baseline_seeds=3)
    table = [{**row, "maedet_rf": 0.0, "flops": 1e9, "params": 1e6, "latency_pred": 1.0, "proxy_train": 0.1,
              "supernet_recal": None, "supernet_shared": None} for row in (base, near, far)]
    report = bench.summarise(table, config)
    maedet_row = next(line for line in report["markdown"].splitlines() if line.startswith("| maedet | "))
    assert maedet_row.endswith("| cand00 | 0.040 | 0.046 | no (pooled noise) |")
    assert "Pooled noise:" in report["markdown"] and "1 seed(s) per candidate, 3 for ResNet-18" in report["markdown"]
