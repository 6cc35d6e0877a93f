"""Primitive operations of the graph IR.

Every block kind lowers to a small subgraph of these. Each primitive states, once, how it
transforms channels and spatial size, how many parameters it owns, how many
multiply-accumulates it performs and how it grows the receptive field. Shapes, costs and
receptive fields of whole networks are then sums over nodes, with no torch involved.

Each op class is also the one home of its backends: `torch_module` / `emit_torch` (the
module builder calls them), `emit_onnx` (the ONNX writer calls it), `channel_problem` and
`aligned_inputs` (the graph's checks), `bypassed_in_plain_network`, `gate_inputs` and
`signal_gain` (the MAE-DET score's graph transform and main-path walk) and `latency_key`.
Adding a primitive is one subclass registered in `OPS`; nothing else dispatches on its kind.
Torch and ONNX are imported inside the methods that need them, so importing this module (and
lowering, costing, scoring) stays torch-free.

Counting convention (used everywhere in the project):
* params = `sum(p.numel() for p in module.parameters())`, BN affine parameters included;
* MACs = multiply-accumulates of convolutions and linear layers only (BN, activations,
  pooling, additions and resampling count zero); FLOPs = 2 x MACs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from archspec.registry import Registry

if TYPE_CHECKING:  # only for annotations: importing this module never imports torch or onnx
    from torch import nn

    from archspec.compiler.module_builder import TorchNode
    from archspec.compiler.onnx_writer import OnnxWriter


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


OPS: Registry[type["Op"]] = Registry("op")
"""Op kind -> op class. Every primitive the graph IR may hold is registered here."""


def register_op(cls: type["Op"]) -> type["Op"]:
    """Class decorator: register an op class under its `kind`."""
    OPS.register(cls.kind, cls)
    return cls


class Op:
    """Base of primitives. Subclasses are frozen dataclasses registered in `OPS`."""

    kind: ClassVar[str]
    arity: ClassVar[int | None] = 1
    """Number of inputs (None: two or more)."""
    reference_inputs: ClassVar[tuple[int, ...]] = ()
    """Input slots read only for their size (no data flows from them)."""
    gate_inputs: ClassVar[tuple[int, ...]] = ()
    """Input slots that modulate the signal without carrying it (a squeeze-excite gate): the
    MAE-DET main-path walk does not follow them."""
    aligned_inputs: ClassVar[bool] = False
    """Whether every input must be at the same level and spatial size (sums, concatenations)."""
    bypassed_in_plain_network: ClassVar[bool] = False
    """Whether MAE-DET's plain network (no normalisation, no activation) drops this op."""
    spatial_output: ClassVar[bool] = True
    """False for ops whose output is ``batch x features`` rather than a feature map."""

    # -- shape, level, counts, receptive field ------------------------------------------------
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

    # -- graph checks ---------------------------------------------------------------------------
    def expected_channels(self) -> int | None:
        """Channels the op was built for on its first input (None: any)."""
        return None

    def channel_problem(self, channels: list[int]) -> str | None:
        """Why these input channel counts do not fit the op (None when they do)."""
        expected = self.expected_channels()
        if expected is not None and channels[0] != expected:
            return f"{self.describe()} expects {expected} channels, gets {channels[0]}"
        return None

    # -- MAE-DET ---------------------------------------------------------------------------------
    def signal_gain(self) -> float | None:
        """log of the factor by which the op scales the std of a unit-std input when its weights
        are N(0, 1) (MAE-DET's entropy); None for ops without such weights."""
        return None

    # -- latency ---------------------------------------------------------------------------------
    def latency_key(self, inputs: list[Shape]) -> str:
        """Canonical JSON naming this op at these input shapes: equal keys run the same kernel."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        data["kind"] = self.kind
        data["inputs"] = [list(shape.as_tuple()) for shape in inputs]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    # -- torch -------------------------------------------------------------------------------------
    def torch_module(self) -> "nn.Module":
        """The torch module computing this op (ops computed by a function override `emit_torch`)."""
        raise TypeError(f"{type(self).__name__}: no torch module (override torch_module or emit_torch)")

    def emit_torch(self, node: "TorchNode", args: list) -> Any:
        """Emit the op into the module builder's fx graph; returns the fx node of its output."""
        return node.call_module(self.torch_module(), args)

    # -- ONNX --------------------------------------------------------------------------------------
    def emit_onnx(self, w: "OnnxWriter", name: str, x: list[str], inputs: list[Shape], out: Shape) -> None:
        """Append the ONNX nodes computing this op; the last writes the value ``name``. Initializer
        names follow the built module's state dict (``<name>.weight``)."""
        raise TypeError(f"node {name!r}: no ONNX form for {type(self).__name__}")


