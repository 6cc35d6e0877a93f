"""Every primitive op owns its behaviour: for each registered op class, a small random instance is
put in a graph, and its analytic params and MACs are checked against the built torch module
(counted by `compiler.hooks`, independently of the ops' own rules), and the torch module against
ONNX Runtime running the project's own IR -> ONNX writer. A new op class without a case here fails
`test_every_op_has_a_case`."""

from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort
import pytest
import torch

from archspec import compiler
from archspec.compiler.graph import ChannelMismatchError, Graph, LevelMismatchError
from archspec.compiler.hooks import module_macs, module_params
from archspec.compiler.onnx_writer import graph_to_onnx
from archspec.compiler.ops import (ACTIVATIONS, OPS, Act, Add, AvgPool, BatchNorm, ChannelSlice, Concat, Conv,
                                   CropToLevel, Dropout, GlobalAvgPool, Input, Linear, MaxPool, Mul, Upsample)


def _graph(channels: int) -> tuple[Graph, str]:
    graph = Graph("op")
    return graph, graph.add("input", Input(channels))


def _conv(rng: random.Random):
    cin = rng.choice([4, 6, 8])
    groups = rng.choice([g for g in (1, 2, cin) if cin % g == 0])
    out = groups * rng.choice([1, 2, 3])
    op = Conv(cin, out, rng.choice([1, 3, 5]), rng.choice([1, 2]), rng.choice([1, 2]), groups, rng.random() < 0.5)
    graph, x = _graph(cin)
    graph.set_output("y", graph.add("op", op, [x]))
    return graph


def _unary(make_op, channels: int = 6):
    def build(rng: random.Random):
        graph, x = _graph(channels)
        graph.set_output("y", graph.add("op", make_op(rng, channels), [x]))
        return graph
    return build


def _binary(op, gate: bool = False):
    def build(rng: random.Random):
        channels = rng.choice([4, 6])
        graph, x = _graph(channels)
        a = graph.add("a", Conv(channels, channels, 3), [x])
        if gate:
            b = graph.add("gate", GlobalAvgPool(), [graph.add("b", Conv(channels, channels, 1, bias=True), [x])])
        else:
            b = graph.add("b", Conv(channels, rng.choice([channels, 2]) if op is Concat else channels, 1), [x])
        graph.set_output("y", graph.add("op", op(), [a, b]))
        return graph
    return build


def _crop(rng: random.Random):
    graph, x = _graph(4)
    down = graph.add("down", Conv(4, 4, 3, 2), [x])
    up = graph.add("up", Upsample(2), [down])
    graph.set_output("y", graph.add("op", CropToLevel(0), [up, x]))
    return graph


def _linear(rng: random.Random):
    graph, x = _graph(6)
    pooled = graph.add("pool", GlobalAvgPool(), [x])
    graph.set_output("y", graph.add("op", Linear(6, rng.choice([3, 5]), rng.random() < 0.5), [pooled]))
    return graph


CASES = {
    "conv": _conv,
    "bn": _unary(lambda rng, c: BatchNorm(c)),
    "act": _unary(lambda rng, c: Act(rng.choice(list(ACTIVATIONS)))),
    "add": _binary(Add),
    "mul": _binary(Mul, gate=True),
    "concat": _binary(Concat),
    "slice": _unary(lambda rng, c: ChannelSlice(rng.choice([0, 1]), rng.choice([1, 2, 3]))),
    "max_pool": _unary(lambda rng, c: MaxPool(rng.choice([1, 3, 5]), rng.choice([1, 2]))),
    "avg_pool": _unary(lambda rng, c: AvgPool(rng.choice([2, 3]), rng.choice([1, 2]))),
    "global_pool": _unary(lambda rng, c: GlobalAvgPool()),
    "upsample": _unary(lambda rng, c: Upsample(rng.choice([2, 4]))),
    "crop_to_level": _crop,
    "linear": _linear,
    "dropout": _unary(lambda rng, c: Dropout(0.3)),
}
"""Op kind -> builder of a small random graph ending in that op (the input op is every graph's first)."""


def test_every_op_has_a_case():
    assert set(OPS) - {"input"} == set(CASES)


def _randomise_batch_norm(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
                layer.weight.uniform_(0.5, 1.5)


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_op_counts_and_onnx_parity(kind, seed):
    graph = CASES[kind](random.Random(seed))
    size = (11, 13)  # odd sizes: padding, ceil mode and crops all matter
    torch.manual_seed(seed)
    module = compiler.build(graph).eval()
    _randomise_batch_norm(module)
    x = torch.randn(1, graph.nx.nodes["input"]["op"].channels, *size)
    analytic = compiler.costs(graph, size)
    assert analytic.params == module_params(module)
    assert analytic.macs == module_macs(module, x)
    with torch.no_grad():
        expected = module(x)["y"].numpy()
    model = graph_to_onnx(graph, size, weights=module.state_dict())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": x.numpy()})
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    shape = graph.shapes(size)[graph.outputs["y"]]
    assert expected.shape[1:] == ((shape.channels,) if not graph.nx.nodes["op"]["op"].spatial_output
                                  else shape.as_tuple())


def test_pinned_conv_counts():
    """A 3x3 stride-2 conv, 8 -> 16 channels in 2 groups, with bias, on 15x15: by hand,
    params = 16 * (8 / 2) * 9 + 16 = 592; output 8x8; MACs = 8 * 8 * 16 * 4 * 9 = 36864;
    MAE-DET gain = log(sqrt(4 * 9)) = log 6."""
    op = Conv(8, 16, 3, 2, 1, 2, True)
    graph, x = _graph(8)
    graph.set_output("y", graph.add("op", op, [x]))
    counts = compiler.costs(graph, (15, 15))
    assert (counts.params, counts.macs) == (592, 36864)
    assert op.signal_gain() == pytest.approx(np.log(6.0))


def test_graph_checks_dispatch_through_the_op():
    graph, x = _graph(4)
    a = graph.add("a", Conv(4, 8, 1), [x])
    with pytest.raises(ChannelMismatchError, match="add of maps with \\[8, 4\\] channels"):
        graph.add("sum", Add(), [a, x])
    with pytest.raises(ChannelMismatchError, match="gate with 3 channels for a 8-channel map"):
        graph.add("m", Mul(), [a, graph.add("g", Conv(4, 3, 1), [x])])
    down = graph.add("down", Conv(4, 4, 3, 2), [x])
    with pytest.raises(LevelMismatchError, match="inputs at different levels"):
        graph.add("cat", Concat(), [x, down])
    with pytest.raises(ChannelMismatchError, match="expects 6 channels, gets 4"):
        graph.add("bn", BatchNorm(6), [x])


def test_latency_key_names_op_and_input_shapes():
    from archspec.compiler.ops import Shape

    key = Conv(4, 8, 3, 2).latency_key([Shape(4, 16, 16)])
    assert key == ('{"bias":false,"dilation":1,"groups":1,"in_channels":4,"inputs":[[4,16,16]],"kernel":3,'
                   '"kind":"conv","out_channels_":8,"stride":2}')
    assert key != Conv(4, 8, 3, 2).latency_key([Shape(4, 32, 32)])
