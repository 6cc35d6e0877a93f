"""Search spaces: genotype <-> spec, and the mutations that move between genotypes.

A genotype is a compact tuple of ints; `decode` turns it into a validated spec. A mutation
either returns a new genotype that respects the space's rules or raises `Rejected` with the
reason, before anything is built.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Final, Protocol

import archspec
from archspec.errors import SpecError
from archspec.registry import Registry
from archspec.search_config import CAPABILITIES, SPACE_CONFIGS, MaedetSpace

Genotype = tuple[int, ...]


def undecided_blocks(space, genotype: Genotype) -> tuple[int, ...]:
    """The blocks of a partial genotype whose choice is still open (CR-NAS's greedy dilation
    step marks them with `UNDECIDED`); () for a complete genotype and for spaces without partial
    genotypes."""
    marked = getattr(space, "undecided", None)
    return marked(genotype) if marked is not None and genotype is not None else ()


class Rejected(ValueError):
    """A candidate that breaks a rule of the space (or of validity); `str()` is the reason."""


class SearchSpace(Protocol):
    """What every space has: built as ``Space(config, base)`` from its config model and the
    validated base spec, a starting genotype, the space's rules and the decoder. The methods of
    each capability it offers (its config's ``offers``) come on top: see `CAPABILITY_METHODS`."""

    base: Genotype
    """The starting genotype (the base spec's, or the template's defaults)."""

    def __init__(self, config: Any, base: Any) -> None: ...

    def check(self, genotype: Genotype) -> None:
        """`Rejected` with the first rule of the space the genotype breaks."""

    def decode(self, genotype: Genotype) -> Any:
        """The validated spec of a genotype, or `Rejected` with the validator's reason."""


CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    "random": ("random",),
    "mutate": ("mutate",),
    "crossover": ("crossover",),
    "enumerate": ("enumerate",),
    "redraw": ("redraw",),
    "reallocate": ("split", "with_allocation", "with_dilation"),
}
"""Capability -> the methods a space that offers it implements (signatures in
`archspec.search_config.CAPABILITIES`)."""
assert set(CAPABILITY_METHODS) == set(CAPABILITIES)

SPACES: Registry[type] = Registry("search space")
"""Space ``type`` tag -> implementation (a `SearchSpace` class)."""


def register_space(tag: str):
    """Class decorator: register the implementation of the space config registered as `tag`,
    after checking it has the methods of every capability the config offers."""
    def decorator(cls: type) -> type:
        config = SPACE_CONFIGS.get(tag)
        missing = [f"{cap} ({method})" for cap in sorted(config.offers)
                   for method in CAPABILITY_METHODS[cap] if not callable(getattr(cls, method, None))]
        for required in ("check", "decode"):
            if not callable(getattr(cls, required, None)):
                missing.append(required)
        if missing:
            raise TypeError(f"space {tag!r}: {cls.__name__} lacks {', '.join(missing)}, which its config offers")
        SPACES.register(tag, cls)
        return cls
    return decorator


def smart_round(value: float, base: int = 8) -> int:
    """Nearest multiple of `base`, at least `base` (the release's smart_round)."""
    return max(base, int(round(value / base)) * base)


@dataclass(frozen=True)
class StageGenes:
    out_channels: int
    kernel: int
    bottleneck_channels: int
    depth: int


