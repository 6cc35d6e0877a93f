"""Every shipped search space, drawn and mutated many times: each result decodes to a valid spec
that keeps the space's rules, or is rejected with a reason. And the CR-NAS and SpineNet pieces."""

from __future__ import annotations

import functools
import math
import random
from collections import Counter

import pytest

import archspec
from archspec.search_config import ReceptiveFieldTarget, load_search_config
from archspec.search.run import run_search
from archspec.search.score import graph_level_scores, level_scores, maedet_score, receptive_field_term
from archspec.search.space import Rejected, make_space
from archspec.search.strategies import CrnasTwoStepStrategy, make_strategy
from tests.conftest import ROOT, ZOO

SEARCHES = ROOT / "examples" / "search"
SHIPPED = ["maedet_r50_budget", "detnas_300m", "crnas_resnet50", "spinenet49_permute"]
DRAWS = 1000


def _space(name):
    config, base = load_search_config(SEARCHES / f"{name}.yaml")
    return config, make_space(config.space, base)


@functools.cache
def _spinenet49():
    return archspec.load(ROOT / "examples/backbones/spinenet49.yaml")


def _respects(name, config, space, spec) -> None:
    """The space's own rules, read back from the decoded spec (not from the genotype)."""
    if name == "crnas_resnet50":
        depths = [stage.depth for stage in spec.stages]
        assert sum(depths) == space.total
        assert all(d in choices for d, choices in zip(depths, config.space.depth_choices))
        assert all(stage.dilations and set(stage.dilations) <= set(config.space.dilations) for stage in spec.stages)
    elif name == "spinenet49_permute":
        base = _spinenet49()
        for flag in (True, False):
            assert Counter(b.level for b in spec.blocks if b.output == flag) == \
                Counter(b.level for b in base.blocks if b.output == flag)
        for i, block in enumerate(spec.blocks):
            assert len(set(block.parents)) == 2 and max(block.parents) < len(spec.stem_blocks) + i
            assert block.block.type in config.space.kinds
    elif name == "detnas_300m":
        choices = space.choices
        assert all(layer.block in choices for layer in spec.layers() if layer.stage is not None)
    else:
        assert space.layers(space.encode(spec)) <= config.space.max_layers
        for stage in spec.stages:
            assert stage.block.kernel in config.space.kernels + [3]
            assert stage.block.bottleneck_channels <= stage.out_channels <= config.space.max_channels


@pytest.mark.parametrize("name", SHIPPED)
def test_draws_and_mutations_decode_or_are_rejected_with_a_reason(name):
    config, space = _space(name)
    rng = random.Random(f"property:{name}")
    outcomes = Counter()
    genotype = space.base
    for step in range(DRAWS):
        try:
            if hasattr(space, "random") and step % 4 == 0:
                child = space.random(rng)
            else:
                child = space.mutate(genotype, rng, 1 + step % 3)
            space.check(child)
            spec = space.decode(child)
        except Rejected as exc:
            assert str(exc).strip(), "a rejection must give its reason"
            outcomes["rejected"] += 1
            continue
        assert spec.type == space.decode(space.base).type
        assert archspec.validate(archspec.to_data(spec)) == spec  # a normal, valid spec
        _respects(name, config, space, spec)
        outcomes["valid"] += 1
        genotype = child if rng.random() < 0.7 else genotype
    assert outcomes["valid"] >= DRAWS // 5, outcomes


@pytest.mark.parametrize("name", SHIPPED)
def test_genotype_round_trips_through_the_spec(name):
    _, space = _space(name)
    assert space.encode(space.decode(space.base)) == space.base


def test_crnas_space_rejects_rule_breakers_by_name():
    config, space = _space("crnas_resnet50")
    depths, dilations = space.split(space.base)
    with pytest.raises(Rejected, match="total is fixed at 16"):
        space.check((3, 4, 6, 2) + dilations[:-1] + (1,))
    with pytest.raises(Rejected, match="stage 2: 4 blocks is not a choice"):
        space.check((3, 3, 4, 6) + dilations)
    with pytest.raises(Rejected, match="block 5: dilation 4 is not a choice"):
        space.check(space.with_dilation(space.base, 5, 4))
    assert len(space.allocations) == 153 and (3, 4, 6, 3) in space.allocations
    assert all(sum(a) == 16 for a in space.allocations)


def test_spinenet_space_rejects_later_parents_and_broken_permutations():
    _, space = _space("spinenet49_permute")
    genes = list(space.base)
    genes[1] = 9  # block 2's first parent may only be block 0 or 1
    with pytest.raises(Rejected, match="block 2: parents 9, 1 must be two distinct earlier blocks"):
        space.check(tuple(genes))
    genes = list(space.base)
    genes[0] = 7  # an intermediate block at L7 instead of L2: not a permutation
    with pytest.raises(Rejected, match="intermediate block levels"):
        space.check(tuple(genes))


