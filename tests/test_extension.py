"""Extending the compiler and the detectors from outside the package, without editing it.

Added here, and only here: a primitive op pair (LayerNorm over channels, GELU), a ConvNeXt-style
block built from them (Liu et al., "A ConvNet for the 2020s", CVPR 2022, section 2.6: 7x7
depthwise conv -> LayerNorm -> 1x1 expand x4 -> GELU -> 1x1 project, plus the identity), and a
dense detection head (anchor-free points, no centerness). Each is registered, validated from
YAML, lowered or planned, costed (analytic == module), built, and exported to ONNX and run in
ONNX Runtime; the head is also trained for one step with its own loss. Registrations are undone
after the module's tests, so the rest of the suite sees the package as shipped.

The search's extension points, the same way (second half of this file): a new space, a new
strategy and a new evaluator are defined and registered here, validated from a YAML config and
searched end to end with `run_search`. Plus: every member of every config union has an
implementation, and a strategy the space cannot serve is refused when the config loads (exit 2,
one line, field path, no run folder).
"""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

import archspec
from archspec import compiler
from archspec.blocks import BLOCK_SPECS, BlockSpec, Placement
from archspec.compiler.detector import HEADS
from archspec.compiler.hooks import module_macs, module_params
from archspec.compiler.lowering import LOWERINGS, BlockScope
from archspec.compiler.onnx_writer import graph_to_onnx
from archspec.compiler.ops import OPS, Add, Conv, Op
from archspec.detection.heads import HEAD_MODULES, DenseHead, register_head
from archspec.detector import HEAD_SPECS, HeadSpec
from archspec.search.evaluators import EVALUATORS, Outcome, register_evaluator
from archspec.search.executor import EXECUTORS
from archspec.search.run import run_search
from archspec.search.space import CAPABILITY_METHODS, SPACES, Rejected, register_space
from archspec.search.strategies import STRATEGIES, Proposal, Strategy, register_strategy
from archspec.search_config import (CAPABILITIES, EVALUATOR_CONFIGS, SPACE_CONFIGS, STRATEGY_CONFIGS, EvaluatorConfig,
                                    SpaceConfig, StrategyConfig, load_search_config)

# -- a primitive op pair ------------------------------------------------------------------------


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's ``channels_first`` LayerNorm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class LayerNormChannels(Op):
    """LayerNorm over channels, with a per-channel scale and shift (2 x channels parameters)."""

    channels: int
    kind: ClassVar[str] = "layer_norm_channels"
    bypassed_in_plain_network: ClassVar[bool] = True

    def params(self) -> int:
        return 2 * self.channels

    def expected_channels(self) -> int | None:
        return self.channels

    def torch_module(self) -> nn.Module:
        return ChannelLayerNorm(self.channels)

    def emit_onnx(self, w, name, x, inputs, out):
        c = (self.channels,)
        nhwc = w.node("Transpose", x, f"{name}.nhwc", perm=[0, 2, 3, 1])
        normed = w.node("LayerNormalization", [nhwc, w.tensor(f"{name}.weight", c, w.uniform(0.5, 1.5)),
                                               w.tensor(f"{name}.bias", c, w.uniform(-0.2, 0.2))],
                        f"{name}.normed", axis=-1, epsilon=1e-6)
        w.node("Transpose", [normed], name, perm=[0, 3, 1, 2])


@dataclass(frozen=True)
class GELU(Op):
    """The exact (erf) GELU."""

    kind: ClassVar[str] = "gelu"
    bypassed_in_plain_network: ClassVar[bool] = True

    def torch_module(self) -> nn.Module:
        return nn.GELU()

    def emit_onnx(self, w, name, x, inputs, out):
        scalar = lambda label, v: w.constant(f"{name}.{label}", np.array(v, np.float32))  # noqa: E731
        erf = w.node("Erf", [w.node("Mul", [x[0], scalar("inv_sqrt2", 1 / math.sqrt(2))], f"{name}.scaled")],
                     f"{name}.erf")
        gate = w.node("Add", [erf, scalar("one", 1.0)], f"{name}.gate")
        w.node("Mul", [w.node("Mul", [x[0], gate], f"{name}.gated"), scalar("half", 0.5)], name)


