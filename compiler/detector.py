"""Detector plans: the shapes and costs of a detector spec, known before any module exists.

    plan = plan_detector(spec)
    plan.levels           # {3: Shape(channels=256, height=80, width=80), ...}
    plan.costs()          # params counted once per module, MACs summed over every level

The neck sizes itself from the backbone's output shapes (the lowered graph's), and the head from
the neck's: both the analytic costs here and the modules in `detection.model` read this plan, so
channel arithmetic lives in one place. The head is shared by every level, so its parameters are
counted once and its MACs once per level, which is what a forward pass does.

Heads are classes registered in `HEADS` by their spec's `type` tag. The compiler registers the
structure of the built-in heads (`RetinaNetStructure`, `FcosStructure`: torch-free, so costs
need no torch); `archspec.detection.heads` extends each with its modules, priors, decoding and
loss. A new head is one class in the detection layer, registered with
`archspec.detection.heads.register_head`, which puts it here too.

The direct ONNX writer (`detector_to_onnx`) also lives here, torch-free: the backbone graph
(`onnx_writer.emit_graph`), the neck (`NECK_ONNX`), and the head's own ONNX form: each head class
emits its towers and outputs (`HeadStructure.emit_onnx`), its per-level finish
(`finish_level_onnx`), its priors (`prior_arrays`, numpy) and its decoding (`decode_onnx`).
Initializers carry the torch `detection.model.Detector`'s state-dict names, so a trained
module's ``state_dict()`` exports exactly. A head supports the writer when its class defines
`decode_onnx` itself (`onnx_head`): a subclass that changes the torch computation without
restating the ONNX one is never written with its parent's.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from archspec.compiler.costs import Costs, graph_costs
from archspec.compiler.graph import Graph
from archspec.compiler.lowering import lower
from archspec.compiler.ops import Conv, Shape
from archspec.detector import GROUP_NORM_GROUPS, Detector, FCOSHead, HeadSpec, RetinaNetHead, output_level
from archspec.errors import SpecError
from archspec.registry import Registry

if TYPE_CHECKING:  # annotations only: planning and costing never import onnx or numpy
    import numpy as np
    import onnx

    from archspec.compiler.onnx_writer import OnnxWriter

CANDIDATE_OUTPUTS = ("candidate_boxes", "candidate_scores")
"""Outputs of the network + decoding: top-k boxes (B, n, 4) and class-major scores (B, K, n)."""
GROUP_NORM_EPS = 1e-5
"""torch.nn.GroupNorm's default epsilon."""
FCOS_LOG_DISTANCE_CLAMP = 12.0
"""FCOS distances are exp(scale * x) strides; clamping x keeps an untrained head finite."""
BOX_DELTA_CLAMP = math.log(1000.0 / 16)
"""RetinaNet's dw, dh are clamped before exp (a box at most 1000/16 times its anchor)."""


@dataclass(frozen=True)
class ConvUse:
    """One application of a convolution (a shared conv appears once per level): the op's own
    counting rules (`ops.Conv`) at its output shape."""

    module: str
    op: Conv
    out: Shape
    """Output shape of this application."""

    @classmethod
    def of(cls, module: str, in_channels: int, out_channels: int, kernel: int, stride: int, height: int,
           width: int) -> "ConvUse":
        """A biased convolution (every neck and head conv has a bias) giving ``height x width``."""
        return cls(module, Conv(in_channels, out_channels, kernel, stride, bias=True),
                   Shape(out_channels, height, width))

    @property
    def params(self) -> int:
        return self.op.params()

    @property
    def macs(self) -> int:
        return self.op.macs(self.out)


