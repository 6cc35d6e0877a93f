"""Detector modules: compiled backbone -> FPN (or none) -> dense head shared over levels.

    model = build_detector(spec)                # a torch module
    dense = model(images)                       # DenseOutputs, every level flattened and concatenated
    boxes, scores = model.candidates(dense)     # decoded, top-k per image before NMS

Shapes come from `compiler.detector.plan_detector` (the same plan the analytic costs use), so the
neck sizes itself from the backbone's output shapes. Predictions are flattened level by level,
then row-major over the grid, then over the anchors of a location; `priors` (anchors or points)
follow the same order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from archspec.detector import Detector as DetectorSpec
from archspec.detector import FPNNeck, output_level
from archspec.compiler.detector import GROUP_NORM_GROUPS, DetectorPlan, plan_detector
from archspec.detection.boxes import decode_deltas, decode_distances

FCOS_LOG_DISTANCE_CLAMP = 12.0
"""FCOS distances are exp(scale * x) strides; clamping x keeps an untrained head finite."""


class DenseOutputs(NamedTuple):
    """Raw head outputs for a batch, levels concatenated (N locations x anchors)."""

    class_logits: torch.Tensor
    """(B, N, K) classification logits."""
    box_regression: torch.Tensor
    """(B, N, 4): RetinaNet deltas (dx, dy, dw, dh); FCOS distances (l, t, r, b) in strides."""
    centerness_logits: torch.Tensor | None
    """(B, N) FCOS centerness logits; None for RetinaNet."""


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling + add, 3x3 output convs, stride-2 extras."""

    def __init__(self, plan: DetectorPlan):
        super().__init__()
        neck: FPNNeck = plan.spec.neck
        width = neck.channels
        self.in_features = list(neck.in_features)
        self.levels = [output_level(name) for name in self.in_features]
        self.extra_from_output = neck.extra_from == "output"
        shapes = plan.backbone_outputs
        self.lateral = nn.ModuleList(nn.Conv2d(shapes[name].channels, width, 1) for name in self.in_features)
        self.output = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in self.in_features)
        extra_in = width if self.extra_from_output else shapes[self.in_features[-1]].channels
        extras = []
        for _ in range(self.levels[-1] + 1, neck.max_level + 1):
            extras.append(nn.Conv2d(extra_in, width, 3, stride=2, padding=1))
            extra_in = width
        self.extra = nn.ModuleList(extras)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        inputs = [features[name] for name in self.in_features]
        inner = self.lateral[-1](inputs[-1])
        outputs = [self.output[-1](inner)]
        for i in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral[i](inputs[i])
            # sizes are those of the lateral, not 2x: odd sizes round up at every stride-2 step
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[i](inner))
        source = outputs[-1] if self.extra_from_output else inputs[-1]
        for i, conv in enumerate(self.extra):
            source = conv(source if i == 0 else F.relu(source))
            outputs.append(source)
        return outputs


