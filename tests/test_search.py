"""Search: fast costs, the MAE-DET score, the space's mutations, budgets, determinism, resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import sqlite3
import subprocess
import sys

import pytest

import archspec
from archspec import compiler
from archspec.search_config import MaedetSpace, load_search_config
from archspec.compiler.fastcosts import fast_costs
from archspec.search.run import run_search
from archspec.search.store import TrialStore
from archspec.search.score import maedet_forward_score, maedet_score
from archspec.search.space import MaedetSearchSpace, Rejected
from tests.conftest import ROOT, ZOO, cli_in_process

BASE = ROOT / "examples" / "search" / "maedet_r50_base.yaml"


@pytest.mark.parametrize("path", [p for p in ZOO if archspec.load(p).type == "staged"], ids=lambda p: p.stem)
def test_fast_costs_equal_full_costs(path):
    spec = archspec.load(path)
    for size in [(224, 224), (97, 131)]:
        full, fast = compiler.costs(spec, size), fast_costs(spec, size)
        assert (fast.params, fast.macs, fast.activations) == (full.params, full.macs, full.activations)


def tiny_k1kxk1():
    return archspec.validate({
        "type": "staged", "name": "tiny", "stem": [{"type": "conv", "out_channels": 8, "kernel": 3, "stride": 2}],
        "stages": [{"block": {"type": "k1kxk1", "kernel": 3, "bottleneck_channels": 4}, "depth": d,
                    "out_channels": c, "stride": 2} for d, c in ((1, 16), (2, 32), (1, 64), (1, 128))]})


def test_analytic_score_by_hand():
    # Stem: log sqrt(3*9). A k1kxk1 block with input c, bottleneck b, kernel k:
    # log sqrt(c) + log sqrt(b*k*k) + log sqrt(b). Level k adds log(channels).
    half_log = lambda x: 0.5 * math.log(x)  # noqa: E731
    block = lambda c: half_log(c) + half_log(4 * 9) + half_log(4)  # noqa: E731
    stem = half_log(27)
    c2 = stem + block(8)
    c3 = c2 + block(16) + block(32)
    c4 = c3 + block(32)
    c5 = c4 + block(64)
    expected = (c3 + math.log(32)) + (c4 + math.log(64)) + 6 * (c5 + math.log(128))
    assert maedet_score(tiny_k1kxk1()) == pytest.approx(expected, rel=1e-12)


def test_release_block_terms_for_k1kxk1_and_resnet():
    # The release's ResK1KXK1 term uses the block input once; our main path finds the same
    # three convolutions and ignores the projected shortcut.
    spec = archspec.load(ROOT / "examples/backbones/maedet_s.yaml")
    assert maedet_score(spec) == pytest.approx(1731.907, abs=1e-3)
    assert maedet_score(archspec.load(ROOT / "examples/backbones/resnet50.yaml")) == pytest.approx(1174.298, abs=1e-3)


def spearman(a, b):
    rank = lambda xs: {i: r for r, i in enumerate(sorted(range(len(xs)), key=lambda i: xs[i]))}  # noqa: E731
    ra, rb = rank(a), rank(b)
    n = len(a)
    return 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


def test_forward_and_analytic_scores_rank_alike():
    config = MaedetSpace(type="maedet")
    space = MaedetSearchSpace(config, tiny_k1kxk1())
    rng = random.Random(3)
    specs, seen = [], set()
    while len(specs) < 16:
        try:
            genotype = space.mutate(space.base, rng, rng.randint(1, 6))
            if genotype not in seen:
                seen.add(genotype)
                specs.append(space.decode(genotype))
        except Rejected:
            pass
    analytic = [maedet_score(s) for s in specs]
    forward = [maedet_forward_score(s, (64, 64), batch=2, repeats=1) for s in specs]
    assert spearman(analytic, forward) > 0.9


def test_every_mutation_is_valid_or_rejected_with_a_reason():
    config, base = load_search_config(ROOT / "examples/search/maedet_r50_budget.yaml")
    space = MaedetSearchSpace(config.space, base)
    rng = random.Random(0)
    genotype, valid, rejected = space.base, 0, 0
    for _ in range(1000):
        try:
            child = space.mutate(genotype, rng, 2)
        except Rejected as exc:
            assert str(exc)
            rejected += 1
            continue
        space.check(child)
        spec = space.decode(child)
        assert space.encode(spec) == child
        assert space.layers(child) <= config.space.max_layers
        stages = space.stages(child)
        assert all(s.bottleneck_channels <= s.out_channels and s.kernel in (3, 5) for s in stages)
        assert stages[0].depth <= config.space.first_stage_max_depth
        valid += 1
        genotype = child if rng.random() < 0.5 else genotype
    assert valid > 500


def test_bad_search_config_names_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"type: search\nbase: {BASE}\nspace: {{type: maedet, kernels: [3, 0]}}\n"
                    "strategy: {type: maedet_evolution}\n")
    with pytest.raises(archspec.SpecError, match=r"space.kernels\[1\]"):
        load_search_config(path)
    path.write_text(f"type: search\nbase: {BASE}\nspace: {{type: maedet}}\nstrategy: {{type: anneal}}\n")
    with pytest.raises(archspec.SpecError, match=r"strategy.type: unknown kind 'anneal'"):
        load_search_config(path)


def write_config(tmp_path, trials=400, **budgets):
    budgets = {"input_size": 480, "max_flops": 37.6e9, **budgets}
    text = "\n".join([
        "type: search", f"base: {BASE}", "space: {type: maedet}",
        "strategy: {type: maedet_evolution, population: 32}",
        "budgets: {" + ", ".join(f"{k}: {v}" for k, v in budgets.items()) + "}", f"trials: {trials}"])
    path = tmp_path / "search.yaml"
    path.write_text(text + "\n")
    return path


def rows(path):
    with open(path) as handle:
        return [row[:-1] for row in csv.reader(handle)]  # all but the timing column


def test_feasible_trials_and_the_best_respect_every_budget(tmp_path):
    config = write_config(tmp_path, max_flops=30e9, min_params=5e6, max_params=25e6)
    result = run_search(config, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    feasible = [t for t in trials if t["status"] == "feasible"]
    assert feasible and any(t["status"] == "infeasible" for t in trials)
    for t in feasible:
        assert float(t["flops"]) <= 30e9 and 5e6 <= float(t["params"]) <= 25e6
    for t in trials:
        if t["status"] == "infeasible":
            assert t["reason"].split(":")[0] in ("max_flops", "min_params", "max_params")
    best = archspec.load(tmp_path / "run" / "best.yaml")
    counts = compiler.costs(best, 480)
    assert counts.flops <= 30e9 and 5e6 <= counts.params <= 25e6
    assert maedet_score(best) == pytest.approx(result.best_score)
    assert (tmp_path / "run" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    front = pareto_front_from_csv(tmp_path / "run" / "pareto.csv")
    assert [s for _, s in front] == sorted(s for _, s in front)  # more FLOPs buys more score on the front


def pareto_front_from_csv(path):
    with open(path) as handle:
        return [(float(r["flops"]), float(r["score"])) for r in csv.DictReader(handle)]


def test_same_seed_same_result_and_other_seed_differs(tmp_path):
    config = write_config(tmp_path, trials=300)
    run_search(config, tmp_path / "a", progress=False)
    run_search(config, tmp_path / "b", progress=False)
    run_search(config, tmp_path / "c", seed=1, progress=False)
    assert rows(tmp_path / "a" / "trials.csv") == rows(tmp_path / "b" / "trials.csv")
    assert rows(tmp_path / "a" / "trials.csv") != rows(tmp_path / "c" / "trials.csv")
    assert (tmp_path / "a" / "best.yaml").read_text() == (tmp_path / "b" / "best.yaml").read_text()


# Kill-and-resume at every write and commit point: tests/test_faults.py (through the fault hook).


def test_resume_refuses_another_seed(tmp_path):
    config = write_config(tmp_path, trials=20)
    run_search(config, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"the seed \(0 -> 5\) changed"):
        run_search(config, tmp_path / "run", resume=True, seed=5, progress=False)


def test_score_command_prints_json():
    result = cli_in_process("score", ROOT / "examples/backbones/maedet_s.yaml", "--json")
    assert result.returncode == 0, result.stderr

    info = json.loads(result.stdout)
    assert info["score"] == pytest.approx(1731.907, abs=1e-3) and set(info["levels"]) >= {"C3", "C4", "C5"}
    bad = cli_in_process("score", ROOT / "examples/detectors/fcos_tiny.yaml")
    assert bad.returncode == 2 and "defined for backbones, not 'detector'" in bad.stderr
    spine = cli_in_process("score", "--json", "--scorer", "maedet-rf", ROOT / "examples/backbones/spinenet49.yaml")
    assert spine.returncode == 0, spine.stderr
    info = json.loads(spine.stdout)
    assert info["score"] == pytest.approx(1357.663 - 292.67, abs=0.01) and info["receptive_field_term"] < 0


def detnas_space():
    config, base = load_search_config(ROOT / "examples/search/detnas_300m.yaml")
    from archspec.search.space import DetnasSearchSpace

    return DetnasSearchSpace(config.space, base), base


def test_detnas_space_encodes_the_published_choice_list():
    space, base = detnas_space()
    assert space.base == (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2)
    assert space.decode(space.base) == base


def test_detnas_genotypes_decode_to_valid_specs_of_the_space():
    space, _ = detnas_space()
    rng = random.Random(1)
    parents = [space.random(rng) for _ in range(10)]
    for i in range(1000):
        kind = i % 3
        if kind == 0:
            child = space.random(rng)
        elif kind == 1:
            child = space.mutate(rng.choice(parents), rng, prob=0.1)
        else:
            child = space.crossover(*rng.sample(parents, 2), rng)
        space.check(child)
        spec = space.decode(child)
        assert space.encode(spec) == child
        kinds = {layer.block.type for layer in spec.layers() if layer.stage is not None}
        assert kinds <= {"shufflenet_v2", "shuffle_xception"}
    with pytest.raises(Rejected, match="length"):
        space.check((0, 1))


def test_detnas_evolution_admits_only_candidates_within_budget(tmp_path):
    text = (ROOT / "examples/search/detnas_300m.yaml").read_text()
    config = tmp_path / "detnas.yaml"
    config.write_text(text.replace("../backbones/", f"{ROOT}/examples/backbones/").replace("6.0e+8", "5.7e+8")
                      .replace("trials: 1000", "trials: 200"))
    run_search(config, tmp_path / "a", progress=False)
    run_search(config, tmp_path / "b", progress=False)
    assert rows(tmp_path / "a" / "trials.csv") == rows(tmp_path / "b" / "trials.csv")
    with open(tmp_path / "a" / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 200 and all(float(t["flops"]) <= 5.7e8 for t in trials if t["flops"])
    assert all(t["status"] == "feasible" for t in trials)  # inadmissible genotypes never reach a trial


@pytest.mark.parametrize("strategy", ["{type: aging_evolution, population: 16, sample_size: 4}",
                                      "{type: random, max_mutations: 4}"])
def test_other_strategies_are_deterministic_and_respect_budgets(tmp_path, strategy):
    config = write_config(tmp_path, trials=150)
    config.write_text(config.read_text().replace("{type: maedet_evolution, population: 32}", strategy))
    first = run_search(config, tmp_path / "a", progress=False)
    run_search(config, tmp_path / "b", progress=False)
    assert rows(tmp_path / "a" / "trials.csv") == rows(tmp_path / "b" / "trials.csv")
    assert first.feasible > 0
    assert compiler.costs(archspec.load(tmp_path / "a" / "best.yaml"), 480).flops <= 37.6e9


# -- run infrastructure: executors, workers, batches, batched commits -------------------------------
def test_two_workers_give_the_same_trials_and_best_as_one(tmp_path):
    config = write_config(tmp_path, trials=240)
    for batch in (None, 16):
        one = run_search(config, tmp_path / f"one{batch}", progress=False, batch=batch)
        if batch is None:  # the evolution needs feedback after every candidate: the pool cannot help
            with pytest.warns(UserWarning, match="--batch N evaluates N at once"):
                two = run_search(config, tmp_path / f"two{batch}", progress=False, workers=2)
        else:
            two = run_search(config, tmp_path / f"two{batch}", progress=False, workers=2, batch=batch)
        assert rows(tmp_path / f"one{batch}" / "trials.csv") == rows(tmp_path / f"two{batch}" / "trials.csv")
        assert (tmp_path / f"one{batch}" / "best.yaml").read_text() == (tmp_path / f"two{batch}" / "best.yaml").read_text()
        assert one.best_score == two.best_score
    # --batch changes the search (children drawn from the same population), --workers never does
    assert rows(tmp_path / "oneNone" / "trials.csv") != rows(tmp_path / "one16" / "trials.csv")


def fake_kernel_measurement(calls):
    """A deterministic stand-in for measuring a kernel on ONNX Runtime (seconds, and noisy)."""
    from archspec.compiler.runtime import LatencyStats

    def measure(key, context, **_):
        calls.append(key)
        data = json.loads(key)
        ms = data["in"] * data["out"] / 1e6  # the base: 3.4 ms
        return LatencyStats(ms, ms, ms, ms, 0.0, context.runtime, context.provider, context.threads, 1, 0), {}

    return measure


def plant_front_latency(monkeypatch, ms: float = 0.0):
    """Measuring the Pareto front end to end (search/front.py) planted: `ms` for every member
    (tests of the budget's kernels have no use for seconds of real ONNX Runtime runs)."""
    import archspec.search.front as front

    monkeypatch.setattr(front, "measure_end_to_end_ms", lambda spec, size, context, **_: ms)


def test_workers_leave_the_latency_table_to_the_parent(tmp_path, monkeypatch):
    # Kernels are measured in the parent only (the stand-in is patched there alone: a worker
    # measuring would run ONNX Runtime and give other numbers), once each, in trial order.
    import archspec.compiler.latency.predictor as predictor

    calls = []
    monkeypatch.setattr(predictor, "measure_kernel", fake_kernel_measurement(calls))
    plant_front_latency(monkeypatch)
    config = write_config(tmp_path, trials=150, max_latency_ms=3.6, latency_input_size=64)
    run_search(config, tmp_path / "one", progress=False, batch=8)
    serial_calls = list(calls)
    run_search(config, tmp_path / "two", progress=False, batch=8, workers=2)
    assert calls[len(serial_calls):] == serial_calls and len(set(serial_calls)) == len(serial_calls)
    assert rows(tmp_path / "one" / "trials.csv") == rows(tmp_path / "two" / "trials.csv")
    with open(tmp_path / "two" / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert any(t["reason"].startswith("max_latency_ms") for t in trials)
    assert all(float(t["latency_ms"]) <= 3.6 for t in trials if t["status"] == "feasible")
    table = sqlite3.connect(tmp_path / "two" / "latency.sqlite")
    assert table.execute("SELECT COUNT(*) FROM kernels").fetchone()[0] == len(serial_calls)


@pytest.mark.parametrize("batch", [None, 16])
def test_a_lost_uncommitted_tail_is_evaluated_again_to_the_same_trials(tmp_path, batch):
    # What a kill between two commits leaves: the last trials missing from the store (with
    # --batch 16, the cut falls inside a round: its stored part is replayed, the rest evaluated).
    config = write_config(tmp_path, trials=300)
    run_search(config, tmp_path / "whole", progress=False, batch=batch)
    run_search(config, tmp_path / "cut", progress=False, batch=batch)
    db = sqlite3.connect(tmp_path / "cut" / "trials.sqlite")
    with db:
        db.execute("DELETE FROM trials WHERE id >= 180")
    db.close()
    (tmp_path / "cut" / "trials.csv").unlink()
    with pytest.raises(ValueError, match=r"cannot resume: --batch \(.* -> .*\) changed"):
        run_search(config, tmp_path / "cut", resume=True, progress=False, batch=(batch or 1) * 2)
    run_search(config, tmp_path / "cut", resume=True, progress=False, batch=batch)
    assert rows(tmp_path / "cut" / "trials.csv") == rows(tmp_path / "whole" / "trials.csv")


def test_the_store_commits_in_batches_and_on_close(tmp_path):
    from archspec.search.store import Trial

    store = TrialStore(tmp_path / "t.sqlite", flush_seconds=3600, flush_size=3)
    reader = sqlite3.connect(tmp_path / "t.sqlite")
    count = lambda: reader.execute("SELECT COUNT(*) FROM trials").fetchone()[0]  # noqa: E731
    trial = Trial(0, (1, 2), "f", "feasible", None, {"params": 1, "score": 2.5}, 2.5, 0.1)
    store.add(trial)
    store.add(trial._replace(id=1))
    assert count() == 0  # queued, not committed: a kill now loses them
    store.add(trial._replace(id=2))
    assert count() == 3
    store.add(trial._replace(id=3), flush=True)
    store.add(trial._replace(id=4))
    store.close()
    assert count() == 5
    assert TrialStore(tmp_path / "t.sqlite").trials()[4] == trial._replace(id=4)


class ReversedExecutor:
    """Evaluates a round's jobs last to first (as a pool whose later jobs finish first would)
    and returns them in job order, as the Executor protocol asks."""

    workers = 1

    def __init__(self, inner):
        self.inner = inner
        self.rounds = []

    def evaluate(self, jobs):
        self.rounds.append([trial_id for trial_id, _ in jobs])
        return list(reversed(self.inner.evaluate(list(reversed(jobs)))))

    def close(self):
        pass


def test_the_executor_interface_with_the_serial_executor(tmp_path):
    from archspec.search.evaluators import make_evaluator
    from archspec.search.executor import SerialExecutor

    config_path = write_config(tmp_path, trials=120)
    config, base = load_search_config(config_path)
    evaluator = make_evaluator(config, base)
    space = MaedetSearchSpace(config.space, base)
    rng = random.Random(0)
    genotypes = [space.base, (0,) * 21] + [space.mutate(space.base, rng, 3) for _ in range(5)]
    executor = SerialExecutor(evaluator)
    outcomes = executor.evaluate(list(enumerate(genotypes)))
    assert [o.status for o in outcomes[:2]] == ["passed", "rejected"] and "not a choice" in outcomes[1].reason
    untimed = lambda outcome: dataclasses.replace(outcome, seconds=0.0)  # noqa: E731
    assert [untimed(o) for o in outcomes] == [untimed(evaluator.evaluate(g)) for g in genotypes]  # in job order
    assert [o.fingerprint for o in outcomes[2:]] == [archspec.fingerprint(space.decode(g)) for g in genotypes[2:]]
    executor.close()
    # any Executor plugs into the run; completion order does not matter
    run_search(config_path, tmp_path / "serial", progress=False, batch=10)
    reversed_executor = ReversedExecutor(SerialExecutor(evaluator))
    run_search(config_path, tmp_path / "reversed", progress=False, batch=10, executor=reversed_executor)
    assert rows(tmp_path / "serial" / "trials.csv") == rows(tmp_path / "reversed" / "trials.csv")
    assert max(len(r) for r in reversed_executor.rounds) > 1


def test_rounds_keep_the_serial_proposals_of_each_strategy():
    # Without --batch a round never outgrows what the strategy proposes without feedback.
    from archspec.search.run import propose_round
    from archspec.search.strategies import MaedetEvolutionStrategy, RandomWalkStrategy

    config, base = load_search_config(ROOT / "examples/search/maedet_r50_budget.yaml")
    space = MaedetSearchSpace(config.space, base)
    evolution = MaedetEvolutionStrategy(space, 0)
    assert len(propose_round(evolution, 50, None)) == 1 and len(propose_round(evolution, 50, 7)) == 7
    assert len(propose_round(RandomWalkStrategy(space, 0), 50, None)) == 50  # the walk ignores feedback
    assert len(propose_round(RandomWalkStrategy(space, 0), 5000, None)) == 256  # rounds are capped
    detnas_config, detnas_base = load_search_config(ROOT / "examples/search/detnas_300m.yaml")
    from archspec.search.space import DetnasSearchSpace
    from archspec.search.strategies import make_strategy

    detnas = make_strategy(detnas_config.strategy, DetnasSearchSpace(detnas_config.space, detnas_base), 0)
    generation = propose_round(detnas, 5000, None)  # a whole generation, then it waits for feedback
    assert len(generation) == detnas_config.strategy.population and not detnas.queue
