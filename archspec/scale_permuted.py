"""Scale-permuted backbones (SpineNet, Du et al., CVPR 2020): a backbone as a graph of blocks.

A stem brings the image to level 2 and runs a few stem blocks there. Then an ordered list of
blocks follows; each sits at a feature level (L2..L7, stride 4..128), takes the outputs of
earlier blocks (its ``parents``, indices into the list of all earlier blocks with the stem
blocks first) through cross-scale resampling, and may be an output. Outputs are named by
level, ``C3``..``C7``, as in staged backbones.

Everything that decides whether a graph is valid lives here (`problems`): parents precede
the block, output levels are unique and complete, every block's output is used. `resolve()`
expands a spec into one `PermutedNode` per block (channels, parents, merged blocks) for the
compiler, so the compiler never decides anything.

Search code edits specs with the pure functions at the bottom (`with_block`, `permute_levels`,
`rewire`): each returns a new validated spec or raises `SpecError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from archspec.backbones import Layer, StemConv, StemLayer, StemPool, resolve_stem
from archspec.blocks import (MAX_CHANNELS, Activation, BasicBlock, BottleneckBlock, InvertedResidualBlock,
                             Placement, Spec)
from archspec.errors import Issue, SpecError

MIN_BLOCK_LEVEL = 2
MAX_BLOCK_LEVEL = 7
OUTPUT_LEVELS = (3, 4, 5, 6, 7)
"""Levels that must each have exactly one output block (SpineNet's min_level..max_level)."""

SPINENET_LEVEL_FILTERS = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}
"""FILTER_SIZE_MAP of the official SpineNet code (tensorflow/tpu, spinenet.py)."""

Level = Annotated[int, Field(ge=MIN_BLOCK_LEVEL, le=MAX_BLOCK_LEVEL)]
FilterLevel = Annotated[int, Field(ge=1, le=MAX_BLOCK_LEVEL)]

PermutedBlockKind = Annotated[Union[BottleneckBlock, BasicBlock, InvertedResidualBlock],
                              Field(discriminator="type")]
"""Block kinds a scale-permuted block may use: SpineNet's `bottleneck` and `residual` (our
`basic`), and MBConv (`inverted_residual`) for SpineNet-Mobile style variants."""

PERMUTED_BLOCK_TYPES = ("bottleneck", "basic", "inverted_residual")


def _default_stem() -> list:
    return [StemConv(type="conv", out_channels=64, kernel=7, stride=2), StemPool(type="max_pool", kernel=3)]


def _default_stem_blocks() -> list:
    return [BottleneckBlock(type="bottleneck"), BottleneckBlock(type="bottleneck")]


class PermutedBlock(Spec):
    """One block of the scale-permuted part: its level, kind, parents and whether it is an output."""

    level: Level
    """Feature level (2..7; stride 2**level)."""
    block: PermutedBlockKind
    """Block kind and parameters; the block runs `block_repeats` times at stride 1."""
    parents: list[int] = Field(min_length=1, max_length=8)
    """Indices of the input blocks in the list of all earlier blocks, stem blocks first
    (SpineNet's input offsets; SpineNet uses two)."""
    output: bool = False
    """Whether the block is the backbone's output at its level (``C<level>``)."""


@dataclass(frozen=True)
class PermutedNode:
    """One stem block or block with everything the compiler needs resolved."""

    index: int
    """Position in the list of all blocks (stem blocks first): what `parents` refer to."""
    name: str
    """Block name in the graph and module: ``block<index>``, so graph names match `parents`
    (SpineNet-49: ``block0``, ``block1`` are the stem blocks, ``block2`` is ``blocks[0]``)."""
    path: str
    """Document path of the block's kind (``stem_blocks[0]``, ``blocks[7].block``)."""
    block: BottleneckBlock | BasicBlock | InvertedResidualBlock
    level: int
    filters: int
    """Base width at this level: int(level_filters[level] * filter_size_scale)."""
    out_channels: int
    parents: tuple[int, ...]
    """Resampled inputs (empty for stem blocks, which follow the stem or the previous stem block)."""
    merged: tuple[int, ...]
    """Unused earlier blocks at this level with matching channels, added without resampling
    (output blocks only, as in the official code)."""
    output: bool

    @property
    def placement(self) -> Placement:
        return Placement(self.out_channels, self.out_channels, 1, self.block.dilation, self.path)