@dataclass
class DetectorPlan:
    spec: Detector
    backbone: Graph
    backbone_outputs: dict[str, Shape]
    """Backbone output name -> shape at the detector's input size."""
    levels: dict[int, Shape] = field(default_factory=dict)
    """Neck output level -> shape (what the head sees)."""
    convs: list[ConvUse] = field(default_factory=list)
    norms: dict[str, int] = field(default_factory=dict)
    """GroupNorm module -> channels (2 parameters per channel)."""
    scalars: dict[str, int] = field(default_factory=dict)
    """Other learnable tensors -> elements (FCOS's per-level scales)."""

    @property
    def head(self) -> type["HeadStructure"]:
        """The registered class of the spec's head."""
        return head_class(self.spec.head)

    @property
    def head_width(self) -> int:
        return self.spec.head.channels or next(iter(self.levels.values())).channels

    @property
    def anchors_per_location(self) -> int:
        return self.head.priors_per_location(self.spec.head)

    def neck_head_params(self) -> int:
        unique = {use.module: use.params for use in self.convs}
        return sum(unique.values()) + 2 * sum(self.norms.values()) + sum(self.scalars.values())

    def neck_head_macs(self) -> int:
        return sum(use.macs for use in self.convs)

    def costs(self) -> Costs:
        """Params and MACs of the whole detector (batch 1, at the spec's input size);
        activations are the backbone's."""
        size = self.spec.image_size
        backbone = graph_costs(self.backbone, size)
        return Costs(size, backbone.params + self.neck_head_params(), backbone.macs + self.neck_head_macs(),
                     backbone.activations)

    def parts(self) -> dict[str, dict[str, int]]:
        """Params and MACs of backbone, neck and head apart."""
        backbone = graph_costs(self.backbone, self.spec.image_size)
        out = {"backbone": {"params": backbone.params, "macs": backbone.macs}}
        for part in ("neck", "head"):
            unique = {u.module: u.params for u in self.convs if u.module.startswith(part + ".")}
            params = sum(unique.values()) + sum(2 * c for m, c in self.norms.items() if m.startswith(part + "."))
            params += sum(n for m, n in self.scalars.items() if m.startswith(part + "."))
            macs = sum(u.macs for u in self.convs if u.module.startswith(part + "."))
            out[part] = {"params": params, "macs": macs}
        return out


def plan_detector(spec: Detector) -> DetectorPlan:
    """Shapes and convolutions of a detector; `SpecError` when the parts do not fit."""
    graph = lower(spec.backbone)
    shapes = graph.shapes(spec.image_size)
    outputs = {}
    for name, node in graph.outputs.items():
        shape = shapes[node].as_tuple()
        outputs[name] = Shape(*shape)
    plan = DetectorPlan(spec, graph, outputs)
    _plan_neck(plan)
    plan.head.plan(plan)
    return plan


NECK_PLANS: Registry[Callable[[DetectorPlan], None]] = Registry("neck plan")
"""Neck `type` tag -> function adding the neck's convolutions and output levels to a plan."""


def _plan_neck(plan: DetectorPlan) -> None:
    NECK_PLANS[plan.spec.neck.type](plan)


@NECK_PLANS.register("none")
def plan_no_neck(plan: DetectorPlan) -> None:
    """The backbone's outputs are the head's levels; they must share one width."""
    spec = plan.spec
    plan.levels = {level: plan.backbone_outputs[f"C{level}"] for level in spec.levels}
    widths = {shape.channels for shape in plan.levels.values()}
    if len(widths) > 1:
        listing = ", ".join(f"C{level}: {shape.channels}" for level, shape in plan.levels.items())
        raise SpecError("neck", f"type 'none' shares one head over levels with different widths "
                                f"({listing}); use an fpn neck")


