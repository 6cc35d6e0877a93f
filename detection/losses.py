"""Training targets and losses of the dense heads.

RetinaNet (Lin et al. 2017): anchors with IoU >= `positive_iou` with a box are positives (and
each box's best anchors, so no box goes unmatched), below `negative_iou` negatives, the rest
ignored; sigmoid focal loss over positives and negatives, smooth L1 on the deltas (or GIoU on the
decoded boxes) over positives; both divided by the number of positives.

FCOS (Tian et al. 2019): a location is a positive for a box when it lies inside the box, within
`center_sampling_radius` strides of its centre, and the box's largest side distance from it falls
in the level's range (4 to 8 strides; the shallowest level starts at 0, the deepest has no upper
bound); ambiguous locations take the smallest box. Focal loss for classes, GIoU loss weighted by
the centerness target for boxes, binary cross-entropy for centerness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from archspec.detection.boxes import box_area, box_iou, decode_deltas, decode_distances, encode_deltas, generalized_iou
from archspec.detection.model import DenseOutputs, Detector


@dataclass
class LossParts:
    classification: torch.Tensor
    box: torch.Tensor
    centerness: torch.Tensor | None
    positives: int

    @property
    def total(self) -> torch.Tensor:
        total = self.classification + self.box
        return total + self.centerness if self.centerness is not None else total

    def as_dict(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "cls": float(self.classification.detach()),
               "box": float(self.box.detach())}
        if self.centerness is not None:
            out["ctr"] = float(self.centerness.detach())
        return out


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Summed focal loss of independent sigmoids (targets in {0, 1}, same shape as logits)."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = probability * targets + (1 - probability) * (1 - targets)
    loss = cross_entropy * (1 - p_true) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.sum()


def detection_loss(model: Detector, dense: DenseOutputs, targets: list[dict]) -> LossParts:
    """The loss of a batch: `targets[i]` has ``boxes`` (G, 4) in input pixels and ``labels`` (G,)."""
    return model.head.loss(model, dense, targets)


# -- RetinaNet -----------------------------------------------------------------------------
def match_anchors(anchors: torch.Tensor, boxes: torch.Tensor, positive_iou: float,
                  negative_iou: float) -> torch.Tensor:
    """Index of the matched box per anchor; -1 negative, -2 ignored."""
    if boxes.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    iou = box_iou(boxes, anchors)  # (G, N)
    best_iou, matched = iou.max(dim=0)
    matched = matched.clone()
    matched[best_iou < positive_iou] = -2
    matched[best_iou < negative_iou] = -1
    # low-quality matches: every box keeps the anchors it overlaps most (ties included)
    best_per_box = iou.max(dim=1, keepdim=True).values
    box_index, anchor_index = torch.nonzero((iou == best_per_box) & (best_per_box > 0), as_tuple=True)
    matched[anchor_index] = box_index
    return matched


def retinanet_loss(model: Detector, dense: DenseOutputs, targets: list[dict]) -> LossParts:
    head = model.spec.head
    anchors = model.priors
    cls_terms, box_terms, positives = [], [], 0
    for i, target in enumerate(targets):
        boxes, labels = target["boxes"].to(anchors), target["labels"].to(anchors.device)
        matched = match_anchors(anchors, boxes, head.positive_iou, head.negative_iou)
        positive = matched >= 0
        valid = matched >= -1
        class_targets = torch.zeros_like(dense.class_logits[i])
        class_targets[positive, labels[matched[positive]]] = 1.0
        cls_terms.append(sigmoid_focal_loss(dense.class_logits[i][valid], class_targets[valid],
                                            head.focal_alpha, head.focal_gamma))
        positives += int(positive.sum())
        if positive.any():
            predicted = dense.box_regression[i][positive]
            matched_boxes = boxes[matched[positive]]
            if head.box_loss == "giou":
                decoded = decode_deltas(anchors[positive], predicted)
                box_terms.append((1 - generalized_iou(decoded, matched_boxes)).sum())
            else:
                wanted = encode_deltas(anchors[positive], matched_boxes)
                box_terms.append(F.smooth_l1_loss(predicted, wanted, beta=head.smooth_l1_beta, reduction="sum"))
    normaliser = max(1.0, float(positives))
    box = torch.stack(box_terms).sum() if box_terms else dense.box_regression.sum() * 0
    return LossParts(torch.stack(cls_terms).sum() / normaliser, box / normaliser, None, positives)


# -- FCOS ----------------------------------------------------------------------------------
def level_ranges(model: Detector) -> torch.Tensor:
    """(N, 2) range of the largest box-side distance each location regresses, in pixels."""
    strides = model.prior_strides
    low, high = 4 * strides, 8 * strides
    low = torch.where(strides == strides.min(), torch.zeros_like(low), low)
    high = torch.where(strides == strides.max(), torch.full_like(high, float("inf")), high)
    return torch.stack([low, high], dim=-1)


def assign_locations(points: torch.Tensor, strides: torch.Tensor, ranges: torch.Tensor, boxes: torch.Tensor,
                     radius: float) -> torch.Tensor:
    """Index of the box each location regresses, -1 for background."""
    if boxes.numel() == 0:
        return torch.full((points.shape[0],), -1, dtype=torch.long, device=points.device)
    x, y = points[:, 0, None], points[:, 1, None]  # (N, 1)
    left, top = x - boxes[None, :, 0], y - boxes[None, :, 1]
    right, bottom = boxes[None, :, 2] - x, boxes[None, :, 3] - y
    distances = torch.stack([left, top, right, bottom], dim=-1)  # (N, G, 4)
    inside = distances.amin(dim=-1) > 0
    if radius > 0:
        center_x, center_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        reach = radius * strides[:, None]
        inside &= ((x - center_x[None]).abs() < reach) & ((y - center_y[None]).abs() < reach)
    largest = distances.amax(dim=-1)
    in_range = (largest >= ranges[:, :1]) & (largest <= ranges[:, 1:])
    area = box_area(boxes)[None].expand(points.shape[0], -1)
    area = torch.where(inside & in_range, area, torch.full_like(area, float("inf")))
    smallest, matched = area.min(dim=1)
    return torch.where(torch.isinf(smallest), torch.full_like(matched, -1), matched)


def centerness_targets(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    left, top = points[:, 0] - boxes[:, 0], points[:, 1] - boxes[:, 1]
    right, bottom = boxes[:, 2] - points[:, 0], boxes[:, 3] - points[:, 1]
    horizontal = torch.minimum(left, right) / torch.maximum(left, right)
    vertical = torch.minimum(top, bottom) / torch.maximum(top, bottom)
    return torch.sqrt((horizontal * vertical).clamp(min=0))


def fcos_loss(model: Detector, dense: DenseOutputs, targets: list[dict]) -> LossParts:
    head = model.spec.head
    points, strides, ranges = model.priors, model.prior_strides, level_ranges(model)
    cls_terms, box_terms, ctr_terms, weights, positives = [], [], [], [], 0
    for i, target in enumerate(targets):
        boxes, labels = target["boxes"].to(points), target["labels"].to(points.device)
        matched = assign_locations(points, strides, ranges, boxes, head.center_sampling_radius)
        positive = matched >= 0
        class_targets = torch.zeros_like(dense.class_logits[i])
        class_targets[positive, labels[matched[positive]]] = 1.0
        cls_terms.append(sigmoid_focal_loss(dense.class_logits[i], class_targets, head.focal_alpha, head.focal_gamma))
        positives += int(positive.sum())
        if positive.any():
            where, goal = points[positive], boxes[matched[positive]]
            decoded = decode_distances(where, dense.box_regression[i][positive], strides[positive][:, None])
            wanted_centerness = centerness_targets(where, goal)
            box_terms.append(((1 - generalized_iou(decoded, goal)) * wanted_centerness).sum())
            weights.append(wanted_centerness.sum())
            ctr_terms.append(F.binary_cross_entropy_with_logits(dense.centerness_logits[i][positive],
                                                                wanted_centerness, reduction="sum"))
    normaliser = max(1.0, float(positives))
    zero = dense.box_regression.sum() * 0
    box = torch.stack(box_terms).sum() / max(float(torch.stack(weights).sum()), 1e-6) if box_terms else zero
    centerness = torch.stack(ctr_terms).sum() / normaliser if ctr_terms else dense.centerness_logits.sum() * 0
    return LossParts(torch.stack(cls_terms).sum() / normaliser, box, centerness, positives)
