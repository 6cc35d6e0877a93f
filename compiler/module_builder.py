"""Graph IR -> torch module.

The graph is emitted as a `torch.fx.Graph` whose nodes call plain torch modules (one per
parametrised or stateful primitive) or torch functions (add, concat, slicing). The result is
a `torch.fx.GraphModule`: its `forward` is straight-line generated Python (``print(model.code)``),
with no per-call dispatch, so it runs as fast as hand-written code and exports cleanly with
`torch.export` / ONNX. Module names follow the graph (``stage1.block3.conv2``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from archspec.compiler.graph import Graph
from archspec.compiler.ops import (Act, Add, AvgPool, BatchNorm, ChannelSlice, Concat, Conv, CropToLevel, Dropout,
                          GlobalAvgPool, Linear, MaxPool, Mul, Op, Upsample)


@dataclass(frozen=True)
class FeatureInfo:
    """What an output carries, known before any forward pass."""

    name: str
    channels: int
    stride: int
    level: int


def _activation(op: Act, inplace: bool) -> nn.Module:
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=inplace),
        "relu6": lambda: nn.ReLU6(inplace=inplace),
        "silu": lambda: nn.SiLU(inplace=inplace),
        "hardswish": lambda: nn.Hardswish(inplace=inplace),
        "sigmoid": nn.Sigmoid,
        "identity": nn.Identity,
    }
    return table[op.function]()


MODULE_BUILDERS: dict[type, Callable[[Op], nn.Module]] = {
    Conv: lambda op: nn.Conv2d(op.in_channels, op.out_channels_, op.kernel, op.stride, op.padding, op.dilation,
                               op.groups, op.bias),
    BatchNorm: lambda op: nn.BatchNorm2d(op.channels),
    MaxPool: lambda op: nn.MaxPool2d(op.kernel, op.stride, op.kernel // 2),
    AvgPool: lambda op: nn.AvgPool2d(op.kernel, op.stride, ceil_mode=True, count_include_pad=False),
    GlobalAvgPool: lambda op: nn.AdaptiveAvgPool2d(1),
    Upsample: lambda op: nn.Upsample(scale_factor=float(op.scale), mode="nearest"),
    Linear: lambda op: nn.Linear(op.in_features, op.out_features, op.bias),
    Dropout: lambda op: nn.Dropout(op.p),
}
"""Primitive type -> the torch module that implements it (activations are handled apart)."""


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
        args = [values[p] for p in info.inputs]
        target = info.name
        op = info.op
        if op.arity == 0:
            values[info.name] = fx_graph.placeholder("x")
            continue
        if isinstance(op, Act):
            modules[target] = _activation(op, inplace=owns(info.inputs[0]))
            out = fx_graph.call_module(target, tuple(args))
        elif isinstance(op, Add):
            add = operator.iadd if owns(info.inputs[0]) else operator.add
            out = args[0]
            for other in args[1:]:
                out = fx_graph.call_function(add, (out, other))
                add = operator.iadd
        elif isinstance(op, Mul):
            out = fx_graph.call_function(operator.mul, tuple(args))
        elif isinstance(op, Concat):
            out = fx_graph.call_function(torch.cat, (list(args), 1))
        elif isinstance(op, ChannelSlice):
            index = (slice(None), slice(op.start, None, op.step))
            out = fx_graph.call_function(operator.getitem, (args[0], index))
        elif isinstance(op, CropToLevel):
            out = fx_graph.call_function(crop_to_level, (args[0], args[1], op.level))
        elif isinstance(op, Linear):
            flat = fx_graph.call_function(torch.flatten, (args[0], 1))
            modules[target] = MODULE_BUILDERS[Linear](op)
            out = fx_graph.call_module(target, (flat,))
        else:
            modules[target] = MODULE_BUILDERS[type(op)](op)
            out = fx_graph.call_module(target, tuple(args))
        values[info.name] = out
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