class ScalePermutedBackbone(Spec):
    """A scale-permuted backbone (SpineNet): stem, stem blocks, then blocks in any level order,
    each fed by earlier blocks through cross-scale resampling; outputs C3..C7."""

    type: Literal["scale_permuted"]
    """Backbone kind tag."""
    name: str = "backbone"
    """A name for people; not part of the fingerprint."""
    description: str = ""
    """Free text: provenance, assumptions; not part of the fingerprint."""
    in_channels: Annotated[int, Field(ge=1, le=64)] = 3
    """Channels of the input image."""
    activation: Activation = "relu"
    """Activation of the resampling convolutions, the merge and the endpoints (the stem
    convolution and the blocks have their own). The official configs train with swish (`silu`)."""
    stem: list[StemLayer] = Field(default_factory=_default_stem, min_length=1, max_length=16)
    """Layers before the stem blocks; they must reach a level in 2..7 (SpineNet: 7x7 stride-2
    conv with 64 filters, 3x3 stride-2 max-pool, level 2)."""
    stem_blocks: list[PermutedBlockKind] = Field(default_factory=_default_stem_blocks, min_length=1, max_length=8)
    """Blocks at the stem's level, chained; each is a possible parent (indices 0, 1, ...).
    SpineNet: two bottleneck block groups."""
    blocks: list[PermutedBlock] = Field(min_length=1, max_length=256)
    """The scale-permuted blocks, in execution order."""
    # keys lax: a JSON object's keys are strings ("3"), YAML's are integers
    level_filters: dict[Annotated[FilterLevel, Field(strict=False)], Annotated[int, Field(ge=1, le=MAX_CHANNELS)]] = Field(
        default_factory=lambda: dict(SPINENET_LEVEL_FILTERS))
    """Base filters per level (SpineNet's FILTER_SIZE_MAP). A bottleneck's output has
    `expansion` (4) times this width; basic and inverted-residual blocks output this width."""
    filter_size_scale: Annotated[float, Field(gt=0, le=16)] = 1.0
    """Scales every block's base filters (not the stem convolution): 0.65 for SpineNet-49S."""
    resample_alpha: Annotated[float, Field(gt=0, le=16)] = 0.5
    """The resampling's first 1x1 conv maps a parent's base filters to int(filters * alpha)."""
    block_repeats: Annotated[int, Field(ge=1, le=64)] = 1
    """Blocks per block group (stem blocks included): 1, 2, 3, 4 for SpineNet-49, 96, 143, 190."""
    endpoint_channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | None = 256
    """Width of the 1x1 conv + BN + activation on every output; null returns the blocks' maps."""

    @model_validator(mode="after")
    def _check_structure(self) -> "ScalePermutedBackbone":
        issues = self.problems()
        if issues:
            raise SpecError(issues=issues)
        return self

    # -- resolution ------------------------------------------------------------------------
    def stem_level(self) -> int:
        """Level after the stem layers (2 for SpineNet): where the stem blocks sit."""
        return sum(layer.stride == 2 for layer in self.stem)

    def stem_layers(self) -> list[Layer]:
        """The stem's layers, resolved as in a staged backbone (``stem.layer0``...)."""
        return resolve_stem(self.stem, self.in_channels)

    def stem_channels(self) -> int:
        """Channels after the stem layers."""
        return self.stem_layers()[-1].out_channels

    def filters(self, level: int) -> int:
        """Base filters of a block at `level`."""
        return int(self.level_filters[level] * self.filter_size_scale)

    def block_channels(self, block, level: int) -> int:
        """Output channels of a block of this kind at `level`."""
        expansion = block.expansion if isinstance(block, BottleneckBlock) else 1
        return self.filters(level) * expansion

    def resolve(self) -> list[PermutedNode]:
        """Stem blocks and blocks, resolved, with the official merging of unused blocks into
        output blocks. Assumes the structure was validated (`problems` is empty)."""
        nodes: list[PermutedNode] = []
        level = self.stem_level()
        for i, block in enumerate(self.stem_blocks):
            nodes.append(PermutedNode(i, f"block{i}", f"stem_blocks[{i}]", block, level, self.filters(level),
                                      self.block_channels(block, level), (), (), False))
        # How often each block's output is used so far; a stem block feeds the next one.
        uses = [1] * (len(nodes) - 1) + [0]
        for i, spec in enumerate(self.blocks):
            for p in spec.parents:
                uses[p] += 1
            channels = self.block_channels(spec.block, spec.level)
            merged: tuple[int, ...] = ()
            if spec.output:
                merged = tuple(j for j, node in enumerate(nodes)
                               if uses[j] == 0 and not node.output and node.level == spec.level
                               and node.out_channels == channels)
                for j in merged:
                    uses[j] += 1
            index = len(nodes)
            nodes.append(PermutedNode(index, f"block{index}", f"blocks[{i}].block", spec.block, spec.level,
                                      self.filters(spec.level), channels, tuple(spec.parents), merged, spec.output))
            uses.append(0)
        return nodes

    def outputs(self) -> dict[str, PermutedNode]:
        """``C<level>`` -> output block, by level."""
        found = {f"C{node.level}": node for node in self.resolve() if node.output}
        return dict(sorted(found.items(), key=lambda item: int(item[0][1:])))

    def output_names(self) -> list[str]:
        return [f"C{level}" for level in OUTPUT_LEVELS]

    # -- validation ------------------------------------------------------------------------
    def problems(self) -> list[Issue]:
        """Every cross-field problem, each with its document path."""
        issues = self._stem_problems() + self._filter_problems()
        if issues:
            return issues
        issues = self._parent_problems() + self._output_problems()
        if issues:
            return issues
        nodes = self.resolve()
        for node in nodes:
            issues += node.block.check(node.placement)
        return issues or self._unused_problems(nodes)

    def _stem_problems(self) -> list[Issue]:
        level = self.stem_level()
        if not MIN_BLOCK_LEVEL <= level <= MAX_BLOCK_LEVEL:
            return [Issue("stem", f"the stem reaches level {level} (stride {2 ** level}); stem blocks must sit "
                                  f"at a level in {MIN_BLOCK_LEVEL}..{MAX_BLOCK_LEVEL}")]
        issues: list[Issue] = []
        for layer in self.stem_layers():
            issues += layer.block.check(layer.placement)
        return issues

    def _filter_problems(self) -> list[Issue]:
        issues: list[Issue] = []
        needed = {self.stem_level()} | {block.level for block in self.blocks}
        for level in sorted(needed):
            if level not in self.level_filters:
                issues.append(Issue("level_filters", f"no filters for level {level}, which a block uses"))
            elif self.filters(level) < 1:
                issues.append(Issue("filter_size_scale", f"scales level {level}'s {self.level_filters[level]} "
                                                         f"filters to nothing"))
            elif int(self.filters(level) * self.resample_alpha) < 1:
                issues.append(Issue("resample_alpha", f"resampling level {level}'s {self.filters(level)} filters "
                                                      f"by {self.resample_alpha} leaves no channels"))
        return issues

    def _parent_problems(self) -> list[Issue]:
        issues: list[Issue] = []
        stem = len(self.stem_blocks)
        for i, block in enumerate(self.blocks):
            earlier = stem + i
            for k, parent in enumerate(block.parents):
                path = f"blocks[{i}].parents[{k}]"
                if not 0 <= parent < earlier:
                    issues.append(Issue(path, f"parent {parent} does not precede block {i}: its parents must be in "
                                              f"0..{earlier - 1} ({stem} stem blocks, then blocks[0..{i - 1}])"
                                        if i else
                                        f"parent {parent} does not precede block 0: its parents must be stem "
                                        f"blocks 0..{stem - 1}"))
                elif block.parents.index(parent) != k:
                    issues.append(Issue(path, f"parent {parent} is listed twice"))
        return issues

    def _output_problems(self) -> list[Issue]:
        issues: list[Issue] = []
        first: dict[int, int] = {}
        for i, block in enumerate(self.blocks):
            if not block.output:
                continue
            if block.level not in OUTPUT_LEVELS:
                issues.append(Issue(f"blocks[{i}].output", f"outputs sit at levels {OUTPUT_LEVELS[0]}..."
                                                           f"{OUTPUT_LEVELS[-1]}, not at level {block.level}"))
            elif block.level in first:
                issues.append(Issue(f"blocks[{i}].output", f"a second output at level {block.level} "
                                                           f"(blocks[{first[block.level]}] is the first)"))
            else:
                first[block.level] = i
        missing = [level for level in OUTPUT_LEVELS if level not in first]
        if missing and not issues:
            names = ", ".join(f"L{level}" for level in missing)
            issues.append(Issue("blocks", f"no output block at {names}; every level "
                                          f"{OUTPUT_LEVELS[0]}..{OUTPUT_LEVELS[-1]} needs exactly one"))
        return issues

    def _unused_problems(self, nodes: list[PermutedNode]) -> list[Issue]:
        used = {parent for node in nodes for parent in node.parents}
        used |= {j for node in nodes for j in node.merged}
        used |= set(range(len(self.stem_blocks) - 1))  # stem blocks chain
        issues = []
        for node in nodes:
            if node.output or node.index in used:
                continue
            issues.append(Issue(node.path.removesuffix(".block"),
                                f"nothing uses this block's output: no later block lists {node.index} in its "
                                f"parents, and no later output block at L{node.level} with {node.out_channels} "
                                f"channels can merge it"))
        return issues