@register_op
@dataclass(frozen=True)
class Input(Op):
    """The image."""

    channels: int
    kind: ClassVar[str] = "input"
    arity: ClassVar[int | None] = 0


@register_op
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

    @property
    def fan_in(self) -> int:
        """Inputs each output element sums over."""
        return self.in_channels // self.groups * self.kernel ** 2

    def out_channels(self, inputs: list[int]) -> int:
        return self.out_channels_

    def out_size(self, inputs):
        h, w = inputs[0]
        return tuple(_conv_out(v, self.kernel, self.stride, self.padding, self.dilation) for v in (h, w))

    def level_change(self) -> int:
        return self.stride.bit_length() - 1

    def params(self) -> int:
        weights = self.out_channels_ * self.fan_in
        return weights + (self.out_channels_ if self.bias else 0)

    def macs(self, out: Shape) -> int:
        return out.height * out.width * self.out_channels_ * self.fan_in

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

    def expected_channels(self) -> int | None:
        return self.in_channels

    def signal_gain(self) -> float | None:
        return 0.5 * math.log(self.fan_in)

    def torch_module(self):
        from torch import nn

        return nn.Conv2d(self.in_channels, self.out_channels_, self.kernel, self.stride, self.padding,
                         self.dilation, self.groups, self.bias)

    def emit_onnx(self, w, name, x, inputs, out):
        self.emit_onnx_module(w, name, x[0], name)

    def emit_onnx_module(self, w: "OnnxWriter", module: str, x: str, value: str, *, weight_init=None,
                         bias_init=None) -> str:
        """The conv whose weights are ``<module>.weight`` / ``.bias`` applied to `x`, written as
        `value` (a module shared by several inputs, a detection head over levels, is one set of
        initializers with one value per application). Random weights are He-uniform and biases
        small unless `weight_init` / `bias_init` (``shape -> array``) say otherwise."""
        weight = w.tensor(f"{module}.weight", (self.out_channels_, self.in_channels // self.groups, self.kernel,
                                               self.kernel), weight_init or w.he(self.fan_in))
        args = [x, weight]
        if self.bias:
            args.append(w.tensor(f"{module}.bias", (self.out_channels_,), bias_init or w.uniform(-0.1, 0.1)))
        return w.node("Conv", args, value, kernel_shape=[self.kernel] * 2, strides=[self.stride] * 2,
                      dilations=[self.dilation] * 2, pads=[self.padding] * 4, group=self.groups)


@register_op
@dataclass(frozen=True)
class BatchNorm(Op):
    """Batch normalisation with affine parameters (2 x channels parameters)."""

    channels: int
    kind: ClassVar[str] = "bn"
    bypassed_in_plain_network: ClassVar[bool] = True

    def params(self) -> int:
        return 2 * self.channels

    def expected_channels(self) -> int | None:
        return self.channels

    def torch_module(self):
        from torch import nn

        return nn.BatchNorm2d(self.channels)

    def emit_onnx(self, w, name, x, inputs, out):
        c = (self.channels,)
        w.node("BatchNormalization", [x[0], w.tensor(f"{name}.weight", c, w.uniform(0.5, 1.5)),
                                      w.tensor(f"{name}.bias", c, w.uniform(-0.2, 0.2)),
                                      w.tensor(f"{name}.running_mean", c, w.uniform(-0.2, 0.2)),
                                      w.tensor(f"{name}.running_var", c, w.uniform(0.5, 1.5))],
               name, epsilon=1e-5)


@dataclass(frozen=True)
class ActivationFunction:
    """One element-wise activation: its torch module and its ONNX form."""

    torch_module: Callable[[bool], "nn.Module"]
    """``inplace -> module`` (functions that cannot run in place ignore the flag)."""
    emit_onnx: Callable[["OnnxWriter", str, str], None]
    """``(writer, output name, input name)``: append the nodes computing the function."""


ACTIVATIONS: Registry[ActivationFunction] = Registry("activation function")
"""Activation name (the spec's `activation` field) -> its torch module and ONNX form."""


def _torch_activation(class_name: str, inplace_capable: bool = True) -> Callable[[bool], "nn.Module"]:
    def build(inplace: bool):
        from torch import nn

        cls = getattr(nn, class_name)
        return cls(inplace=inplace) if inplace_capable else cls()
    return build