class DenseHead(nn.Module):
    """Classification and box towers shared by every level (RetinaNet / FCOS)."""

    def __init__(self, plan: DetectorPlan):
        super().__init__()
        head = plan.spec.head
        in_channels = next(iter(plan.levels.values())).channels
        width, anchors = plan.head_width, plan.anchors_per_location
        self.anchors, self.num_classes, self.is_fcos = anchors, plan.spec.num_classes, head.type == "fcos"
        self.cls_tower = self._tower(head, in_channels, width)
        self.box_tower = self._tower(head, in_channels, width)
        tower_out = width if head.convs else in_channels
        self.cls_out = nn.Conv2d(tower_out, anchors * self.num_classes, 3, padding=1)
        self.box_out = nn.Conv2d(tower_out, anchors * 4, 3, padding=1)
        self.centerness_out = nn.Conv2d(tower_out, 1, 3, padding=1) if self.is_fcos else None
        self.scales = nn.Parameter(torch.ones(len(plan.levels))) if self.is_fcos else None
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - head.prior_prob) / head.prior_prob))

    @staticmethod
    def _tower(head, in_channels: int, width: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(head.convs):
            layers.append(nn.Conv2d(in_channels, width, 3, padding=1))
            if head.norm == "group_norm":
                layers.append(nn.GroupNorm(GROUP_NORM_GROUPS, width))
            layers.append(nn.ReLU(inplace=True))
            in_channels = width
        return nn.Sequential(*layers)

    def forward(self, features: list[torch.Tensor]) -> DenseOutputs:
        logits, boxes, centerness = [], [], []
        for level, feature in enumerate(features):
            cls_feature, box_feature = self.cls_tower(feature), self.box_tower(feature)
            logits.append(_flatten(self.cls_out(cls_feature), self.num_classes))
            regression = _flatten(self.box_out(box_feature), 4)
            if self.is_fcos:
                scaled = (self.scales[level] * regression).clamp(max=FCOS_LOG_DISTANCE_CLAMP)
                regression = torch.exp(scaled)
                centerness.append(_flatten(self.centerness_out(box_feature), 1).squeeze(-1))
            boxes.append(regression)
        return DenseOutputs(torch.cat(logits, 1), torch.cat(boxes, 1),
                            torch.cat(centerness, 1) if self.is_fcos else None)


def _flatten(prediction: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """(B, A * C, H, W) -> (B, H * W * A, C)."""
    batch, _, height, width = prediction.shape
    prediction = prediction.view(batch, -1, per_anchor, height, width).permute(0, 3, 4, 1, 2)
    return prediction.reshape(batch, -1, per_anchor)


class Detector(nn.Module):
    """A detector built from a spec. ``forward(images)`` -> `DenseOutputs`; `candidates`
    decodes them; `detection.postprocess.select_detections` applies NMS."""

    def __init__(self, spec: DetectorSpec, plan: DetectorPlan | None = None):
        super().__init__()
        from archspec.compiler import build

        self.spec = spec
        self.plan = plan = plan or plan_detector(spec)
        self.backbone = build(spec.backbone)
        self.neck = FPN(plan) if isinstance(spec.neck, FPNNeck) else None
        self.head = DenseHead(plan)
        self.level_names = [f"C{level}" for level in plan.levels]
        priors, strides = make_priors(plan)
        self.register_buffer("priors", priors, persistent=False)
        self.register_buffer("prior_strides", strides, persistent=False)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.spec.image_size

    def forward(self, images: torch.Tensor) -> DenseOutputs:
        features = self.backbone(images)
        levels = self.neck(features) if self.neck is not None else [features[n] for n in self.level_names]
        return self.head(levels)

    def decode(self, dense: DenseOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (B, N, 4) in input pixels, clipped to the image, and scores (B, N, K) in [0, 1]."""
        if self.head.is_fcos:
            boxes = decode_distances(self.priors, dense.box_regression, self.prior_strides[:, None])
            scores = torch.sqrt(torch.sigmoid(dense.class_logits) * torch.sigmoid(dense.centerness_logits)[..., None])
        else:
            boxes = decode_deltas(self.priors, dense.box_regression)
            scores = torch.sigmoid(dense.class_logits)
        height, width = self.image_size
        limits = boxes.new_tensor([width, height, width, height])
        return torch.minimum(boxes.clamp(min=0), limits), scores

    def candidates(self, dense: DenseOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The `pre_nms_top_k` boxes of each image by best class score: boxes (B, n, 4) and
        class-major scores (B, K, n), the layout of ONNX NonMaxSuppression."""
        boxes, scores = self.decode(dense)
        count = min(self.spec.postprocess.pre_nms_top_k, boxes.shape[1])
        top = scores.amax(dim=-1).topk(count, dim=1).indices
        boxes = torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4))
        scores = torch.gather(scores, 1, top[..., None].expand(-1, -1, scores.shape[-1]))
        return boxes, scores.transpose(1, 2)


def make_priors(plan: DetectorPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors (N, 4) for RetinaNet or points (N, 2) for FCOS, and each one's stride (N,)."""
    head = plan.spec.head
    priors, strides = [], []
    for level, shape in plan.levels.items():
        stride = 2 ** level
        ys, xs = torch.meshgrid(torch.arange(shape.height, dtype=torch.float32),
                                torch.arange(shape.width, dtype=torch.float32), indexing="ij")
        centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).add_(0.5).mul_(stride)
        if head.type == "fcos":
            level_priors = centers
        else:
            shapes = cell_anchors(head.anchors, stride)
            level_priors = (centers[:, None, :].repeat(1, 1, 2) + shapes[None]).reshape(-1, 4)
        priors.append(level_priors)
        strides.append(torch.full((level_priors.shape[0],), float(stride)))
    return torch.cat(priors), torch.cat(strides)


def cell_anchors(anchors, stride: int) -> torch.Tensor:
    """(A, 4) anchor offsets around a cell centre: scales outer, aspect ratios inner."""
    rows = []
    for i in range(anchors.scales_per_octave):
        side = anchors.size * stride * 2 ** (i / anchors.scales_per_octave)
        for ratio in anchors.aspect_ratios:
            half_w, half_h = side / math.sqrt(ratio) / 2, side * math.sqrt(ratio) / 2
            rows.append([-half_w, -half_h, half_w, half_h])
    return torch.tensor(rows, dtype=torch.float32)


def build_detector(spec: DetectorSpec) -> Detector:
    """A torch detector for a detector spec (random initialisation)."""
    return Detector(spec)