@NECK_PLANS.register("fpn")
def plan_fpn(plan: DetectorPlan) -> None:
    """FPN (Lin et al., "Feature Pyramid Networks for Object Detection", 2017, section 3): a 1x1
    lateral and a 3x3 output conv per input level, stride-2 3x3 convs for the extra levels."""
    spec = plan.spec
    neck, width = spec.neck, spec.neck.channels
    inputs = {output_level(name): plan.backbone_outputs[name] for name in neck.in_features}
    for level, shape in inputs.items():
        plan.convs.append(ConvUse.of(f"neck.lateral{level}", shape.channels, width, 1, 1, shape.height, shape.width))
    for level, shape in inputs.items():
        plan.convs.append(ConvUse.of(f"neck.output{level}", width, width, 3, 1, shape.height, shape.width))
        plan.levels[level] = Shape(width, shape.height, shape.width)
    deepest = max(inputs)
    source = inputs[deepest] if neck.extra_from == "input" else plan.levels[deepest]
    for level in range(deepest + 1, neck.max_level + 1):
        height, width_px = -(-source.height // 2), -(-source.width // 2)
        plan.convs.append(ConvUse.of(f"neck.extra{level}", source.channels, width, 3, 2, height, width_px))
        plan.levels[level] = source = Shape(width, height, width_px)


HEADS: Registry[type["HeadStructure"]] = Registry("detection head")
"""Head `type` tag -> head class (its structure here; modules, priors, decoding and loss in the
detection layer's subclass)."""


def head_class(spec: HeadSpec) -> type["HeadStructure"]:
    return HEADS[spec.type]


class HeadStructure:
    """The structure of a dense head shared by every level: a classification and a box tower of
    `convs` 3x3 convs (+ GroupNorm with `norm: group_norm`, + ReLU), then 3x3 output convs per
    location (`outputs`). Costs (`plan`) and, in the detection layer, modules read this one
    description. Subclasses set `spec_class` and override `outputs` / `level_scalars` /
    `priors_per_location`; all methods are class methods so that the torch subclass can be an
    ``nn.Module`` at the same time."""

    spec_class: ClassVar[type[HeadSpec]]
    """The head's spec class (its `type` tag is the registry key)."""
    box_tower_outputs: ClassVar[tuple[str, ...]] = ("box",)
    """Outputs computed on the box tower's features (the rest use the classification tower's)."""

    @classmethod
    def priors_per_location(cls, spec: HeadSpec) -> int:
        """Anchors (or points) per feature-map location."""
        return 1

    @classmethod
    def outputs(cls, spec: HeadSpec, num_classes: int) -> dict[str, int]:
        """Output conv name -> channels; ``cls`` and ``box`` always come first, in that order."""
        per_location = cls.priors_per_location(spec)
        return {"cls": per_location * num_classes, "box": per_location * 4}

    @classmethod
    def level_scalars(cls, spec: HeadSpec) -> int:
        """Learnable scalars per level (FCOS's regression scale)."""
        return 0

    @classmethod
    def plan(cls, plan: DetectorPlan) -> None:
        """Add the head's convolutions, norms and scalars to `plan`."""
        head, width = plan.spec.head, plan.head_width
        outputs = cls.outputs(head, plan.spec.num_classes)
        scalars = cls.level_scalars(head)
        if scalars:
            plan.scalars.update({f"head.scale{level}": scalars for level in plan.levels})
        for level, shape in plan.levels.items():
            for tower in ("cls", "box"):
                channels = shape.channels
                for i in range(head.convs):
                    plan.convs.append(ConvUse.of(f"head.{tower}_tower.{i}", channels, width, 3, 1, shape.height,
                                                 shape.width))
                    if head.norm == "group_norm":
                        plan.norms[f"head.{tower}_norm.{i}"] = width
                    channels = width
            for name, out_channels in outputs.items():
                in_channels = width if head.convs else shape.channels
                plan.convs.append(ConvUse.of(f"head.{name}_out", in_channels, out_channels, 3, 1, shape.height,
                                             shape.width))
        if head.norm == "group_norm" and width % GROUP_NORM_GROUPS:
            # the spec checks this when the width is known from the spec; without a neck it is the backbone's
            raise SpecError("head.channels", f"{width} channels; GroupNorm uses {GROUP_NORM_GROUPS} groups, so the "
                                             "width must be a multiple of it")

    # -- ONNX (the direct writer) ----------------------------------------------------------------
    @classmethod
    def level_prior_array(cls, spec: HeadSpec, centers: "np.ndarray", stride: int) -> "np.ndarray":
        """Priors of one level from its cell centres (H * W, 2) in pixels: points by default."""
        return centers

    @classmethod
    def prior_arrays(cls, plan: DetectorPlan) -> tuple["np.ndarray", "np.ndarray"]:
        """Every level's priors (float32, the order of the flattened outputs) and each one's stride:
        the numbers the torch head's `priors` computes."""
        import numpy as np

        priors, strides = [], []
        for level, shape in plan.levels.items():
            stride = 2 ** level
            ys, xs = np.meshgrid(np.arange(shape.height, dtype=np.float32), np.arange(shape.width, dtype=np.float32),
                                 indexing="ij")
            centers = (np.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1) + np.float32(0.5)) * np.float32(stride)
            level_priors = cls.level_prior_array(plan.spec.head, centers, stride)
            priors.append(level_priors)
            strides.append(np.full((level_priors.shape[0],), stride, dtype=np.float32))
        return np.concatenate(priors).astype(np.float32), np.concatenate(strides)

    @classmethod
    def emit_onnx(cls, w: "OnnxWriter", plan: DetectorPlan, levels: list[str]) -> dict[str, str]:
        """Towers and output convs over every level (one set of weights, named as the torch
        head's), each output flattened to (B, H * W * A, C) and finished per level
        (`finish_level_onnx`), then concatenated over levels: output name -> value."""
        head, width = plan.spec.head, plan.head_width
        outputs = cls.outputs(head, plan.spec.num_classes)
        per_location = cls.priors_per_location(head)
        in_channels = next(iter(plan.levels.values())).channels
        joined: dict[str, list[str]] = {name: [] for name in outputs}
        for index, (level, shape) in enumerate(plan.levels.items()):
            towers = {tower: _tower_onnx(w, head, f"head.{tower}_tower", levels[index], in_channels, width, f"P{level}")
                      for tower in ("cls", "box")}
            raw = {}
            for name, channels in outputs.items():
                source = towers["box" if name in cls.box_tower_outputs else "cls"]
                conv = Conv(width if head.convs else in_channels, channels, 3, bias=True)
                value = conv.emit_onnx_module(w, f"head.{name}_out", source, f"head.{name}_out.P{level}",
                                              **_head_output_init(w, head, name))
                raw[name] = _flatten_onnx(w, value, per_location, channels // per_location, shape)
            for name, value in cls.finish_level_onnx(w, plan, index, raw).items():
                joined[name].append(value)
        return {name: w.node("Concat", values, f"head.{name}", axis=1) for name, values in joined.items()}

    @classmethod
    def finish_level_onnx(cls, w: "OnnxWriter", plan: DetectorPlan, index: int, raw: dict[str, str]) -> dict[str, str]:
        """One level's flattened raw outputs -> what the dense outputs hold (`finish_level`)."""
        return raw

    @classmethod
    def decode_onnx(cls, w: "OnnxWriter", plan: DetectorPlan, dense: dict[str, str]) -> tuple[str, str]:
        """Boxes (B, N, 4) in input pixels (not clipped) and scores (B, N, K), as `decode`.
        Heads that support the direct writer define it on their own class (`onnx_head`)."""
        raise TypeError(f"{cls.__name__} has no ONNX decoding")


def _head_output_init(w, head: HeadSpec, name: str) -> dict:
    """Random output convs as the torch head initialises them (N(0, 0.01) weights, zero biases,
    the class bias at the prior probability, Lin et al. 2017, section 4.1), so that a random
    detector scores about `prior_prob` everywhere and its NMS sees as few candidates as a
    freshly built torch one (what `archspec bench` of a detector spec times)."""
    import numpy as np

    def weight(shape):
        return (w.rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01))

    bias = -math.log((1 - head.prior_prob) / head.prior_prob) if name == "cls" else 0.0
    return {"weight_init": weight, "bias_init": lambda shape: np.full(shape, bias, np.float32)}


