"""compiler: spec -> graph IR -> PyTorch module, with analytic costs.

    graph = compiler.lower(spec)                  # networkx-backed IR, no torch
    model = compiler.build(spec)                  # torch.fx GraphModule returning {name: tensor}
    counts = compiler.costs(spec, (224, 224))     # params, MACs, FLOPs = 2 x MACs, activations
    info = compiler.summarize(spec, (224, 224))   # what `archspec summary --json` prints

Torch is imported only by `build` (lazily), so lowering and costs stay cheap for search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archspec.compiler.costs import BlockCost, Costs, graph_costs, receptive_fields
from archspec.compiler.graph import (ChannelMismatchError, CycleError, Graph, GraphError, LevelMismatchError,
                            ShapeMismatchError, UnknownParentError)
from archspec.compiler.lowering import LOWERINGS, lower

if TYPE_CHECKING:
    from archspec.compiler.module_builder import CompiledModule

__all__ = [
    "BlockCost", "ChannelMismatchError", "Costs", "CycleError", "Graph", "GraphError", "LOWERINGS",
    "LevelMismatchError", "ShapeMismatchError", "UnknownParentError", "build", "costs", "lower", "summarize",
    "parse_input_size",
]


def _graph(spec_or_graph) -> Graph:
    return spec_or_graph if isinstance(spec_or_graph, Graph) else lower(spec_or_graph)


def build(spec_or_graph) -> "CompiledModule":
    """A torch module for a spec (or an already lowered graph)."""
    from archspec.compiler.module_builder import build_graph_module

    return build_graph_module(_graph(spec_or_graph))


def costs(spec_or_graph, input_size: tuple[int, int] | int | None = None) -> Costs:
    """Analytic params, MACs, FLOPs and activation count at `input_size` (batch 1; default
    224x224 for backbones, a detector's own input size for detectors)."""
    if getattr(spec_or_graph, "type", None) == "detector":
        from archspec.compiler.detector import plan_detector

        return plan_detector(_at_size(spec_or_graph, input_size)).costs()
    return graph_costs(_graph(spec_or_graph), parse_input_size(input_size or DEFAULT_INPUT_SIZE))


def summarize(spec, input_size: tuple[int, int] | int | None = None) -> dict:
    """Name, fingerprint, costs and per-output channels/stride/shape/receptive field
    (default size as for `costs`)."""
    from archspec import fingerprint

    if spec.type == "detector":
        from archspec.compiler.detector import summarize_detector

        return summarize_detector(_at_size(spec, input_size))
    size = parse_input_size(input_size or DEFAULT_INPUT_SIZE)
    graph = _graph(spec)
    shapes = graph.shapes(size)
    counts = graph_costs(graph, size, shapes)
    fields = receptive_fields(graph)
    outputs = {}
    for name, node in graph.outputs.items():
        data = graph.nx.nodes[node]
        outputs[name] = {"channels": data["channels"], "stride": 2 ** data["level"],
                         "shape": list(shapes[node].as_tuple()), "receptive_field": fields[name]}
    return {"name": spec.name, "type": spec.type, "fingerprint": fingerprint(spec), **counts.as_dict(),
            "outputs": outputs, "receptive_field": fields}


DEFAULT_INPUT_SIZE = (224, 224)
"""Where backbones are measured unless told otherwise (ImageNet's resolution)."""


def _at_size(detector, input_size):
    """The detector spec at another input size (itself when `input_size` is None)."""
    if input_size is None:
        return detector
    height, width = parse_input_size(input_size)
    return detector.model_copy(update={"input_size": (height, width)})


def parse_input_size(size) -> tuple[int, int]:
    """``224``, ``"224"``, ``"480x640"``, ``(480, 640)`` -> (height, width)."""
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            values = [int(p) for p in parts if p.strip()]
            if len(size) > 40:
                raise ValueError
        except ValueError:
            raise ValueError(f"input size {size!r}: expected H or HxW") from None
    elif isinstance(size, bool):
        raise ValueError(f"input size {size!r}: expected one or two positive integers")
    elif isinstance(size, int):
        values = [size]
    else:
        values = [int(v) for v in size]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"input size {size!r}: expected one or two positive integers")
    if max(values) > MAX_INPUT_SIDE:
        raise ValueError(f"input size {size!r}: at most {MAX_INPUT_SIDE} pixels a side")
    return values[0], values[1]


MAX_INPUT_SIDE = 8192
"""Largest input height or width any command takes (specs allow 4096; twice that for tools)."""