# -- a block built from them ---------------------------------------------------------------------


class ConvNeXtBlock(BlockSpec):
    """ConvNeXt block: depthwise k x k -> LayerNorm -> 1x1 expand -> GELU -> 1x1 project, + input."""

    type: Literal["convnext"]
    """Block kind tag."""
    kernel: Annotated[int, Field(ge=3, le=15)] = 7
    """Depthwise kernel (odd)."""
    expansion: Annotated[int, Field(ge=1, le=8)] = 4
    """Hidden channels / channels."""

    def check(self, where: Placement) -> list:
        issues = super().check(where)
        if where.stride != 1 or where.in_channels != where.out_channels:
            issues.append(where.issue("", f"a ConvNeXt block keeps its shape, but this one has stride "
                                          f"{where.stride} and maps {where.in_channels} to {where.out_channels} "
                                          f"channels"))
        if self.kernel % 2 == 0:
            issues.append(where.issue("kernel", f"kernel {self.kernel} is even"))
        return issues


def lower_convnext(scope: BlockScope, layer, x: str) -> str:
    block: ConvNeXtBlock = layer.block
    c, hidden = layer.in_channels, layer.block.expansion * layer.in_channels
    y = scope.node("conv_dw", Conv(c, c, block.kernel, 1, layer.dilation, c, bias=True), [x])
    y = scope.node("norm", LayerNormChannels(c), [y])
    y = scope.node("conv_expand", Conv(c, hidden, 1, bias=True), [y])
    y = scope.node("gelu", GELU(), [y])
    y = scope.node("conv_project", Conv(hidden, c, 1, bias=True), [y])
    return scope.node("add", Add(), [y, x])


# -- a detection head ------------------------------------------------------------------------------


class PointHeadSpec(HeadSpec):
    """Anchor-free head: per location, K class logits and 4 distances (exp, in strides), no centerness."""

    type: Literal["points"]
    """Head kind tag."""
    center_sampling_radius: Annotated[float, Field(ge=0, le=8)] = 1.5
    """Positives lie within this many strides of a box centre."""


class PointHead(DenseHead):
    spec_class = PointHeadSpec

    def finish_level(self, level, raw):
        return {**raw, "box": torch.exp(raw["box"].clamp(max=12.0))}

    def decode(self, priors, strides, dense):
        from archspec.detection.boxes import decode_distances

        return decode_distances(priors, dense.box_regression, strides[:, None]), torch.sigmoid(dense.class_logits)

    # The ONNX form, so the direct writer exports the plug-in as it does the shipped heads (a head
    # without its own `decode_onnx` is exported by dynamo, with a warning).
    @classmethod
    def finish_level_onnx(cls, w, plan, index, raw):
        clamped = w.node("Min", [raw["box"], w.float32("head.points_clamp", 12.0)], f"{raw['box']}.clamped")
        return {**raw, "box": w.node("Exp", [clamped], f"{raw['box']}.distances")}

    @classmethod
    def decode_onnx(cls, w, plan, dense):
        points, strides = cls.prior_arrays(plan)
        distances = w.node("Mul", [dense["box"], w.float32("decode.strides", strides[:, None])], "decode.distances")

        def corners(start, name):
            return w.node("Slice", [distances, w.int64(f"{name}.start", start), w.int64(f"{name}.end", start + 2),
                                    w.int64(f"{name}.axis", 2)], name)

        anchor = w.float32("decode.points", points)
        boxes = w.node("Concat", [w.node("Sub", [anchor, corners(0, "decode.left_top")], "decode.top_left"),
                                  w.node("Add", [anchor, corners(2, "decode.right_bottom")], "decode.bottom_right")],
                       "decode.boxes", axis=2)
        return boxes, w.node("Sigmoid", [dense["cls"]], "decode.scores")

    def loss(self, model, dense, targets):
        from archspec.detection.boxes import decode_distances, generalized_iou
        from archspec.detection.losses import LossParts, assign_locations, level_ranges, sigmoid_focal_loss

        head = model.spec.head
        points, strides, ranges = model.priors, model.prior_strides, level_ranges(model)
        cls_terms, box_terms, positives = [], [], 0
        for i, target in enumerate(targets):
            boxes, labels = target["boxes"].to(points), target["labels"].to(points.device)
            matched = assign_locations(points, strides, ranges, boxes, head.center_sampling_radius)
            positive = matched >= 0
            wanted = torch.zeros_like(dense.class_logits[i])
            wanted[positive, labels[matched[positive]]] = 1.0
            cls_terms.append(sigmoid_focal_loss(dense.class_logits[i], wanted, head.focal_alpha, head.focal_gamma))
            if positive.any():
                decoded = decode_distances(points[positive], dense.box_regression[i][positive],
                                           strides[positive][:, None])
                box_terms.append((1 - generalized_iou(decoded, boxes[matched[positive]])).sum())
            positives += int(positive.sum())
        scale = max(1.0, float(positives))
        box = torch.stack(box_terms).sum() / scale if box_terms else dense.box_regression.sum() * 0
        return LossParts(torch.stack(cls_terms).sum() / scale, box, None, positives)