def onnx_head(spec: HeadSpec) -> type[HeadStructure] | None:
    """The head class when it writes its own ONNX (it defines `decode_onnx` itself), else None."""
    cls = head_class(spec)
    return cls if "decode_onnx" in vars(cls) else None


def _tower_onnx(w, head: HeadSpec, module: str, x: str, in_channels: int, width: int, suffix: str) -> str:
    """A tower of `head.convs` conv (+ GroupNorm) + ReLU, positions as in its nn.Sequential."""
    position = 0
    for _ in range(head.convs):
        x = Conv(in_channels, width, 3, bias=True).emit_onnx_module(w, f"{module}.{position}", x,
                                                                    f"{module}.{position}.{suffix}")
        position += 1
        if head.norm == "group_norm":
            x = _group_norm_onnx(w, f"{module}.{position}", x, width, f"{module}.{position}.{suffix}")
            position += 1
        x = w.node("Relu", [x], f"{module}.{position}.{suffix}")
        position += 1
        in_channels = width
    return x


def _group_norm_onnx(w, module: str, x: str, channels: int, value: str) -> str:
    """torch.nn.GroupNorm as opset-stable operators: instance norm over (B, G, C/G * H * W), then
    the per-channel affine (GroupNormalization-18 has per-group affine, fixed only in opset 21)."""
    import numpy as np

    groups = GROUP_NORM_GROUPS
    grouped = w.node("Reshape", [x, w.int64(f"{value}.grouped_shape", 0, groups, -1)], f"{value}.grouped")
    normed = w.node("InstanceNormalization", [grouped, w.float32(f"{value}.ones", np.ones(groups)),
                                              w.float32(f"{value}.zeros", np.zeros(groups))],
                    f"{value}.normed", epsilon=GROUP_NORM_EPS)
    restored = w.node("Reshape", [normed, w.node("Shape", [x], f"{value}.shape")], f"{value}.restored")
    axes = w.int64(f"{value}.affine_axes", 1, 2)
    scale = w.node("Unsqueeze", [w.tensor(f"{module}.weight", (channels,), w.uniform(0.5, 1.5)), axes],
                   f"{value}.scale")
    shift = w.node("Unsqueeze", [w.tensor(f"{module}.bias", (channels,), w.uniform(-0.2, 0.2)), axes],
                   f"{value}.shift")
    return w.node("Add", [w.node("Mul", [restored, scale], f"{value}.scaled"), shift], value)


