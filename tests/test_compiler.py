"""The compiler: golden counts of the zoo, analytic counts equal to module counts, shapes,
receptive fields, graph invariants and export friendliness."""

from __future__ import annotations

import pytest
import torch

import archspec
from archspec import compiler
from archspec.compiler.graph import (ChannelMismatchError, CycleError, Graph, LevelMismatchError, ShapeMismatchError,
                            UnknownParentError)
from archspec.compiler.hooks import module_macs, module_params
from archspec.compiler.ops import Add, BatchNorm, Conv, Input
from tests.conftest import ROOT

BACKBONES = ROOT / "examples" / "backbones"

# Exact counts at 224x224 (params, MACs), without classifier. Published anchors checked below.
GOLDEN_224 = {
    "cr_resnet101": (52536384, 7799357440),
    "cr_resnet50": (27900224, 4087136256),
    "detnas_coco_fpn_300m": (1849680, 288082368),
    # ResNet-18's stem and first three stages, the third at stride 1: params by hand 9,536 (stem)
    # + 147,968 + 525,568 + 2,099,712 (the stride-1 stage keeps its 1x1 projection, 128 -> 256)
    "dilated_3stage": (2782784, 2635644928),
    "detnas_coco_fpn_3p8g": (26724428, 3937832864),
    "maedet_l": (43879552, 7451934112),
    "maedet_m": (25843536, 4376526336),
    "maedet_s": (21233120, 2370238976),
    "mobilenet_v2": (2223872, 299494272),
    "resnet101": (42500160, 7799357440),
    "resnet18": (11176512, 1813561344),
    "resnet34": (21284672, 3663249408),
    "resnet50": (23508032, 4087136256),
    "resnext50_32x4d": (22979904, 4228431872),
}

# torchvision's published parameter counts with the 1000-class classifier.
TORCHVISION_WITH_HEAD = {
    "resnet18": 11689512,
    "resnet34": 21797672,
    "resnet50": 25557032,
    "resnet101": 44549160,
    "resnext50_32x4d": 25028904,
    "mobilenet_v2": 3504872,
}

# MAE-DET release README (configs/detection/README.md): backbone params in millions.
MAEDET_RELEASE_PARAMS_M = {"maedet_s": 21.2, "maedet_m": 25.8, "maedet_l": 43.9}


def load(name: str):
    return archspec.load(BACKBONES / f"{name}.yaml")


def with_classifier(spec):
    data = archspec.to_data(spec)
    data.pop("outputs", None)
    data["head"] = {"type": "classifier", "num_classes": 1000}
    return archspec.validate(data)


@pytest.mark.parametrize("name", sorted(GOLDEN_224))
def test_golden_counts_at_224(name):
    counts = compiler.costs(load(name), (224, 224))
    assert (counts.params, counts.macs) == GOLDEN_224[name]
    assert counts.flops == 2 * counts.macs


@pytest.mark.parametrize("name", sorted(TORCHVISION_WITH_HEAD))
def test_published_torchvision_parameter_counts(name):
    assert compiler.costs(with_classifier(load(name))).params == TORCHVISION_WITH_HEAD[name]


def test_resnet50_is_the_usual_4_1_gflops_which_are_macs():
    macs = compiler.costs(with_classifier(load("resnet50"))).macs
    assert 4.08e9 < macs < 4.11e9  # fvcore/thop report 4.09 G "FLOPs"


@pytest.mark.parametrize("name", sorted(MAEDET_RELEASE_PARAMS_M))
def test_maedet_params_match_release(name):
    assert round(compiler.costs(load(name)).params / 1e6, 1) == MAEDET_RELEASE_PARAMS_M[name]


def test_every_zoo_file_has_a_golden_count():
    staged = {p.stem for p in BACKBONES.glob("*.yaml") if archspec.load(p).type == "staged"}
    assert staged == set(GOLDEN_224)


@pytest.mark.parametrize("name", sorted(GOLDEN_224))
def test_analytic_counts_equal_module_counts(name):
    spec = with_classifier(load(name)) if name in ("resnet18", "mobilenet_v2") else load(name)
    size = (96, 128)
    model = compiler.build(spec).eval()
    analytic = compiler.costs(spec, size)
    assert module_params(model) == analytic.params
    assert module_macs(model, torch.randn(2, 3, *size)) == analytic.macs


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "maedet_s", "detnas_coco_fpn_300m"])
def test_output_shapes_match_inference_and_feature_info(name):
    spec = load(name)
    size = (160, 96)
    model = compiler.build(spec).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, *size))
    summary = compiler.summarize(spec, size)
    assert list(outputs) == spec.output_names() == list(summary["outputs"])
    for out_name, tensor in outputs.items():
        info = summary["outputs"][out_name]
        assert list(tensor.shape[1:]) == info["shape"]
        assert model.output_shape()[out_name].channels == info["channels"]
        assert model.output_shape()[out_name].stride == info["stride"]
        assert size[0] // info["stride"] == tensor.shape[2]


def test_odd_input_sizes_infer_the_real_shapes():
    spec = load("maedet_s")
    model = compiler.build(spec).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 225, 199))
    shapes = compiler.summarize(spec, (225, 199))["outputs"]
    assert {k: list(v.shape[1:]) for k, v in outputs.items()} == {k: v["shape"] for k, v in shapes.items()}


def tiny_spec(dilations=None):
    stage = {"block": {"type": "basic"}, "depth": 2, "out_channels": 8, "stride": 2}
    if dilations:
        stage["dilations"] = dilations
    return archspec.validate({"type": "staged", "name": "tiny",
                              "stem": [{"type": "conv", "out_channels": 8, "kernel": 3, "stride": 2}],
                              "stages": [stage], "outputs": ["C2"]})


