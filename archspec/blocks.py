"""Block kinds: the building blocks of every backbone, as plain typed data.

A block spec says *what* a block is (kind and hyper-parameters). Its input and output
channels, stride and dilation come from where it sits (a stage, or a scale-permuted node),
so one block spec can describe every layer of a stage. Each kind knows the rules that make
it valid at a given position (`check`); the compiler knows how to lower it.

Adding a block kind: one `BlockSpec` subclass (with a `type` tag and `check`) registered in
`BLOCK_SPECS` (`@register_block`), and one lowering function registered in
`compiler.lowering.LOWERINGS`. The `Block` field type consults `BLOCK_SPECS` when it
validates, so a kind registered from outside the package (a plug-in, a test) validates from
YAML inside every stage like the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from archspec.errors import Issue
from archspec.registry import Registry

Activation = Literal["relu", "relu6", "silu", "hardswish", "sigmoid", "identity"]
"""Activation functions a block may use. `silu` is also known as swish."""

MAX_CHANNELS = 16384
MAX_KERNEL = 15
MAX_DILATION = 32


class Spec(BaseModel):
    """Base of every spec model: unknown fields are errors, instances are immutable, and values
    are never coerced (strict: ``true``, ``"64"`` or ``64.0`` is not a count; integers are
    still accepted where a float is expected)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True,
                              strict=True)


@dataclass(frozen=True)
class Placement:
    """Where a block sits: what it needs to know to check itself."""

    in_channels: int
    out_channels: int
    stride: int
    dilation: int
    path: str
    """Path of the block's own fields in the document (e.g. ``stages[1].blocks[3]``)."""
    label: str = ""
    """Prefix for messages when the fields are shared by several blocks (e.g. ``block 3: ``)."""
    first_in_stage: bool = True

    def issue(self, field: str, message: str) -> Issue:
        path = f"{self.path}.{field}" if field else self.path
        return Issue(path, self.label + message)


class BlockSpec(Spec):
    """Fields every block kind has."""

    dilation: Annotated[int, Field(ge=1, le=MAX_DILATION)] = 1
    """Dilation of the block's spatial (k x k) convolutions (CRNAS searches it per block).
    A stage's `dilations` list, when given, overrides this."""

    def check(self, where: Placement) -> list[Issue]:
        """Problems with this block at this placement (empty when valid)."""
        issues = []
        if where.in_channels < 1 or where.out_channels < 1:
            issues.append(where.issue("", "channels must be positive"))
        return issues


def _odd_kernel(kernel: int, where: Placement, field: str = "kernel") -> list[Issue]:
    if kernel % 2 == 0:
        return [where.issue(field, f"kernel {kernel} is even; only odd kernels keep features aligned")]
    return []


def _divisible(channels: int, groups: int, where: Placement, what: str = "channels") -> list[Issue]:
    if channels % groups:
        return [where.issue("groups", f"{channels} {what} are not divisible by {groups} groups")]
    return []


BLOCK_SPECS: Registry[type[BlockSpec]] = Registry("block kind")
"""Block `type` tag -> block spec class: every kind a stage's `block` / `blocks` may use."""


def block_tag(cls: type[Spec]) -> str:
    """The `type` tag of a spec class (its ``type: Literal["..."]`` field)."""
    field = cls.model_fields.get("type")
    tags = get_args(field.annotation) if field is not None else ()
    if len(tags) != 1 or not isinstance(tags[0], str):
        raise TypeError(f"{cls.__name__} needs a `type: Literal[\"<kind>\"]` field to be registered")
    return tags[0]


def register_block(cls: type[BlockSpec]) -> type[BlockSpec]:
    """Class decorator: register a block spec class under its `type` tag."""
    BLOCK_SPECS.register(block_tag(cls), cls)
    return cls


@register_block
class ConvBlock(BlockSpec):
    """Convolution -> batch norm -> activation (stems, 1x1 transitions, plain layers)."""

    type: Literal["conv"]
    """Block kind tag."""
    kernel: Annotated[int, Field(ge=1, le=MAX_KERNEL)] = 3
    """Square kernel size (odd)."""
    groups: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] = 1
    """Convolution groups; must divide both input and output channels."""
    activation: Activation = "relu"
    """Activation after the normalisation (`identity` for none)."""
    norm: bool = True
    """Whether a batch norm follows the convolution."""
    bias: bool = False
    """Whether the convolution has a bias (DetNAS's stem has one)."""

    def check(self, where: Placement) -> list[Issue]:
        issues = super().check(where) + _odd_kernel(self.kernel, where)
        issues += _divisible(where.in_channels, self.groups, where, "input channels")
        issues += _divisible(where.out_channels, self.groups, where, "output channels")
        if self.kernel == 1 and where.dilation > 1:
            issues.append(where.issue("dilation", f"dilation {where.dilation} has no effect on a 1x1 kernel"))
        return issues


