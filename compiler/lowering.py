"""Lowering: spec -> graph IR. One small function per block kind, registered in `LOWERINGS`
(keyed by the block's `type` tag); one function per backbone kind in `LOWER_SPEC`.

A lowering function receives a `BlockScope` (the graph, the resolved layer and helpers that
name nodes after the block) and the name of the block's input node, and returns the name of
its output node. Blocks only describe structure: shapes, costs and modules are derived from
the primitives they emit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archspec.backbones import Layer, StagedBackbone
from archspec.blocks import (BasicBlock, BottleneckBlock, ConvBlock, InvertedResidualBlock, K1KXBlock,
                             K1KXK1Block, MaxPoolLayer)
from archspec.compiler.graph import Graph
from archspec.registry import Registry
from archspec.compiler.ops import (Act, Add, AvgPool, BatchNorm, ChannelSlice, Concat, Conv, Dropout, GlobalAvgPool, Input,
                          Linear, MaxPool, Mul)


@dataclass
class BlockScope:
    """Emits the nodes of one block, named ``<block name>.<local name>``."""

    graph: Graph
    name: str
    kind: str

    def node(self, local: str, op, inputs: list[str]) -> str:
        return self.graph.add(f"{self.name}.{local}", op, inputs, block=self.name, block_kind=self.kind)

    def channels(self, node: str) -> int:
        return self.graph.nx.nodes[node]["channels"]

    def conv(self, local: str, x: str, out: int, kernel: int = 1, stride: int = 1, dilation: int = 1,
             groups: int = 1, bias: bool = False, norm: bool = True, act: str = "identity",
             bn_name: str | None = None, act_name: str | None = None) -> str:
        """conv -> (bn) -> (act). BN and activation nodes are named after the conv's suffix."""
        suffix = local[len("conv"):] if local.startswith("conv") else f"_{local}"
        y = self.node(local, Conv(self.channels(x), out, kernel, stride, dilation, groups, bias), [x])
        if norm:
            y = self.node(bn_name or f"bn{suffix}", BatchNorm(out), [y])
        if act != "identity":
            y = self.node(act_name or f"act{suffix}", Act(act), [y])
        return y

    def add(self, local: str, inputs: list[str]) -> str:
        return self.node(local, Add(), inputs)

    def act(self, local: str, x: str, function: str) -> str:
        return x if function == "identity" else self.node(local, Act(function), [x])


Lowering = Callable[[BlockScope, Layer, str], str]


def lower_conv(scope: BlockScope, layer: Layer, x: str) -> str:
    block: ConvBlock = layer.block  # type: ignore[assignment]
    return scope.conv("conv", x, layer.out_channels, block.kernel, layer.stride, layer.dilation, block.groups,
                      bias=block.bias, norm=block.norm, act=block.activation)


def lower_max_pool(scope: BlockScope, layer: Layer, x: str) -> str:
    block: MaxPoolLayer = layer.block  # type: ignore[assignment]
    return scope.node("pool", MaxPool(block.kernel, layer.stride), [x])


def _shortcut(scope: BlockScope, layer: Layer, x: str, force_projection: bool = False) -> str:
    """ResNet shortcut: identity, or a strided 1x1 conv + BN when the shape changes."""
    if layer.stride == 1 and layer.in_channels == layer.out_channels and not force_projection:
        return x
    return scope.conv("conv_down", x, layer.out_channels, 1, layer.stride, bn_name="bn_down")


def lower_basic(scope: BlockScope, layer: Layer, x: str) -> str:
    block: BasicBlock = layer.block  # type: ignore[assignment]
    d, act = layer.dilation, block.activation
    y = scope.conv("conv1", x, layer.out_channels, 3, layer.stride, d, act=act)
    y = scope.conv("conv2", y, layer.out_channels, 3, 1, d)
    return scope.act("act_out", scope.add("add", [y, _shortcut(scope, layer, x)]), act)


