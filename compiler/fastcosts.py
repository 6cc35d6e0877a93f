"""Analytic costs of staged specs at search speed.

A search evaluates thousands of candidates that share most of their layers. Each layer is
lowered once, alone, into a tiny graph (with the same lowering functions and primitive
counting rules as `compiler.costs`), and its params/MACs are memoised on what determines
them; a candidate's costs are then a sum over `spec.layers()`. Equal to `compiler.costs`
exactly (tested); scale-permuted specs go through the full graph.
"""

from __future__ import annotations

import functools

from archspec.backbones import Layer
from archspec.compiler.costs import Costs, graph_costs
from archspec.compiler.graph import Graph
from archspec.compiler.lowering import lower_classifier, lower_layer
from archspec.compiler.ops import Input


@functools.lru_cache(maxsize=65536)
def layer_graph(block, in_channels: int, out_channels: int, stride: int, dilation: int, first: bool) -> Graph:
    """One layer lowered alone, fed by an input node named ``input``."""
    graph = Graph("layer")
    x = graph.add("input", Input(in_channels), block="input", block_kind="input")
    layer = Layer("layer", "", block, in_channels, out_channels, stride, dilation, 0, 0, None, 0 if first else 1)
    graph.set_output("out", lower_layer(graph, layer, x))
    return graph


@functools.lru_cache(maxsize=262144)
def _layer_costs(block, in_channels, out_channels, stride, dilation, first, height, width) -> tuple[int, ...]:
    """(params, MACs, activations, output height, output width) of one layer."""
    graph = layer_graph(block, in_channels, out_channels, stride, dilation, first)
    shapes = graph.shapes((height, width))
    params = macs = activations = 0
    for info in graph.nodes():
        if info.op.arity == 0:
            continue
        params += info.op.params()
        macs += info.op.macs(shapes[info.name])
        activations += shapes[info.name].numel
    out = shapes[graph.outputs["out"]]
    return params, macs, activations, out.height, out.width


@functools.lru_cache(maxsize=1024)
def _classifier_costs(channels: int, num_classes: int, dropout: float, height: int, width: int) -> tuple[int, int, int]:
    """(params, MACs, activations) of the classifier head (`lower_classifier`) on a C x H x W map."""
    graph = Graph("classifier")
    x = graph.add("input", Input(channels), block="input", block_kind="input")
    graph.set_output("logits", lower_classifier(graph, x, num_classes, dropout))
    counts = graph_costs(graph, (height, width))
    return counts.params, counts.macs, counts.activations


def fast_costs(spec, input_size: tuple[int, int] = (224, 224)) -> Costs:
    """Params, MACs and activations of a spec (per-block breakdown left empty)."""
    if spec.type != "staged":
        from archspec import compiler

        return compiler.costs(spec, input_size)
    height, width = input_size
    params = macs = activations = 0
    channels = spec.in_channels
    for layer in spec.layers():
        p, m, a, height, width = _layer_costs(layer.block, layer.in_channels, layer.out_channels, layer.stride,
                                             layer.dilation, layer.index == 0, height, width)
        params, macs, activations = params + p, macs + m, activations + a
        channels = layer.out_channels
    if spec.head is not None:
        p, m, a = _classifier_costs(channels, spec.head.num_classes, spec.head.dropout, height, width)
        params, macs, activations = params + p, macs + m, activations + a
    return Costs(tuple(input_size), params, macs, activations)
