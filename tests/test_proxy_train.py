"""The ``proxy_train`` evaluator (SpineNet-style proxy training): config checks, identical trials
for any ``--workers``, kill-and-resume without retraining, budgets before training, and scores
equal to an independent training of the same candidate.

One module fixture runs the searches every test reads (tiny data: 8 training and 8 validation
images of 64 px, one epoch, 5 trials), so the file stays within seconds of training.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import archspec
from archspec.errors import SpecError
from archspec.search_config import load_search_config
from tests.conftest import ROOT, cli_in_process

EXAMPLE = ROOT / "examples" / "search" / "detnas_proxy_train.yaml"
TRIALS = 5
KILLED = -9
SHARES_RUNS = pytest.mark.xdist_group("proxy-train-runs")
"""Under xdist, the tests that read the module fixture run on one worker: run once, not once per worker."""


def small(data: Path, **extra: object) -> list[str]:
    """--set overrides that shrink the example to seconds: 1 epoch on 8 images of 64 px."""
    values = {"evaluator.data": str(data), "evaluator.epochs": 1, "evaluator.train_images": 8,
              "evaluator.validation_images": 8, "evaluator.batch_size": 4, "trials": TRIALS} | extra
    return [f"{key}={value}" for key, value in values.items()]


def cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archspec.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def trial_rows(run: Path) -> list[list[str]]:
    """trials.csv without its timing column."""
    with open(run / "trials.csv", newline="") as handle:
        return [row[:-1] for row in csv.reader(handle)]


def trainings(run: Path) -> list[str]:
    """Fingerprints of the trainings the evaluator ran, in order (its log)."""
    log = run / "proxy_train" / "trainings.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from archspec.detection.synthetic import synthesize

    folder = tmp_path_factory.mktemp("proxy_data")
    synthesize(folder, num_train=8, num_val=8, image_size=64, num_classes=3, max_objects=2, seed=3)
    return folder


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """The same search run three ways: --workers 1, --workers 2, and killed at a store commit
    (after trials were trained but before they were stored) then resumed."""
    from archspec.search.run import run_search

    root = tmp_path_factory.mktemp("proxy_runs")
    found = {"serial": root / "serial", "pool": root / "pool", "resumed": root / "resumed"}
    run_search(EXAMPLE, found["serial"], workers=1, progress=False, overrides=small(data))
    run_search(EXAMPLE, found["pool"], workers=2, progress=False, overrides=small(data))
    # commits: 1 and 2 are the run's identity and config, 3 is trial 0; the 4th (trial 1) never happens
    sets = [arg for pair in zip(["--set"] * 99, small(data)) for arg in pair]
    env = os.environ | {"ARCHSPEC_FAULT": "commit:4"}
    killed = cli("search", str(EXAMPLE), "--out", str(found["resumed"]), "--quiet", *sets, env=env)
    assert killed.returncode == KILLED, killed.stderr
    found["killed_trainings"] = trainings(found["resumed"])  # type: ignore[assignment]
    run_search(EXAMPLE, found["resumed"], resume=True, progress=False, overrides=small(data))
    return found


# -- config -------------------------------------------------------------------------------------
def write_config(tmp_path: Path, evaluator: str, detector: bool = True) -> Path:
    text = EXAMPLE.read_text().replace("../../", str(ROOT) + "/")
    start, end = text.index("evaluator:"), text.index("budgets:")
    text = text[:start] + f"evaluator: {evaluator}\n" + text[end:]
    if not detector:
        start, end = text.index("detector:"), text.index("strategy:")
        text = text[:start] + text[end:]
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def test_the_example_validates_and_bad_settings_are_one_line_with_the_field(tmp_path):
    assert cli_in_process("validate", EXAMPLE).returncode == 0
    path = write_config(tmp_path, "{type: proxy_train, data: d, epochs: 0}")
    result = cli_in_process("validate", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {path}: evaluator.epochs: Input should be greater than "
                                                  f"or equal to 1"]
    for evaluator, field in (("{type: proxy_train, data: d, lr: -1}", "evaluator.lr"),
                             ("{type: proxy_train, data: d, input_size: [64]}", "evaluator.input_size"),
                             ("{type: proxy_train, data: d, train_images: 0}", "evaluator.train_images"),
                             ("{type: proxy_train, data: d, max_memory_gib: 0}", "evaluator.max_memory_gib"),
                             ("{type: proxy_train, data: d, threads: 0}", "evaluator.threads"),
                             ("{type: proxy_train, epochs: 2}", "evaluator.data"),
                             ("{type: proxy_train, data: d, epoch: 2}", "evaluator.epoch")):
        with pytest.raises(SpecError) as caught:
            load_search_config(write_config(tmp_path, evaluator))
        assert field in [issue.path for issue in caught.value.issues], (evaluator, str(caught.value))
    with pytest.raises(SpecError) as caught:
        load_search_config(write_config(tmp_path, "{type: proxy_train, data: d}", detector=False))
    assert "add a detector: template" in str(caught.value)
    # relative data folders are the config file's
    config, _ = load_search_config(write_config(tmp_path, "{type: proxy_train, data: d}"))
    assert config.evaluator.data == str((tmp_path / "d").resolve())


def test_a_missing_data_folder_is_a_value_error_naming_it(tmp_path):
    """(The CLI turns a ValueError into one line and exit code 2: tests/test_cli.py.)"""
    from archspec.detection.coco import DataError
    from archspec.search.evaluators import make_evaluator

    config, base = load_search_config(EXAMPLE, overrides=[f"evaluator.data={tmp_path / 'nowhere'}"])
    with pytest.raises(DataError, match=r"nowhere: no annotations/instances_train.json"):
        make_evaluator(config, base)


# -- determinism and resume ------------------------------------------------------------------------
@SHARES_RUNS
def test_workers_1_and_2_give_identical_trials(runs):
    serial = trial_rows(runs["serial"])
    assert len(serial) == TRIALS + 1
    assert serial == trial_rows(runs["pool"])
    scores = [row[9] for row in serial[1:] if row[1] == "feasible"]
    assert len(scores) >= 3 and len(set(scores)) > 1  # real, differing APs, bit-equal across workers
    assert all(0.0 <= float(s) <= 1.0 for s in scores)


@SHARES_RUNS
def test_each_candidate_trains_once_and_its_score_is_cached(runs):
    feasible = {row[3] for row in trial_rows(runs["serial"])[1:] if row[1] == "feasible"}
    log = trainings(runs["serial"])
    assert sorted(log) == sorted(feasible)  # one training per distinct candidate, none for the rest
    for fingerprint in feasible:
        record = json.loads((runs["serial"] / "proxy_train" / f"{fingerprint}.json").read_text())
        assert record["fingerprint"] == fingerprint and 0.0 <= record["AP"] <= 1.0
    marker = json.loads((runs["serial"] / ".archspec-run.json").read_text())
    assert "proxy_train" in marker["files"]


@SHARES_RUNS
def test_kill_and_resume_gives_the_same_trials_without_retraining(runs):
    killed = runs["killed_trainings"]
    # the first round (the DetNAS population's first 4 candidates) was trained before the kill
    assert len(killed) >= 2
    assert trial_rows(runs["resumed"]) == trial_rows(runs["serial"])
    log = trainings(runs["resumed"])
    assert log[:len(killed)] == killed
    assert len(log) == len(set(log)) == len(trainings(runs["serial"]))  # nothing trained twice


# -- checks before training ------------------------------------------------------------------------
def evaluator_for(data: Path, run: Path, **extra: object):
    from archspec.search.evaluators import make_evaluator

    config, base = load_search_config(EXAMPLE, overrides=small(data, **extra))
    config = config.model_copy(update={"evaluator": config.evaluator.in_run(run)})
    return make_evaluator(config, base), config, base


def test_budgets_and_the_memory_guard_come_before_any_training(data, tmp_path):
    evaluator, _, _ = evaluator_for(data, tmp_path / "flops", **{"budgets.max_flops": 1e6})
    outcome = evaluator.evaluate(evaluator.space.base)
    assert outcome.status == "infeasible" and outcome.reason.startswith("max_flops")
    evaluator, _, _ = evaluator_for(data, tmp_path / "memory", **{"evaluator.max_memory_gib": 1e-4})
    outcome = evaluator.evaluate(evaluator.space.base)
    assert outcome.status == "infeasible" and outcome.reason.startswith("memory:") and "training" in outcome.reason
    evaluator, _, _ = evaluator_for(data, tmp_path / "rules")
    broken = tuple(99 for _ in evaluator.space.base)
    assert evaluator.evaluate(broken).status == "rejected"
    assert trainings(tmp_path / "flops") == trainings(tmp_path / "memory") == trainings(tmp_path / "rules") == []


# -- the score is a real, reproducible training ------------------------------------------------------
@SHARES_RUNS
def test_a_trial_score_equals_an_independent_training_of_the_candidate(runs, data):
    from archspec.search.proxy_train import candidate_seed, proxy_train_ap

    config, base = load_search_config(EXAMPLE, overrides=small(data))
    row = next(r for r in trial_rows(runs["serial"])[1:] if r[1] == "feasible")
    from archspec.search.space import make_space

    spec = make_space(config.space, base).decode(tuple(int(g) for g in row[4].split()))
    assert archspec.fingerprint(spec) == row[3]
    seed = candidate_seed(config.evaluator.seed, row[3])
    assert proxy_train_ap(spec, config.detector, data, config.evaluator, seed) == float(row[9])
    # another seed trains another network (the seed reaches the training)
    assert proxy_train_ap(spec, config.detector, data, config.evaluator, seed + 1) != float(row[9])


def test_a_changed_setting_never_reuses_a_cached_score(data, tmp_path):
    from archspec.search.proxy_train import ProxyResult, ScoreCache, settings_digest

    config, _ = load_search_config(EXAMPLE, overrides=small(data))
    changed, _ = load_search_config(EXAMPLE, overrides=small(data, **{"evaluator.lr": 0.01}))
    digest = settings_digest(config.evaluator, config.detector, data)
    assert digest != settings_digest(changed.evaluator, changed.detector, data)
    ScoreCache(tmp_path, digest).put("abc", ProxyResult(0.25, 0.5, 1, 0.0, 0.0))
    assert ScoreCache(tmp_path, digest).get("abc")["AP"] == 0.25
    assert ScoreCache(tmp_path, settings_digest(changed.evaluator, changed.detector, data)).get("abc") is None
    (tmp_path / "abc.json").write_text("{torn")
    assert ScoreCache(tmp_path, digest).get("abc") is None


@SHARES_RUNS
def test_the_plot_and_the_report_page_call_the_score_ap(runs, data):
    """pareto.png and report.html label the axis AP and draw no base point (the base's analytic
    MAE-DET score is not on an AP axis)."""
    from archspec.search.budgets import BudgetChecker
    from archspec.search.run import PlotReference

    config, base = load_search_config(EXAMPLE, overrides=small(data))
    reference = PlotReference.of(config, base, BudgetChecker(config.budgets))
    assert reference.base_score is None and reference.score_label == "AP after proxy training"
    assert "<th>score</th><td>AP after proxy training</td>" in (runs["serial"] / "report.html").read_text()