def lower_bottleneck(scope: BlockScope, layer: Layer, x: str) -> str:
    block: BottleneckBlock = layer.block  # type: ignore[assignment]
    width, act = block.width(layer.out_channels), block.activation
    y = scope.conv("conv1", x, width, 1, act=act)
    y = scope.conv("conv2", y, width, 3, layer.stride, layer.dilation, block.groups, act=act)
    y = scope.conv("conv3", y, layer.out_channels, 1)
    return scope.act("act_out", scope.add("add", [y, _shortcut(scope, layer, x)]), act)


def lower_inverted_residual(scope: BlockScope, layer: Layer, x: str) -> str:
    block: InvertedResidualBlock = layer.block  # type: ignore[assignment]
    hidden, act = block.hidden_channels(layer.in_channels), block.activation
    y = x
    if block.expansion != 1:
        y = scope.conv("conv_expand", y, hidden, 1, act=act)
    y = scope.conv("conv_dw", y, hidden, block.kernel, layer.stride, layer.dilation, groups=hidden, act=act)
    if block.se_ratio:
        squeezed = block.se_channels(layer.in_channels)
        gate = scope.node("se_pool", GlobalAvgPool(), [y])
        gate = scope.conv("conv_se_reduce", gate, squeezed, 1, bias=True, norm=False, act=act)
        gate = scope.conv("conv_se_expand", gate, hidden, 1, bias=True, norm=False, act="sigmoid")
        y = scope.node("se_scale", Mul(), [y, gate])
    y = scope.conv("conv_project", y, layer.out_channels, 1)
    if layer.stride == 1 and layer.in_channels == layer.out_channels:
        y = scope.add("add", [y, x])
    return y


