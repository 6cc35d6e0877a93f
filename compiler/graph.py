"""The graph IR: a networkx DiGraph of primitive ops with named outputs.

Nodes carry their op, the block they came from, their channel count and their nominal
level (log2 of the stride). Edges carry the input slot. Channels and levels are checked
as nodes are added; spatial shapes and receptive fields are inferred for a given input
size. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx

from archspec.compiler.ops import Field, Op, Shape


class GraphError(ValueError):
    """A graph that breaks an invariant. Messages name the node and the block it came from."""


class UnknownParentError(GraphError):
    """A node names an input that is not in the graph."""


class CycleError(GraphError):
    """The graph is not acyclic."""


class LevelMismatchError(GraphError):
    """Maps at different levels (strides) meet in an add or concat."""


class ChannelMismatchError(GraphError):
    """An op receives a channel count it was not built for."""


class ShapeMismatchError(GraphError):
    """Spatial sizes differ where they must agree, or a map shrinks to nothing."""


@dataclass(frozen=True)
class NodeInfo:
    """What the graph knows about a node."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    block: str
    """Name of the block this node was lowered from (e.g. ``stage1.block3``)."""
    block_kind: str
    """Kind of that block (``bottleneck``, ``stem``...)."""
    channels: int
    level: int


class Graph:
    """A DAG of primitive ops. Build it with `add`; read it with `nodes`, `shapes`, `fields`."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nx = nx.DiGraph(name=name)
        self.outputs: dict[str, str] = {}
        """Output name -> node name, in output order."""
        self._order: list[str] = []

    # -- construction ------------------------------------------------------------------------
    def add(self, name: str, op: Op, inputs: list[str] | tuple[str, ...] = (), *, block: str = "",
            block_kind: str = "") -> str:
        """Add a node fed by `inputs` (in slot order); returns its name."""
        if name in self.nx:
            raise GraphError(f"node {name!r} already exists")
        for parent in inputs:
            if parent not in self.nx:
                raise UnknownParentError(f"node {name!r} (block {block or '?'}): unknown parent {parent!r}")
        if len(set(inputs)) != len(inputs):
            raise GraphError(f"node {name!r} (block {block or '?'}): the same parent is used twice")
        info = self._derive(name, op, list(inputs), block)
        self.nx.add_node(name, op=op, block=block, block_kind=block_kind, channels=info[0], level=info[1])
        for slot, parent in enumerate(inputs):
            self.nx.add_edge(parent, name, slot=slot)
        self._order.append(name)
        return name

    def set_output(self, output: str, node: str) -> None:
        if node not in self.nx:
            raise UnknownParentError(f"output {output!r}: unknown node {node!r}")
        self.outputs[output] = node

    def _derive(self, name: str, op: Op, inputs: list[str], block: str) -> tuple[int, int]:
        where = f"node {name!r} (block {block or '?'})"
        if op.arity == 0:
            return op.channels, 0  # type: ignore[attr-defined]
        if op.arity is not None and len(inputs) != op.arity:
            raise GraphError(f"{where}: {op.kind} takes {op.arity} input(s), got {len(inputs)}")
        if op.arity is None and len(inputs) < 2:
            raise GraphError(f"{where}: {op.kind} takes two or more inputs, got {len(inputs)}")
        channels = [self.nx.nodes[p]["channels"] for p in inputs]
        levels = [self.nx.nodes[p]["level"] for p in inputs]
        problem = op.channel_problem(channels)
        if problem:
            raise ChannelMismatchError(f"{where}: {problem}")
        if op.aligned_inputs and len(set(levels)) > 1:
            detail = ", ".join(f"{p} at L{lv}" for p, lv in zip(inputs, levels))
            raise LevelMismatchError(f"{where}: inputs at different levels ({detail})")
        return op.out_channels(channels), levels[0] + op.level_change()

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def topological(self) -> list[str]:
        """Nodes in an order where every node follows its inputs."""
        if len(self._order) == self.nx.number_of_nodes():
            return list(self._order)
        return list(nx.topological_sort(self.nx))

    def inputs_of(self, name: str) -> list[str]:
        preds = self.nx.pred[name]
        return sorted(preds, key=lambda p: preds[p]["slot"])

    def node(self, name: str) -> NodeInfo:
        data = self.nx.nodes[name]
        return NodeInfo(name, data["op"], tuple(self.inputs_of(name)), data["block"], data["block_kind"],
                        data["channels"], data["level"])

    def nodes(self) -> Iterator[NodeInfo]:
        for name in self.topological():
            yield self.node(name)

    @property
    def input(self) -> str:
        return self._order[0]

    def blocks(self) -> dict[str, list[str]]:
        """Block name -> its nodes, in order."""
        out: dict[str, list[str]] = {}
        for name in self.topological():
            out.setdefault(self.nx.nodes[name]["block"], []).append(name)
        return out

    # -- inference ---------------------------------------------------------------------------
    def shapes(self, input_size: tuple[int, int]) -> dict[str, Shape]:
        """Shape of every node's output for one image of `input_size` (height, width)."""
        shapes: dict[str, Shape] = {}
        for info in self.nodes():
            if info.op.arity == 0:
                size = tuple(input_size)
            else:
                sizes = [(shapes[p].height, shapes[p].width) for p in info.inputs]
                if info.op.aligned_inputs and len(set(sizes)) > 1:
                    detail = ", ".join(f"{p}: {h}x{w}" for p, (h, w) in zip(info.inputs, sizes))
                    raise ShapeMismatchError(
                        f"node {info.name!r} (block {info.block}): spatial sizes differ at input "
                        f"{input_size[0]}x{input_size[1]} ({detail}); use an input size divisible by "
                        f"{2 ** max(0, info.level)}")
                size = info.op.out_size(sizes)
            if min(size) < 1:
                raise ShapeMismatchError(f"node {info.name!r} (block {info.block}): the feature map vanishes "
                                         f"at input {input_size[0]}x{input_size[1]}; use a larger input")
            shapes[info.name] = Shape(info.channels, int(size[0]), int(size[1]))
        return shapes

    def fields(self) -> dict[str, Field]:
        """Theoretical receptive field (dilation included) of every node's output."""
        fields: dict[str, Field] = {}
        for info in self.nodes():
            if info.op.arity == 0:
                fields[info.name] = Field(1.0, 1.0)
            else:
                fields[info.name] = info.op.field([fields[p] for p in info.inputs])
        return fields

    def check(self) -> None:
        """Re-check every invariant (for graphs edited after construction)."""
        if not nx.is_directed_acyclic_graph(self.nx):
            cycle = nx.find_cycle(self.nx)
            raise CycleError(f"graph {self.name!r} has a cycle through {' -> '.join(u for u, _ in cycle)}")
        for name in self.topological():
            data = self.nx.nodes[name]
            for parent in self.inputs_of(name):
                if "op" not in self.nx.nodes[parent]:
                    raise UnknownParentError(f"node {name!r} (block {data['block']}): unknown parent {parent!r}")
            if data["op"].arity != 0:
                channels, level = self._derive(name, data["op"], self.inputs_of(name), data["block"])
                if (channels, level) != (data["channels"], data["level"]):
                    raise ChannelMismatchError(f"node {name!r} (block {data['block']}): recorded "
                                               f"{data['channels']} channels at L{data['level']}, derived "
                                               f"{channels} at L{level}")
        for output, node in self.outputs.items():
            if node not in self.nx:
                raise UnknownParentError(f"output {output!r}: unknown node {node!r}")

