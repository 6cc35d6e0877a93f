"""Dense detection heads as classes: structure, modules, priors, decoding and loss in one place.

A head class extends its structure (`compiler.detector.HeadStructure`: the towers and output
convs the analytic costs count) with what runs in torch:

* the modules (`__init__`): built from the same `outputs()` / `level_scalars()` the cost plan reads;
* `forward`: shared towers over every level, outputs flattened level by level (`DenseOutputs`);
* `level_priors`: the anchors (RetinaNet) or points (FCOS) of one level;
* `decode`: raw outputs -> boxes in input pixels and class scores;
* `loss`: training targets and the loss of a batch.

The ONNX form of a head (towers, per-level finish, priors, decoding: `emit_onnx`,
`finish_level_onnx`, `prior_arrays`, `decode_onnx`) is on its structure class in the compiler,
torch-free, so the direct writer exports a detector without building it. A new head without
`decode_onnx` of its own is exported by the dynamo exporter (with a warning).

The built-in heads' structures live in the compiler (so costs need no torch); a new head is one
class here, registered with `register_head`, which also registers it with the compiler:

    @register_head
    class MyHead(DenseHead):
        spec_class = MyHeadSpec                  # registered in archspec.detector.HEAD_SPECS
        ...
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from archspec.compiler.detector import (FCOS_LOG_DISTANCE_CLAMP, HEADS, DetectorPlan, FcosStructure, HeadStructure,
                                        RetinaNetStructure, cell_anchor_array)
from archspec.detector import GROUP_NORM_GROUPS, HeadSpec
from archspec.detection.boxes import decode_deltas, decode_distances
from archspec.registry import Registry


class DenseOutputs(NamedTuple):
    """Raw head outputs for a batch, levels concatenated (N locations x anchors)."""

    class_logits: torch.Tensor
    """(B, N, K) classification logits."""
    box_regression: torch.Tensor
    """(B, N, 4): RetinaNet deltas (dx, dy, dw, dh); FCOS distances (l, t, r, b) in strides."""
    centerness_logits: torch.Tensor | None
    """(B, N) FCOS centerness logits; None for heads without centerness."""


HEAD_MODULES: Registry[type["DenseHead"]] = Registry("detection head module")
"""Head `type` tag -> the torch head class that `build_detector` instantiates."""


def register_head(cls: type["DenseHead"]) -> type["DenseHead"]:
    """Class decorator: register a head class for its spec's `type` tag, here and, unless a
    structure is registered already (the built-in heads), in the compiler's `HEADS`."""
    tag = cls.spec_class.model_fields["type"].annotation.__args__[0]
    if tag not in HEADS:
        HEADS.register(tag, cls)
    HEAD_MODULES.register(tag, cls)
    return cls


def head_module_class(spec: HeadSpec) -> type["DenseHead"]:
    return HEAD_MODULES[spec.type]