def _shuffle_unit(scope: BlockScope, layer: Layer, x: str, kernel: int,
                  branch: Callable[[str, int, int], str]) -> str:
    """ShuffleNetV2 unit (DetNAS): `branch(input, mid, out)` is the transforming branch."""
    mid = layer.out_channels // 2
    if layer.stride == 1:
        kept = scope.node("split_keep", ChannelSlice(0, 2), [x])
        y = scope.node("split_main", ChannelSlice(1, 2), [x])
        y = branch(y, mid, layer.out_channels // 2)
    else:
        cin = layer.in_channels
        kept = scope.conv("conv_proj_dw", x, cin, kernel, 2, layer.dilation, groups=cin)
        kept = scope.conv("conv_proj", kept, cin, 1, act="relu")
        y = branch(x, mid, layer.out_channels - cin)
    return scope.node("concat", Concat(), [kept, y])


def lower_shufflenet_v2(scope: BlockScope, layer: Layer, x: str) -> str:
    kernel = layer.block.kernel  # type: ignore[attr-defined]

    def branch(y: str, mid: int, out: int) -> str:
        y = scope.conv("conv1", y, mid, 1, act="relu")
        y = scope.conv("conv2_dw", y, mid, kernel, layer.stride, layer.dilation, groups=mid)
        return scope.conv("conv3", y, out, 1, act="relu")

    return _shuffle_unit(scope, layer, x, kernel, branch)


def lower_shuffle_xception(scope: BlockScope, layer: Layer, x: str) -> str:
    def branch(y: str, mid: int, out: int) -> str:
        widths = (mid, mid, out)
        for i, width in enumerate(widths, start=1):
            channels = scope.channels(y)
            y = scope.conv(f"conv{i}_dw", y, channels, 3, layer.stride if i == 1 else 1, layer.dilation,
                           groups=channels)
            y = scope.conv(f"conv{i}", y, width, 1, act="relu")
        return y

    return _shuffle_unit(scope, layer, x, 3, branch)


def _mae_shortcut(scope: BlockScope, layer: Layer, x: str, force_projection: bool) -> str:
    """MAE-DET shortcut: 2x2 average pool when strided, then a 1x1 conv + BN if needed."""
    y = x
    if layer.stride == 2:
        y = scope.node("pool_down", AvgPool(2, 2), [y])
    if layer.in_channels != layer.out_channels or force_projection:
        y = scope.conv("conv_down", y, layer.out_channels, 1, bn_name="bn_down")
    return y


def lower_k1kx(scope: BlockScope, layer: Layer, x: str) -> str:
    block: K1KXBlock = layer.block  # type: ignore[assignment]
    act = block.activation
    y = scope.conv("conv1", x, block.bottleneck_channels, 1, act=act)
    y = scope.conv("conv2", y, layer.out_channels, block.kernel, layer.stride, layer.dilation)
    return scope.act("act_out", scope.add("add", [y, _mae_shortcut(scope, layer, x, False)]), act)


def lower_k1kxk1(scope: BlockScope, layer: Layer, x: str) -> str:
    block: K1KXK1Block = layer.block  # type: ignore[assignment]
    act, btn = block.activation, block.bottleneck_channels
    y = scope.conv("conv1", x, btn, 1, act=act)
    y = scope.conv("conv2", y, btn, block.kernel, layer.stride, layer.dilation, act=act)
    y = scope.conv("conv3", y, layer.out_channels, 1)
    shortcut = _mae_shortcut(scope, layer, x, force_projection=layer.index == 0)
    return scope.act("act_out", scope.add("add", [y, shortcut]), act)


LOWERINGS: Registry[Lowering] = Registry("block lowering")
"""Block kind (`type` tag) -> lowering function."""
for _kind, _lowering in (("conv", lower_conv), ("max_pool", lower_max_pool), ("basic", lower_basic),
                         ("bottleneck", lower_bottleneck), ("inverted_residual", lower_inverted_residual),
                         ("shufflenet_v2", lower_shufflenet_v2), ("shuffle_xception", lower_shuffle_xception),
                         ("k1kx", lower_k1kx), ("k1kxk1", lower_k1kxk1)):
    LOWERINGS.register(_kind, _lowering)


def lower_layer(graph: Graph, layer: Layer, x: str) -> str:
    kind = layer.block.type
    return LOWERINGS[kind](BlockScope(graph, layer.name, kind), layer, x)


def lower_staged(spec: StagedBackbone) -> Graph:
    graph = Graph(spec.name)
    x = graph.add("input", Input(spec.in_channels), block="input", block_kind="input")
    layer_nodes: dict[str, str] = {}
    for layer in spec.layers():
        x = lower_layer(graph, layer, x)
        layer_nodes[layer.name] = x
    level_nodes = {name: layer_nodes[layer.name] for name, layer in spec.output_layers().items()}
    if spec.head is not None:
        level_nodes["logits"] = lower_classifier(graph, x, spec.head.num_classes, spec.head.dropout)
    for name in spec.output_names():
        graph.set_output(name, level_nodes[name])
    return graph


def lower_classifier(graph: Graph, x: str, num_classes: int, dropout: float = 0.0) -> str:
    """The classifier head (`ClassifierHead`): global average pool -> dropout -> linear, as
    nodes ``head.pool``, ``head.dropout``, ``head.fc``; returns the logits node."""
    scope = BlockScope(graph, "head", "classifier")
    y = scope.node("pool", GlobalAvgPool(), [x])
    if dropout > 0:
        y = scope.node("dropout", Dropout(dropout), [y])
    return scope.node("fc", Linear(scope.channels(y), num_classes), [y])


def _lower_scale_permuted(spec) -> Graph:
    from archspec.compiler.scale_permuted import lower_scale_permuted  # imports this module: load it late

    return lower_scale_permuted(spec)


LOWER_SPEC: Registry[Callable[[object], Graph]] = Registry("backbone lowering")
"""Backbone kind (`type` tag) -> function lowering a whole spec to a graph."""
LOWER_SPEC.register("staged", lower_staged)
LOWER_SPEC.register("scale_permuted", _lower_scale_permuted)


def lower(spec) -> Graph:
    """The graph IR of a validated spec."""
    lower_spec = LOWER_SPEC.find(spec.type)
    if lower_spec is None:
        if spec.type == "detector":
            raise ValueError("a detector is not lowered as one graph: its backbone is (`spec.backbone`); the neck "
                             "and head are planned by compiler.detector.plan_detector") from None
        raise TypeError(f"no lowering for spec kind {spec.type!r}")
    return lower_spec(spec)
