"""Primitive operations of the graph IR.

Every block kind lowers to a small subgraph of these. Each primitive states, once, how it
transforms channels and spatial size, how many parameters it owns, how many
multiply-accumulates it performs and how it grows the receptive field. Shapes, costs and
receptive fields of whole networks are then sums over nodes, with no torch involved.

Counting convention (used everywhere in the project):
* params = `sum(p.numel() for p in module.parameters())`, BN affine parameters included;
* MACs = multiply-accumulates of convolutions and linear layers only (BN, activations,
  pooling, additions and resampling count zero); FLOPs = 2 x MACs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Shape:
    """A feature map of one image: channels x height x width."""

    channels: int
    height: int
    width: int

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class Field:
    """Receptive field of a feature map: `size` input pixels seen by one position, `jump`
    input pixels between neighbouring positions (the effective stride)."""

    size: float
    jump: float


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil:
        return -(-span // stride) + 1
    return span // stride + 1


class Op:
    """Base of primitives. Subclasses are frozen dataclasses."""

    kind: ClassVar[str]
    arity: ClassVar[int | None] = 1
    """Number of inputs (None: two or more)."""
    reference_inputs: ClassVar[tuple[int, ...]] = ()
    """Input slots read only for their size (no data flows from them)."""

    def out_channels(self, inputs: list[int]) -> int:
        return inputs[0]

    def out_size(self, inputs: list[tuple[int, int]]) -> tuple[int, int]:
        return inputs[0]

    def level_change(self) -> int:
        """How the nominal level changes (+1 per stride 2, -k for upsampling by 2**k)."""
        return 0

    def params(self) -> int:
        return 0

    def macs(self, out: Shape) -> int:
        return 0

    def field(self, inputs: list[Field]) -> Field:
        return Field(max(f.size for f in inputs), inputs[0].jump)

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Input(Op):
    """The image."""

    channels: int
    kind: ClassVar[str] = "input"
    arity: ClassVar[int | None] = 0


@dataclass(frozen=True)
class Conv(Op):
    """2-D convolution, 'same'-style padding ``dilation * (kernel - 1) // 2``."""

    in_channels: int
    out_channels_: int
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    kind: ClassVar[str] = "conv"

    @property
    def padding(self) -> int:
        return self.dilation * (self.kernel - 1) // 2

    def out_channels(self, inputs: list[int]) -> int:
        return self.out_channels_

    def out_size(self, inputs):
        h, w = inputs[0]
        return tuple(_conv_out(v, self.kernel, self.stride, self.padding, self.dilation) for v in (h, w))

    def level_change(self) -> int:
        return self.stride.bit_length() - 1

    def params(self) -> int:
        weights = self.out_channels_ * (self.in_channels // self.groups) * self.kernel ** 2
        return weights + (self.out_channels_ if self.bias else 0)

    def macs(self, out: Shape) -> int:
        return out.height * out.width * self.out_channels_ * (self.in_channels // self.groups) * self.kernel ** 2

    def field(self, inputs):
        f = inputs[0]
        return Field(f.size + (self.kernel - 1) * self.dilation * f.jump, f.jump * self.stride)

    def describe(self) -> str:
        text = f"conv{self.kernel}x{self.kernel} {self.in_channels}->{self.out_channels_}"
        if self.stride > 1:
            text += f" s{self.stride}"
        if self.dilation > 1:
            text += f" d{self.dilation}"
        if self.groups > 1:
            text += " dw" if self.groups == self.in_channels == self.out_channels_ else f" g{self.groups}"
        return text


@dataclass(frozen=True)
class BatchNorm(Op):
    """Batch normalisation with affine parameters (2 x channels parameters)."""

    channels: int
    kind: ClassVar[str] = "bn"

    def params(self) -> int:
        return 2 * self.channels


@dataclass(frozen=True)
class Act(Op):
    """Element-wise activation."""

    function: str
    kind: ClassVar[str] = "act"

    def describe(self) -> str:
        return self.function


@dataclass(frozen=True)
class Add(Op):
    """Element-wise sum of two or more maps of the same shape."""

    kind: ClassVar[str] = "add"
    arity: ClassVar[int | None] = None


@dataclass(frozen=True)
class Mul(Op):
    """Product of a map and a per-channel gate (broadcast over space): squeeze-excite."""

    kind: ClassVar[str] = "mul"
    arity: ClassVar[int | None] = 2

    def field(self, inputs):
        return inputs[0]


@dataclass(frozen=True)
class Concat(Op):
    """Channel concatenation."""

    kind: ClassVar[str] = "concat"
    arity: ClassVar[int | None] = None

    def out_channels(self, inputs: list[int]) -> int:
        return sum(inputs)


@dataclass(frozen=True)
class ChannelSlice(Op):
    """Every `step`-th channel starting at `start` (ShuffleNetV2's split after the shuffle)."""

    start: int
    step: int
    kind: ClassVar[str] = "slice"

    def out_channels(self, inputs: list[int]) -> int:
        return len(range(self.start, inputs[0], self.step))

    def describe(self) -> str:
        return f"channels[{self.start}::{self.step}]"


@dataclass(frozen=True)
class MaxPool(Op):
    """Max pooling with padding ``kernel // 2``."""

    kernel: int
    stride: int
    kind: ClassVar[str] = "max_pool"

    def out_size(self, inputs):
        h, w = inputs[0]
        return tuple(_conv_out(v, self.kernel, self.stride, self.kernel // 2) for v in (h, w))

    def level_change(self) -> int:
        return self.stride.bit_length() - 1

    def field(self, inputs):
        f = inputs[0]
        return Field(f.size + (self.kernel - 1) * f.jump, f.jump * self.stride)

    def describe(self) -> str:
        return f"maxpool{self.kernel} s{self.stride}"


@dataclass(frozen=True)
class AvgPool(Op):
    """Average pooling, no padding, ceil mode (so odd sizes halve like a padded strided conv)."""

    kernel: int
    stride: int
    kind: ClassVar[str] = "avg_pool"

    def out_size(self, inputs):
        h, w = inputs[0]
        return tuple(_conv_out(v, self.kernel, self.stride, 0, ceil=True) for v in (h, w))

    def level_change(self) -> int:
        return self.stride.bit_length() - 1

    def field(self, inputs):
        f = inputs[0]
        return Field(f.size + (self.kernel - 1) * f.jump, f.jump * self.stride)

    def describe(self) -> str:
        return f"avgpool{self.kernel} s{self.stride}"


@dataclass(frozen=True)
class GlobalAvgPool(Op):
    """Mean over space: C x H x W -> C x 1 x 1."""

    kind: ClassVar[str] = "global_pool"

    def out_size(self, inputs):
        return (1, 1)

    def field(self, inputs):
        return Field(float("inf"), inputs[0].jump)


@dataclass(frozen=True)
class Upsample(Op):
    """Nearest-neighbour upsampling by an integer factor (exact in ONNX)."""

    scale: int
    kind: ClassVar[str] = "upsample"

    def out_size(self, inputs):
        h, w = inputs[0]
        return (h * self.scale, w * self.scale)

    def level_change(self) -> int:
        return -(self.scale.bit_length() - 1)

    def field(self, inputs):
        f = inputs[0]
        return Field(f.size, f.jump / self.scale)

    def describe(self) -> str:
        return f"upsample x{self.scale}"


@dataclass(frozen=True)
class CropToLevel(Op):
    """Keep the top-left ``ceil(H / 2**level) x ceil(W / 2**level)`` of a map, H x W being the
    image's size (second input, read for its size only). Strided convs and pools give
    exactly these sizes at every level; nearest upsampling by 2**d gives a multiple that can
    exceed them when the image size is not divisible by 2**level (SpineNet at 224: L6 is 4,
    L5 is 7, not 8). At divisible sizes it is the identity."""

    level: int
    kind: ClassVar[str] = "crop_to_level"
    arity: ClassVar[int | None] = 2
    reference_inputs: ClassVar[tuple[int, ...]] = (1,)

    def out_size(self, inputs):
        (h, w), (image_h, image_w) = inputs
        step = 2 ** self.level
        return (min(h, -(-image_h // step)), min(w, -(-image_w // step)))

    def field(self, inputs):
        return inputs[0]

    def describe(self) -> str:
        return f"crop to L{self.level}"


@dataclass(frozen=True)
class Linear(Op):
    """Flatten then fully connected layer."""

    in_features: int
    out_features: int
    bias: bool = True
    kind: ClassVar[str] = "linear"

    def out_channels(self, inputs: list[int]) -> int:
        return self.out_features

    def out_size(self, inputs):
        return (1, 1)

    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)

    def macs(self, out: Shape) -> int:
        return self.in_features * self.out_features

    def describe(self) -> str:
        return f"linear {self.in_features}->{self.out_features}"


@dataclass(frozen=True)
class Dropout(Op):
    """Dropout (identity at inference)."""

    p: float
    kind: ClassVar[str] = "dropout"
