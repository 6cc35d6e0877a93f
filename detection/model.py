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

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from archspec.detector import Detector as DetectorSpec
from archspec.detector import FPNNeck, output_level
from archspec.compiler.detector import DetectorPlan, plan_detector
from archspec.registry import Registry
from archspec.detection.heads import FCOS_LOG_DISTANCE_CLAMP, DenseHead, DenseOutputs, cell_anchors, head_module_class

__all__ = ["FCOS_LOG_DISTANCE_CLAMP", "DenseHead", "DenseOutputs", "Detector", "FPN", "build_detector", "cell_anchors",
           "make_priors", "NECK_MODULES"]


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


NECK_MODULES: Registry[Callable[[DetectorPlan], nn.Module | None]] = Registry("neck module")
"""Neck `type` tag -> builder of its module from the plan (None: levels pass through unchanged)."""
NECK_MODULES.register("fpn", FPN)
NECK_MODULES.register("none", lambda plan: None)


class Detector(nn.Module):
    """A detector built from a spec. ``forward(images)`` -> `DenseOutputs`; `candidates`
    decodes them; `detection.postprocess.select_detections` applies NMS."""

    def __init__(self, spec: DetectorSpec, plan: DetectorPlan | None = None):
        super().__init__()
        from archspec.compiler import build

        self.spec = spec
        self.plan = plan = plan or plan_detector(spec)
        self.backbone = build(spec.backbone)
        self.neck = NECK_MODULES[spec.neck.type](plan)
        self.head = head_module_class(spec.head)(plan)
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
        boxes, scores = self.head.decode(self.priors, self.prior_strides, dense)
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
    """The head's priors (anchors (N, 4) or points (N, 2)) and each one's stride (N,)."""
    return head_module_class(plan.spec.head).priors(plan)


def build_detector(spec: DetectorSpec) -> Detector:
    """A torch detector for a detector spec (random initialisation)."""
    return Detector(spec)
