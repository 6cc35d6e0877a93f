"""Backbone specs. A staged backbone is a stem followed by stages of blocks (ResNet,
MobileNetV2, DetNAS, CRNAS, MAE-DET).

Output names:

* ``C<k>`` (k >= 2) is the output of the last layer whose cumulative stride is 2**k (C2..C5 are
  strides 4..32); when several stages end at the same stride (a dilated stage at stride 1,
  MobileNetV2's stride-1 stages), ``C<k>`` is the last of them, as in the papers;
* a stage given a ``name`` is an output under that name, so every stage is reachable, whatever
  its stride (DetNet- and CR-NAS-style dilated stages);
* ``logits`` is the classifier head's output.

The default `outputs` are the ``C<k>`` of every level a stage reaches, from C2 up (plus ``logits``).

`layers()` expands a spec into one `Layer` per block with its channels, stride, dilation and
level resolved: the validation rules and the compiler both work from that list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from archspec.blocks import (MAX_CHANNELS, MAX_DILATION, Block, BlockSpec, ConvBlock, MaxPoolLayer,
                             Placement, Spec)
from archspec.errors import Issue, SpecError

STAGE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""Stage names are identifiers, so they are valid ONNX output and Python attribute names."""

RESERVED_OUTPUT_NAME = re.compile(r"^[CP][0-9]+$|^logits$")
"""Names a stage may not take: level names (``C4``, ``P3``) and the head's ``logits``."""

MAX_LEVEL = 7
"""Deepest feature level a backbone may reach (stride 128, SpineNet's L7)."""

Stride = Literal[1, 2]


class StemConv(ConvBlock):
    """A stem convolution (conv -> BN -> activation) with its own width and stride."""

    out_channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
    """Output channels."""
    stride: Stride = 1
    """Stride (1 or 2)."""


class StemPool(MaxPoolLayer):
    """A stem max-pool."""

    stride: Stride = 2
    """Stride (1 or 2)."""


StemLayer = Annotated[Union[StemConv, StemPool], Field(discriminator="type")]
"""A stem layer: `conv` or `max_pool`."""


def resolve_stem(stem: list, in_channels: int) -> list[Layer]:
    """Stem layers resolved as `Layer`s (``stem.layer0``...), shared by every backbone kind."""
    layers: list[Layer] = []
    channels, level = in_channels, 0
    for i, step in enumerate(stem):
        out = step.out_channels if isinstance(step, StemConv) else channels
        dilation = step.dilation if isinstance(step, StemConv) else 1
        new_level = level + (step.stride == 2)
        layers.append(Layer(f"stem.layer{i}", f"stem[{i}]", step, channels, out, step.stride, dilation,
                            level, new_level, None, i))
        channels, level = out, new_level
    return layers


class Stage(Spec):
    """`depth` blocks at one width. The first block carries the stride; any block may be
    given its own kind and parameters through `blocks`, and its own dilation through
    `dilations`."""

    name: Annotated[str, Field(pattern=STAGE_NAME_PATTERN)] | None = None
    """Optional name; the stage's output is then available under it in `outputs` (use it for
    stages that share a stride with a later one, e.g. before a dilated stage)."""
    block: Block
    """The block every layer of the stage uses unless `blocks` overrides it."""
    depth: Annotated[int, Field(ge=1, le=256)]
    """Number of blocks."""
    out_channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
    """Output channels of every block in the stage."""
    stride: Stride = 2
    """Stride of the stage's first block (1 or 2)."""
    dilations: list[Annotated[int, Field(ge=1, le=MAX_DILATION)]] | None = None
    """Dilation of each block (length `depth`); overrides the blocks' own `dilation`."""
    blocks: list[Block | None] | None = None
    """Per-block overrides (length `depth`): a full block spec replaces `block` for that
    layer, `null` keeps it. DetNAS uses this to pick one choice block per layer."""


