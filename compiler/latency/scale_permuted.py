"""Kernels of scale-permuted backbones (SpineNet), following `compiler.scale_permuted`:
stem layers; per block its resampled parents (one ``resample`` kernel each), the merge (sum of
the terms + activation, one ``merge`` kernel) and its `block_repeats` blocks (layer kernels);
one endpoint conv per output.

The crop after upsampling (a no-op at input sizes divisible by 2**7 = 128, the sizes SpineNet
runs at) is not part of the resample kernel.
"""

from __future__ import annotations

import functools
import json

from archspec.compiler.latency.kernels import (DECOMPOSERS, KERNEL_GRAPHS, KernelKey, halve, layer_key, layer_kernel,
                                      stem_conv_key)


@functools.lru_cache(maxsize=1 << 14)
def resample_key(in_channels: int, width: int, levels: int, out_channels: int, activation: str, height: int,
                 width_px: int) -> KernelKey:
    """One parent resampled by `levels` levels (positive: down) at the parent's size."""
    return json.dumps({"kind": "resample", "in": in_channels, "width": width, "levels": levels, "out": out_channels,
                       "act": activation, "hw": [height, width_px]}, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=1 << 12)
def merge_key(terms: int, channels: int, activation: str, height: int, width: int) -> KernelKey:
    """Sum of `terms` maps and the activation."""
    return json.dumps({"kind": "merge", "terms": terms, "channels": channels, "act": activation,
                       "hw": [height, width]}, sort_keys=True, separators=(",", ":"))


def _sizes(input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Spatial size at every level 0..7."""
    sizes = [tuple(input_size)]
    for _ in range(7):
        h, w = sizes[-1]
        sizes.append((halve(h), halve(w)))
    return sizes


def scale_permuted_kernels(spec, input_size: tuple[int, int]) -> list[KernelKey]:
    sizes = _sizes(input_size)
    keys: list[KernelKey] = []
    channels = spec.in_channels
    for layer in spec.stem_layers():
        keys.append(layer_kernel(layer, *sizes[layer.level_in]))
        channels = layer.out_channels
    act = spec.activation
    nodes = spec.resolve()
    for node in nodes:
        h, w = sizes[node.level]
        if node.parents:
            for p in node.parents:
                source = nodes[p]
                keys.append(resample_key(source.out_channels, int(source.filters * spec.resample_alpha),
                                         node.level - source.level, node.out_channels, act, *sizes[source.level]))
            terms = len(node.parents) + len(node.merged)
            if terms > 1 or act != "identity":
                keys.append(merge_key(terms, node.out_channels, act, h, w))
            channels = node.out_channels
        for r in range(spec.block_repeats):
            keys.append(layer_key(node.block, channels, node.out_channels, 1, node.block.dilation, r == 0, h, w))
            channels = node.out_channels
    if spec.endpoint_channels is not None:
        for node in sorted((n for n in nodes if n.output), key=lambda n: n.level):
            keys.append(stem_conv_key(node.out_channels, spec.endpoint_channels, 1, act, *sizes[node.level]))
    return keys


def _resample_graph(data: dict):
    from archspec.compiler.graph import Graph
    from archspec.compiler.lowering import BlockScope
    from archspec.compiler.ops import Input
    from archspec.compiler.scale_permuted import resample_path

    graph = Graph("kernel")
    x = graph.add("input", Input(data["in"]), block="input", block_kind="input")
    scope = BlockScope(graph, "resample", "resample")
    graph.set_output("y", resample_path(scope, x, data["width"], data["levels"], data["out"], data["act"]))
    return graph, tuple(data["hw"])


def _merge_graph(data: dict):
    from archspec.compiler.graph import Graph
    from archspec.compiler.lowering import BlockScope
    from archspec.compiler.ops import Act, Input

    graph = Graph("kernel")
    x = graph.add("input", Input(data["channels"]), block="input", block_kind="input")
    scope = BlockScope(graph, "merge", "merge")
    # The terms are distinct maps in the model; copies of the input stand in for them here.
    terms = [scope.node(f"term{i}", Act("identity"), [x]) for i in range(data["terms"])]
    y = scope.add("sum", terms) if len(terms) > 1 else terms[0]
    graph.set_output("y", scope.act("act", y, data["act"]) if data["act"] != "identity" else y)
    return graph, tuple(data["hw"])


DECOMPOSERS.register("scale_permuted", scale_permuted_kernels)
KERNEL_GRAPHS.register("resample", _resample_graph)
KERNEL_GRAPHS.register("merge", _merge_graph)
