"""From candidates to detections: class-aware NMS, then the best `max_detections` per image.

`select_detections` is the PyTorch reference of the post-processing that `detection.export`
writes into the ONNX graph, step for step:

1. ONNX NonMaxSuppression over class-major scores (B, K, n): per image and class, candidates
   scoring above `score_threshold`, at most `max_detections` kept per class;
2. kept (image, class, box) entries keep their score, every other entry becomes -1;
3. per image, TopK over the flattened (K * n) scores: label = index // n, box = index % n;
4. rows that did not survive NMS get score 0, label -1 and a zero box.

Outputs have a fixed shape (B, D, ...) with D = min(max_detections, K * n), so a dynamic batch
exports cleanly; valid rows are those with label >= 0.
"""

from __future__ import annotations

import torch

from archspec.detection.boxes import nms


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, *, score_threshold: float, iou_threshold: float,
                      max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`boxes` (B, n, 4), `scores` (B, K, n) -> boxes (B, D, 4), scores (B, D), labels (B, D)."""
    batch, classes, count = scores.shape
    kept = torch.full_like(scores, -1.0)
    for image in range(batch):
        for label in range(classes):
            row = scores[image, label]
            candidates = torch.nonzero(row > score_threshold).flatten()
            if candidates.numel() == 0:
                continue
            keep = candidates[nms(boxes[image, candidates], row[candidates], iou_threshold)][:max_detections]
            kept[image, label, keep] = row[keep]
    limit = min(max_detections, classes * count)
    top_scores, top_index = kept.reshape(batch, -1).topk(limit, dim=1)
    labels, box_index = top_index // count, top_index % count
    top_boxes = torch.gather(boxes, 1, box_index[..., None].expand(-1, -1, 4))
    valid = top_scores > score_threshold
    return (torch.where(valid[..., None], top_boxes, torch.zeros_like(top_boxes)),
            torch.where(valid, top_scores, torch.zeros_like(top_scores)),
            torch.where(valid, labels, torch.full_like(labels, -1)))


def detect(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a `detection.model.Detector` end to end in PyTorch (eval mode, no gradients)."""
    post = model.spec.postprocess
    with torch.no_grad():
        boxes, scores = model.candidates(model(images))
    return select_detections(boxes, scores, score_threshold=post.score_threshold,
                             iou_threshold=post.iou_threshold, max_detections=post.max_detections)


def valid_rows(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Per image, the detections with label >= 0 as {"boxes", "scores", "labels"}."""
    out = []
    for image in range(labels.shape[0]):
        mask = labels[image] >= 0
        out.append({"boxes": boxes[image][mask], "scores": scores[image][mask], "labels": labels[image][mask]})
    return out


class EndToEnd(torch.nn.Module):
    """A detector with its decoding and NMS: images -> boxes, scores, labels (what the exported
    ONNX file computes), for timing torch eager against ONNX Runtime."""

    def __init__(self, spec):
        super().__init__()
        from archspec.detection.model import build_detector

        self.detector = build_detector(spec)

    def forward(self, images):
        return detect(self.detector, images)


def end_to_end(spec) -> EndToEnd:
    """`EndToEnd` of a detector spec."""
    return EndToEnd(spec)
