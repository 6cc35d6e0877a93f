"""Graph IR -> ONNX directly, without torch.

The latency table measures hundreds of one-block graphs; going through `torch.onnx.export`
(dynamo) costs about two seconds per block, writing the ONNX graph straight from the IR costs
milliseconds. The operators are those the exporter produces for the built module (BatchNorm
kept as a node: ONNX Runtime folds it into the convolution, as the exporter does), so a kernel
runs the same code in ONNX Runtime as inside an exported model.

Each node is written by its op (`Op.emit_onnx`) through an `OnnxWriter`. Initializers are named
like the built module's state dict (``stage1.block0.conv1.weight``),
so `graph_to_onnx(graph, size, weights=module.state_dict())` reproduces a built module exactly
(the parity test of this writer does that).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archspec.compiler.graph import Graph

DEFAULT_OPSET = 20
INPUT_NAME = "images"


class OnnxWriter:
    """Collects ONNX nodes and initializers; each op's `emit_onnx` writes through it."""

    def __init__(self, weights: Mapping[str, np.ndarray] | None, seed: int):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights = {k: np.asarray(_numpy(v), dtype=np.float32) for k, v in (weights or {}).items()}
        self.rng = np.random.default_rng(seed)

    def tensor(self, name: str, shape: tuple[int, ...], make) -> str:
        """An initializer: the weight of that name when given, else ``make(shape)`` (random)."""
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
        """He-normal draws (keep activations of a random network in a sane range)."""
        return lambda shape: self.rng.standard_normal(shape) * np.sqrt(2.0 / max(1, fan_in))

    def uniform(self, low: float, high: float):
        return lambda shape: self.rng.uniform(low, high, shape)

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        """Append one ONNX node with one output; returns the output's name."""
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def graph_to_onnx(graph: Graph, input_size: tuple[int, int], *, batch: int = 1,
                  weights: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                  opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """An ONNX model computing `graph` on a ``batch x C x H x W`` input named ``images``.
    Weights come from `weights` (state-dict names) or are drawn at random (`seed`);
    BatchNorm statistics are random but non-trivial."""
    shapes = graph.shapes(input_size)
    w = OnnxWriter(weights, seed)
    for info in graph.nodes():
        if info.op.arity == 0:
            continue
        x = [_value(graph, p) for p in info.inputs]
        info.op.emit_onnx(w, info.name, x, [shapes[p] for p in info.inputs], shapes[info.name])
    input_channels = graph.nx.nodes[graph.input]["channels"]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, input_channels, *input_size])]
    outputs, renames = [], {}
    for name, node in graph.outputs.items():
        shape = shapes[node]
        dims = [batch, shape.channels]
        if graph.nx.nodes[node]["op"].spatial_output:
            dims += [shape.height, shape.width]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        renames.setdefault(node, []).append(name)
    _route_outputs(w, graph, renames)
    body = helper.make_graph(w.nodes, graph.name or "graph", inputs, outputs, w.initializers)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", opset)], producer_name="archspec")
    model.ir_version = min(model.ir_version, 10)
    return model


def _route_outputs(w: OnnxWriter, graph: Graph, renames: dict[str, list[str]]) -> None:
    """Graph outputs are node values under output names (an Identity each: free in ORT)."""
    for node, names in renames.items():
        source = _value(graph, node)
        for name in names:
            w.node("Identity", [source], name)


def _value(graph: Graph, node: str) -> str:
    return INPUT_NAME if node == graph.input else node


def _numpy(value) -> np.ndarray:
    """Tensors (torch or numpy) as numpy arrays, without importing torch."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
