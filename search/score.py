"""MAE-DET's training-free score: the multi-scale entropy of C3, C4 and C5 (weights 1:1:6).

The paper (Sun et al., ICML 2022) scores a backbone by the differential entropy of its feature
maps when the network has no BN and no activations and weights and input are N(0, 1). The
entropy of a Gaussian map is log(std) up to constants, plus a term for its channel count. Two
forms, as in the release:

* `maedet_score` (analytic, the current release's "madnas" score): a convolution with N(0, 1)
  weights multiplies the std of a unit-std input by sqrt(fan-in), so each block contributes
  the sum of log(sqrt(fan-in)) over the convolutions on its main path (shortcuts and
  squeeze-excite gates do not carry the signal forward). The score of level k is the sum of
  those terms over every block up to the last block at level k, plus log(channels at k).
  No torch, no forward pass: this is what makes a paper-scale search fast.
* `maedet_forward_score` (the paper-era form): the spec's layers are built without BN and
  activations (a graph transform that bypasses those nodes), weights and input drawn from
  N(0, 1); after every layer the output's std is measured and the output renormalised to unit
  std, which keeps deep networks from overflowing. The level score is the sum of the log-stds
  plus log(channels); repeats are averaged.

For a ResNet-style bottleneck the forward form also sees the residual sum, which the analytic
form ignores; the two rank architectures alike (see tests and benchmarks/search.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from archspec.compiler.fastcosts import layer_graph
from archspec.registry import Registry

LEVEL_WEIGHTS: dict[int, float] = {3: 1.0, 4: 1.0, 5: 6.0}
"""MAE-DET's multi_block_ratio [0, 0, 1, 1, 6] over the stem, C2, C3, C4, C5."""


class ScoreError(ValueError):
    """The spec cannot be scored (e.g. it lacks a level the score weighs)."""


def main_path_gains(graph) -> dict[str, tuple[int, float]]:
    """For every node: (convolutions, sum of their log-gains) along its main path, the path from
    the input through the most convolutions (ties: the larger gain), not entering an op's gate
    inputs (`Op.gate_inputs`, e.g. squeeze-excite) nor its size-only reference inputs. The gain
    of each op is its `Op.signal_gain` (log sqrt(fan-in) for a convolution)."""
    best: dict[str, tuple[int, float]] = {}
    for info in graph.nodes():
        if info.op.arity == 0:
            best[info.name] = (0, 0.0)
            continue
        skipped = set(info.op.gate_inputs) | set(info.op.reference_inputs)
        inputs = [p for slot, p in enumerate(info.inputs) if slot not in skipped]
        convs, gain = max(best[p] for p in inputs)
        op_gain = info.op.signal_gain()
        if op_gain is not None:
            convs, gain = convs + 1, gain + op_gain
        best[info.name] = (convs, gain)
    return best


@functools.lru_cache(maxsize=65536)
def block_log_gain(block, in_channels: int, out_channels: int, stride: int, dilation: int, first: bool) -> float:
    """Sum of log(sqrt(fan-in)) over the convolutions of the layer's main path (`main_path_gains`)."""
    graph = layer_graph(block, in_channels, out_channels, stride, dilation, first)
    return main_path_gains(graph)[graph.outputs["out"]][1]


def level_scores(spec) -> dict[int, float]:
    """Analytic entropy score of every level reached: cumulative log-gain + log(channels).
    Scale-permuted backbones are scored on their whole graph (`graph_level_scores`)."""
    if spec.type == "scale_permuted":
        return graph_level_scores(spec)
    if spec.type != "staged":
        raise ScoreError(f"the MAE-DET score is defined for backbones, not {spec.type!r}")
    total = 0.0
    scores: dict[int, float] = {}
    for layer in spec.layers():
        total += block_log_gain(layer.block, layer.in_channels, layer.out_channels, layer.stride, layer.dilation,
                                layer.index == 0)
        scores[layer.level_out] = total + math.log(layer.out_channels)
    return scores


def graph_level_scores(spec) -> dict[int, float]:
    """The analytic score on a backbone's whole lowered graph: the log-gain of the main path
    (the path through the most convolutions, gates excluded) into each output, plus
    log(channels). For staged backbones this equals `level_scores`; for scale-permuted ones the
    main path runs through resampling convolutions and whichever parent carries more convolutions."""
    from archspec.compiler.lowering import lower

    graph = lower(spec)
    best = main_path_gains(graph)
    scores = {}
    for name, node in graph.outputs.items():
        if name.startswith("C") and name[1:].isdigit():
            scores[int(name[1:])] = best[node][1] + math.log(graph.nx.nodes[node]["channels"])
    return scores


def receptive_field_term(spec, target) -> float:
    """`-weight * sum over C3..C5 of |log2(RF / (ratio * 4 * 2**k))|` (see `ReceptiveFieldTarget`)."""
    from archspec.compiler.costs import receptive_fields
    from archspec.compiler.lowering import lower

    fields = receptive_fields(lower(spec))
    total = 0.0
    for level in LEVEL_WEIGHTS:
        field = fields.get(f"C{level}")
        if field is None:
            raise ScoreError(f"C{level}: no output (or a global receptive field) to compare with its anchors")
        total += abs(math.log2(field / (target.ratio * 4 * 2 ** level)))
    return -target.weight * total