@pytest.fixture(scope="module", autouse=True)
def extensions():
    """Register every extension for this module's tests, then remove it again."""
    OPS.register(LayerNormChannels.kind, LayerNormChannels)
    OPS.register(GELU.kind, GELU)
    BLOCK_SPECS.register("convnext", ConvNeXtBlock)
    LOWERINGS.register("convnext", lower_convnext)
    HEAD_SPECS.register("points", PointHeadSpec)
    register_head(PointHead)
    yield
    for registry, key in ((OPS, "layer_norm_channels"), (OPS, "gelu"), (BLOCK_SPECS, "convnext"),
                          (LOWERINGS, "convnext"), (HEAD_SPECS, "points"), (HEADS, "points"),
                          (HEAD_MODULES, "points")):
        registry.unregister(key)


CONVNEXT_YAML = """
type: staged
name: convnext_mini
stem: [{type: conv, out_channels: 16, kernel: 3, stride: 2}]
stages:
  - {block: {type: convnext}, depth: 2, out_channels: 16, stride: 1}
  - {block: {type: conv, kernel: 3, activation: identity}, depth: 1, out_channels: 32, stride: 2}
  - {block: {type: convnext, kernel: 5}, depth: 1, out_channels: 32, stride: 1}
outputs: [C1, C2]
"""


def test_convnext_block_validates_from_yaml_and_round_trips():
    spec = archspec.loads(CONVNEXT_YAML)
    assert [layer.block.type for layer in spec.layers()] == ["conv", "convnext", "convnext", "conv", "convnext"]
    assert spec.stages[2].block.kernel == 5 and spec.stages[0].block.expansion == 4
    again = archspec.loads(archspec.dumps(spec))
    assert archspec.fingerprint(again) == archspec.fingerprint(spec)
    assert "type: convnext" in archspec.dumps(spec)


def test_convnext_block_rules_and_unknown_kinds_name_the_field():
    bad = CONVNEXT_YAML.replace("depth: 2, out_channels: 16, stride: 1", "depth: 2, out_channels: 16, stride: 2")
    with pytest.raises(archspec.SpecError) as error:
        archspec.loads(bad)
    assert error.value.path == "stages[0].block"
    assert "a ConvNeXt block keeps its shape, but this one has stride 2" in error.value.message
    with pytest.raises(archspec.SpecError) as error:
        archspec.loads(CONVNEXT_YAML.replace("{type: convnext}", "{type: convnext, kernel: 1}"))
    assert error.value.path == "stages[0].block.kernel"
    with pytest.raises(archspec.SpecError) as error:
        archspec.loads(CONVNEXT_YAML.replace("type: convnext}", "type: convnxt}"))
    assert error.value.path == "stages[0].block.type" and "'convnext'" in error.value.message