def test_receptive_field_by_hand():
    # stem 3x3 s2: rf 3, jump 2. block0 conv1 3x3 s2: 3 + 2*2 = 7, jump 4; conv2: 7 + 2*4 = 15.
    # block1: two 3x3 at jump 4: 15 + 8 + 8 = 31.
    assert compiler.summarize(tiny_spec())["receptive_field"] == {"C2": 31}
    # dilation 2 on block1 doubles its growth: 15 + 16 + 16 = 47.
    assert compiler.summarize(tiny_spec([1, 2]))["receptive_field"] == {"C2": 47}


def test_dilation_changes_neither_params_nor_macs():
    plain, dilated = compiler.costs(tiny_spec()), compiler.costs(tiny_spec([2, 3]))
    assert (plain.params, plain.macs) == (dilated.params, dilated.macs)


def test_tiny_network_counts_by_hand():
    counts = compiler.costs(tiny_spec(), (32, 32))
    stem = 3 * 8 * 9 + 16
    block0 = (8 * 8 * 9 + 16) * 2 + (8 * 8 + 16)  # two 3x3 convs + projection shortcut
    block1 = (8 * 8 * 9 + 16) * 2
    assert counts.params == stem + block0 + block1
    macs = 16 * 16 * 8 * 3 * 9 + 8 * 8 * (8 * 8 * 9 * 2 + 8 * 8) + 8 * 8 * 8 * 8 * 9 * 2
    assert counts.macs == macs


def small_graph() -> Graph:
    graph = Graph("g")
    x = graph.add("input", Input(3))
    a = graph.add("a", Conv(3, 8, 3, 1), [x])
    graph.add("b", Conv(3, 8, 3, 2), [x])
    graph.add("a_bn", BatchNorm(8), [a])
    return graph


def test_graph_rejects_unknown_parent():
    with pytest.raises(UnknownParentError, match="unknown parent 'nope'"):
        small_graph().add("c", Add(), ["a", "nope"])


def test_graph_rejects_level_mismatch():
    with pytest.raises(LevelMismatchError, match="different levels"):
        small_graph().add("c", Add(), ["a", "b"])


def test_graph_rejects_channel_mismatch():
    with pytest.raises(ChannelMismatchError, match="expects 16 channels, gets 8"):
        small_graph().add("c", Conv(16, 8), ["a"])


def test_graph_check_finds_cycles():
    graph = small_graph()
    graph.nx.add_edge("a_bn", "a", slot=1)
    with pytest.raises(CycleError, match="cycle"):
        graph.check()


def test_shape_mismatch_names_the_block():
    graph = Graph("g")
    x = graph.add("input", Input(3))
    a = graph.add("a", Conv(3, 8, 3, 2), [x], block="left")
    b = graph.add("b", Conv(3, 8, 1, 2), [x], block="right")
    graph.add("c", Add(), [a, b], block="merge")
    assert graph.shapes((8, 8))["c"].height == 4
    with pytest.raises(ShapeMismatchError, match="block merge"):
        graph.nx.nodes["b"]["op"] = Conv(3, 8, 1, 4)
        graph.shapes((8, 8))


def test_padding_keeps_tiny_inputs_alive():
    outputs = compiler.summarize(load("resnet50"), (1, 1))["outputs"]
    assert {name: out["shape"][1:] for name, out in outputs.items()} == {f"C{k}": [1, 1] for k in range(2, 6)}


def test_forward_code_is_plain_and_static():
    model = compiler.build(load("resnet18"))
    code = model.code
    assert "self.stage1.block0.conv1(" in code
    assert "getattr" not in code and "for " not in code


def test_torch_export_accepts_a_compiled_backbone():
    model = compiler.build(load("detnas_coco_fpn_300m")).eval()
    exported = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    with torch.no_grad():
        expected = model(torch.randn(1, 3, 64, 64) * 0 + 1)
        got = exported.module()(torch.ones(1, 3, 64, 64))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])


def test_costs_of_a_graph_and_of_its_spec_match_torchvision():
    """The zoo's MobileNetV2 is torchvision's `mobilenet_v2().features`: torchvision's whole model
    has 3,504,872 parameters and about 300.77M MACs at 224x224 (quoted to 0.01M), its 1280 -> 1000
    classifier 1,281,000 of each."""
    spec = load("mobilenet_v2")
    for counts in (compiler.costs(compiler.lower(spec), 224), compiler.costs(spec, "224x224")):
        assert counts.params == 3_504_872 - 1_281_000
        assert abs(counts.macs + 1_281_000 - 300.77e6) <= 0.01e6


def test_per_block_costs_sum_to_the_total():
    counts = compiler.costs(load("resnet50"))
    assert sum(b.params for b in counts.blocks.values()) == counts.params
    assert sum(b.macs for b in counts.blocks.values()) == counts.macs
    assert counts.blocks["stage0.block0"].kind == "bottleneck"


@pytest.mark.parametrize("text, expected", [("224", (224, 224)), ("480x640", (480, 640)), ((3, 5), (3, 5))])
def test_parse_input_size(text, expected):
    assert compiler.parse_input_size(text) == expected


@pytest.mark.parametrize("bad", ["0", "ax3", "1x2x3", "-4"])
def test_parse_input_size_rejects(bad):
    with pytest.raises(ValueError, match="input size"):
        compiler.parse_input_size(bad)