def _flatten_onnx(w, x: str, per_location: int, per_prior: int, shape: Shape) -> str:
    """(B, A * C, H, W) -> (B, H * W * A, C): level by level, row-major, anchors last (`_flatten`)."""
    split = w.node("Reshape", [x, w.int64(f"{x}.split_shape", 0, per_location, per_prior, shape.height,
                                          shape.width)], f"{x}.split")
    moved = w.node("Transpose", [split], f"{x}.moved", perm=[0, 3, 4, 1, 2])
    return w.node("Reshape", [moved, w.int64(f"{x}.flat_shape", 0, -1, per_prior)], f"{x}.flat")


class RetinaNetStructure(HeadStructure):
    """RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017, section 4): per
    anchor, K class logits and 4 box deltas."""

    spec_class = RetinaNetHead

    @classmethod
    def priors_per_location(cls, spec) -> int:
        return spec.anchors.per_location()

    @classmethod
    def level_prior_array(cls, spec, centers, stride):
        shapes = cell_anchor_array(spec.anchors, stride)
        return (np_tile_pairs(centers)[:, None, :] + shapes[None]).reshape(-1, 4)

    @classmethod
    def decode_onnx(cls, w, plan, dense):
        """Box deltas (dx, dy, dw, dh) on the anchors (`boxes.decode_deltas`), sigmoid scores."""
        import numpy as np

        anchors, _ = cls.prior_arrays(plan)
        sizes = anchors[:, 2:] - anchors[:, :2]
        centers = anchors[:, :2] + np.float32(0.5) * sizes
        deltas = dense["box"]
        shift = _slice_last(w, deltas, 0, 2, "decode.d_xy")
        scale = _slice_last(w, deltas, 2, 4, "decode.d_wh")
        xy = w.node("Add", [w.node("Mul", [shift, w.float32("decode.sizes", sizes)], "decode.shift"),
                            w.float32("decode.centers", centers)], "decode.xy")
        clamped = w.node("Min", [scale, w.float32("decode.clamp", BOX_DELTA_CLAMP)], "decode.d_wh_clamped")
        half = w.node("Mul", [w.node("Mul", [w.float32("decode.half", 0.5), w.node("Exp", [clamped], "decode.exp")],
                                     "decode.half_exp"), w.float32("decode.sizes_again", sizes)], "decode.half_wh")
        boxes = w.node("Concat", [w.node("Sub", [xy, half], "decode.top_left"),
                                  w.node("Add", [xy, half], "decode.bottom_right")], "decode.boxes", axis=2)
        return boxes, w.node("Sigmoid", [dense["cls"]], "decode.scores")