def test_convnext_costs_pinned_by_hand_and_equal_to_the_module():
    spec = archspec.loads(CONVNEXT_YAML)
    counts = compiler.costs(spec, (32, 32))
    # one 16-channel block, by hand: depthwise 16*49 + 16 = 800, LayerNorm 2*16 = 32,
    # expand 16*64 + 64 = 1088, project 64*16 + 16 = 1040: 2960 params; at 16x16 its MACs are
    # 256 * (16*49 + 16*64 + 64*16) = 724992
    assert (counts.blocks["stage0.block0"].params, counts.blocks["stage0.block0"].macs) == (2960, 724992)
    torch.manual_seed(0)
    module = compiler.build(spec).eval()
    x = torch.randn(1, 3, 32, 32)
    assert module_params(module) == counts.params
    assert module_macs(module, x) == counts.macs


def test_convnext_torch_matches_onnx_runtime_through_the_projects_writer():
    spec = archspec.loads(CONVNEXT_YAML)
    graph = compiler.lower(spec)
    torch.manual_seed(1)
    module = compiler.build(graph).eval()
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, ChannelLayerNorm):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.2, 0.2)
    size = (30, 34)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = module(x)
    model = graph_to_onnx(graph, size, batch=2, weights=module.state_dict())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    actual = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x.numpy()})))
    assert list(actual) == ["C1", "C2"]
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value.numpy(), rtol=1e-4, atol=1e-4)
    assert {type(node.op).__name__ for node in graph.nodes()} >= {"LayerNormChannels", "GELU"}


def test_convnext_block_is_scored_like_any_block():
    """MAE-DET's plain network drops the new norm and activation (their ops say so); the analytic
    score's main path runs through the three convolutions of each block."""
    from archspec.compiler.fastcosts import layer_graph
    from archspec.search.score import block_log_gain, strip_norm_and_activation

    spec = archspec.loads(CONVNEXT_YAML)
    layer = spec.layers()[1]
    graph = layer_graph(layer.block, 16, 16, 1, 1, True)
    kinds = {info.op.kind for info in strip_norm_and_activation(graph).nodes()}
    assert kinds == {"input", "conv", "add"}
    expected = 0.5 * (math.log(49) + math.log(16) + math.log(64))
    assert block_log_gain(layer.block, 16, 16, 1, 1, True) == pytest.approx(expected)


DETECTOR_YAML = """
type: detector
name: points_mini
backbone:
  type: staged
  stem: [{type: conv, out_channels: 16, kernel: 3, stride: 2}]
  stages:
    - {block: {type: conv, kernel: 3}, depth: 1, out_channels: 16, stride: 2}
    - {block: {type: conv, kernel: 3}, depth: 1, out_channels: 24, stride: 2}
    - {block: {type: conv, kernel: 3}, depth: 1, out_channels: 32, stride: 2}
neck: {type: fpn, in_features: [C3, C4], min_level: 3, max_level: 5, channels: 32}
head: {type: points, convs: 1}
num_classes: 2
input_size: 64
postprocess: {score_threshold: 0.001, pre_nms_top_k: 50, max_detections: 10}
"""


def test_new_head_validates_costs_and_matches_its_module():
    from archspec.detection.model import build_detector

    spec = archspec.loads(DETECTOR_YAML)
    assert spec.head.type == "points" and spec.head.center_sampling_radius == 1.5
    assert archspec.fingerprint(archspec.loads(archspec.dumps(spec))) == archspec.fingerprint(spec)
    info = compiler.summarize(spec)
    # by hand: towers 2 x (32*32*9 + 32) = 18496, cls_out 32*2*9 + 2 = 578, box_out 32*4*9 + 4 = 1156
    assert info["parts"]["head"]["params"] == 18496 + 578 + 1156
    torch.manual_seed(0)
    model = build_detector(spec).eval()
    assert isinstance(model.head, PointHead)
    counts = compiler.costs(spec)
    assert module_params(model) == counts.params
    assert module_macs(model, torch.zeros(1, 3, 64, 64)) == counts.macs
    # P3..P5 at 64x64: 8*8 + 4*4 + 2*2 = 84 points, one per location
    assert model.priors.shape == (84, 2)
    with pytest.raises(archspec.SpecError) as error:
        archspec.loads(DETECTOR_YAML.replace("{type: points, convs: 1}", "{type: points, convs: 1, radius: 2}"))
    assert error.value.path == "head.radius"


