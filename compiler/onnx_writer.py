"""Graph IR -> ONNX directly, without torch.

The latency table measures hundreds of one-block graphs; going through `torch.onnx.export`
(dynamo) costs about two seconds per block, writing the ONNX graph straight from the IR costs
milliseconds. The operators are those the exporter produces for the built module (BatchNorm
kept as a node: ONNX Runtime folds it into the convolution, as the exporter does), so a kernel
runs the same code in ONNX Runtime as inside an exported model.

Each node is written by its op (`Op.emit_onnx`) through an `OnnxWriter`. Initializers are named
like the built module's state dict (``stage1.block0.conv1.weight``),
so `graph_to_onnx(graph, size, weights=module.state_dict())` reproduces a built module exactly
(the parity test of this writer does that). Given weights are used strictly: a tensor the graph
needs but the weights lack, or a weight the graph never reads, is an error (a renamed layer must
never export silently with random values).

It is also the default exporter of whole specs (`compiler.export`, ``archspec export``): the
detector writer (`compiler.detector.detector_to_onnx`) emits a backbone graph through
`emit_graph` under the ``backbone.`` prefix of the detector module's state dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archspec.compiler.graph import Graph

DEFAULT_OPSET = 20
MIN_OPSET = 18
"""Oldest opset the writer emits (Resize and ReduceMax take their sizes and axes as inputs from 18)."""
MAX_OPSET = 21
INPUT_NAME = "images"
BATCH_DIM = "batch"
"""Name of the symbolic batch dimension (`dynamic_batch`)."""
IGNORED_WEIGHTS = ("num_batches_tracked",)
"""State-dict entries with no role at inference (BatchNorm's step counter)."""


class OnnxWriter:
    """Collects ONNX nodes and initializers; each op's `emit_onnx` writes through it."""

    def __init__(self, weights: Mapping[str, np.ndarray] | None, seed: int):
        # initializers are written straight into the model being built: building them apart and
        # copying them in (onnx.helper.make_graph / make_model) copies every weight twice
        self.model = onnx.ModelProto()
        self.nodes: list[onnx.NodeProto] = []
        self.weights = None if weights is None else {
            k: v for k, v in weights.items() if not k.endswith(IGNORED_WEIGHTS)}
        self.rng = np.random.default_rng(seed)
        self._written: dict[str, tuple[int, ...]] = {}
        self._constants: dict[str, np.ndarray] = {}

    @property
    def initializers(self):
        return self.model.graph.initializer

    def tensor(self, name: str, shape: tuple[int, ...], make) -> str:
        """An initializer: the weight of that name when weights are given (it must exist), else
        ``make(shape)`` (random). A name asked for twice (a head shared by every level) is one
        initializer."""
        if name in self._written:
            if self._written[name] != tuple(shape):
                raise ValueError(f"tensor {name!r} asked for with shapes {self._written[name]} and {tuple(shape)}")
            return name
        if self.weights is None:
            value = make(shape).astype(np.float32, copy=False)  # draws are float32 already
        else:
            if name not in self.weights:
                raise ValueError(f"weight {name!r} is missing from the given weights")
            value = np.asarray(_numpy(self.weights[name]), dtype=np.float32)
            if tuple(value.shape) != tuple(shape):
                raise ValueError(f"weight {name!r}: shape {tuple(value.shape)}, expected {tuple(shape)}")
        tensor = self.model.graph.initializer.add()
        tensor.name, tensor.data_type = name, TensorProto.FLOAT
        tensor.dims.extend(shape)
        tensor.raw_data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        self._written[name] = tuple(shape)
        return name

    def check_weights_used(self) -> None:
        """Every given weight was read (a weight nothing reads means the names do not match)."""
        if self.weights is None:
            return
        unused = sorted(set(self.weights) - set(self._written))
        if unused:
            more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
            raise ValueError(f"{len(unused)} given weights are not used by the graph: {', '.join(unused[:5])}{more}")

    def constant(self, name: str, value: np.ndarray) -> str:
        """A constant initializer; asking again for a name with the same value reuses it."""
        value = np.asarray(value)
        known = self._constants.get(name)
        if known is not None:
            if known.dtype != value.dtype or not np.array_equal(known, value):
                raise ValueError(f"constant {name!r} asked for with two values")
            return name
        self._constants[name] = value
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def he(self, fan_in: int):
        """He-uniform draws, variance 2 / fan_in (keeps activations of a random network in a sane
        range); uniform float32 draws are the cheapest numpy makes (ResNet-50's 25 M in ~0.1 s)."""
        return self.uniform(-np.sqrt(6.0 / max(1, fan_in)), np.sqrt(6.0 / max(1, fan_in)))

    def uniform(self, low: float, high: float):
        def draw(shape):
            values = self.rng.random(shape, dtype=np.float32)
            values *= np.float32(high - low)
            values += np.float32(low)
            return values
        return draw

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        """Append one ONNX node with one output; returns the output's name."""
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def node_outputs(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> list[str]:
        """Append one ONNX node with several outputs (TopK); returns their names."""
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return outputs

    def int64(self, name: str, *values: int) -> str:
        """A 1-D int64 constant (shapes, axes, indices)."""
        return self.constant(name, np.array(values, dtype=np.int64))

    def float32(self, name: str, value) -> str:
        """A float32 constant of any shape (scalars broadcast)."""
        return self.constant(name, np.asarray(value, dtype=np.float32))


def emit_graph(w: OnnxWriter, graph: Graph, input_size: tuple[int, int], source: str,
               prefix: str = "") -> dict[str, str]:
    """Append the nodes of `graph` reading the value `source`; node values and initializers are
    named ``prefix + node``. Returns graph output name -> value (the node's value: several
    outputs may share one)."""
    shapes = graph.shapes(input_size)

    def value(node: str) -> str:
        return source if node == graph.input else prefix + node

    for info in graph.nodes():
        if info.op.arity == 0:
            continue
        info.op.emit_onnx(w, prefix + info.name, [value(p) for p in info.inputs], [shapes[p] for p in info.inputs],
                          shapes[info.name])
    return {name: value(node) for name, node in graph.outputs.items()}


def batch_dim(batch: int | None) -> int | str:
    """The first dimension of every value: a fixed batch, or symbolic (None)."""
    return BATCH_DIM if batch is None else batch


def make_model(w: OnnxWriter, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
               opset: int) -> onnx.ModelProto:
    """The model of the writer's nodes; weights checked as all used."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset}: the direct writer emits opsets {MIN_OPSET}..{MAX_OPSET}")
    w.check_weights_used()
    model = w.model
    model.graph.name = name
    model.graph.node.extend(w.nodes)
    model.graph.input.extend(inputs)
    model.graph.output.extend(outputs)
    model.opset_import.append(helper.make_opsetid("", opset))
    model.producer_name = "archspec"
    model.ir_version = min(onnx.IR_VERSION, 10)
    return model


def graph_to_onnx(graph: Graph, input_size: tuple[int, int], *, batch: int | None = 1,
                  weights: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                  opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """An ONNX model computing `graph` on a ``batch x C x H x W`` input named ``images``
    (``batch=None``: a symbolic batch dimension). Weights come from `weights` (state-dict names,
    all of them used) or are drawn at random (`seed`); BatchNorm statistics are random but
    non-trivial."""
    shapes = graph.shapes(input_size)
    w = OnnxWriter(weights, seed)
    values = emit_graph(w, graph, input_size, INPUT_NAME)
    first = batch_dim(batch)
    input_channels = graph.nx.nodes[graph.input]["channels"]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [first, input_channels, *input_size])]
    outputs = []
    for name, node in graph.outputs.items():
        shape = shapes[node]
        dims = [first, shape.channels]
        if graph.nx.nodes[node]["op"].spatial_output:
            dims += [shape.height, shape.width]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        # graph outputs are node values under output names (an Identity each: free in ORT)
        w.node("Identity", [values[name]], name)
    return make_model(w, graph.name or "graph", inputs, outputs, opset)


def _numpy(value) -> np.ndarray:
    """Tensors (torch or numpy) as numpy arrays, without importing torch."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