class FcosStructure(HeadStructure):
    """FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", 2019, sections
    3.1-3.3): per location, K class logits, 4 distances with a learned scale per level, and a
    centerness logit on the box tower."""

    spec_class = FCOSHead
    box_tower_outputs: ClassVar[tuple[str, ...]] = ("box", "centerness")

    @classmethod
    def outputs(cls, spec, num_classes: int) -> dict[str, int]:
        return {**super().outputs(spec, num_classes), "centerness": 1}

    @classmethod
    def level_scalars(cls, spec) -> int:
        return 1

    @classmethod
    def finish_level_onnx(cls, w, plan, index, raw):
        """Distances exp(min(scale * x, clamp)) strides; centerness (B, n)."""
        import numpy as np

        level_scales = w.tensor("head.scales", (len(plan.levels),), lambda shape: np.ones(shape, np.float32))
        scale = w.node("Gather", [level_scales, w.constant(f"head.scale_index{index}", np.array(index, np.int64))],
                       f"head.scale{index}")
        scaled = w.node("Mul", [scale, raw["box"]], f"{raw['box']}.scaled")
        clamped = w.node("Min", [scaled, w.float32("head.log_distance_clamp", FCOS_LOG_DISTANCE_CLAMP)],
                         f"{raw['box']}.clamped")
        box = w.node("Exp", [clamped], f"{raw['box']}.distances")
        centerness = w.node("Squeeze", [raw["centerness"], w.int64("head.last_axis", -1)],
                            f"{raw['centerness']}.squeezed")
        return {**raw, "box": box, "centerness": centerness}

    @classmethod
    def decode_onnx(cls, w, plan, dense):
        """Points +- distances * stride (`boxes.decode_distances`); scores sqrt(sigmoid(cls) *
        sigmoid(centerness))."""
        points, strides = cls.prior_arrays(plan)
        distances = w.node("Mul", [dense["box"], w.float32("decode.strides", strides[:, None])], "decode.distances")
        boxes = w.node("Concat", [
            w.node("Sub", [w.float32("decode.points", points), _slice_last(w, distances, 0, 2, "decode.left_top")],
                   "decode.top_left"),
            w.node("Add", [w.float32("decode.points_again", points), _slice_last(w, distances, 2, 4,
                                                                                 "decode.right_bottom")],
                   "decode.bottom_right")], "decode.boxes", axis=2)
        centerness = w.node("Unsqueeze", [w.node("Sigmoid", [dense["centerness"]], "decode.centerness"),
                                          w.int64("decode.last_axis", -1)], "decode.centerness3")
        product = w.node("Mul", [w.node("Sigmoid", [dense["cls"]], "decode.class_probs"), centerness], "decode.product")
        return boxes, w.node("Sqrt", [product], "decode.scores")


HEADS.register("retinanet", RetinaNetStructure)
HEADS.register("fcos", FcosStructure)


def summarize_detector(spec: Detector) -> dict:
    """What `archspec summary --json` prints for a detector."""
    from archspec import fingerprint

    plan = plan_detector(spec)
    counts = plan.costs()
    levels = {f"P{level}": {"channels": s.channels, "stride": 2 ** level, "shape": [s.channels, s.height, s.width]}
              for level, s in plan.levels.items()}
    return {"name": spec.name, "type": spec.type, "fingerprint": fingerprint(spec), **counts.as_dict(),
            "parts": plan.parts(), "outputs": levels, "num_classes": spec.num_classes,
            "head": spec.head.type, "neck": spec.neck.type}