def test_new_head_trains_a_step_and_exports_to_onnx(tmp_path):
    from archspec.detection.deploy import OnnxDetector
    from archspec.detection.export import export_detector
    from archspec.detection.losses import detection_loss
    from archspec.detection.model import build_detector
    from archspec.detection.postprocess import detect

    spec = archspec.loads(DETECTOR_YAML)
    torch.manual_seed(0)
    model = build_detector(spec)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 36.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 4.0, 60.0, 60.0], [2.0, 30.0, 18.0, 50.0]]),
                "labels": torch.tensor([0, 1])}]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    parts = detection_loss(model, model(images), targets)
    assert parts.positives > 0 and parts.centerness is None
    assert torch.isfinite(parts.total) and float(parts.box.detach()) > 0
    parts.total.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert {"head.cls_out.weight", "head.box_out.weight", "backbone.stem.layer0.conv.weight"} <= changed

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to dynamo: the plug-in's ONNX form is written directly
        path = export_detector(spec, tmp_path / "points.onnx", weights=model.state_dict())
    import onnx

    assert {p.key: p.value for p in onnx.load(path).metadata_props}["archspec.exporter"] == "direct"
    boxes, scores, labels = OnnxDetector(path).run(images.numpy())
    want_boxes, want_scores, want_labels = detect(model, images)
    assert (labels >= 0).sum() > 0
    # an untrained head scores many locations alike: detections with equal scores may come out of
    # the two NMS implementations in either order, so each image's detections are compared as a set
    for image in range(len(images)):
        got = _rows(labels[image], scores[image], boxes[image])
        want = _rows(want_labels[image].numpy(), want_scores[image].numpy(), want_boxes[image].numpy())
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-3)