class DenseHead(HeadStructure, nn.Module):
    """Classification and box towers shared by every level, then one 3x3 output conv per entry
    of `outputs()` (``cls_out``, ``box_out``, ...)."""

    def __init__(self, plan: DetectorPlan):
        nn.Module.__init__(self)
        head = plan.spec.head
        in_channels = next(iter(plan.levels.values())).channels
        width = plan.head_width
        self.num_classes = plan.spec.num_classes
        self.per_location = self.priors_per_location(head)
        self.output_channels = self.outputs(head, self.num_classes)
        self.cls_tower = self._tower(head, in_channels, width)
        self.box_tower = self._tower(head, in_channels, width)
        tower_out = width if head.convs else in_channels
        for name, channels in self.output_channels.items():
            setattr(self, f"{name}_out", nn.Conv2d(tower_out, channels, 3, padding=1))
        scalars = self.level_scalars(head)
        self.scales = nn.Parameter(torch.ones(len(plan.levels), scalars).squeeze(-1)) if scalars else None
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - head.prior_prob) / head.prior_prob))

    @staticmethod
    def _tower(head: HeadSpec, in_channels: int, width: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(head.convs):
            layers.append(nn.Conv2d(in_channels, width, 3, padding=1))
            if head.norm == "group_norm":
                layers.append(nn.GroupNorm(GROUP_NORM_GROUPS, width))
            layers.append(nn.ReLU(inplace=True))
            in_channels = width
        return nn.Sequential(*layers)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, features: list[torch.Tensor]) -> DenseOutputs:
        per_output: dict[str, list[torch.Tensor]] = {name: [] for name in self.output_channels}
        for level, feature in enumerate(features):
            towers = {"cls": self.cls_tower(feature), "box": self.box_tower(feature)}
            raw = {}
            for name, channels in self.output_channels.items():
                tower = towers["box" if name in self.box_tower_outputs else "cls"]
                raw[name] = _flatten(getattr(self, f"{name}_out")(tower), channels // self.per_location)
            for name, value in self.finish_level(level, raw).items():
                per_output[name].append(value)
        joined = {name: torch.cat(values, 1) for name, values in per_output.items()}
        return DenseOutputs(joined["cls"], joined["box"], joined.get("centerness"))

    def finish_level(self, level: int, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn one level's flattened raw outputs into what `DenseOutputs` holds."""
        return raw

    # -- priors, decoding, loss --------------------------------------------------------------------
    @classmethod
    def level_priors(cls, spec: HeadSpec, centers: torch.Tensor, stride: int) -> torch.Tensor:
        """Priors of one level from its cell centres (H * W, 2) in pixels: points by default."""
        return centers

    @classmethod
    def priors(cls, plan: DetectorPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Every level's priors, in the order of the flattened outputs, and each one's stride."""
        priors, strides = [], []
        for level, shape in plan.levels.items():
            stride = 2 ** level
            ys, xs = torch.meshgrid(torch.arange(shape.height, dtype=torch.float32),
                                    torch.arange(shape.width, dtype=torch.float32), indexing="ij")
            centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).add_(0.5).mul_(stride)
            level_priors = cls.level_priors(plan.spec.head, centers, stride)
            priors.append(level_priors)
            strides.append(torch.full((level_priors.shape[0],), float(stride)))
        return torch.cat(priors), torch.cat(strides)

    def decode(self, priors: torch.Tensor, strides: torch.Tensor,
               dense: DenseOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (B, N, 4) in input pixels (not clipped) and scores (B, N, K) in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} must define decode")

    def loss(self, model, dense: DenseOutputs, targets: list[dict]):
        """`detection.losses.LossParts` of a batch (`targets[i]`: ``boxes`` (G, 4), ``labels`` (G,))."""
        raise NotImplementedError(f"{type(self).__name__} must define loss")


def _flatten(prediction: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """(B, A * C, H, W) -> (B, H * W * A, C)."""
    batch, _, height, width = prediction.shape
    prediction = prediction.view(batch, -1, per_anchor, height, width).permute(0, 3, 4, 1, 2)
    return prediction.reshape(batch, -1, per_anchor)


@register_head
class RetinaNetHead(RetinaNetStructure, DenseHead):
    """RetinaNet: anchors per location, box deltas, focal loss (`losses.retinanet_loss`)."""

    @classmethod
    def level_priors(cls, spec, centers, stride):
        shapes = cell_anchors(spec.anchors, stride)
        return (centers[:, None, :].repeat(1, 1, 2) + shapes[None]).reshape(-1, 4)

    def decode(self, priors, strides, dense):
        return decode_deltas(priors, dense.box_regression), torch.sigmoid(dense.class_logits)

    def loss(self, model, dense, targets):
        from archspec.detection.losses import retinanet_loss

        return retinanet_loss(model, dense, targets)


@register_head
class FcosHead(FcosStructure, DenseHead):
    """FCOS: points, distances exp(scale * x) in strides, centerness (`losses.fcos_loss`)."""

    def finish_level(self, level, raw):
        scaled = (self.scales[level] * raw["box"]).clamp(max=FCOS_LOG_DISTANCE_CLAMP)
        return {**raw, "box": torch.exp(scaled), "centerness": raw["centerness"].squeeze(-1)}

    def decode(self, priors, strides, dense):
        boxes = decode_distances(priors, dense.box_regression, strides[:, None])
        scores = torch.sqrt(torch.sigmoid(dense.class_logits) * torch.sigmoid(dense.centerness_logits)[..., None])
        return boxes, scores

    def loss(self, model, dense, targets):
        from archspec.detection.losses import fcos_loss

        return fcos_loss(model, dense, targets)


def cell_anchors(anchors, stride: int) -> torch.Tensor:
    """(A, 4) anchor offsets around a cell centre: scales outer, aspect ratios inner (the numbers
    of `compiler.detector.cell_anchor_array`, which the direct ONNX writer uses)."""
    return torch.from_numpy(cell_anchor_array(anchors, stride))
