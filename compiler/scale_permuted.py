"""Lowering of scale-permuted backbones (SpineNet) to the graph IR.

The spec has already resolved everything (levels, channels, parents, merges; see
`archspec.scale_permuted`); this module only emits primitives, following the official
SpineNet code (tensorflow/tpu, models/official/detection/modeling/architecture/spinenet.py):

* stem layers, then each stem block group at the stem's level, chained;
* per block, every parent is resampled (`resample`): 1x1 conv to int(filters * alpha) + BN +
  act; one level down: 3x3 stride-2 conv + BN + act; d >= 2 levels down: that conv, then a
  max-pool of stride 2**(d-1) (kernel 3 for d = 2, else 5); up: nearest upsampling by 2**d
  (then cropped to the level's size, a no-op at sizes divisible by 2**level); finally a 1x1
  conv to the block's input channels + BN, no activation;
* the resampled parents and the merged unused blocks are summed, activated, and the block
  group runs (`block_repeats` blocks at stride 1, built by the ordinary block lowerings);
* every output gets a 1x1 conv + BN + act to `endpoint_channels`.

All nodes of one SpineNet block (its resampling, merge and repeats) share the graph's block
name (``block7``), so per-block costs and the rendered block graph show one node per block.
"""

from __future__ import annotations

from dataclasses import dataclass

from archspec.backbones import Layer
from archspec.scale_permuted import PermutedNode, ScalePermutedBackbone
from archspec.compiler.graph import Graph
from archspec.compiler.lowering import LOWERINGS, BlockScope, lower_layer
from archspec.compiler.ops import Act, CropToLevel, Input, MaxPool, Upsample


@dataclass
class GroupScope(BlockScope):
    """A `BlockScope` whose nodes are named after `name` but belong to the graph block `group`
    (one SpineNet block: resampling, merge and every repeat)."""

    group: str = ""

    def node(self, local: str, op, inputs: list[str]) -> str:
        return self.graph.add(f"{self.name}.{local}", op, inputs, block=self.group or self.name, block_kind=self.kind)


def lower_scale_permuted(spec: ScalePermutedBackbone) -> Graph:
    """The graph IR of a scale-permuted backbone."""
    graph = Graph(spec.name)
    image = graph.add("input", Input(spec.in_channels), block="input", block_kind="input")
    x = image
    for layer in spec.stem_layers():
        x = lower_layer(graph, layer, x)
    nodes = spec.resolve()
    outputs: dict[int, str] = {}
    for node in nodes:
        if node.parents:
            x = _merge_inputs(graph, spec, nodes, node, outputs, image)
        outputs[node.index] = _block_group(graph, spec, node, x)
        x = outputs[node.index]
    for name, node in spec.outputs().items():
        graph.set_output(name, _endpoint(graph, spec, name, outputs[node.index]))
    return graph


def _merge_inputs(graph: Graph, spec: ScalePermutedBackbone, nodes: list[PermutedNode], target: PermutedNode,
                  outputs: dict[int, str], image: str) -> str:
    """Resampled parents plus merged blocks, summed and activated: the block group's input."""
    scope = GroupScope(graph, target.name, target.block.type, target.name)
    terms = [resample(scope, spec, nodes[p], target, outputs[p], image, f"resample{k}")
             for k, p in enumerate(target.parents)]
    terms += [outputs[j] for j in target.merged]
    total = scope.add("sum", terms) if len(terms) > 1 else terms[0]
    return scope.node("act_in", Act(spec.activation), [total]) if spec.activation != "identity" else total


def resample(scope: BlockScope, spec: ScalePermutedBackbone, source: PermutedNode, target: PermutedNode, x: str,
             image: str, prefix: str) -> str:
    """SpineNet's `resample_with_alpha`: `source`'s map at `target`'s level and input width."""
    return resample_path(scope, x, int(source.filters * spec.resample_alpha), target.level - source.level,
                         target.out_channels, spec.activation, prefix, crop=(target.level, image))


def resample_path(scope: BlockScope, x: str, width: int, levels: int, out_channels: int, act: str,
                  prefix: str = "", crop: tuple[int, str] | None = None) -> str:
    """The resampling rule, in one place for the model and its latency kernels: 1x1 reduce to
    `width`; `levels` > 0 levels down: a 3x3 stride-2 conv, then for two or more levels a max-pool
    of stride 2**(levels - 1); levels up: nearest upsampling, cropped to ``crop = (level, image
    node)`` when given; then a 1x1 conv + BN to `out_channels`. Nodes are named ``<prefix>.<local>``."""
    def at(local: str) -> str:
        return f"{prefix}.{local}" if prefix else local

    y = scope.conv(at("conv_reduce"), x, width, 1, act=act, bn_name=at("bn_reduce"), act_name=at("act_reduce"))
    if levels > 0:
        y = scope.conv(at("conv_down"), y, width, 3, 2, act=act, bn_name=at("bn_down"), act_name=at("act_down"))
        if levels > 1:
            # The official rule: pool size 3 when the ratio is at most 4, else 5; stride ratio / 2.
            y = scope.node(at("pool"), MaxPool(3 if levels == 2 else 5, 2 ** (levels - 1)), [y])
    elif levels < 0:
        y = scope.node(at("upsample"), Upsample(2 ** -levels), [y])
        if crop is not None:
            y = scope.node(at("crop"), CropToLevel(crop[0]), [y, crop[1]])
    return scope.conv(at("conv_match"), y, out_channels, 1, bn_name=at("bn_match"))


def _block_group(graph: Graph, spec: ScalePermutedBackbone, node: PermutedNode, x: str) -> str:
    """`block_repeats` blocks at stride 1; only the first may change the width (projection)."""
    kind = node.block.type
    for r in range(spec.block_repeats):
        in_channels = graph.nx.nodes[x]["channels"]
        layer = Layer(f"{node.name}.rep{r}", node.path, node.block, in_channels, node.out_channels, 1,
                      node.block.dilation, node.level, node.level, node.index, r)
        x = LOWERINGS[kind](GroupScope(graph, layer.name, kind, node.name), layer, x)
    return x


def _endpoint(graph: Graph, spec: ScalePermutedBackbone, name: str, x: str) -> str:
    if spec.endpoint_channels is None:
        return x
    scope = BlockScope(graph, f"endpoint{name[1:]}", "endpoint")
    return scope.conv("conv", x, spec.endpoint_channels, 1, act=spec.activation, bn_name="bn", act_name="act")