@register_space("maedet")
class MaedetSearchSpace:
    """MAE-DET's k1kxk1 space over a staged base spec whose stem starts with a conv and whose
    stages are all k1kxk1. Genotype: (stem width, then out, kernel, btn, depth per stage)."""

    METHODS = ("out", "kernel", "bottleneck", "depth")

    def __init__(self, config: MaedetSpace, base):
        self.config = config
        self.base_data = archspec.to_data(base)
        if base.stem[0].type != "conv":
            raise SpecError("base.stem[0]", "the maedet space mutates the width of a stem conv")
        for index, stage in enumerate(base.stages):
            if stage.block.type != "k1kxk1" or stage.blocks:
                raise SpecError(f"base.stages[{index}].block", "the maedet space needs k1kxk1 stages without overrides")
        self.in_channels = base.in_channels
        self.base = self.encode(base)

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, spec) -> Genotype:
        genes = [spec.stem[0].out_channels]
        for stage in spec.stages:
            genes += [stage.out_channels, stage.block.kernel, stage.block.bottleneck_channels, stage.depth]
        return tuple(genes)

    def stages(self, genotype: Genotype) -> list[StageGenes]:
        return [StageGenes(*genotype[i:i + 4]) for i in range(1, len(genotype), 4)]

    def decode(self, genotype: Genotype):
        """The validated spec of a genotype; `Rejected` with the validation message otherwise."""
        data = _copy(self.base_data)
        data["stem"][0]["out_channels"] = genotype[0]
        for stage, genes in zip(data["stages"], self.stages(genotype)):
            stage["out_channels"] = genes.out_channels
            stage["depth"] = genes.depth
            stage["block"] = {**stage["block"], "kernel": genes.kernel, "bottleneck_channels": genes.bottleneck_channels}
        return _validated(data)

    def layers(self, genotype: Genotype) -> int:
        """Convolution layers as the release counts them: 1 per stem conv, 3 per block."""
        return len(self.base_data["stem"]) + 3 * sum(s.depth for s in self.stages(genotype))

    # -- mutation ----------------------------------------------------------------------------
    def mutate(self, genotype: Genotype, rng: random.Random, times: int = 1) -> Genotype:
        for _ in range(times):
            genotype = self._mutate_once(genotype, rng)
        return genotype

    def _mutate_once(self, genotype: Genotype, rng: random.Random) -> Genotype:
        reasons = []
        for _ in range(len(self.stages(genotype)) + 1):  # the release retries len(blocks) times
            index = rng.randrange(len(self.stages(genotype)) + 1)
            method = "out" if index == 0 else rng.choice(self.METHODS)
            try:
                child = self._apply(genotype, index, method, rng)
                self.check(child)
                return child
            except Rejected as exc:
                reasons.append(str(exc))
        raise Rejected(f"no valid mutation in {len(reasons)} tries (last: {reasons[-1]})")

    def _apply(self, genotype: Genotype, index: int, method: str, rng: random.Random) -> Genotype:
        """One mutation; the release's per-method rules are checked on the mutated block only
        (its published final structures do not satisfy them everywhere)."""
        genes = list(genotype)
        stages = self.stages(genotype)
        if index == 0:
            genes[0] = smart_round(genes[0] * rng.choice(self.config.width_ratios))
            if genes[0] > stages[0].out_channels:
                raise Rejected(f"stem width {genes[0]} exceeds stage 0's {stages[0].out_channels}")
            return tuple(genes)
        i, at = index - 1, 1 + 4 * (index - 1)
        previous = genotype[0] if i == 0 else stages[i - 1].out_channels
        if method == "out":
            new = smart_round(genes[at] * rng.choice(self.config.width_ratios))
            if not previous <= new <= 4 * previous:
                raise Rejected(f"stage {i}: width {new} outside [{previous}, {4 * previous}]")
            if i + 1 < len(stages) and not smart_round(stages[i + 1].out_channels / 4) <= new <= stages[i + 1].out_channels:
                raise Rejected(f"stage {i}: width {new} outside [next / 4, next]")
            genes[at] = new
            genes[at + 2] = min(genes[at + 2], new)
        elif method == "kernel":
            genes[at + 1] = rng.choice(self.config.kernels)
        elif method == "bottleneck":
            new = smart_round(genes[at + 2] * rng.choice(self.config.width_ratios))
            if new * self.config.min_bottleneck_ratio < genes[at]:
                raise Rejected(f"stage {i}: bottleneck {new} < width / {self.config.min_bottleneck_ratio}")
            genes[at + 2] = new
        else:
            genes[at + 3] = genes[at + 3] + rng.choice(self.config.depth_deltas)
        return tuple(genes)

    def check(self, genotype: Genotype) -> None:
        """Rules every genotype of the space keeps; `Rejected` names the first one broken."""
        if len(genotype) != 1 + 4 * len(self.base_data["stages"]):
            raise Rejected(f"genotype of length {len(genotype)} for {len(self.base_data['stages'])} stages")
        stages = self.stages(genotype)
        for i, stage in enumerate(stages):
            if stage.out_channels > self.config.max_channels:
                raise Rejected(f"stage {i}: width {stage.out_channels} > {self.config.max_channels}")
            if stage.bottleneck_channels > stage.out_channels:
                raise Rejected(f"stage {i}: bottleneck {stage.bottleneck_channels} > width {stage.out_channels}")
            if stage.kernel not in self.config.kernels and stage.kernel != self.stages(self.base)[i].kernel:
                raise Rejected(f"stage {i}: kernel {stage.kernel} is not a choice")
            if stage.depth < 1:
                raise Rejected(f"stage {i}: depth {stage.depth} < 1")
            if i == 0 and stage.depth > self.config.first_stage_max_depth:
                raise Rejected(f"stage 0: depth {stage.depth} > {self.config.first_stage_max_depth}")
        if self.config.max_layers is not None and self.layers(genotype) > self.config.max_layers:
            raise Rejected(f"{self.layers(genotype)} layers > the budget of {self.config.max_layers}")