class ClassifierHead(Spec):
    """Global average pool -> dropout -> linear: the ImageNet head, output ``logits``."""

    type: Literal["classifier"]
    """Head kind tag."""
    num_classes: Annotated[int, Field(ge=1, le=100000)] = 1000
    """Number of classes."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Dropout before the linear layer (no parameters, no MACs)."""


@dataclass(frozen=True)
class Layer:
    """One block of a backbone with everything about its position resolved."""

    name: str
    """Module name prefix in the graph and the built module, e.g. ``stage1.block3``."""
    path: str
    """Document path of the fields this block's parameters come from."""
    block: BlockSpec | MaxPoolLayer
    """The block spec in force for this layer."""
    in_channels: int
    out_channels: int
    stride: int
    dilation: int
    level_in: int
    """log2 of the cumulative stride before the block."""
    level_out: int
    """log2 of the cumulative stride after the block."""
    stage: int | None
    """Stage index, None for the stem."""
    index: int
    """Index within the stem or stage."""

    @property
    def placement(self) -> Placement:
        shared = ".blocks[" not in self.path and self.stage is not None
        return Placement(self.in_channels, self.out_channels, self.stride, self.dilation, self.path,
                         label=f"block {self.index}: " if shared else "", first_in_stage=self.index == 0)