def _onnx_single(op_type: str) -> Callable[["OnnxWriter", str, str], None]:
    return lambda w, name, x: w.node(op_type, [x], name)


def _onnx_relu6(w, name: str, x: str) -> None:
    import numpy as np

    w.node("Clip", [x, w.constant(f"{name}.min", np.array(0, np.float32)),
                    w.constant(f"{name}.max", np.array(6, np.float32))], name)


def _onnx_silu(w, name: str, x: str) -> None:
    w.node("Mul", [x, w.node("Sigmoid", [x], f"{name}.sigmoid")], name)


ACTIVATIONS.register("relu", ActivationFunction(_torch_activation("ReLU"), _onnx_single("Relu")))
ACTIVATIONS.register("relu6", ActivationFunction(_torch_activation("ReLU6"), _onnx_relu6))
ACTIVATIONS.register("silu", ActivationFunction(_torch_activation("SiLU"), _onnx_silu))
ACTIVATIONS.register("hardswish", ActivationFunction(_torch_activation("Hardswish"), _onnx_single("HardSwish")))
ACTIVATIONS.register("sigmoid", ActivationFunction(_torch_activation("Sigmoid", False), _onnx_single("Sigmoid")))
ACTIVATIONS.register("identity", ActivationFunction(_torch_activation("Identity", False), _onnx_single("Identity")))


@register_op
@dataclass(frozen=True)
class Act(Op):
    """Element-wise activation, one of `ACTIVATIONS`."""

    function: str
    kind: ClassVar[str] = "act"
    bypassed_in_plain_network: ClassVar[bool] = True

    def describe(self) -> str:
        return self.function

    def torch_module(self):
        return ACTIVATIONS[self.function].torch_module(False)

    def emit_torch(self, node, args):
        # in place when the input is consumed by this node only (saves one map per activation)
        return node.call_module(ACTIVATIONS[self.function].torch_module(node.owns_input(0)), args)

    def emit_onnx(self, w, name, x, inputs, out):
        ACTIVATIONS[self.function].emit_onnx(w, name, x[0])


@register_op
@dataclass(frozen=True)
class Add(Op):
    """Element-wise sum of two or more maps of the same shape."""

    kind: ClassVar[str] = "add"
    arity: ClassVar[int | None] = None
    aligned_inputs: ClassVar[bool] = True

    def channel_problem(self, channels: list[int]) -> str | None:
        return f"add of maps with {channels} channels" if len(set(channels)) > 1 else None

    def emit_torch(self, node, args):
        import operator

        add = operator.iadd if node.owns_input(0) else operator.add
        out = args[0]
        for other in args[1:]:
            out = node.call_function(add, (out, other))
            add = operator.iadd
        return out

    def emit_onnx(self, w, name, x, inputs, out):
        value = x[0]
        for i, other in enumerate(x[1:]):
            value = w.node("Add", [value, other], name if i == len(x) - 2 else f"{name}.partial{i}")


@register_op
@dataclass(frozen=True)
class Mul(Op):
    """Product of a map and a per-channel gate (broadcast over space): squeeze-excite."""

    kind: ClassVar[str] = "mul"
    arity: ClassVar[int | None] = 2
    gate_inputs: ClassVar[tuple[int, ...]] = (1,)

    def field(self, inputs):
        return inputs[0]

    def channel_problem(self, channels: list[int]) -> str | None:
        if channels[1] not in (channels[0], 1):
            return f"gate with {channels[1]} channels for a {channels[0]}-channel map"
        return None

    def emit_torch(self, node, args):
        import operator

        return node.call_function(operator.mul, tuple(args))

    def emit_onnx(self, w, name, x, inputs, out):
        w.node("Mul", x, name)


@register_op
@dataclass(frozen=True)
class Concat(Op):
    """Channel concatenation."""

    kind: ClassVar[str] = "concat"
    arity: ClassVar[int | None] = None
    aligned_inputs: ClassVar[bool] = True

    def out_channels(self, inputs: list[int]) -> int:
        return sum(inputs)

    def emit_torch(self, node, args):
        import torch

        return node.call_function(torch.cat, (list(args), 1))

    def emit_onnx(self, w, name, x, inputs, out):
        w.node("Concat", x, name, axis=1)


def _int64(*values: int):
    import numpy as np

    return np.array(values, dtype=np.int64)


