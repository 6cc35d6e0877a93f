"""The search's extension points, exercised from outside the package: a new space, a new strategy
and a new evaluator are defined and registered in this file (the package is not edited),
validated from a YAML config and searched end to end with `run_search`. Plus: every member of
every config union has an implementation, and a strategy the space cannot serve is refused when
the config loads (exit 2, one line, field path, no run folder)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Literal

import pytest

import archspec
from archspec.search_config import (CAPABILITIES, EVALUATOR_CONFIGS, SPACE_CONFIGS, STRATEGY_CONFIGS, EvaluatorConfig,
                                    SpaceConfig, StrategyConfig, load_search_config)
from archspec.search.evaluators import EVALUATORS, Outcome, register_evaluator
from archspec.search.executor import EXECUTORS
from archspec.search.run import run_search
from archspec.search.space import CAPABILITY_METHODS, SPACES, Rejected, register_space
from archspec.search.strategies import STRATEGIES, Proposal, Strategy, register_strategy

ROOT = Path(__file__).resolve().parents[1]
RESNET18 = ROOT / "examples" / "backbones" / "resnet18.yaml"


# -- the plug-ins (what a user writes in their own module) ---------------------------------------
class StageWidthSpace(SpaceConfig):
    """Every stage's width is the base's times one of `multipliers`."""

    offers: ClassVar[frozenset[str]] = frozenset({"random", "mutate", "crossover", "enumerate"})
    type: Literal["test_stage_widths"]
    """Space kind tag."""
    multipliers: list[float] = [0.5, 1.0]
    """Width multipliers a stage may take."""


class StageWidthSearchSpace:
    """Genotype: one multiplier index per stage."""

    def __init__(self, config: StageWidthSpace, base):
        self.config = config
        self.data = archspec.to_data(base)
        self.widths = [stage.out_channels for stage in base.stages]
        self.base = tuple([config.multipliers.index(1.0)] * len(self.widths))

    def check(self, genotype):
        if len(genotype) != len(self.widths) or not all(0 <= g < len(self.config.multipliers) for g in genotype):
            raise Rejected(f"genotype {genotype} is not one multiplier index per stage")

    def decode(self, genotype):
        data = {**self.data, "stages": [dict(stage) for stage in self.data["stages"]]}
        for stage, width, gene in zip(data["stages"], self.widths, genotype):
            stage["out_channels"] = int(width * self.config.multipliers[gene])
        try:
            return archspec.validate(data)
        except archspec.SpecError as exc:
            raise Rejected(str(exc)) from None

    def random(self, rng):
        return tuple(rng.randrange(len(self.config.multipliers)) for _ in self.widths)

    def mutate(self, genotype, rng, times=1):
        genes = list(genotype)
        for _ in range(times):
            genes[rng.randrange(len(genes))] = rng.randrange(len(self.config.multipliers))
        return tuple(genes)

    def crossover(self, a, b, rng):
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

    def enumerate(self, limit=None):
        return list(itertools.product(range(len(self.config.multipliers)), repeat=len(self.widths)))


class ExhaustiveConfig(StrategyConfig):
    """Propose every genotype of the space once, in order."""

    needs: ClassVar[frozenset[str]] = frozenset({"enumerate"})
    type: Literal["test_exhaustive"]
    """Strategy kind tag."""
    reverse: bool = False
    """Walk the genotypes from the last one."""


class ExhaustiveStrategy(Strategy):
    def __init__(self, space, seed, reverse=False):
        super().__init__(space, seed)
        self.queue = list(space.enumerate())
        if reverse:
            self.queue.reverse()

    def propose(self):
        return Proposal(self.queue.pop(0)) if self.queue else Proposal(None, "enumerated everything")

    @property
    def done(self):
        return not self.queue


class ParamsEvaluatorConfig(EvaluatorConfig):
    """Score = -params / scale: smaller is better (a stand-in for any cheap proxy)."""

    type: Literal["test_fewest_params"]
    """Evaluator kind tag."""
    scale: float = 1e6
    """Parameters per score point."""


class FewestParamsEvaluator:
    def __init__(self, space, scale):
        self.space, self.scale = space, scale

    @classmethod
    def from_config(cls, config, base, space):
        return cls(space, config.evaluator.scale)

    def evaluate(self, genotype):
        from archspec.compiler import costs

        try:
            self.space.check(genotype)
            spec = self.space.decode(genotype)
        except Rejected as exc:
            return Outcome("rejected", str(exc))
        params = costs(spec).params
        return Outcome("passed", None, archspec.fingerprint(spec), {"params": params, "flops": 1.0},
                       -params / self.scale)


@pytest.fixture
def plugins():
    """Register the plug-ins for one test and remove them after (the registries are global)."""
    SPACE_CONFIGS.register("test_stage_widths", StageWidthSpace)
    register_space("test_stage_widths")(StageWidthSearchSpace)
    STRATEGY_CONFIGS.register("test_exhaustive", ExhaustiveConfig)
    register_strategy("test_exhaustive")(ExhaustiveStrategy)
    EVALUATOR_CONFIGS.register("test_fewest_params", ParamsEvaluatorConfig)
    register_evaluator("test_fewest_params")(FewestParamsEvaluator)
    yield
    for registry, tag in ((SPACES, "test_stage_widths"), (SPACE_CONFIGS, "test_stage_widths"),
                          (STRATEGIES, "test_exhaustive"), (STRATEGY_CONFIGS, "test_exhaustive"),
                          (EVALUATORS, "test_fewest_params"), (EVALUATOR_CONFIGS, "test_fewest_params")):
        registry.unregister(tag)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(f"type: search\nbase: {RESNET18}\n" + text)
    return path


def test_new_space_strategy_and_evaluator_search_end_to_end(plugins, tmp_path):
    path = _config(tmp_path, "space: {type: test_stage_widths, multipliers: [0.5, 1.0, 0.25]}\n"
                             "strategy: {type: test_exhaustive, reverse: true}\n"
                             "evaluator: {type: test_fewest_params, scale: 1000}\n"
                             "budgets: {input_size: 64}\ntrials: 100\n")
    config, base = load_search_config(path)
    assert (type(config.space), type(config.strategy), type(config.evaluator)) == \
        (StageWidthSpace, ExhaustiveConfig, ParamsEvaluatorConfig)
    assert config.evaluator.scale == 1000 and config.strategy.reverse
    result = run_search(path, tmp_path / "run", progress=False)
    # 3 multipliers over 4 stages: 81 genotypes, then the strategy is done (not 100 trials)
    assert result.trials == 81 and result.feasible == 81
    # the fewest parameters: every stage at a quarter of ResNet-18's width
    quarter = archspec.load(RESNET18).model_copy(deep=True)
    data = archspec.to_data(quarter)
    for stage in data["stages"]:
        stage["out_channels"] //= 4
    assert archspec.fingerprint(result.best_spec) == archspec.fingerprint(archspec.validate(data))
    from archspec.compiler import costs

    assert result.best_score == pytest.approx(-costs(archspec.validate(data)).params / 1000)
    trials = (tmp_path / "run" / "trials.csv").read_text().splitlines()
    assert trials[1].split(",")[4] == "2 2 2 2"  # reverse order: the last genotype first


def test_new_space_works_with_the_shipped_strategies(plugins, tmp_path):
    """The new space offers random, mutate and crossover, so DetNAS's evolution is refused
    (it needs redraw) while aging evolution and the random walk run."""
    for strategy, trials in (("{type: aging_evolution, population: 4, sample_size: 2}", 12),
                             ("{type: random, max_mutations: 2}", 12)):
        path = _config(tmp_path, f"space: {{type: test_stage_widths}}\nstrategy: {strategy}\n"
                                 f"budgets: {{input_size: 64}}\ntrials: {trials}\n")
        out = tmp_path / f"run_{trials}_{strategy[7:12]}"
        result = run_search(path, out, progress=False)
        assert result.trials == trials and result.feasible >= 1
    refused = _config(tmp_path, "space: {type: test_stage_widths}\nstrategy: {type: detnas_evolution}\n")
    with pytest.raises(archspec.SpecError, match=r"strategy\.type: 'detnas_evolution' needs a space that can redraw; "
                                                 r"the 'test_stage_widths' space offers random, mutate, crossover, "
                                                 r"enumerate"):
        load_search_config(refused)


def test_new_evaluator_fields_are_validated_with_field_paths(plugins, tmp_path):
    path = _config(tmp_path, "space: {type: test_stage_widths}\nstrategy: {type: test_exhaustive}\n"
                             "evaluator: {type: test_fewest_params, scale: many}\n")
    with pytest.raises(archspec.SpecError, match=r"evaluator\.scale: Input should be a valid number"):
        load_search_config(path)
    path = _config(tmp_path, "space: {type: test_stage_widths, multiplier: [1]}\nstrategy: {type: test_exhaustive}\n")
    with pytest.raises(archspec.SpecError, match=r"space\.multiplier: unknown field"):
        load_search_config(path)


def test_registering_a_space_without_the_methods_it_offers_is_refused(plugins):
    class Lazy:
        def check(self, genotype): ...

        def decode(self, genotype): ...

    SPACE_CONFIGS.register("test_lazy", StageWidthSpace)
    try:
        with pytest.raises(TypeError, match=r"lacks random \(random\), crossover \(crossover\), enumerate "
                                            r"\(enumerate\), mutate \(mutate\)|lacks crossover"):
            register_space("test_lazy")(Lazy)
        assert "test_lazy" not in SPACES
    finally:
        SPACE_CONFIGS.unregister("test_lazy")


def test_every_union_member_has_its_implementation():
    """Each registered config model (the members of the space, strategy and evaluator unions)
    has an implementation registered under the same tag, with the methods it declares; the
    executors `make_executor` picks are registered."""
    assert set(SPACE_CONFIGS) == set(SPACES) >= {"maedet", "detnas", "crnas", "spinenet", "annotated"}
    assert set(STRATEGY_CONFIGS) == set(STRATEGIES) >= {"maedet_evolution", "random", "detnas_evolution",
                                                         "aging_evolution", "crnas_two_step"}
    assert set(EVALUATOR_CONFIGS) == set(EVALUATORS) >= {"analytic"}
    assert {"serial", "pool"} <= set(EXECUTORS)
    for tag, model in SPACE_CONFIGS.items():
        assert model.model_fields["type"].annotation.__args__ == (tag,)
        assert model.offers and model.offers <= set(CAPABILITIES)
        for capability in model.offers:
            for method in CAPABILITY_METHODS[capability]:
                assert callable(getattr(SPACES[tag], method, None)), (tag, capability, method)
    for tag, model in STRATEGY_CONFIGS.items():
        assert model.model_fields["type"].annotation.__args__ == (tag,)
        assert model.needs and model.needs <= set(CAPABILITIES)
        assert issubclass(STRATEGIES[tag], Strategy)
    for tag, model in EVALUATOR_CONFIGS.items():
        assert model.model_fields["type"].annotation.__args__ == (tag,)


SHIPPED_PAIRS = {
    # space -> strategies it can serve (independent expectation, written out by hand)
    "maedet": {"maedet_evolution", "random", "aging_evolution"},
    "detnas": {"maedet_evolution", "random", "aging_evolution", "detnas_evolution"},
    "crnas": {"maedet_evolution", "random", "aging_evolution", "crnas_two_step"},
    "spinenet": {"maedet_evolution", "random", "aging_evolution"},
    "annotated": {"maedet_evolution", "random", "aging_evolution", "detnas_evolution"},
}


def test_capabilities_decide_exactly_the_shipped_pairs():
    for space, model in SPACE_CONFIGS.items():
        if space in SHIPPED_PAIRS:
            served = {s for s, strategy in STRATEGY_CONFIGS.items() if strategy.needs <= model.offers}
            assert served == SHIPPED_PAIRS[space], space


@pytest.mark.parametrize("space,strategy", [(space, strategy) for space, strategies in SHIPPED_PAIRS.items()
                                            for strategy in sorted(strategies)])
def test_every_compatible_shipped_pair_runs(space, strategy, tmp_path):
    """A pair the capabilities allow runs (a few trials) without AttributeError or TypeError."""
    search = ROOT / "examples" / "search"
    example = {"maedet": "maedet_r50_base.yaml", "detnas": "../backbones/detnas_coco_fpn_300m.yaml",
               "crnas": "../backbones/resnet50.yaml", "spinenet": "../backbones/spinenet49.yaml"}.get(space)
    where = f"base: {(search / example).resolve()}\nspace: {{type: {space}}}" if example else \
        f"space: {{type: annotated, template: {search / 'my_backbone_template.yaml'}}}"
    path = tmp_path / "pair.yaml"
    path.write_text(f"type: search\n{where}\nstrategy: {{type: {strategy}}}\n"
                    f"budgets: {{input_size: 64}}\ntrials: 6\n")
    result = run_search(path, tmp_path / "run", progress=False)
    assert result.trials == 6


def test_mismatched_config_exits_2_at_load_with_a_field_path(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"type: search\nbase: {ROOT / 'examples' / 'search' / 'maedet_r50_base.yaml'}\n"
                    "space: {type: maedet}\nstrategy: {type: detnas_evolution}\n")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "archspec.cli", "search", str(path), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: cfg.yaml: strategy.type: 'detnas_evolution' needs a space that can random, crossover, redraw; "
        "the 'maedet' space offers mutate"] or done.stderr.splitlines() == [
        f"error: {path}: strategy.type: 'detnas_evolution' needs a space that can random, crossover, redraw; "
        "the 'maedet' space offers mutate"]
    assert not out.exists()  # refused before the run folder is touched


def test_strategies_are_built_the_same_way_from_their_config():
    """`from_config` passes a config's fields to the constructor: a field the constructor does
    not take would fail here, for every shipped strategy."""
    from archspec.search.space import make_space

    config, base = load_search_config(ROOT / "examples" / "search" / "detnas_300m.yaml")
    space = make_space(config.space, base)
    for tag, model in STRATEGY_CONFIGS.items():
        if model.needs <= config.space.offers:
            strategy = STRATEGIES[tag].from_config(model(type=tag), space, 3)
            assert isinstance(strategy, Strategy) and strategy.space is space
            assert strategy.rng.random() == random.Random(3).random()