class StagedBackbone(Spec):
    """A stem followed by stages (ResNet, ResNeXt, MobileNetV2, DetNAS, CRNAS, MAE-DET)."""

    type: Literal["staged"]
    """Backbone kind tag."""
    name: str = "backbone"
    """A name for people; not part of the fingerprint."""
    description: str = ""
    """Free text: provenance, assumptions; not part of the fingerprint."""
    in_channels: Annotated[int, Field(ge=1, le=64)] = 3
    """Channels of the input image."""
    stem: list[StemLayer] = Field(min_length=1, max_length=16)
    """Layers before the first stage."""
    stages: list[Stage] = Field(min_length=1, max_length=32)
    """The stages, in order."""
    outputs: list[str] | None = None
    """Output names: level names ``C<k>`` (the last layer at stride 2**k, for any level the
    network reaches, C0 up), stage names, ``logits`` with a head; default: ``C<k>`` for every
    level a stage reaches from C2 up."""
    head: ClassifierHead | None = None
    """Optional classification head (adds the ``logits`` output)."""

    @model_validator(mode="after")
    def _check_structure(self) -> "StagedBackbone":
        issues = self.problems()
        if issues:
            raise SpecError(issues=issues)
        return self

    # -- resolution ------------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        """Every stem layer and block, resolved. Assumes list lengths were validated.

        Validation, costs and scores all walk this list; a search asks for it several times
        per candidate, so the last few results are kept, keyed by the (immutable) instance."""
        cached = _LAYER_CACHE.get(id(self))
        if cached is not None and cached[0] is self:
            return list(cached[1])
        layers = self._resolve_layers()
        _LAYER_CACHE[id(self)] = (self, tuple(layers))
        if len(_LAYER_CACHE) > _LAYER_CACHE_SIZE:
            del _LAYER_CACHE[next(iter(_LAYER_CACHE))]
        return layers

    def _resolve_layers(self) -> list[Layer]:
        layers = resolve_stem(self.stem, self.in_channels)
        channels, level = layers[-1].out_channels, layers[-1].level_out
        for s, stage in enumerate(self.stages):
            for b in range(stage.depth):
                override = stage.blocks[b] if stage.blocks and b < len(stage.blocks) else None
                block = override or stage.block
                path = f"stages[{s}].blocks[{b}]" if override else f"stages[{s}].block"
                stride = stage.stride if b == 0 else 1
                if stage.dilations and b < len(stage.dilations):
                    dilation = stage.dilations[b]
                else:
                    dilation = block.dilation
                new_level = level + (stride == 2)
                layers.append(Layer(f"stage{s}.block{b}", path, block, channels, stage.out_channels,
                                    stride, dilation, level, new_level, s, b))
                channels, level = stage.out_channels, new_level
        return layers

    def level_outputs(self) -> dict[str, Layer]:
        """``C<k>`` -> the last layer ending at level k (stride 2**k), stem layers included, for
        every level the network reaches: a stride-1 toy network has a C0, a ResNet's first conv
        a C1. The default outputs start at C2 (see `output_names`)."""
        return {f"C{layer.level_out}": layer for layer in self.layers()}

    def stage_outputs(self) -> dict[str, Layer]:
        """Stage name -> the stage's last layer, for the stages that have a name."""
        last = {layer.stage: layer for layer in self.layers() if layer.stage is not None}
        return {stage.name: last[s] for s, stage in enumerate(self.stages) if stage.name is not None}

    def output_layers(self) -> dict[str, Layer]:
        """Every feature output name a spec may list (levels, then stage names) -> its layer."""
        return self.level_outputs() | self.stage_outputs()

    def output_names(self) -> list[str]:
        if self.outputs is not None:
            return list(self.outputs)
        names = [name for name, layer in self.level_outputs().items()
                 if layer.level_out >= 2 and layer.stage is not None]
        names = sorted(names, key=lambda n: int(n[1:]))
        return names + (["logits"] if self.head else [])

    # -- validation ------------------------------------------------------------------------
    def problems(self) -> list[Issue]:
        """Every cross-field problem, each with its document path."""
        issues: list[Issue] = []
        for s, stage in enumerate(self.stages):
            for field in ("dilations", "blocks"):
                values = getattr(stage, field)
                if values is not None and len(values) != stage.depth:
                    issues.append(Issue(f"stages[{s}].{field}",
                                        f"{len(values)} values for depth {stage.depth}"))
        if issues:
            return issues
        for layer in self.layers():
            if layer.level_out > MAX_LEVEL:
                where = f"stem[{layer.index}]" if layer.stage is None else f"stages[{layer.stage}]"
                issues.append(Issue(f"{where}.stride", f"reaches stride {2 ** layer.level_out}; the deepest "
                                                       f"level is L{MAX_LEVEL} (stride {2 ** MAX_LEVEL})"))
                break
            issues += layer.block.check(layer.placement)
        issues += self._stage_name_problems()
        if issues:
            return issues
        available = set(self.output_layers()) | ({"logits"} if self.head else set())
        names = self.output_names()
        for i, name in enumerate(names):
            if name not in available:
                issues.append(Issue(f"outputs[{i}]", f"no output named {name!r}; available: "
                                                     f"{', '.join(sorted(available, key=_output_order))}"))
            elif names.index(name) != i:
                issues.append(Issue(f"outputs[{i}]", f"{name!r} is listed twice"))
        if not names:
            issues.append(Issue("outputs", "the backbone has no outputs"))
        return issues

    def _stage_name_problems(self) -> list[Issue]:
        issues: list[Issue] = []
        seen: dict[str, int] = {}
        for s, stage in enumerate(self.stages):
            if stage.name is None:
                continue
            if RESERVED_OUTPUT_NAME.match(stage.name):
                issues.append(Issue(f"stages[{s}].name", f"{stage.name!r} is reserved for levels and the head "
                                                         "(C<k>, P<k>, logits); choose another name"))
            elif stage.name in seen:
                issues.append(Issue(f"stages[{s}].name", f"{stage.name!r} is also the name of stages[{seen[stage.name]}]"))
            seen.setdefault(stage.name, s)
        return issues


_LAYER_CACHE: dict[int, tuple["StagedBackbone", tuple[Layer, ...]]] = {}
"""id(spec) -> (spec, its layers). Holding the spec keeps its id from being reused while cached;
a dict is not a `functools.lru_cache` because pydantic models hash and compare slowly."""
_LAYER_CACHE_SIZE = 16


def _output_order(name: str) -> tuple[int, str]:
    return (int(name[1:]), name) if name[:1] == "C" and name[1:].isdigit() else (99, name)