@register_block
class BasicBlock(BlockSpec):
    """ResNet basic block: two 3x3 convolutions and a shortcut (projected when shape changes)."""

    type: Literal["basic"]
    """Block kind tag."""
    activation: Activation = "relu"
    """Activation inside the block and after the residual sum."""


@register_block
class BottleneckBlock(BlockSpec):
    """ResNet / ResNeXt bottleneck: 1x1 reduce, 3x3 (grouped, strided, dilated), 1x1 expand.

    Width of the 3x3 follows torchvision: ``int(out / expansion * width_per_group / 64) * groups``.
    The stride sits on the 3x3 convolution (ResNet v1.5)."""

    type: Literal["bottleneck"]
    """Block kind tag."""
    expansion: Annotated[int, Field(ge=1, le=16)] = 4
    """Output channels / bottleneck planes (4 in ResNet)."""
    groups: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] = 1
    """Groups of the 3x3 convolution (32 in ResNeXt-50 32x4d)."""
    width_per_group: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] = 64
    """Channels per group of the 3x3 at the base width (4 in ResNeXt-50 32x4d, 64 in ResNet)."""
    activation: Activation = "relu"
    """Activation inside the block and after the residual sum."""

    def width(self, out_channels: int) -> int:
        """Channels of the 3x3 convolution."""
        planes = out_channels // self.expansion
        return int(planes * (self.width_per_group / 64.0)) * self.groups

    def check(self, where: Placement) -> list[Issue]:
        issues = super().check(where)
        if where.out_channels % self.expansion:
            issues.append(where.issue(
                "expansion", f"{where.out_channels} output channels are not divisible by expansion {self.expansion}"))
            return issues
        width = self.width(where.out_channels)
        if width < 1:
            issues.append(where.issue("width_per_group", f"bottleneck width is {width}; raise width_per_group"))
        else:
            issues += _divisible(width, self.groups, where)
        return issues


@register_block
class InvertedResidualBlock(BlockSpec):
    """MobileNetV2 inverted residual / MBConv: 1x1 expand, k x k depthwise, optional
    squeeze-excite, 1x1 project; residual when stride is 1 and channels match."""

    type: Literal["inverted_residual"]
    """Block kind tag."""
    expansion: Annotated[float, Field(gt=0, le=16)] = 6.0
    """Hidden channels = round(in_channels * expansion); 1 means no expansion convolution."""
    kernel: Annotated[int, Field(ge=3, le=MAX_KERNEL)] = 3
    """Depthwise kernel size (odd)."""
    se_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    """Squeeze-excite width as a fraction of the block's input channels; None for no SE."""
    activation: Activation = "relu6"
    """Activation after expansion and depthwise convolutions."""

    def hidden_channels(self, in_channels: int) -> int:
        return int(round(in_channels * self.expansion))

    def se_channels(self, in_channels: int) -> int:
        return max(1, int(in_channels * (self.se_ratio or 0)))

    def check(self, where: Placement) -> list[Issue]:
        issues = super().check(where) + _odd_kernel(self.kernel, where)
        if self.hidden_channels(where.in_channels) < 1:
            issues.append(where.issue("expansion", "expansion leaves no hidden channels"))
        return issues


@register_block
class ShuffleNetV2Block(BlockSpec):
    """ShuffleNetV2 unit as in DetNAS: stride 1 splits channels (even/odd) and transforms one
    half with 1x1 -> k x k depthwise -> 1x1; stride 2 transforms the whole input in two
    branches (a k x k depthwise + 1x1 projection, and the main branch) and concatenates."""

    type: Literal["shufflenet_v2"]
    """Block kind tag."""
    kernel: Literal[3, 5, 7] = 3
    """Depthwise kernel size (DetNAS choices: 3, 5, 7)."""

    def check(self, where: Placement) -> list[Issue]:
        return super().check(where) + _shuffle_rules(where)


@register_block
class ShuffleXceptionBlock(BlockSpec):
    """DetNAS's Xception-like choice block: the ShuffleNetV2 unit whose transform is three
    (3x3 depthwise -> 1x1) pairs."""

    type: Literal["shuffle_xception"]
    """Block kind tag."""

    def check(self, where: Placement) -> list[Issue]:
        return super().check(where) + _shuffle_rules(where)