def _rows(labels: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(label, score, box) per detection, in a canonical order (label, then rounded box corners)."""
    rows = np.concatenate([labels[:, None].astype(np.float64), scores[:, None], boxes], axis=1)
    keys = np.round(rows[:, [5, 4, 3, 2, 0]], 1)
    return rows[np.lexsort(keys.T)]


# == the search: a new space, strategy and evaluator =================================================
ROOT = Path(__file__).resolve().parents[1]
RESNET18 = ROOT / "examples" / "backbones" / "resnet18.yaml"


# -- the plug-ins (what a user writes in their own module) ---------------------------------------
class StageWidthSpace(SpaceConfig):
    """Every stage's width is the base's times one of `multipliers`."""

    offers: ClassVar[frozenset[str]] = frozenset({"random", "mutate", "crossover", "enumerate"})
    type: Literal["test_stage_widths"]
    """Space kind tag."""
    multipliers: list[float] = [0.5, 1.0]
    """Width multipliers a stage may take."""


class StageWidthSearchSpace:
    """Genotype: one multiplier index per stage."""

    def __init__(self, config: StageWidthSpace, base):
        self.config = config
        self.data = archspec.to_data(base)
        self.widths = [stage.out_channels for stage in base.stages]
        self.base = tuple([config.multipliers.index(1.0)] * len(self.widths))

    def check(self, genotype):
        if len(genotype) != len(self.widths) or not all(0 <= g < len(self.config.multipliers) for g in genotype):
            raise Rejected(f"genotype {genotype} is not one multiplier index per stage")

    def decode(self, genotype):
        data = {**self.data, "stages": [dict(stage) for stage in self.data["stages"]]}
        for stage, width, gene in zip(data["stages"], self.widths, genotype):
            stage["out_channels"] = int(width * self.config.multipliers[gene])
        try:
            return archspec.validate(data)
        except archspec.SpecError as exc:
            raise Rejected(str(exc)) from None

    def random(self, rng):
        return tuple(rng.randrange(len(self.config.multipliers)) for _ in self.widths)

    def mutate(self, genotype, rng, times=1):
        genes = list(genotype)
        for _ in range(times):
            genes[rng.randrange(len(genes))] = rng.randrange(len(self.config.multipliers))
        return tuple(genes)

    def crossover(self, a, b, rng):
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

    def enumerate(self, limit=None):
        return list(itertools.product(range(len(self.config.multipliers)), repeat=len(self.widths)))


class ExhaustiveConfig(StrategyConfig):
    """Propose every genotype of the space once, in order."""

    needs: ClassVar[frozenset[str]] = frozenset({"enumerate"})
    type: Literal["test_exhaustive"]
    """Strategy kind tag."""
    reverse: bool = False
    """Walk the genotypes from the last one."""


class ExhaustiveStrategy(Strategy):
    def __init__(self, space, seed, reverse=False):
        super().__init__(space, seed)
        self.queue = list(space.enumerate())
        if reverse:
            self.queue.reverse()

    def propose(self):
        return Proposal(self.queue.pop(0)) if self.queue else Proposal(None, "enumerated everything")

    @property
    def done(self):
        return not self.queue


class ParamsEvaluatorConfig(EvaluatorConfig):
    """Score = -params / scale: smaller is better (a stand-in for any cheap proxy)."""

    type: Literal["test_fewest_params"]
    """Evaluator kind tag."""
    scale: float = 1e6
    """Parameters per score point."""


class FewestParamsEvaluator:
    def __init__(self, space, scale):
        self.space, self.scale = space, scale

    @classmethod
    def from_config(cls, config, base, space):
        return cls(space, config.evaluator.scale)

    def evaluate(self, genotype):
        from archspec.compiler import costs

        try:
            self.space.check(genotype)
            spec = self.space.decode(genotype)
        except Rejected as exc:
            return Outcome("rejected", str(exc))
        params = costs(spec).params
        return Outcome("passed", None, archspec.fingerprint(spec), {"params": params, "flops": 1.0},
                       -params / self.scale)


@pytest.fixture
def plugins():
    """Register the plug-ins for one test and remove them after (the registries are global)."""
    SPACE_CONFIGS.register("test_stage_widths", StageWidthSpace)
    register_space("test_stage_widths")(StageWidthSearchSpace)
    STRATEGY_CONFIGS.register("test_exhaustive", ExhaustiveConfig)
    register_strategy("test_exhaustive")(ExhaustiveStrategy)
    EVALUATOR_CONFIGS.register("test_fewest_params", ParamsEvaluatorConfig)
    register_evaluator("test_fewest_params")(FewestParamsEvaluator)
    yield
    for registry, tag in ((SPACES, "test_stage_widths"), (SPACE_CONFIGS, "test_stage_widths"),
                          (STRATEGIES, "test_exhaustive"), (STRATEGY_CONFIGS, "test_exhaustive"),
                          (EVALUATORS, "test_fewest_params"), (EVALUATOR_CONFIGS, "test_fewest_params")):
        registry.unregister(tag)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(f"type: search\nbase: {RESNET18}\n" + text)
    return path


def test_new_space_strategy_and_evaluator_search_end_to_end(plugins, tmp_path):
    path = _config(tmp_path, "space: {type: test_stage_widths, multipliers: [0.5, 1.0, 0.25]}\n"
                             "strategy: {type: test_exhaustive, reverse: true}\n"
                             "evaluator: {type: test_fewest_params, scale: 1000}\n"
                             "budgets: {input_size: 64}\ntrials: 100\n")
    config, base = load_search_config(path)
    assert (type(config.space), type(config.strategy), type(config.evaluator)) == \
        (StageWidthSpace, ExhaustiveConfig, ParamsEvaluatorConfig)
    assert config.evaluator.scale == 1000 and config.strategy.reverse
    result = run_search(path, tmp_path / "run", progress=False)
    # 3 multipliers over 4 stages: 81 genotypes, then the strategy is done (not 100 trials)
    assert result.trials == 81 and result.feasible == 81
    # the fewest parameters: every stage at a quarter of ResNet-18's width
    quarter = archspec.load(RESNET18).model_copy(deep=True)
    data = archspec.to_data(quarter)
    for stage in data["stages"]:
        stage["out_channels"] //= 4
    assert archspec.fingerprint(result.best_spec) == archspec.fingerprint(archspec.validate(data))
    from archspec.compiler import costs

    assert result.best_score == pytest.approx(-costs(archspec.validate(data)).params / 1000)
    trials = (tmp_path / "run" / "trials.csv").read_text().splitlines()
    assert trials[1].split(",")[4] == "2 2 2 2"  # reverse order: the last genotype first


def test_new_space_works_with_the_shipped_strategies(plugins, tmp_path):
    """The new space offers random, mutate and crossover, so DetNAS's evolution is refused
    (it needs redraw) while aging evolution and the random walk run."""
    for strategy, trials in (("{type: aging_evolution, population: 4, sample_size: 2}", 12),
                             ("{type: random, max_mutations: 2}", 12)):
        path = _config(tmp_path, f"space: {{type: test_stage_widths}}\nstrategy: {strategy}\n"
                                 f"budgets: {{input_size: 64}}\ntrials: {trials}\n")
        out = tmp_path / f"run_{trials}_{strategy[7:12]}"
        result = run_search(path, out, progress=False)
        assert result.trials == trials and result.feasible >= 1
    refused = _config(tmp_path, "space: {type: test_stage_widths}\nstrategy: {type: detnas_evolution}\n")
    with pytest.raises(archspec.SpecError, match=r"strategy\.type: 'detnas_evolution' needs a space that can redraw; "
                                                 r"the 'test_stage_widths' space offers random, mutate, crossover, "
                                                 r"enumerate"):
        load_search_config(refused)


def test_new_evaluator_fields_are_validated_with_field_paths(plugins, tmp_path):
    path = _config(tmp_path, "space: {type: test_stage_widths}\nstrategy: {type: test_exhaustive}\n"
                             "evaluator: {type: test_fewest_params, scale: many}\n")
    with pytest.raises(archspec.SpecError, match=r"evaluator\.scale: Input should be a valid number"):
        load_search_config(path)
    path = _config(tmp_path, "space: {type: test_stage_widths, multiplier: [1]}\nstrategy: {type: test_exhaustive}\n")
    with pytest.raises(archspec.SpecError, match=r"space\.multiplier: unknown field"):
        load_search_config(path)


def test_registering_a_space_without_the_methods_it_offers_is_refused(plugins):
    class Lazy:
        def check(self, genotype): ...

        def decode(self, genotype): ...

    SPACE_CONFIGS.register("test_lazy", StageWidthSpace)
    try:
        with pytest.raises(TypeError, match=r"lacks random \(random\), crossover \(crossover\), enumerate "
                                            r"\(enumerate\), mutate \(mutate\)|lacks crossover"):
            register_space("test_lazy")(Lazy)
        assert "test_lazy" not in SPACES
    finally:
        SPACE_CONFIGS.unregister("test_lazy")


def test_every_union_member_has_its_implementation():
    """Each registered config model (the members of the space, strategy and evaluator unions)
    has an implementation registered under the same tag, with the methods it declares; the
    executors `make_executor` picks are registered."""
    assert set(SPACE_CONFIGS) == set(SPACES) >= {"maedet", "detnas", "crnas", "spinenet", "annotated"}
    assert set(STRATEGY_CONFIGS) == set(STRATEGIES) >= {"maedet_evolution", "random", "detnas_evolution",
                                                         "aging_evolution", "crnas_two_step"}
    assert set(EVALUATOR_CONFIGS) == set(EVALUATORS) >= {"analytic"}
    assert {"serial", "pool"} <= set(EXECUTORS)
    for tag, model in SPACE_CONFIGS.items():
        assert model.model_fields["type"].annotation.__args__ == (tag,)
        assert model.offers and model.offers <= set(CAPABILITIES)
        for capability in model.offers:
            for method in CAPABILITY_METHODS[capability]:
                assert callable(getattr(SPACES[tag], method, None)), (tag, capability, method)
    for tag, model in STRATEGY_CONFIGS.items():
        assert model.model_fields["type"].annotation.__args__ == (tag,)
        assert model.needs and model.needs <= set(CAPABILITIES)
        assert issubclass(STRATEGIES[tag], Strategy)
    for tag, model in EVALUATOR_CONFIGS.items():
        assert model.model_fields["type"].annotation.__args__ == (tag,)


SHIPPED_PAIRS = {
    # space -> strategies it can serve (independent expectation, written out by hand)
    "maedet": {"maedet_evolution", "random", "aging_evolution"},
    "detnas": {"maedet_evolution", "random", "aging_evolution", "detnas_evolution"},
    "crnas": {"maedet_evolution", "random", "aging_evolution", "crnas_two_step"},
    "spinenet": {"maedet_evolution", "random", "aging_evolution"},
    "annotated": {"maedet_evolution", "random", "aging_evolution", "detnas_evolution"},
}


def test_capabilities_decide_exactly_the_shipped_pairs():
    for space, model in SPACE_CONFIGS.items():
        if space in SHIPPED_PAIRS:
            served = {s for s, strategy in STRATEGY_CONFIGS.items() if strategy.needs <= model.offers}
            assert served == SHIPPED_PAIRS[space], space


@pytest.mark.parametrize("space,strategy", [(space, strategy) for space, strategies in SHIPPED_PAIRS.items()
                                            for strategy in sorted(strategies)])
def test_every_compatible_shipped_pair_runs(space, strategy, tmp_path):
    """A pair the capabilities allow runs (a few trials) without AttributeError or TypeError."""
    search = ROOT / "examples" / "search"
    example = {"maedet": "maedet_r50_base.yaml", "detnas": "../backbones/detnas_coco_fpn_300m.yaml",
               "crnas": "../backbones/resnet50.yaml", "spinenet": "../backbones/spinenet49.yaml"}.get(space)
    where = f"base: {(search / example).resolve()}\nspace: {{type: {space}}}" if example else \
        f"space: {{type: annotated, template: {search / 'my_backbone_template.yaml'}}}"
    path = tmp_path / "pair.yaml"
    path.write_text(f"type: search\n{where}\nstrategy: {{type: {strategy}}}\n"
                    f"budgets: {{input_size: 64}}\ntrials: 6\n")
    result = run_search(path, tmp_path / "run", progress=False)
    assert result.trials == 6


def test_mismatched_config_exits_2_at_load_with_a_field_path(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"type: search\nbase: {ROOT / 'examples' / 'search' / 'maedet_r50_base.yaml'}\n"
                    "space: {type: maedet}\nstrategy: {type: detnas_evolution}\n")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "archspec.cli", "search", str(path), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: cfg.yaml: strategy.type: 'detnas_evolution' needs a space that can random, crossover, redraw; "
        "the 'maedet' space offers mutate"] or done.stderr.splitlines() == [
        f"error: {path}: strategy.type: 'detnas_evolution' needs a space that can random, crossover, redraw; "
        "the 'maedet' space offers mutate"]
    assert not out.exists()  # refused before the run folder is touched


def test_strategies_are_built_the_same_way_from_their_config():
    """`from_config` passes a config's fields to the constructor: a field the constructor does
    not take would fail here, for every shipped strategy."""
    from archspec.search.space import make_space

    config, base = load_search_config(ROOT / "examples" / "search" / "detnas_300m.yaml")
    space = make_space(config.space, base)
    for tag, model in STRATEGY_CONFIGS.items():
        if model.needs <= config.space.offers:
            strategy = STRATEGIES[tag].from_config(model(type=tag), space, 3)
            assert isinstance(strategy, Strategy) and strategy.space is space
            assert strategy.rng.random() == random.Random(3).random()