def _validated(data: dict):
    """The spec of decoded data; `Rejected` with the validation message when it is invalid."""
    try:
        return archspec.validate(data)
    except SpecError as exc:
        raise Rejected(f"invalid spec: {exc}") from None


def _copy(data):
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


@register_space("detnas")
class DetnasSearchSpace:
    """DetNAS's space over a staged base: genotype = the choice index of every layer of every
    stage, in order (4^20 genotypes for the 300M base)."""

    def __init__(self, config, base):
        self.config = config
        self.base_data = archspec.to_data(base)
        self.choices = [_block_spec(choice, f"space.choices[{i}]") for i, choice in enumerate(config.choices)]
        self.depths = [stage.depth for stage in base.stages]
        self.base = self.encode(base)

    def encode(self, spec) -> Genotype:
        genes = []
        for layer in spec.layers():
            if layer.stage is None:
                continue
            if layer.block not in self.choices:
                raise SpecError(layer.path, f"block {layer.index} ({layer.block.type}) is not one of the space's choices")
            genes.append(self.choices.index(layer.block))
        return tuple(genes)

    def decode(self, genotype: Genotype):
        data = _copy(self.base_data)
        at = 0
        for stage, depth in zip(data["stages"], self.depths):
            stage["blocks"] = [self.choices[g].model_dump(mode="json", exclude_defaults=True) for g in genotype[at:at + depth]]
            at += depth
        return _validated(data)

    def check(self, genotype: Genotype) -> None:
        if len(genotype) != sum(self.depths):
            raise Rejected(f"genotype of length {len(genotype)} for {sum(self.depths)} layers")
        if any(not 0 <= g < len(self.choices) for g in genotype):
            raise Rejected(f"choice index outside 0..{len(self.choices) - 1}")

    def random(self, rng: random.Random) -> Genotype:
        return tuple(rng.randrange(len(self.choices)) for _ in range(sum(self.depths)))

    def mutate(self, genotype: Genotype, rng: random.Random, times: int = 1, prob: float | None = None) -> Genotype:
        """Redraw each gene with probability `prob` (default: exactly `times` random genes)."""
        genes = list(genotype)
        if prob is None:
            for _ in range(times):
                genes[rng.randrange(len(genes))] = rng.randrange(len(self.choices))
        else:
            genes = [rng.randrange(len(self.choices)) if rng.random() < prob else g for g in genes]
        return tuple(genes)

    def redraw(self, genotype: Genotype, rng: random.Random, prob: float) -> Genotype:
        """Each gene redrawn with probability `prob` (DetNAS's mutation)."""
        return self.mutate(genotype, rng, prob=prob)

    def crossover(self, a: Genotype, b: Genotype, rng: random.Random) -> Genotype:
        """Uniform crossover: each gene from either parent."""
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))


def _block_spec(data: dict, path: str):
    from pydantic import TypeAdapter, ValidationError

    from archspec.blocks import Block

    try:
        return TypeAdapter(Block).validate_python(data)
    except ValidationError as exc:
        raise SpecError(path, exc.errors(include_url=False)[0]["msg"]) from None


MAX_ALLOCATIONS = 1_000_000
"""Most (partial) CR-NAS allocations a space may list (the paper's ResNet table at 16 blocks has
a few hundred)."""