@dataclass(frozen=True)
class ScoreResult:
    """A scorer's verdict on one spec."""

    value: float
    """The score (higher is better)."""
    levels: dict[int, float] | None = None
    """Per-level scores (level -> score), for scorers that have them."""
    terms: dict[str, float] = field(default_factory=dict)
    """Named extra terms included in `value` (e.g. ``receptive_field_term``)."""


Scorer = Callable[..., ScoreResult]
"""``scorer(spec, *, input_size, seed, receptive_field) -> ScoreResult``."""

SCORERS: Registry[Scorer] = Registry("scorer")
"""Scorer name (``archspec score --scorer``; a search config's `score` with ``_`` for ``-``) -> scorer."""


@SCORERS.register("maedet")
def _score_maedet(spec, **_options) -> ScoreResult:
    levels = level_scores(spec)
    return ScoreResult(combine(levels), levels)


@SCORERS.register("maedet-rf")
def _score_maedet_rf(spec, *, receptive_field=None, **_options) -> ScoreResult:
    from archspec.search_config import ReceptiveFieldTarget

    levels = level_scores(spec)
    term = receptive_field_term(spec, receptive_field or ReceptiveFieldTarget())
    return ScoreResult(combine(levels) + term, levels, {"receptive_field_term": term})


@SCORERS.register("maedet-forward")
def _score_maedet_forward(spec, *, input_size: object = (224, 224), seed: int = 0, max_memory=None,
                          **_options) -> ScoreResult:
    from archspec.compiler.resources import guard_memory
    from archspec.sizes import parse_input_size

    size = parse_input_size(input_size)
    # batch 8 in float64: as much memory as batch 16 in the guard's float32
    guard_memory(spec.backbone if spec.type == "detector" else spec, size, batch=16, purpose="inference",
                 limit=max_memory)
    return ScoreResult(maedet_forward_score(spec, size, seed=seed))


def config_score(spec, config) -> float:
    """The objective a search config asks for (higher is better)."""
    scorer = SCORERS[config.score.replace("_", "-")]
    return scorer(spec, receptive_field=config.receptive_field).value


def combine(scores: dict[int, float]) -> float:
    missing = [level for level in LEVEL_WEIGHTS if level not in scores]
    if missing:
        raise ScoreError(f"the backbone reaches no level {missing[0]} (C{missing[0]}); MAE-DET weighs C3:C4:C5 = 1:1:6")
    return sum(weight * scores[level] for level, weight in LEVEL_WEIGHTS.items())


def maedet_score(spec) -> float:
    """MAE-DET's analytic multi-scale entropy score (higher is better)."""
    return combine(level_scores(spec))


def strip_norm_and_activation(graph):
    """A copy of a graph with every normalisation and activation node (`Op.bypassed_in_plain_network`)
    bypassed: their consumers read the node's input instead."""
    from archspec.compiler.graph import Graph

    out = Graph(graph.name + "_plain")
    rename: dict[str, str] = {}
    for info in graph.nodes():
        if info.op.bypassed_in_plain_network:
            rename[info.name] = rename[info.inputs[0]]
            continue
        out.add(info.name, info.op, [rename[p] for p in info.inputs], block=info.block, block_kind=info.block_kind)
        rename[info.name] = info.name
    for name, node in graph.outputs.items():
        out.set_output(name, rename[node])
    return out


def maedet_forward_score(spec, input_size: tuple[int, int] = (224, 224), *, seed: int = 0, batch: int = 8,
                         repeats: int = 2) -> float:
    """The paper-era forward-pass form of the score, averaged over `repeats` draws."""
    import torch

    from archspec.compiler import build

    if spec.type != "staged":
        raise ScoreError(f"the MAE-DET score is defined for staged backbones, not {spec.type!r}")
    generator = torch.Generator().manual_seed(seed)
    layers = spec.layers()
    modules = []
    for layer in layers:
        graph = strip_norm_and_activation(layer_graph(layer.block, layer.in_channels, layer.out_channels,
                                                      layer.stride, layer.dilation, layer.index == 0))
        module = build(graph).eval()
        for param in module.parameters():
            with torch.no_grad():
                param.normal_(0.0, 1.0, generator=generator) if param.dim() > 1 else param.zero_()
        modules.append(module)
    results = []
    with torch.no_grad():
        for _ in range(repeats):
            x = torch.randn(batch, spec.in_channels, *input_size, generator=generator, dtype=torch.float64)
            total, scores = 0.0, {}
            for layer, module in zip(layers, modules):
                x = module.double()(x)["out"]
                std = float(x.std())
                total += math.log(std)
                x = x / std
                scores[layer.level_out] = total + math.log(layer.out_channels)
            results.append(combine(scores))
    return sum(results) / len(results)
