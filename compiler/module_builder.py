"""Graph IR -> torch module.

The graph is emitted as a `torch.fx.Graph` whose nodes call plain torch modules (one per
parametrised or stateful primitive) or torch functions (add, concat, slicing). The result is
a `torch.fx.GraphModule`: its `forward` is straight-line generated Python (``print(model.code)``),
with no per-call dispatch, so it runs as fast as hand-written code and exports cleanly with
`torch.export` / ONNX. Module names follow the graph (``stage1.block3.conv2``).

Each node is emitted by its op (`Op.emit_torch`, by default a call of `Op.torch_module`): this
module walks the graph and names nothing op-specific.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from archspec.compiler.graph import Graph


@dataclass(frozen=True)
class FeatureInfo:
    """What an output carries, known before any forward pass."""

    name: str
    channels: int
    stride: int
    level: int


class TorchNode:
    """What an op's `emit_torch` needs to add one graph node to the fx graph being built."""

    def __init__(self, fx_graph: fx.Graph, modules: dict[str, nn.Module], name: str, owned_inputs: list[bool]):
        self.fx_graph = fx_graph
        self.modules = modules
        self.name = name
        """The graph node's name: the module's name in the built model (``stage1.block3.conv2``)."""
        self._owned = owned_inputs

    def owns_input(self, slot: int) -> bool:
        """True when the input in `slot` may be overwritten in place (this node is its only
        consumer, and it is neither the model's input nor one of its outputs)."""
        return self._owned[slot]

    def call_module(self, module: nn.Module, args) -> fx.Node:
        """Call `module`, registered under the node's name."""
        self.modules[self.name] = module
        return self.fx_graph.call_module(self.name, tuple(args))

    def call_function(self, function, args) -> fx.Node:
        return self.fx_graph.call_function(function, tuple(args))


class CompiledModule(fx.GraphModule):
    """A backbone built from a spec. ``forward(x)`` returns a dict of the named outputs."""

    feature_info: list[FeatureInfo]

    def output_shape(self) -> dict[str, FeatureInfo]:
        """Channels and stride of every output, without running the model."""
        return {info.name: info for info in self.feature_info}


def build_graph_module(graph: Graph) -> CompiledModule:
    """Lower a graph IR to a `CompiledModule`."""
    graph.check()
    fx_graph = fx.Graph()
    modules: dict[str, nn.Module] = {}
    values: dict[str, fx.Node] = {}
    consumers = {name: graph.nx.out_degree(name) for name in graph.nx}
    returned = set(graph.outputs.values())

    def owns(node: str) -> bool:
        """True when `node`'s value may be overwritten in place by its only consumer."""
        return consumers[node] == 1 and node not in returned and node != graph.input

    for info in graph.nodes():
        if info.op.arity == 0:
            values[info.name] = fx_graph.placeholder("x")
            continue
        node = TorchNode(fx_graph, modules, info.name, [owns(p) for p in info.inputs])
        values[info.name] = info.op.emit_torch(node, [values[p] for p in info.inputs])
    fx_graph.output({name: values[node] for name, node in graph.outputs.items()})
    module = CompiledModule(modules, fx_graph, class_name=_class_name(graph.name))
    module.feature_info = [
        FeatureInfo(name, graph.nx.nodes[node]["channels"], 2 ** graph.nx.nodes[node]["level"],
                    graph.nx.nodes[node]["level"])
        for name, node in graph.outputs.items()
    ]
    return module


def crop_to_level(x: torch.Tensor, image: torch.Tensor, level: int) -> torch.Tensor:
    """`CropToLevel`: the top-left ceil(H / 2**level) x ceil(W / 2**level) of `x`."""
    step = 2 ** level
    height, width = -(-image.shape[-2] // step), -(-image.shape[-1] // step)
    return x[:, :, :height, :width]


def _class_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "Backbone"
    return cleaned[0].upper() + cleaned[1:] if not cleaned[0].isdigit() else "Net_" + cleaned