def count_allocations(depth_choices: list[list[int]], total: int) -> int:
    """The largest number of (partial) allocations `CrnasSearchSpace._allocations` holds at any
    stage, counted by dynamic programming over partial sums (no listing)."""
    ways = {0: 1}
    largest = 1
    for i, choices in enumerate(depth_choices):
        rest_min = sum(min(c) for c in depth_choices[i + 1:])
        step: dict[int, int] = {}
        for partial, count in ways.items():
            for d in set(choices):
                if partial + d + rest_min <= total:
                    step[partial + d] = step.get(partial + d, 0) + count
        ways = step
        largest = max(largest, sum(ways.values()))
    return largest


UNDECIDED: Final[int] = 0
"""The dilation gene of a block whose dilation CR-NAS's greedy step has not chosen yet. Dilations
are >= 1 (the space config says so), so 0 can mean nothing else. A genotype holding it is a
*partial architecture*: the supernet evaluator draws those blocks' dilations per mini-batch
(`CrnasSearchSpace.complete`), as the paper scores partial architectures; its spec for costs
(`decode`) takes dilation 1 there, which changes neither params nor FLOPs."""


@register_space("crnas")
class CrnasSearchSpace:
    """CR-NAS's space over a staged base: genotype = (blocks per stage..., dilation of every
    block in order...). The total block count is fixed, so the genotype length is too; moving a
    block between stages shifts the stage boundaries over the dilation genes."""

    def __init__(self, config, base):
        self.config = config
        self.base_data = archspec.to_data(base)
        self.stage_count = len(base.stages)
        for index, stage in enumerate(base.stages):
            # per-block overrides are tied to a block count the space changes; decode drops them
            if stage.blocks:
                raise SpecError(f"base.stages[{index}].blocks", "the crnas space needs stages without per-block "
                                                                "overrides (it changes their depth)")
        if len(config.depth_choices) != self.stage_count:
            raise SpecError("space.depth_choices", f"{len(config.depth_choices)} choice lists for "
                                                   f"{self.stage_count} stages of the base")
        self.total = config.total_blocks or sum(stage.depth for stage in base.stages)
        self.allocations = self._allocations()
        if not self.allocations:
            raise SpecError("space.depth_choices", f"no allocation of the choices sums to {self.total} blocks")
        self.base = self.encode(base)

    def _allocations(self) -> list[tuple[int, ...]]:
        """Every allowed allocation (depth per stage) with the fixed total, in lexical order;
        counted first (`count_allocations`), so a space too large to list is refused, not listed."""
        largest = count_allocations(self.config.depth_choices, self.total)
        if largest > MAX_ALLOCATIONS:
            raise SpecError("space.depth_choices", f"these choices make {largest:,} partial allocations to list; "
                                                   f"the limit is {MAX_ALLOCATIONS:,} (narrow the choices or "
                                                   f"total_blocks)")
        found: list[tuple[int, ...]] = [()]
        for i, choices in enumerate(self.config.depth_choices):
            rest_min = sum(min(c) for c in self.config.depth_choices[i + 1:])
            found = [prefix + (d,) for prefix in found for d in sorted(set(choices))
                     if sum(prefix) + d + rest_min <= self.total]
        return [a for a in found if sum(a) == self.total]

    def encode(self, spec) -> Genotype:
        depths = tuple(stage.depth for stage in spec.stages)
        dilations = tuple(layer.dilation for layer in spec.layers() if layer.stage is not None)
        if sum(depths) != self.total:
            # a base off the fixed total starts from the nearest allowed allocation, dilation 1
            depths = min(self.allocations, key=lambda a: sum(abs(x - y) for x, y in zip(a, depths)))
            dilations = (1,) * self.total
        return depths + dilations

    def split(self, genotype: Genotype) -> tuple[Genotype, Genotype]:
        return genotype[:self.stage_count], genotype[self.stage_count:]

    def undecided(self, genotype: Genotype) -> tuple[int, ...]:
        """Blocks (in order, 0-based) whose dilation gene is `UNDECIDED`."""
        return tuple(i for i, d in enumerate(self.split(genotype)[1]) if d == UNDECIDED)

    def complete(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """The genotype with every undecided dilation drawn uniformly from the choices."""
        depths, dilations = self.split(genotype)
        return depths + tuple(rng.choice(self.config.dilations) if d == UNDECIDED else d for d in dilations)

    def decode(self, genotype: Genotype):
        """The spec of a genotype; an `UNDECIDED` block decodes at dilation 1 (the same params
        and FLOPs as any of its dilations: what budgets need of a partial architecture)."""
        depths, dilations = self.split(genotype)
        dilations = tuple(1 if d == UNDECIDED else d for d in dilations)
        data = _copy(self.base_data)
        at = 0
        for stage, depth in zip(data["stages"], depths):
            stage["depth"] = depth
            stage["dilations"] = list(dilations[at:at + depth])
            stage.pop("blocks", None)
            at += depth
        return _validated(data)

    def check(self, genotype: Genotype) -> None:
        if len(genotype) != self.stage_count + self.total:
            raise Rejected(f"genotype of length {len(genotype)}; expected {self.stage_count} depths and "
                           f"{self.total} dilations")
        depths, dilations = self.split(genotype)
        for i, depth in enumerate(depths):
            if depth not in self.config.depth_choices[i]:
                raise Rejected(f"stage {i}: {depth} blocks is not a choice {self.config.depth_choices[i]}")
        if sum(depths) != self.total:
            raise Rejected(f"{sum(depths)} blocks; the total is fixed at {self.total}")
        for i, dilation in enumerate(dilations):
            if dilation not in self.config.dilations and dilation != UNDECIDED:
                raise Rejected(f"block {i}: dilation {dilation} is not a choice {self.config.dilations}")

    def with_allocation(self, genotype: Genotype, depths: tuple[int, ...]) -> Genotype:
        return tuple(depths) + self.split(genotype)[1]

    def with_dilation(self, genotype: Genotype, block: int, dilation: int) -> Genotype:
        genes = list(genotype)
        genes[self.stage_count + block] = dilation
        return tuple(genes)

    def random(self, rng: random.Random) -> Genotype:
        return rng.choice(self.allocations) + tuple(rng.choice(self.config.dilations) for _ in range(self.total))

    def mutate(self, genotype: Genotype, rng: random.Random, times: int = 1) -> Genotype:
        """Each mutation moves one block between stages (total kept) or redraws one dilation;
        a move off the allowed counts is `Rejected`."""
        for _ in range(times):
            depths, _ = self.split(genotype)
            if rng.random() < 0.5:
                source, target = rng.sample(range(self.stage_count), 2) if self.stage_count > 1 else (0, 0)
                moved = list(depths)
                moved[source] -= 1
                moved[target] += 1
                if moved[source] not in self.config.depth_choices[source] or \
                        moved[target] not in self.config.depth_choices[target]:
                    raise Rejected(f"moving a block from stage {source} to stage {target} gives counts "
                                   f"{moved[source]} and {moved[target]}, not both allowed")
                genotype = self.with_allocation(genotype, tuple(moved))
            else:
                genotype = self.with_dilation(genotype, rng.randrange(self.total), rng.choice(self.config.dilations))
        self.check(genotype)
        return genotype

    def crossover(self, a: Genotype, b: Genotype, rng: random.Random) -> Genotype:
        """Allocation from one parent, each dilation from either."""
        depths = self.split(a if rng.random() < 0.5 else b)[0]
        dilations = tuple(x if rng.random() < 0.5 else y for x, y in zip(self.split(a)[1], self.split(b)[1]))
        return depths + dilations


@register_space("spinenet")
class SpinenetSearchSpace:
    """SpineNet's space over a scale-permuted base: genotype = (level, first parent, second
    parent, kind index) for every block in order. Intermediate blocks permute their levels among
    themselves, output blocks among themselves (so the multiset of levels stays that of the
    base), parents are any two distinct earlier blocks, kinds come from the space's list."""

    GENES = 4

    def __init__(self, config, base):
        self.config = config
        self.base_data = archspec.to_data(base)
        self.stem_blocks = len(base.stem_blocks)
        self.outputs = tuple(block.output for block in base.blocks)
        self.kinds = list(config.kinds)
        for i, block in enumerate(base.blocks):
            if block.block.type not in self.kinds:
                raise SpecError(f"base.blocks[{i}].block.type", f"{block.block.type!r} is not among the space's kinds "
                                                                f"{self.kinds}")
            if len(block.parents) != 2:
                raise SpecError(f"base.blocks[{i}].parents", "the spinenet space rewires exactly two parents per block")
        self.levels = {flag: sorted(b.level for b in base.blocks if b.output == flag) for flag in (True, False)}
        self.base = self.encode(base)

    def encode(self, spec) -> Genotype:
        genes: list[int] = []
        for block in spec.blocks:
            genes += [block.level, block.parents[0], block.parents[1], self.kinds.index(block.block.type)]
        return tuple(genes)

    def blocks(self, genotype: Genotype) -> list[tuple[int, int, int, int]]:
        return [tuple(genotype[i:i + self.GENES]) for i in range(0, len(genotype), self.GENES)]

    def decode(self, genotype: Genotype):
        data = _copy(self.base_data)
        for block, (level, first, second, kind) in zip(data["blocks"], self.blocks(genotype)):
            block["level"], block["parents"] = level, [first, second]
            if block["block"].get("type") != self.kinds[kind]:
                block["block"] = {"type": self.kinds[kind]}
        return _validated(data)

    def check(self, genotype: Genotype) -> None:
        if len(genotype) != self.GENES * len(self.outputs):
            raise Rejected(f"genotype of length {len(genotype)} for {len(self.outputs)} blocks")
        blocks = self.blocks(genotype)
        for flag in (True, False):
            levels = sorted(b[0] for b, output in zip(blocks, self.outputs) if output == flag)
            if levels != self.levels[flag]:
                role = "output" if flag else "intermediate"
                raise Rejected(f"{role} block levels {levels} are not a permutation of the base's {self.levels[flag]}")
        for i, (_, first, second, kind) in enumerate(blocks):
            index = self.stem_blocks + i
            if not (0 <= first < index and 0 <= second < index) or first == second:
                raise Rejected(f"block {index}: parents {first}, {second} must be two distinct earlier blocks")
            if not 0 <= kind < len(self.kinds):
                raise Rejected(f"block {index}: kind index {kind} outside 0..{len(self.kinds) - 1}")

    def random(self, rng: random.Random) -> Genotype:
        levels = {flag: rng.sample(self.levels[flag], len(self.levels[flag])) for flag in (True, False)}
        genes: list[int] = []
        for i, output in enumerate(self.outputs):
            index = self.stem_blocks + i
            first, second = rng.sample(range(index), 2)
            genes += [levels[output].pop(), first, second, rng.randrange(len(self.kinds))]
        return tuple(genes)

    def mutate(self, genotype: Genotype, rng: random.Random, times: int = 1) -> Genotype:
        """Each mutation swaps the levels of two blocks of the same role, rewires one parent, or
        changes one block's kind. The result is checked; a spec that does not validate (e.g. a
        block whose output nothing uses) is `Rejected` when decoded."""
        blocks = [list(b) for b in self.blocks(genotype)]
        for _ in range(times):
            move = rng.choice(("permute", "rewire", "kind") if len(self.kinds) > 1 else ("permute", "rewire"))
            if move == "permute":
                # one role per swap (drawn once): a swap across roles would break both permutations
                pool = self._swap_pool(rng.random() < 0.5 and self.config.permute_outputs)
                a, b = rng.sample(pool, 2)
                blocks[a][0], blocks[b][0] = blocks[b][0], blocks[a][0]
            elif move == "rewire":
                i = rng.randrange(len(blocks))
                slot = 1 + rng.randrange(2)
                other = blocks[i][3 - slot]
                choices = [p for p in range(self.stem_blocks + i) if p != other]
                blocks[i][slot] = rng.choice(choices)
            else:
                i = rng.randrange(len(blocks))
                blocks[i][3] = rng.randrange(len(self.kinds))
        child = tuple(g for block in blocks for g in block)
        self.check(child)
        return child

    def _swap_pool(self, outputs: bool) -> list[int]:
        """Blocks of one role whose levels may swap; `Rejected` if fewer than two."""
        pool = [i for i, flag in enumerate(self.outputs) if flag == outputs]
        if len(pool) < 2:
            raise Rejected(f"fewer than two {'output' if outputs else 'intermediate'} blocks to swap levels")
        return pool


@register_space("annotated")
class AnnotatedSearchSpace:
    """The generic space of a template (`archspec.template`): genotype = one option index per
    decision. Nothing here knows what a decision means: decoding fills the template in and the
    spec validator accepts the result or says why not (`Rejected` with its reason)."""

    def __init__(self, config, base):
        self.config = config
        self.template = config.parsed()
        genotype = self.template.match(base) if base is not None else None
        self.base = genotype if genotype is not None else self.template.default

    @property
    def decisions(self):
        return self.template.decisions

    def size(self) -> int:
        return self.template.size()

    def check(self, genotype: Genotype) -> None:
        problem = self.template.check(genotype)
        if problem:
            raise Rejected(problem)

    def decode(self, genotype: Genotype):
        try:
            return self.template.decode(genotype)
        except SpecError as exc:
            raise Rejected(f"invalid spec: {exc}") from None

    def random(self, rng: random.Random) -> Genotype:
        return self.template.random(rng)

    def mutate(self, genotype: Genotype, rng: random.Random, times: int = 1) -> Genotype:
        return self.template.mutate(genotype, rng, times)

    def redraw(self, genotype: Genotype, rng: random.Random, prob: float) -> Genotype:
        return self.template.redraw(genotype, rng, prob)

    def crossover(self, a: Genotype, b: Genotype, rng: random.Random) -> Genotype:
        return self.template.crossover(a, b, rng)

    def enumerate(self, limit: int | None = None) -> list[Genotype]:
        """Every genotype (`ValueError` when there are more than the config's limit)."""
        return list(self.template.enumerate(limit or self.config.enumerate_limit))


def make_space(config, base):
    """The space a space config names, over a validated base spec (a registry lookup)."""
    return SPACES.get(config.type)(config, base)


def sample_specs(config_path, count: int = 64, seed: int = 0) -> list:
    """The base of a search config and `count` distinct valid candidates near it (each the base
    mutated 1..4 times, seeded): what `archspec latency build-table CONFIG.yaml` measures, so a
    search finds most kernels already in its latency table."""
    from archspec.search_config import load_search_config

    config, base = load_search_config(config_path)
    space = make_space(config.space, base)
    rng = random.Random(f"sample:{seed}")
    found = {space.base: space.decode(space.base)}
    for _ in range(count * 20):
        if len(found) > count:
            break
        try:
            genotype = space.mutate(space.base, rng, rng.randint(1, 4))
            if genotype not in found:
                found[genotype] = space.decode(genotype)
        except Rejected:
            continue
    return list(found.values())


def open_space(path) -> tuple[object, object]:
    """The space a file describes and its starting spec: a search config (its space over its
    base), or a template document on its own (the `annotated` space of it, from its defaults).
    Errors name the file and the field."""
    from pathlib import Path

    from archspec.io import _format_of, _read, parse_text
    from archspec.search_config import AnnotatedSpace, load_search_config
    from archspec.template import is_template, load_template

    path = Path(path)
    data = parse_text(_read(path), format=_format_of(path), source=str(path))
    if isinstance(data, dict) and data.get("type") == "search":
        config, base = load_search_config(path)
        return make_space(config.space, base), base
    if not is_template(data):
        raise SpecError("", "neither a search config (type: search) nor a template (a spec with choices)",
                        source=str(path))
    template = load_template(path)
    config = AnnotatedSpace(type="annotated", template=template.to_data())
    try:
        base = template.decode(template.default)
    except SpecError as exc:
        raise SpecError("", f"the template's defaults do not make a valid spec: {exc}", source=str(path)) from None
    return AnnotatedSearchSpace(config, base), base


def draw(space, rng: random.Random, base: Genotype) -> Genotype:
    """One genotype from anywhere in the space: a random draw where the space can, else the
    base mutated 1..4 times (`Rejected` when the move fails)."""
    if callable(getattr(space, "random", None)):
        return space.random(rng)
    return space.mutate(base, rng, rng.randint(1, 4))


def sample_space(space, count: int, seed: int = 0, tries: int = 50) -> tuple[list, dict[str, int]]:
    """Up to `count` distinct valid specs drawn from a space (seeded; `tries` draws per spec at
    most), and how many draws were refused, by reason (the validator's, or the space's)."""
    rng = random.Random(f"space-sample:{seed}")
    found: dict[Genotype, object] = {}
    refused: dict[str, int] = {}
    for _ in range(count * tries):
        if len(found) >= count:
            break
        try:
            genotype = draw(space, rng, space.base)
            if genotype in found:
                continue
            space.check(genotype)
            found[genotype] = space.decode(genotype)
        except Rejected as exc:
            reason = re.sub(r" \(and \d+ more problems?\)$", "", str(exc))
            refused[reason] = refused.get(reason, 0) + 1
    return list(found.values()), refused
