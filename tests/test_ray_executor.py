"""The Ray executor: the same trials as the serial executor and the process pool, a dead actor
changes nothing, configs travel as re-validated JSON, and clear errors without Ray or a cluster.

One local Ray instance (2 CPUs) serves the whole module; the CLI tests that need their own Ray
(or none) run in subprocesses."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import pytest

import archspec
from archspec.errors import SpecError
from archspec.search_config import load_search_config
from archspec.search.run import run_search
from archspec.search.ray_executor import (ActorFault, RayExecutor, RayMissingError, from_wire, import_ray,
                                          to_wire)
from tests.conftest import ROOT, cli_in_process

# Under xdist, the whole module runs on one worker: one local Ray instance (the module fixture),
# never two starting at once on the same machine.
pytestmark = pytest.mark.xdist_group("ray")

BASE = ROOT / "examples" / "search" / "maedet_r50_base.yaml"


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield ray
    ray.shutdown()


def write_config(tmp_path, trials=160):
    text = "\n".join([
        "type: search", f"base: {BASE}", "space: {type: maedet}", "strategy: {type: maedet_evolution, population: 16}",
        "budgets: {input_size: 480, max_flops: 30e9, min_params: 5e6}", f"trials: {trials}"])
    path = tmp_path / "search.yaml"
    path.write_text(text + "\n")
    return path


def rows(path):
    with open(path) as handle:
        return [row[:-1] for row in csv.reader(handle)]  # all but the timing column


def test_serial_pool_and_ray_give_the_same_trials_and_best(tmp_path, ray_instance):
    config_path = write_config(tmp_path)
    config, base = load_search_config(config_path)
    run_search(config_path, tmp_path / "serial", progress=False, batch=16)
    run_search(config_path, tmp_path / "pool", progress=False, batch=16, workers=2)
    executor = RayExecutor(2, config, base)
    try:
        run_search(config_path, tmp_path / "ray", progress=False, batch=16, executor=executor)
    finally:
        executor.close()
    serial = rows(tmp_path / "serial" / "trials.csv")
    assert len(serial) == 161 and {"feasible", "infeasible"} <= {row[1] for row in serial}
    for other in ("pool", "ray"):
        assert rows(tmp_path / other / "trials.csv") == serial
        assert (tmp_path / other / "best.yaml").read_text() == (tmp_path / "serial" / "best.yaml").read_text()
    assert executor.failures == 0


def test_an_actor_dying_mid_run_changes_nothing(tmp_path, ray_instance):
    # Actor 1 exits abruptly on its 3rd job (a round of 16 is 4 chunks of 4: mid-chunk, so the
    # chunk's finished jobs are lost with it and evaluated again elsewhere).
    config_path = write_config(tmp_path, trials=96)
    config, base = load_search_config(config_path)
    run_search(config_path, tmp_path / "serial", progress=False, batch=16)
    executor = RayExecutor(2, config, base, fault=ActorFault(actor=1, job=3))
    try:
        run_search(config_path, tmp_path / "ray", progress=False, batch=16, executor=executor)
        assert executor.failures == 1 and len(executor.actors) == 2
    finally:
        executor.close()
    assert rows(tmp_path / "ray" / "trials.csv") == rows(tmp_path / "serial" / "trials.csv")
    assert (tmp_path / "ray" / "best.yaml").read_text() == (tmp_path / "serial" / "best.yaml").read_text()


def test_actors_leave_the_latency_table_to_the_parent(tmp_path, ray_instance, monkeypatch):
    # Kernels are measured in the parent only: the stand-in is patched there alone, so an actor
    # measuring would run ONNX Runtime and give other numbers (and other calls).
    import archspec.compiler.latency.predictor as predictor
    from tests.test_search import fake_kernel_measurement, plant_front_latency

    calls = []
    monkeypatch.setattr(predictor, "measure_kernel", fake_kernel_measurement(calls))
    plant_front_latency(monkeypatch)
    text = write_config(tmp_path, trials=64).read_text().replace(
        "budgets: {", "budgets: {max_latency_ms: 3.6, latency_input_size: 64, ")
    config_path = tmp_path / "latency.yaml"
    config_path.write_text(text)
    run_search(config_path, tmp_path / "serial", progress=False, batch=8)
    serial_calls = list(calls)
    config, base = load_search_config(config_path)
    executor = RayExecutor(2, config, base)
    try:
        run_search(config_path, tmp_path / "ray", progress=False, batch=8, executor=executor)
    finally:
        executor.close()
    assert serial_calls and calls[len(serial_calls):] == serial_calls
    assert rows(tmp_path / "ray" / "trials.csv") == rows(tmp_path / "serial" / "trials.csv")
    assert any(row[2].startswith("max_latency_ms") for row in rows(tmp_path / "ray" / "trials.csv"))


def test_outcomes_come_back_in_job_order_and_equal_the_evaluator(tmp_path, ray_instance):
    import random

    from archspec.search.evaluators import make_evaluator
    from archspec.search.space import MaedetSearchSpace

    config, base = load_search_config(write_config(tmp_path))
    space = MaedetSearchSpace(config.space, base)
    rng = random.Random(1)
    genotypes = [space.base, (0,) * 21] + [space.mutate(space.base, rng, 3) for _ in range(9)]
    evaluator = make_evaluator(config, base)
    executor = RayExecutor(2, config, base)
    try:
        outcomes = executor.evaluate(list(enumerate(genotypes)))
        assert executor.evaluate([]) == []
    finally:
        executor.close()
    untimed = lambda outcome: dataclasses.replace(outcome, seconds=0.0)  # noqa: E731
    assert [untimed(o) for o in outcomes] == [untimed(evaluator.evaluate(g)) for g in genotypes]
    assert [o.status for o in outcomes[:2]] == ["passed", "rejected"]


def test_too_many_dead_actors_is_an_error_not_a_hang(tmp_path, ray_instance):
    from archspec.search.space import make_space

    config, base = load_search_config(write_config(tmp_path))
    executor = RayExecutor(1, config, base, max_actor_failures=0, fault=ActorFault(actor=0, job=1))
    try:
        with pytest.raises(RuntimeError, match="1 Ray evaluation actors died in this run"):
            executor.evaluate([(0, make_space(config.space, base).base)])
    finally:
        executor.close()


def test_an_evaluator_that_cannot_be_built_is_a_clear_error(tmp_path, ray_instance):
    config, base = load_search_config(write_config(tmp_path))
    with pytest.raises(RuntimeError, match="actor failed to start: AttributeError: .* no attribute 'no_such_factory'"):
        RayExecutor(1, config, base, factory="archspec.search.evaluators:no_such_factory")


def test_config_and_base_travel_as_json_and_are_validated_again(tmp_path):
    config, base = load_search_config(write_config(tmp_path))
    config_json, base_json = to_wire(config), to_wire(base)
    for text in (config_json, base_json):  # canonical: sorted keys, no whitespace, defaults filled in
        assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert json.loads(config_json)["strategy"]["population"] == 16 and json.loads(base_json)["name"] == base.name
    again_config, again_base = from_wire(config_json, base_json)
    assert again_config == config and again_base == base and again_base.name == base.name
    assert archspec.fingerprint(again_base) == archspec.fingerprint(base)
    broken = json.loads(config_json)
    broken["strategy"]["population"] = "many"
    with pytest.raises(SpecError, match=r"ray:config.*strategy"):
        from_wire(json.dumps(broken), base_json)


def test_without_ray_the_executor_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from archspec.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayMissingError, match=r"pip install 'archspec-nas\[ray\]'"):
        import_ray()
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(write_config(tmp_path)), "--out", str(tmp_path / "run"), "--executor", "ray",
              "--workers", "2", "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'archspec-nas[ray]'" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    (["--executor", "serial", "--workers", "2"], "--executor serial"),
    (["--executor", "pool"], "--executor pool needs --workers 2"),
    (["--address", "localhost:6379"], "--address names a Ray cluster"),
])
def test_executor_options_that_contradict_each_other(tmp_path, options, message):
    result = cli_in_process("search", write_config(tmp_path), "--out", tmp_path / "run", "--quiet", *options)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_cli_ray_starts_and_stops_a_local_instance_and_an_unreachable_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    config = write_config(tmp_path, trials=48)
    # the reference in this process; the Ray runs below are each a process of their own
    serial = cli_in_process("search", config, "--out", tmp_path / "serial", "--quiet", "--batch", "8")
    assert serial.returncode == 0, serial.stderr
    ray_run = subprocess.run([sys.executable, "-m", "archspec.cli", "search", str(config), "--out", str(tmp_path / "ray"),
                              "--quiet", "--batch", "8", "--executor", "ray", "--workers", "2"],
                             capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert ray_run.returncode == 0, ray_run.stderr
    assert rows(tmp_path / "ray" / "trials.csv") == rows(tmp_path / "serial" / "trials.csv")
    assert ray_run.stdout == serial.stdout.replace(str(tmp_path / "serial"), str(tmp_path / "ray"))
    # port 1 on this machine: nothing listens there
    unreachable = subprocess.run([sys.executable, "-m", "archspec.cli", "search", str(config), "--out",
                                  str(tmp_path / "far"), "--quiet", "--executor", "ray", "--address", "127.0.0.1:1"],
                                 capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert unreachable.returncode == 2, unreachable.stderr
    last = unreachable.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Ray cluster at --address 127.0.0.1:1")
    assert "Traceback" not in unreachable.stderr