# -- pure edits for search ----------------------------------------------------------------------
def with_block(spec: ScalePermutedBackbone, index: int, *, level: int | None = None,
               parents: list[int] | None = None, kind: Any = None, output: bool | None = None
               ) -> ScalePermutedBackbone:
    """A new validated spec with `blocks[index]` changed (level, parents, block kind given as a
    `type` string or a block dict/spec, output flag). Raises `SpecError` naming the field."""
    if not 0 <= index < len(spec.blocks):
        raise SpecError("blocks", f"no block {index}; the spec has blocks 0..{len(spec.blocks) - 1}")
    data = spec.model_dump(mode="json")
    block = data["blocks"][index]
    if level is not None:
        block["level"] = level
    if parents is not None:
        block["parents"] = list(parents)
    if kind is not None:
        block["block"] = _block_data(kind)
    if output is not None:
        block["output"] = output
    return _revalidate(data)


def permute_levels(spec: ScalePermutedBackbone, levels: list[int]) -> ScalePermutedBackbone:
    """A new validated spec whose blocks take `levels` (one per block), parents unchanged."""
    if len(levels) != len(spec.blocks):
        raise SpecError("blocks", f"{len(levels)} levels for {len(spec.blocks)} blocks")
    data = spec.model_dump(mode="json")
    for block, level in zip(data["blocks"], levels):
        block["level"] = level
    return _revalidate(data)


def rewire(spec: ScalePermutedBackbone, parents: list[list[int]]) -> ScalePermutedBackbone:
    """A new validated spec whose blocks take `parents` (one list per block)."""
    if len(parents) != len(spec.blocks):
        raise SpecError("blocks", f"{len(parents)} parent lists for {len(spec.blocks)} blocks")
    data = spec.model_dump(mode="json")
    for block, new in zip(data["blocks"], parents):
        block["parents"] = list(new)
    return _revalidate(data)


def _block_data(kind: Any) -> dict:
    if isinstance(kind, str):
        return {"type": kind}
    if isinstance(kind, Spec):
        return kind.model_dump(mode="json")
    return dict(kind)


def _revalidate(data: dict) -> ScalePermutedBackbone:
    from archspec.io import validate

    return validate(data)  # type: ignore[return-value]