@register_op
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

    def emit_torch(self, node, args):
        import operator

        return node.call_function(operator.getitem, (args[0], (slice(None), slice(self.start, None, self.step))))

    def emit_onnx(self, w, name, x, inputs, out):
        import numpy as np

        w.node("Slice", [x[0], w.constant(f"{name}.starts", _int64(self.start)),
                         w.constant(f"{name}.ends", _int64(np.iinfo(np.int64).max)),
                         w.constant(f"{name}.axes", _int64(1)), w.constant(f"{name}.steps", _int64(self.step))], name)


@register_op
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

    def torch_module(self):
        from torch import nn

        return nn.MaxPool2d(self.kernel, self.stride, self.kernel // 2)

    def emit_onnx(self, w, name, x, inputs, out):
        w.node("MaxPool", x, name, kernel_shape=[self.kernel] * 2, strides=[self.stride] * 2,
               pads=[self.kernel // 2] * 4)


@register_op
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

    def torch_module(self):
        from torch import nn

        return nn.AvgPool2d(self.kernel, self.stride, ceil_mode=True, count_include_pad=False)

    def emit_onnx(self, w, name, x, inputs, out):
        w.node("AveragePool", x, name, kernel_shape=[self.kernel] * 2, strides=[self.stride] * 2, pads=[0] * 4,
               ceil_mode=1, count_include_pad=0)


@register_op
@dataclass(frozen=True)
class GlobalAvgPool(Op):
    """Mean over space: C x H x W -> C x 1 x 1."""

    kind: ClassVar[str] = "global_pool"

    def out_size(self, inputs):
        return (1, 1)

    def field(self, inputs):
        return Field(float("inf"), inputs[0].jump)

    def torch_module(self):
        from torch import nn

        return nn.AdaptiveAvgPool2d(1)

    def emit_onnx(self, w, name, x, inputs, out):
        w.node("GlobalAveragePool", x, name)


@register_op
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

    def torch_module(self):
        from torch import nn

        return nn.Upsample(scale_factor=float(self.scale), mode="nearest")

    def emit_onnx(self, w, name, x, inputs, out):
        import numpy as np

        scales = w.constant(f"{name}.scales", np.array([1, 1, self.scale, self.scale], dtype=np.float32))
        w.node("Resize", [x[0], "", scales], name, mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")


@register_op
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

    def emit_torch(self, node, args):
        from archspec.compiler.module_builder import crop_to_level

        return node.call_function(crop_to_level, (args[0], args[1], self.level))

    def emit_onnx(self, w, name, x, inputs, out):
        # the input size is known when writing: a static Slice, or nothing when sizes agree
        before = inputs[0]
        if (before.height, before.width) == (out.height, out.width):
            w.node("Identity", [x[0]], name)
            return
        w.node("Slice", [x[0], w.constant(f"{name}.starts", _int64(0, 0)),
                         w.constant(f"{name}.ends", _int64(out.height, out.width)),
                         w.constant(f"{name}.axes", _int64(2, 3))], name)


@register_op
@dataclass(frozen=True)
class Linear(Op):
    """Flatten then fully connected layer."""

    in_features: int
    out_features: int
    bias: bool = True
    kind: ClassVar[str] = "linear"
    spatial_output: ClassVar[bool] = False

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

    def expected_channels(self) -> int | None:
        return self.in_features

    def torch_module(self):
        from torch import nn

        return nn.Linear(self.in_features, self.out_features, self.bias)

    def emit_torch(self, node, args):
        import torch

        flat = node.call_function(torch.flatten, (args[0], 1))
        return node.call_module(self.torch_module(), [flat])

    def emit_onnx(self, w, name, x, inputs, out):
        flat = w.node("Flatten", x, f"{name}.flatten", axis=1)
        args = [flat, w.tensor(f"{name}.weight", (self.out_features, self.in_features), w.he(self.in_features))]
        if self.bias:
            args.append(w.tensor(f"{name}.bias", (self.out_features,), w.uniform(-0.1, 0.1)))
        w.node("Gemm", args, name, transB=1)  # (batch, features), as the built module returns


@register_op
@dataclass(frozen=True)
class Dropout(Op):
    """Dropout (identity at inference)."""

    p: float
    kind: ClassVar[str] = "dropout"

    def torch_module(self):
        from torch import nn

        return nn.Dropout(self.p)

    def emit_onnx(self, w, name, x, inputs, out):
        w.node("Identity", x, name)