def cell_anchor_array(anchors, stride: int) -> "np.ndarray":
    """(A, 4) float32 anchor offsets around a cell centre: scales outer, aspect ratios inner."""
    import numpy as np

    rows = []
    for i in range(anchors.scales_per_octave):
        side = anchors.size * stride * 2 ** (i / anchors.scales_per_octave)
        for ratio in anchors.aspect_ratios:
            half_w, half_h = side / math.sqrt(ratio) / 2, side * math.sqrt(ratio) / 2
            rows.append([-half_w, -half_h, half_w, half_h])
    return np.array(rows, dtype=np.float32)


def np_tile_pairs(centers: "np.ndarray") -> "np.ndarray":
    """(N, 2) centres -> (N, 4) (x, y, x, y)."""
    import numpy as np

    return np.concatenate([centers, centers], axis=-1)


def _slice_last(w, x: str, start: int, end: int, value: str) -> str:
    """x[..., start:end] of a (B, N, 4) value."""
    return w.node("Slice", [x, w.int64(f"{value}.start", start), w.int64(f"{value}.end", end),
                            w.int64(f"{value}.axis", 2)], value)


NECK_ONNX: Registry[Callable[["OnnxWriter", DetectorPlan, dict[str, str]], list[str]]] = Registry("neck ONNX form")
"""Neck `type` tag -> writer of its ONNX form: ``(writer, plan, backbone output -> value)`` ->
one value per level of `plan.levels`, weights named as the torch neck's state dict."""


@NECK_ONNX.register("none")
def neck_none_onnx(w, plan: DetectorPlan, features: dict[str, str]) -> list[str]:
    return [features[f"C{level}"] for level in plan.levels]


@NECK_ONNX.register("fpn")
def fpn_onnx(w, plan: DetectorPlan, features: dict[str, str]) -> list[str]:
    """`detection.model.FPN`: laterals, top-down nearest resize to the lateral's size + add,
    3x3 outputs, stride-2 extras (ReLU between extras)."""
    neck, width = plan.spec.neck, plan.spec.neck.channels
    names = list(neck.in_features)
    shapes = plan.backbone_outputs
    inputs = [features[name] for name in names]

    def lateral(i: int) -> str:
        conv = Conv(shapes[names[i]].channels, width, 1, bias=True)
        return conv.emit_onnx_module(w, f"neck.lateral.{i}", inputs[i], f"neck.lateral.{i}")

    def output(i: int, x: str) -> str:
        return Conv(width, width, 3, bias=True).emit_onnx_module(w, f"neck.output.{i}", x, f"neck.output.{i}")

    inner = lateral(len(names) - 1)
    outputs = [output(len(names) - 1, inner)]
    for i in range(len(names) - 2, -1, -1):
        side = lateral(i)
        shape = shapes[names[i]]
        # nearest with the lateral's size: source index floor(dst * in / out), as F.interpolate
        up = w.node("Resize", [inner, "", "", w.int64(f"neck.top_down{i}.size", shape.height, shape.width)],
                    f"neck.top_down{i}", mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor", axes=[2, 3])
        inner = w.node("Add", [side, up], f"neck.inner{i}")
        outputs.insert(0, output(i, inner))
    source = outputs[-1] if neck.extra_from == "output" else inputs[-1]
    source_channels = width if neck.extra_from == "output" else shapes[names[-1]].channels
    for j, _level in enumerate(range(output_level(names[-1]) + 1, neck.max_level + 1)):
        x = source if j == 0 else w.node("Relu", [source], f"neck.extra.{j}.relu")
        source = Conv(source_channels, width, 3, 2, bias=True).emit_onnx_module(w, f"neck.extra.{j}", x,
                                                                                f"neck.extra.{j}")
        source_channels = width
        outputs.append(source)
    return outputs


class DirectExportUnsupported(TypeError):
    """The direct writer has no ONNX form for a part of this detector (a head or neck added
    without one); the dynamo exporter can still export it."""


def detector_to_onnx(spec: Detector, *, weights: Mapping[str, Any] | None = None, seed: int = 0,
                     batch: int | None = None, opset: int | None = None) -> "onnx.ModelProto":
    """The network and decoding of a detector as ONNX, without torch: ``images`` (B, 3, H, W) ->
    `CANDIDATE_OUTPUTS` (the top `pre_nms_top_k` boxes (B, n, 4) by best class score, clipped to
    the image, and their class-major scores (B, K, n): `detection.model.Detector.candidates`).
    Weights: a `Detector` state dict (all of it used) or random ones drawn from `seed`."""
    from onnx import TensorProto, helper

    from archspec.compiler.onnx_writer import (DEFAULT_OPSET, INPUT_NAME, OnnxWriter, batch_dim, emit_graph,
                                               make_model)

    plan = plan_detector(spec)
    head = onnx_head(spec.head)
    neck = NECK_ONNX.find(spec.neck.type)
    if head is None or neck is None:
        part = f"head {spec.head.type!r}" if head is None else f"neck {spec.neck.type!r}"
        raise DirectExportUnsupported(f"the direct ONNX writer has no form for the {part}")
    w = OnnxWriter(weights, seed)
    features = emit_graph(w, plan.backbone, spec.image_size, INPUT_NAME, prefix="backbone.")
    dense = head.emit_onnx(w, plan, neck(w, plan, features))
    boxes, scores = head.decode_onnx(w, plan, dense)
    candidates = _candidates_onnx(w, plan, boxes, scores)
    first = batch_dim(batch)
    count = min(spec.postprocess.pre_nms_top_k, candidates)
    height, width = spec.image_size
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [first, spec.backbone.in_channels,
                                                                            height, width])]
    outputs = [helper.make_tensor_value_info(CANDIDATE_OUTPUTS[0], TensorProto.FLOAT, [first, count, 4]),
               helper.make_tensor_value_info(CANDIDATE_OUTPUTS[1], TensorProto.FLOAT,
                                             [first, spec.num_classes, count])]
    return make_model(w, spec.name, inputs, outputs, opset or DEFAULT_OPSET)