# -- scores --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [p for p in ZOO if archspec.load(p).type == "staged"
                                  and {"C3", "C4", "C5"} <= set(archspec.load(p).output_names())],
                         ids=lambda p: p.stem)  # the score reads C3..C5 (dilated_3stage stops at stride 8)
def test_graph_score_equals_the_per_block_score_on_staged_backbones(path):
    spec = archspec.load(path)
    per_block, whole = level_scores(spec), graph_level_scores(spec)
    for level in (3, 4, 5):
        assert whole[level] == pytest.approx(per_block[level], rel=1e-12)


def test_receptive_field_term_by_hand_and_dilation_sensitivity():
    spec = archspec.load(ROOT / "examples/backbones/resnet50.yaml")
    # ResNet-50's theoretical receptive fields: C3 91, C4 267, C5 427 px; targets 6 x (32, 64, 128)
    want = -50 * sum(abs(math.log2(rf / (6 * side))) for rf, side in ((91, 32), (267, 64), (427, 128)))
    assert receptive_field_term(spec, ReceptiveFieldTarget()) == pytest.approx(want, rel=1e-12)
    data = archspec.to_data(spec)
    data["stages"][3]["dilations"] = [1, 2, 3]
    dilated = archspec.validate(data)
    assert maedet_score(dilated) == pytest.approx(maedet_score(spec))  # MAE-DET is blind to dilation
    assert receptive_field_term(dilated, ReceptiveFieldTarget()) > receptive_field_term(spec, ReceptiveFieldTarget())


def test_spinenet_scores_are_finite_and_change_with_the_permutation():
    _, space = _space("spinenet49_permute")
    base = space.decode(space.base)
    scores = graph_level_scores(base)
    assert set(scores) == {3, 4, 5, 6, 7} and all(math.isfinite(v) for v in scores.values())
    rng = random.Random(1)
    others = set()
    for _ in range(30):
        try:
            others.add(round(maedet_score(space.decode(space.mutate(space.base, rng, 2))), 6))
        except Rejected:
            pass
    assert len(others) > 3


# -- the CR-NAS two-step strategy ----------------------------------------------------------------
def _drive(strategy, space, score):
    proposals = []
    while not strategy.done:
        proposal = strategy.propose()
        assert proposal.genotype is not None, proposal.reason
        proposals.append(proposal.genotype)
        strategy.feedback(proposal.genotype, score(space.decode(proposal.genotype)))
    return proposals


def test_crnas_two_step_allocates_then_dilates_greedily():
    config, space = _space("crnas_resnet50")
    from archspec.search.score import config_score

    score = lambda spec: config_score(spec, config)  # noqa: E731
    first = CrnasTwoStepStrategy(space, seed=0, top_k=3)
    proposals = _drive(first, space, score)
    again = _drive(CrnasTwoStepStrategy(space, seed=0, top_k=3), space, score)
    assert proposals == again
    assert proposals[:153] == [a + (1,) * 16 for a in space.allocations]  # step one: every allocation
    allocation = max(space.allocations, key=lambda a: (score(space.decode(a + (1,) * 16)), [-x for x in a]))
    best = first.best
    assert space.split(best)[0] == allocation
    assert set(space.split(best)[1]) <= {1, 2, 3} and set(space.split(best)[1]) != {1}
    # greedy: the best is at least as good as every candidate of the last round
    assert score(space.decode(best)) >= max(score(space.decode(g)) for g in proposals[-9:])
    # step two proposes at most top_k x choices candidates per block
    assert len(proposals) - 153 <= 16 * 3 * 3


def test_crnas_and_spinenet_searches_end_to_end(tmp_path):
    crnas = run_search(SEARCHES / "crnas_resnet50.yaml", tmp_path / "crnas", progress=False)
    assert crnas.trials < 1000  # stopped by itself after step two
    best = archspec.load(tmp_path / "crnas" / "best.yaml")
    assert sum(stage.depth for stage in best.stages) == 16
    assert any(d > 1 for stage in best.stages for d in stage.dilations)
    spine = run_search(SEARCHES / "spinenet49_permute.yaml", tmp_path / "spine", progress=False, max_trials=40)
    best = archspec.load(tmp_path / "spine" / "best.yaml")
    assert best.type == "scale_permuted" and maedet_score(best) == pytest.approx(spine.best_score)
    from archspec import compiler

    assert compiler.costs(best, 640).flops <= 56.53e9
    strategy = make_strategy(load_search_config(SEARCHES / "crnas_resnet50.yaml")[0].strategy,
                             _space("crnas_resnet50")[1], 0)
    assert isinstance(strategy, CrnasTwoStepStrategy)


