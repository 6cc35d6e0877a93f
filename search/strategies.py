"""Search strategies: they only `propose` genotypes and take `feedback`.

A strategy owns a seeded `random.Random` and nothing else that is random, so its proposals are
a deterministic function of the seed and the feedback it received. The run loop uses that to
resume: it replays the stored trials through a fresh strategy instead of pickling state.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass

from archspec.registry import Registry
from archspec.search.space import UNDECIDED, Genotype, Rejected
from archspec.search_config import STRATEGY_CONFIGS


@dataclass(frozen=True)
class Proposal:
    """A proposed genotype, or the reason none could be made."""

    genotype: Genotype | None
    reason: str | None = None
    wait: bool = False
    """Nothing to propose until outstanding feedback arrives (not a trial)."""


class Strategy:
    """Ask/tell interface. A strategy is built with `from_config(config, space, seed, admit)`,
    the same way for every strategy; it calls only the space methods of the capabilities its
    config `needs` (checked when the search config loads)."""

    def __init__(self, space, seed: int):
        self.space = space
        self.rng = random.Random(seed)
        self._base_proposed = False
        """Whether `explore_from_base` proposed the base already."""

    @classmethod
    def from_config(cls, config, space, seed: int, admit: Callable[[Genotype], bool] | None = None) -> "Strategy":
        """Build from a strategy config: its fields (all but ``type``) are the constructor's
        keyword arguments. `admit` is the run's cheap pre-screen (params/FLOPs budgets) for
        strategies that filter what they propose; most ignore it."""
        fields = {name: getattr(config, name) for name in type(config).model_fields if name != "type"}
        return cls(space, seed, **fields)

    def propose(self) -> Proposal:
        raise NotImplementedError

    def explore_from_base(self, mutations: int) -> Proposal:
        """What an evolution proposes while its population is empty (no feasible candidate yet):
        the base once, then mutations of the base, as MAE-DET's release does while its
        population is small. Proposing the base again instead trapped a search whose base breaks
        a budget (a latency budget below the base's latency): every later trial was a duplicate
        of the first. The state changes only here, so a resumed run replays it exactly."""
        if not self._base_proposed:
            self._base_proposed = True
            return Proposal(self.space.base)
        try:
            return Proposal(self.space.mutate(self.space.base, self.rng, mutations))
        except Rejected as exc:
            return Proposal(None, str(exc))

    def feedback(self, genotype: Genotype | None, score: float | None) -> None:
        """`score` is None for candidates that were rejected or infeasible."""

    @property
    def done(self) -> bool:
        """True when the strategy has nothing more to propose (the run stops early)."""
        return False


STRATEGIES: Registry[type[Strategy]] = Registry("search strategy")
"""Strategy ``type`` tag -> implementation (a `Strategy` subclass)."""


def register_strategy(tag: str):
    """Class decorator: register the implementation of the strategy config registered as `tag`."""
    def decorator(cls: type[Strategy]) -> type[Strategy]:
        STRATEGY_CONFIGS.get(tag)  # the config must exist: a clear error otherwise
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"strategy {tag!r}: {cls!r} is not a Strategy subclass")
        STRATEGIES.register(tag, cls)
        return cls
    return decorator


@register_strategy("maedet_evolution")
class MaedetEvolutionStrategy(Strategy):
    """MAE-DET's evolution (Sun et al., MAE-DET, ICML 2022; the release's evolutionary searcher): a uniformly random parent from the population is
    mutated `mutations_per_child` times; feasible children join the population, which is kept
    sorted by score, de-duplicated and truncated to its size. Until a candidate is feasible the
    population is empty and children are mutations of the base (`explore_from_base`)."""

    def __init__(self, space, seed: int, population: int = 256, mutations_per_child: int = 2):
        super().__init__(space, seed)
        self.size = population
        self.mutations = mutations_per_child
        self.population: list[tuple[float, Genotype]] = []
        self._members: set[Genotype] = set()

    def propose(self) -> Proposal:
        if not self.population:
            return self.explore_from_base(self.mutations)
        parent = self.population[self.rng.randrange(len(self.population))][1]
        try:
            return Proposal(self.space.mutate(parent, self.rng, self.mutations))
        except Rejected as exc:
            return Proposal(None, str(exc))

    def feedback(self, genotype, score) -> None:
        if score is None or genotype in self._members:
            return
        # Kept sorted by descending score; among equal scores the earlier member stays first.
        bisect.insort(self.population, (score, genotype), key=lambda item: -item[0])
        self._members.add(genotype)
        for _, dropped in self.population[self.size:]:
            self._members.discard(dropped)
        del self.population[self.size:]


@register_strategy("random")
class RandomWalkStrategy(Strategy):
    """Random search: the base mutated 1..max_mutations times."""

    def __init__(self, space, seed: int, max_mutations: int = 8):
        super().__init__(space, seed)
        self.max_mutations = max_mutations

    def propose(self) -> Proposal:
        try:
            return Proposal(self.space.mutate(self.space.base, self.rng, self.rng.randint(1, self.max_mutations)))
        except Rejected as exc:
            return Proposal(None, str(exc))


@register_strategy("detnas_evolution")
class DetnasEvolutionStrategy(Strategy):
    """DetNAS's evolution (Chen et al., DetNAS, NeurIPS 2019; evolutionary search on the SPOS supernet), one generation at a time: the first is random; each
    next one holds `mutations` mutated and `crossovers` crossed-over children of the best
    `parents` seen so far, topped up with random genotypes to `population`. Only genotypes
    that `admit` accepts (the cheap params/FLOPs budgets) enter a generation; each slot tries
    up to 10x, as in the release."""

    TRIES = 10

    def __init__(self, space, seed: int, config, admit=None):
        super().__init__(space, seed)
        self.config = config
        self.admit = admit or (lambda genotype: True)
        self.queue: list[Genotype] = []
        self.pending = 0
        self.scored: dict[Genotype, float] = {}
        self.seen: set[Genotype] = set()
        self.generation = 0

    @classmethod
    def from_config(cls, config, space, seed: int, admit=None) -> "DetnasEvolutionStrategy":
        return cls(space, seed, config, admit)

    def propose(self) -> Proposal:
        if not self.queue:
            self._next_generation()
        if not self.queue:
            return Proposal(None, "no admissible candidate for the next generation")
        self.pending += 1
        return Proposal(self.queue.pop(0))

    def feedback(self, genotype, score) -> None:
        self.pending = max(0, self.pending - 1)
        if genotype is not None and score is not None:
            self.scored[genotype] = max(score, self.scored.get(genotype, score))

    def _fill(self, make, count: int, batch: list[Genotype]) -> None:
        for _ in range(count):
            for _ in range(self.TRIES):
                genotype = make()
                if genotype is not None and genotype not in self.seen and self.admit(genotype):
                    self.seen.add(genotype)
                    batch.append(genotype)
                    break

    def _next_generation(self) -> None:
        c, rng, space = self.config, self.rng, self.space
        top = [g for g, _ in sorted(self.scored.items(), key=lambda item: -item[1])[:c.parents]]
        batch: list[Genotype] = []
        if top:
            self._fill(lambda: space.redraw(rng.choice(top), rng, c.mutation_prob), c.mutations, batch)
            if len(top) > 1:
                self._fill(lambda: space.crossover(*rng.sample(top, 2), rng), c.crossovers, batch)
        self._fill(lambda: space.random(rng), c.population - len(batch), batch)
        self.queue = batch
        self.generation += 1


@register_strategy("aging_evolution")
class AgingEvolutionStrategy(Strategy):
    """Regularized evolution: tournament of `sample_size` from the population, mutate the
    winner once; feasible children join and the oldest member leaves. Until a candidate is
    feasible, children are mutations of the base (`explore_from_base`)."""

    def __init__(self, space, seed: int, population: int = 64, sample_size: int = 16):
        super().__init__(space, seed)
        self.size = population
        self.sample_size = sample_size
        self.population: list[tuple[float, Genotype]] = []  # oldest first

    def propose(self) -> Proposal:
        if not self.population:
            return self.explore_from_base(1)
        contenders = self.rng.sample(self.population, min(self.sample_size, len(self.population)))
        parent = max(contenders, key=lambda item: item[0])[1]
        try:
            return Proposal(self.space.mutate(parent, self.rng, 1))
        except Rejected as exc:
            return Proposal(None, str(exc))

    def feedback(self, genotype, score) -> None:
        if score is None:
            return
        self.population.append((score, genotype))
        if len(self.population) > self.size:
            self.population.pop(0)


@register_strategy("crnas_two_step")
class CrnasTwoStepStrategy(Strategy):
    """CR-NAS's search (Liang et al., CR-NAS, ICLR 2020; its ResNet-series choice table). Step one scores stage allocations (all allowed ones, or
    a seeded sample of `max_allocations`) with the base's dilations and keeps the best. Step two
    walks the blocks in order; for each block it extends every kept partial architecture with
    every dilation choice and keeps the `top_k` best.

    The blocks after the one being chosen are *undecided*. With ``undecided_dilations: sampled``
    (the paper's way) their genes are `UNDECIDED` and the evaluator draws their dilations per
    mini-batch (the supernet evaluator does): the partial architecture is judged over the
    completions it still allows, not by one of them. Each round's candidates are then new
    genotypes. With ``one`` (for a deterministic training-free score, which has no mini-batches)
    they stay at dilation 1, and a kept partial architecture with the block at 1 is not scored
    again. Candidates already scored are not proposed again, and infeasible ones (no score) are
    never kept.

    Proposals come in rounds; a round is finished when every proposal of it got feedback, so
    a batch of proposals may be outstanding at once."""

    def __init__(self, space, seed: int, top_k: int = 3, max_allocations: int = 1000,
                 undecided_dilations: str = "one"):
        super().__init__(space, seed)
        if not hasattr(space, "allocations"):
            raise ValueError("the crnas_two_step strategy needs a crnas space")
        self.top_k = top_k
        self.undecided_gene = UNDECIDED if undecided_dilations == "sampled" else 1
        allocations = list(space.allocations)
        if len(allocations) > max_allocations:
            allocations = sorted(self.rng.sample(allocations, max_allocations))
        dilations = space.split(space.base)[1]
        self.pending: list[Genotype] = [tuple(a) + dilations for a in allocations]
        self.waiting: dict[Genotype, int] = {}
        self.scores: dict[Genotype, float] = {}
        self.round: list[Genotype] = list(self.pending)
        self.block = -1  # -1: the allocation step; then the block whose dilation is chosen
        self.beam: list[Genotype] = []

    def propose(self) -> Proposal:
        if not self.pending:
            if self.done:
                return Proposal(None, "the crnas two-step search has finished")
            return Proposal(None, "waiting for this round's feedback", wait=True)
        genotype = self.pending.pop(0)
        self.waiting[genotype] = self.waiting.get(genotype, 0) + 1
        return Proposal(genotype)

    def feedback(self, genotype, score) -> None:
        if genotype is None or genotype not in self.waiting:
            return
        self.waiting[genotype] -= 1
        if not self.waiting[genotype]:
            del self.waiting[genotype]
        self.scores[genotype] = float("-inf") if score is None else score
        if not self.pending and not self.waiting:
            self._next_round()

    def _next_round(self) -> None:
        """Keep the best of the finished round, then queue the next block's choices (those not
        scored yet: with undecided blocks at 1, a kept partial architecture with this block at 1
        already was)."""
        while not self.pending and not self.done:
            # infeasible candidates (score -inf) are never kept: nothing built on them is feasible
            ranked = sorted((g for g in dict.fromkeys(self.round) if self.scores[g] > float("-inf")),
                            key=lambda g: (-self.scores[g], g))
            self.beam = ranked[:1] if self.block < 0 else ranked[:self.top_k]
            self.block = self.block + 1 if self.beam else self.space.total
            if self.done:
                self.round = []
                return
            if self.block == 0:  # dilations are chosen from scratch: every block starts undecided
                self.beam = [self.space.split(g)[0] + (self.undecided_gene,) * self.space.total for g in self.beam]
            self.round = [self.space.with_dilation(g, self.block, d) for g in self.beam
                          for d in self.space.config.dilations]
            self.pending = [g for g in dict.fromkeys(self.round) if g not in self.scores]

    @property
    def done(self) -> bool:
        return self.block >= self.space.total

    @property
    def best(self) -> Genotype | None:
        return self.beam[0] if self.beam else None


def make_strategy(config, space, seed: int, admit=None) -> Strategy:
    """The strategy a strategy config names (a registry lookup), built the one way."""
    return STRATEGIES.get(config.type).from_config(config, space, seed, admit)
