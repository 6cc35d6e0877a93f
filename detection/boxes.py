"""Box operations written here (torchvision's compiled ops are unavailable): IoU, GIoU,
FCOS-style distance coding and class-aware non-maximum suppression.

Boxes are (x1, y1, x2, y2) in pixels. NMS follows ONNX's NonMaxSuppression semantics so that the
deployed graph keeps exactly the boxes PyTorch keeps: candidates in descending score order
(ties broken by index), a box is suppressed when its IoU with a kept box of the same class is
strictly greater than the threshold.
"""

from __future__ import annotations

import math

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter, union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU, (N, 4) x (M, 4) -> (N, M); 0 where the union is empty."""
    inter, union = _intersection_union(a, b)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(union))


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU of matching rows, (N, 4) x (N, 4) -> (N,), in [-1, 1]."""
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = box_area(a) + box_area(b) - inter
    eps = torch.finfo(a.dtype).eps
    iou = inter / union.clamp(min=eps)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=-1)
    return iou - (hull - union) / hull.clamp(min=eps)


def encode_distances(points: torch.Tensor, boxes: torch.Tensor, stride: float | torch.Tensor = 1.0) -> torch.Tensor:
    """FCOS targets: (left, top, right, bottom) distances from points (N, 2) to boxes (N, 4), / stride."""
    left_top = points - boxes[:, :2]
    right_bottom = boxes[:, 2:] - points
    return torch.cat([left_top, right_bottom], dim=-1) / stride


def decode_distances(points: torch.Tensor, distances: torch.Tensor, stride: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Inverse of `encode_distances`."""
    distances = distances * stride
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept boxes, in descending score order (ties: lower index first)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    order = torch.tensor(order, dtype=torch.long, device=boxes.device)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS: boxes of different labels never suppress each other. Returns kept
    indices grouped by label (ascending), each group in descending score order, which is the
    order ONNX NonMaxSuppression reports them when classes are separate score rows."""
    kept = [torch.nonzero(labels == label).flatten()[nms(boxes[labels == label], scores[labels == label],
                                                           iou_threshold)]
            for label in torch.unique(labels).tolist()]
    return torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long, device=boxes.device)


BOX_DELTA_CLAMP = math.log(1000.0 / 16)
"""Largest log-scale change a decoded box may apply (detectron2's clamp), so that an untrained
head cannot overflow `exp`."""


def encode_deltas(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """R-CNN box deltas (dx, dy, dw, dh) taking `anchors` (N, 4) to `boxes` (N, 4)."""
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    centers_x, centers_y = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
    target_w, target_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    target_x, target_y = boxes[:, 0] + 0.5 * target_w, boxes[:, 1] + 0.5 * target_h
    return torch.stack([(target_x - centers_x) / widths, (target_y - centers_y) / heights,
                        torch.log(target_w / widths), torch.log(target_h / heights)], dim=-1)


def decode_deltas(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode_deltas`; `deltas` may have leading batch dimensions (..., N, 4)."""
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    centers_x, centers_y = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
    x = deltas[..., 0] * widths + centers_x
    y = deltas[..., 1] * heights + centers_y
    half_w = 0.5 * torch.exp(deltas[..., 2].clamp(max=BOX_DELTA_CLAMP)) * widths
    half_h = 0.5 * torch.exp(deltas[..., 3].clamp(max=BOX_DELTA_CLAMP)) * heights
    return torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], dim=-1)