@pytest.mark.parametrize("name", SHIPPED)
def test_latency_table_builder_samples_search_configs(name):
    """`archspec latency build-table CONFIG.yaml` measures the kernels of the base and of valid
    candidates near it."""
    from archspec.cli.deploy_commands import _specs_from

    specs = _specs_from((SEARCHES / f"{name}.yaml",))
    _, space = _space(name)
    assert specs[0] == space.decode(space.base)
    assert len(specs) == 65 and len({archspec.fingerprint(s) for s in specs}) == 65


@pytest.mark.parametrize("name", SHIPPED)
def test_genotypes_of_the_wrong_length_are_rejected(name):
    _, space = _space(name)
    for genotype in (space.base[:-1], space.base + (1,), ()):
        with pytest.raises(Rejected, match="length"):
            space.check(genotype)


def _rows(path):
    import csv

    with open(path) as handle:
        return [row[:-1] for row in csv.reader(handle)]  # all but the timing column


def test_crnas_search_resumes_inside_a_round_and_ignores_workers(tmp_path):
    """The two-step strategy is rebuilt on resume by replaying stored trials; a cut in the
    middle of a step-two round (trial 200 of about 290) must give the uninterrupted run's
    trials, and so must two worker processes."""
    import sqlite3

    config = SEARCHES / "crnas_resnet50.yaml"
    whole = run_search(config, tmp_path / "whole", progress=False)
    run_search(config, tmp_path / "cut", progress=False)
    db = sqlite3.connect(tmp_path / "cut" / "trials.sqlite")
    with db:
        db.execute("DELETE FROM trials WHERE id >= 200")
    db.close()
    (tmp_path / "cut" / "trials.csv").unlink()
    resumed = run_search(config, tmp_path / "cut", resume=True, progress=False)
    assert 200 < whole.trials == resumed.trials < 1000
    assert _rows(tmp_path / "cut" / "trials.csv") == _rows(tmp_path / "whole" / "trials.csv")
    run_search(config, tmp_path / "pool", progress=False, workers=2)
    assert _rows(tmp_path / "pool" / "trials.csv") == _rows(tmp_path / "whole" / "trials.csv")
    assert (tmp_path / "pool" / "best.yaml").read_text() == (tmp_path / "whole" / "best.yaml").read_text()


def test_spinenet_level_swaps_stay_within_one_role():
    """A swap draws its role (intermediate or output) once, so it never breaks a permutation:
    mutations are rejected only for spec reasons (e.g. a block nothing uses), never for levels."""
    _, space = _space("spinenet49_permute")
    rng = random.Random(3)
    for _ in range(DRAWS):
        try:
            space.mutate(space.base, rng, 1)
        except Rejected as exc:
            assert "levels" not in str(exc), exc


def test_crnas_space_refuses_a_base_with_per_block_overrides():
    from archspec.errors import SpecError
    from archspec.search_config import CrnasSpace
    from archspec.search.space import CrnasSearchSpace

    data = archspec.to_data(archspec.load(ROOT / "examples/backbones/resnet50.yaml"))
    data["stages"][1]["blocks"] = [None, {"type": "basic"}, None, None]
    with pytest.raises(SpecError, match=r"base.stages\[1\].blocks"):
        CrnasSearchSpace(CrnasSpace(type="crnas"), archspec.validate(data))


def test_score_cli_offers_the_receptive_field_scorer():
    import json

    from click.testing import CliRunner

    from archspec.cli import cli

    result = CliRunner().invoke(cli, ["score", str(ROOT / "examples/backbones/resnet50.yaml"), "--scorer", "maedet-rf",
                                       "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    # ResNet-50's published theoretical receptive fields at C3, C4, C5 are 91, 267 and 427 px; the
    # targets are 6 anchor sides (anchors 32, 64, 128 px), 50 points per octave of mismatch
    import math

    term = -50 * sum(abs(math.log2(rf / (6 * anchor))) for rf, anchor in ((91, 32), (267, 64), (427, 128)))
    assert info["receptive_field_term"] == pytest.approx(term, abs=1e-6)  # -122.42
    assert info["score"] == pytest.approx(1174.3 + term, abs=0.05)  # ResNet-50's MAE-DET score is 1174.3


def test_crnas_two_step_proposes_each_candidate_once_and_never_keeps_infeasible_ones():
    config, space = _space("crnas_resnet50")
    from archspec.search.score import config_score

    # "infeasible" (no score) unless stage 1 holds 4 or more blocks: the kept allocation must obey
    def score(spec):
        return config_score(spec, config) if spec.stages[1].depth >= 4 else None

    strategy = CrnasTwoStepStrategy(space, seed=0, top_k=3)
    proposals = _drive(strategy, space, score)
    assert len(proposals) == len(set(proposals))
    assert space.split(strategy.best)[0][1] >= 4
    nothing = CrnasTwoStepStrategy(space, seed=0, top_k=3)
    assert len(_drive(nothing, space, lambda spec: None)) == len(space.allocations)  # stops after step one
    assert nothing.done and nothing.best is None
