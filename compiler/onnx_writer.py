"""Graph IR -> ONNX directly, without torch.

The latency table measures hundreds of one-block graphs; going through `torch.onnx.export`
(dynamo) costs about two seconds per block, writing the ONNX graph straight from the IR costs
milliseconds. The operators are those the exporter produces for the built module (BatchNorm
kept as a node: ONNX Runtime folds it into the convolution, as the exporter does), so a kernel
runs the same code in ONNX Runtime as inside an exported model.

Initializers are named like the built module's state dict (``stage1.block0.conv1.weight``),
so `graph_to_onnx(graph, size, weights=module.state_dict())` reproduces a built module exactly
(the parity test of this writer does that).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archspec.compiler.graph import Graph
from archspec.compiler.ops import (Act, Add, AvgPool, BatchNorm, ChannelSlice, Concat, Conv, CropToLevel, Dropout, GlobalAvgPool, Linear,
                          MaxPool, Mul, Upsample)

DEFAULT_OPSET = 20
INPUT_NAME = "images"


class _Writer:
    def __init__(self, weights: Mapping[str, np.ndarray] | None, seed: int):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights = {k: np.asarray(_numpy(v), dtype=np.float32) for k, v in (weights or {}).items()}
        self.rng = np.random.default_rng(seed)

    def tensor(self, name: str, shape: tuple[int, ...], make) -> str:
        value = self.weights.get(name)
        if value is None:
            value = make(shape).astype(np.float32)
        elif tuple(value.shape) != shape:
            raise ValueError(f"weight {name!r}: shape {tuple(value.shape)}, expected {shape}")
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def he(self, fan_in: int):
        return lambda shape: self.rng.standard_normal(shape) * np.sqrt(2.0 / max(1, fan_in))

    def uniform(self, low: float, high: float):
        return lambda shape: self.rng.uniform(low, high, shape)

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def graph_to_onnx(graph: Graph, input_size: tuple[int, int], *, batch: int = 1,
                  weights: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                  opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """An ONNX model computing `graph` on a ``batch x C x H x W`` input named ``images``.
    Weights come from `weights` (state-dict names) or are drawn at random (`seed`);
    BatchNorm statistics are random but non-trivial."""
    shapes = graph.shapes(input_size)
    w = _Writer(weights, seed)
    for info in graph.nodes():
        if info.op.arity == 0:
            continue
        x = [_value(graph, p) for p in info.inputs]
        if isinstance(info.op, CropToLevel):
            _crop(w, info.name, x[0], shapes[info.inputs[0]], shapes[info.name])
        else:
            _emit(w, info.name, info.op, x)
    input_channels = graph.nx.nodes[graph.input]["channels"]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, input_channels, *input_size])]
    outputs, renames = [], {}
    for name, node in graph.outputs.items():
        shape = shapes[node]
        dims = [batch, shape.channels]
        if not isinstance(graph.nx.nodes[node]["op"], Linear):
            dims += [shape.height, shape.width]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        renames.setdefault(node, []).append(name)
    _route_outputs(w, graph, renames)
    body = helper.make_graph(w.nodes, graph.name or "graph", inputs, outputs, w.initializers)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", opset)], producer_name="archspec")
    model.ir_version = min(model.ir_version, 10)
    return model


def _route_outputs(w: _Writer, graph: Graph, renames: dict[str, list[str]]) -> None:
    """Graph outputs are node values under output names (an Identity each: free in ORT)."""
    for node, names in renames.items():
        source = _value(graph, node)
        for name in names:
            w.node("Identity", [source], name)


def _value(graph: Graph, node: str) -> str:
    return INPUT_NAME if node == graph.input else node


def _emit(w: _Writer, name: str, op, x: list[str]) -> None:
    if isinstance(op, Conv):
        weight = w.tensor(f"{name}.weight", (op.out_channels_, op.in_channels // op.groups, op.kernel, op.kernel),
                          w.he(op.in_channels // op.groups * op.kernel ** 2))
        inputs = [x[0], weight]
        if op.bias:
            inputs.append(w.tensor(f"{name}.bias", (op.out_channels_,), w.uniform(-0.1, 0.1)))
        w.node("Conv", inputs, name, kernel_shape=[op.kernel] * 2, strides=[op.stride] * 2,
               dilations=[op.dilation] * 2, pads=[op.padding] * 4, group=op.groups)
    elif isinstance(op, BatchNorm):
        c = (op.channels,)
        w.node("BatchNormalization", [x[0], w.tensor(f"{name}.weight", c, w.uniform(0.5, 1.5)),
                                      w.tensor(f"{name}.bias", c, w.uniform(-0.2, 0.2)),
                                      w.tensor(f"{name}.running_mean", c, w.uniform(-0.2, 0.2)),
                                      w.tensor(f"{name}.running_var", c, w.uniform(0.5, 1.5))],
               name, epsilon=1e-5)
    elif isinstance(op, Act):
        _activation(w, name, op.function, x[0])
    elif isinstance(op, Add):
        value = x[0]
        for i, other in enumerate(x[1:]):
            value = w.node("Add", [value, other], name if i == len(x) - 2 else f"{name}.partial{i}")
    elif isinstance(op, Mul):
        w.node("Mul", x, name)
    elif isinstance(op, Concat):
        w.node("Concat", x, name, axis=1)
    elif isinstance(op, ChannelSlice):
        i64 = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
        w.node("Slice", [x[0], w.constant(f"{name}.starts", i64(op.start)),
                         w.constant(f"{name}.ends", i64(np.iinfo(np.int64).max)),
                         w.constant(f"{name}.axes", i64(1)), w.constant(f"{name}.steps", i64(op.step))], name)
    elif isinstance(op, MaxPool):
        w.node("MaxPool", x, name, kernel_shape=[op.kernel] * 2, strides=[op.stride] * 2, pads=[op.kernel // 2] * 4)
    elif isinstance(op, AvgPool):
        w.node("AveragePool", x, name, kernel_shape=[op.kernel] * 2, strides=[op.stride] * 2, pads=[0] * 4,
               ceil_mode=1, count_include_pad=0)
    elif isinstance(op, GlobalAvgPool):
        w.node("GlobalAveragePool", x, name)
    elif isinstance(op, Upsample):
        scales = w.constant(f"{name}.scales", np.array([1, 1, op.scale, op.scale], dtype=np.float32))
        w.node("Resize", [x[0], "", scales], name, mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
    elif isinstance(op, Linear):
        flat = w.node("Flatten", x, f"{name}.flatten", axis=1)
        inputs = [flat, w.tensor(f"{name}.weight", (op.out_features, op.in_features), w.he(op.in_features))]
        if op.bias:
            inputs.append(w.tensor(f"{name}.bias", (op.out_features,), w.uniform(-0.1, 0.1)))
        w.node("Gemm", inputs, name, transB=1)  # (batch, features), as the built module returns
    elif isinstance(op, Dropout):
        w.node("Identity", x, name)
    else:
        raise TypeError(f"node {name!r}: no ONNX form for {type(op).__name__}")


def _crop(w: _Writer, name: str, x: str, before, after) -> None:
    """`CropToLevel` at a known input size: a static Slice, or nothing when sizes agree."""
    if (before.height, before.width) == (after.height, after.width):
        w.node("Identity", [x], name)
        return
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    w.node("Slice", [x, w.constant(f"{name}.starts", i64(0, 0)), w.constant(f"{name}.ends", i64(after.height, after.width)),
                     w.constant(f"{name}.axes", i64(2, 3))], name)


def _activation(w: _Writer, name: str, function: str, x: str) -> None:
    if function == "relu":
        w.node("Relu", [x], name)
    elif function == "relu6":
        w.node("Clip", [x, w.constant(f"{name}.min", np.array(0, np.float32)),
                        w.constant(f"{name}.max", np.array(6, np.float32))], name)
    elif function == "silu":
        w.node("Mul", [x, w.node("Sigmoid", [x], f"{name}.sigmoid")], name)
    elif function == "hardswish":
        w.node("HardSwish", [x], name)
    elif function == "sigmoid":
        w.node("Sigmoid", [x], name)
    elif function == "identity":
        w.node("Identity", [x], name)
    else:
        raise ValueError(f"node {name!r}: unknown activation {function!r}")


def _numpy(value) -> np.ndarray:
    """Tensors (torch or numpy) as numpy arrays, without importing torch."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
