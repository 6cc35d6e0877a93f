"""Analytic costs of a graph: parameters, MACs, FLOPs, activation memory, receptive fields.

Convention: params count every learnable tensor element (BN affine included); MACs count
multiply-accumulates of convolutions and linear layers only; FLOPs = 2 x MACs; activations
count the elements of every node's output for one image (x4 bytes in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from archspec.compiler.graph import Graph
from archspec.compiler.ops import Shape


@dataclass(frozen=True)
class BlockCost:
    """Costs of one block."""

    kind: str
    params: int
    macs: int


@dataclass(frozen=True)
class Costs:
    """Costs of a network at one input size (batch 1)."""

    input_size: tuple[int, int]
    params: int
    macs: int
    activations: int
    """Elements of every intermediate feature map, summed (batch 1)."""
    blocks: dict[str, BlockCost] = field(default_factory=dict, repr=False)

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        """Activation memory in float32."""
        return 4 * self.activations

    def as_dict(self) -> dict:
        return {"input_size": list(self.input_size), "params": self.params, "macs": self.macs,
                "flops": self.flops, "activations": self.activations,
                "activation_bytes": self.activation_bytes}


def graph_costs(graph: Graph, input_size: tuple[int, int], shapes: dict[str, Shape] | None = None) -> Costs:
    shapes = shapes or graph.shapes(input_size)
    params = macs = activations = 0
    blocks: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for info in graph.nodes():
        p, m = info.op.params(), info.op.macs(shapes[info.name])
        params += p
        macs += m
        if info.op.arity != 0:
            activations += shapes[info.name].numel
        totals = blocks.setdefault(info.block, [0, 0])
        totals[0] += p
        totals[1] += m
        kinds[info.block] = info.block_kind
    per_block = {name: BlockCost(kinds[name], p, m) for name, (p, m) in blocks.items()}
    return Costs(tuple(input_size), params, macs, activations, per_block)


def receptive_fields(graph: Graph) -> dict[str, int | None]:
    """Theoretical receptive field (pixels, one side) of every output; None if global."""
    fields = graph.fields()
    out: dict[str, int | None] = {}
    for name, node in graph.outputs.items():
        size = fields[node].size
        out[name] = None if math.isinf(size) else int(round(size))
    return out