def _shuffle_rules(where: Placement) -> list[Issue]:
    if where.stride == 1:
        if where.in_channels != where.out_channels:
            return [where.issue("", f"a stride-1 shuffle unit keeps its width, but it maps "
                                    f"{where.in_channels} to {where.out_channels} channels")]
        if where.out_channels % 2:
            return [where.issue("", f"a stride-1 shuffle unit splits channels in two; {where.out_channels} is odd")]
    elif where.out_channels <= where.in_channels:
        return [where.issue("", f"a stride-2 shuffle unit concatenates its input with new channels, so it needs "
                                f"more than {where.in_channels} output channels, not {where.out_channels}")]
    if where.out_channels // 2 < 1:
        return [where.issue("", "too few channels")]
    return []


@register_block
class K1KXBlock(BlockSpec):
    """MAE-DET ResK1KX: 1x1 -> k x k with a residual (average-pooled when strided, 1x1-projected
    when channels change)."""

    type: Literal["k1kx"]
    """Block kind tag."""
    kernel: Annotated[int, Field(ge=1, le=MAX_KERNEL)] = 3
    """Kernel of the spatial convolution (odd)."""
    bottleneck_channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
    """Channels between the two convolutions (MAE-DET's `btn`)."""
    activation: Activation = "relu"
    """Activation inside the block and after the residual sum."""

    def check(self, where: Placement) -> list[Issue]:
        return super().check(where) + _odd_kernel(self.kernel, where)


@register_block
class K1KXK1Block(BlockSpec):
    """MAE-DET ResK1KXK1: 1x1 -> k x k -> 1x1 with a residual (average-pooled when strided; the
    first block of a stage always projects its shortcut with a 1x1 conv, as in the release)."""

    type: Literal["k1kxk1"]
    """Block kind tag."""
    kernel: Annotated[int, Field(ge=1, le=MAX_KERNEL)] = 3
    """Kernel of the middle convolution (odd)."""
    bottleneck_channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
    """Channels of the middle convolution (MAE-DET's `btn`)."""
    activation: Activation = "relu"
    """Activation inside the block and after the residual sum."""

    def check(self, where: Placement) -> list[Issue]:
        return super().check(where) + _odd_kernel(self.kernel, where)


class MaxPoolLayer(Spec):
    """Max pooling (the ResNet and SpineNet stems)."""

    type: Literal["max_pool"]
    """Layer kind tag."""
    kernel: Annotated[int, Field(ge=1, le=MAX_KERNEL)] = 3
    """Pooling window."""

    def check(self, where: Placement) -> list[Issue]:
        return _odd_kernel(self.kernel, where)


def registered_union(registry: Registry[type[Spec]], base: type[Spec]) -> Any:
    """A field type whose value is any spec class in `registry`, chosen by its `type` tag.

    Unlike a pydantic discriminated union, it reads the registry when a document is validated,
    so classes registered later (plug-ins, tests) validate from YAML like the built-in ones.
    Values serialise as their own class; the JSON Schema is a discriminated ``oneOf`` over the
    classes registered when the schema is generated."""

    def validate(data: Any) -> Spec:
        if isinstance(data, base):
            return data
        if not isinstance(data, dict):
            raise PydanticCustomError("model_type", "Input should be a mapping with a `type` field naming the kind")
        if "type" not in data:
            raise PydanticCustomError("union_tag_not_found", "missing 'type' field", {"discriminator": "'type'"})
        kind = data["type"]
        if not isinstance(kind, str) or kind not in registry:
            expected = ", ".join(repr(tag) for tag in registry)
            raise PydanticCustomError("union_tag_invalid", "unknown kind {tag}; expected one of {expected_tags}",
                                      {"tag": kind, "expected_tags": expected, "discriminator": "'type'"})
        return registry[kind].model_validate(data)

    class Hooks:
        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
            return core_schema.no_info_plain_validator_function(
                validate,
                serialization=core_schema.wrap_serializer_function_ser_schema(
                    lambda value, serialize: serialize(value), schema=core_schema.any_schema()))

        @classmethod
        def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
            choices = {tag: member.__pydantic_core_schema__ for tag, member in registry.items()}
            return handler(core_schema.tagged_union_schema(choices, discriminator="type"))

    Hooks.validate = staticmethod(validate)  # type: ignore[attr-defined]
    return Annotated[base, Hooks]


Block = registered_union(BLOCK_SPECS, BlockSpec)
"""Any registered block kind (`BLOCK_SPECS`), chosen by its `type` tag."""


def validate_block(data: Any) -> BlockSpec:
    """A block spec from a document mapping (or an already built block spec), by its `type` tag."""
    return get_args(Block)[1].validate(data)
