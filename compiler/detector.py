"""Detector plans: the shapes and costs of a detector spec, known before any module exists.

    plan = plan_detector(spec)
    plan.levels           # {3: LevelShape(channels=256, height=80, width=80), ...}
    plan.costs()          # params counted once per module, MACs summed over every level

The neck sizes itself from the backbone's output shapes (the lowered graph's), and the head from
the neck's: both the analytic costs here and the modules in `detection.model` read this plan, so
channel arithmetic lives in one place. The head is shared by every level, so its parameters are
counted once and its MACs once per level, which is what a forward pass does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archspec.detector import Detector, FPNNeck, output_level
from archspec.errors import SpecError
from archspec.compiler.costs import Costs, graph_costs
from archspec.compiler.graph import Graph
from archspec.compiler.lowering import lower

GROUP_NORM_GROUPS = 32


@dataclass(frozen=True)
class LevelShape:
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class ConvUse:
    """One application of a convolution (a shared conv appears once per level)."""

    module: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    height: int
    """Output height."""
    width: int
    """Output width."""

    @property
    def params(self) -> int:
        return self.kernel * self.kernel * self.in_channels * self.out_channels + self.out_channels

    @property
    def macs(self) -> int:
        return self.kernel * self.kernel * self.in_channels * self.out_channels * self.height * self.width


@dataclass
class DetectorPlan:
    spec: Detector
    backbone: Graph
    backbone_outputs: dict[str, LevelShape]
    """Backbone output name -> shape at the detector's input size."""
    levels: dict[int, LevelShape] = field(default_factory=dict)
    """Neck output level -> shape (what the head sees)."""
    convs: list[ConvUse] = field(default_factory=list)
    norms: dict[str, int] = field(default_factory=dict)
    """GroupNorm module -> channels (2 parameters per channel)."""
    scalars: dict[str, int] = field(default_factory=dict)
    """Other learnable tensors -> elements (FCOS's per-level scales)."""

    @property
    def head_width(self) -> int:
        return self.spec.head.channels or next(iter(self.levels.values())).channels

    @property
    def anchors_per_location(self) -> int:
        head = self.spec.head
        return head.anchors.per_location() if head.type == "retinanet" else 1

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
        outputs[name] = LevelShape(*shape)
    plan = DetectorPlan(spec, graph, outputs)
    _plan_neck(plan)
    _plan_head(plan)
    return plan


def _plan_neck(plan: DetectorPlan) -> None:
    spec = plan.spec
    if not isinstance(spec.neck, FPNNeck):
        plan.levels = {level: plan.backbone_outputs[f"C{level}"] for level in spec.levels}
        widths = {shape.channels for shape in plan.levels.values()}
        if len(widths) > 1:
            listing = ", ".join(f"C{level}: {shape.channels}" for level, shape in plan.levels.items())
            raise SpecError("neck", f"type 'none' shares one head over levels with different widths "
                                    f"({listing}); use an fpn neck")
        return
    neck, width = spec.neck, spec.neck.channels
    inputs = {output_level(name): plan.backbone_outputs[name] for name in neck.in_features}
    for level, shape in inputs.items():
        plan.convs.append(ConvUse(f"neck.lateral{level}", shape.channels, width, 1, 1, shape.height, shape.width))
    for level, shape in inputs.items():
        plan.convs.append(ConvUse(f"neck.output{level}", width, width, 3, 1, shape.height, shape.width))
        plan.levels[level] = LevelShape(width, shape.height, shape.width)
    deepest = max(inputs)
    source = inputs[deepest] if neck.extra_from == "input" else plan.levels[deepest]
    for level in range(deepest + 1, neck.max_level + 1):
        height, width_px = -(-source.height // 2), -(-source.width // 2)
        plan.convs.append(ConvUse(f"neck.extra{level}", source.channels, width, 3, 2, height, width_px))
        plan.levels[level] = source = LevelShape(width, height, width_px)


def _plan_head(plan: DetectorPlan) -> None:
    head, classes = plan.spec.head, plan.spec.num_classes
    width, anchors = plan.head_width, plan.anchors_per_location
    outputs = {"cls": anchors * classes, "box": anchors * 4}
    if head.type == "fcos":
        outputs["centerness"] = 1
        plan.scalars.update({f"head.scale{level}": 1 for level in plan.levels})
    for level, shape in plan.levels.items():
        for tower in ("cls", "box"):
            channels = shape.channels
            for i in range(head.convs):
                plan.convs.append(ConvUse(f"head.{tower}_tower.{i}", channels, width, 3, 1, shape.height, shape.width))
                if head.norm == "group_norm":
                    plan.norms[f"head.{tower}_norm.{i}"] = width
                channels = width
        for name, out_channels in outputs.items():
            in_channels = width if head.convs else shape.channels
            plan.convs.append(ConvUse(f"head.{name}_out", in_channels, out_channels, 3, 1, shape.height, shape.width))
    if head.norm == "group_norm" and width % GROUP_NORM_GROUPS:
        raise SpecError("head.channels", f"{width} channels; GroupNorm uses {GROUP_NORM_GROUPS} groups, so the "
                                         "width must be a multiple of it")


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