def _candidates_onnx(w, plan: DetectorPlan, boxes: str, scores: str) -> int:
    """Clip boxes to the image, keep the top `pre_nms_top_k` by best class score (ties: lower
    index), scores class-major; writes `CANDIDATE_OUTPUTS`. Returns the number of priors."""
    import numpy as np

    spec = plan.spec
    total = sum(shape.height * shape.width for shape in plan.levels.values()) * plan.anchors_per_location
    height, width = spec.image_size
    clipped = w.node("Min", [w.node("Max", [boxes, w.float32("decode.zero", 0.0)], "decode.boxes_positive"),
                             w.float32("decode.limits", np.array([width, height, width, height]))], "decode.clipped")
    count = min(spec.postprocess.pre_nms_top_k, total)
    best = w.node("ReduceMax", [scores, w.int64("candidates.class_axis", 2)], "candidates.best", keepdims=0)
    _, top = w.node_outputs("TopK", [best, w.int64("candidates.count", count)],
                            ["candidates.top_scores", "candidates.top_index"], axis=1, largest=1, sorted=1)
    index = w.node("Unsqueeze", [top, w.int64("candidates.axis2", 2)], "candidates.index3")
    shape = w.node("Shape", [top], "candidates.index_shape")
    box_index = w.node("Expand", [index, w.node("Concat", [shape, w.int64("candidates.four", 4)],
                                                "candidates.box_shape", axis=0)], "candidates.box_index")
    score_index = w.node("Expand", [index, w.node("Concat", [shape, w.int64("candidates.classes", spec.num_classes)],
                                                  "candidates.score_shape", axis=0)], "candidates.score_index")
    w.node("GatherElements", [clipped, box_index], CANDIDATE_OUTPUTS[0], axis=1)
    picked = w.node("GatherElements", [scores, score_index], "candidates.scores", axis=1)
    w.node("Transpose", [picked], CANDIDATE_OUTPUTS[1], perm=[0, 2, 1])
    return total

