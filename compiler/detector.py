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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import ClassVar

from archspec.compiler.costs import Costs, graph_costs
from archspec.compiler.graph import Graph
from archspec.compiler.lowering import lower
from archspec.compiler.ops import Conv, Shape
from archspec.detector import GROUP_NORM_GROUPS, Detector, FCOSHead, HeadSpec, RetinaNetHead, output_level
from archspec.errors import SpecError
from archspec.registry import Registry


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


class RetinaNetStructure(HeadStructure):
    """RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017, section 4): per
    anchor, K class logits and 4 box deltas."""

    spec_class = RetinaNetHead

    @classmethod
    def priors_per_location(cls, spec) -> int:
        return spec.anchors.per_location()


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
