"""Box ops and NMS: hand-computed values and exact agreement with ONNX Runtime's NMS."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from archspec.detection.boxes import (batched_nms, box_iou, decode_distances, encode_distances, generalized_iou, nms)


def test_iou_and_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert box_iou(a, b).item() == pytest.approx(1 / 7)
    # hull 3x3 = 9, union 7: GIoU = 1/7 - 2/9
    assert generalized_iou(a, b).item() == pytest.approx(1 / 7 - 2 / 9)
    far = torch.tensor([[10.0, 10.0, 11.0, 11.0]])
    assert box_iou(a, far).item() == 0.0 and generalized_iou(a, far).item() < 0


def test_distance_coding_round_trips():
    gen = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 2, generator=gen) * 100
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(50, 2, generator=gen) * 50], dim=1)
    points = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert torch.allclose(decode_distances(points, encode_distances(points, boxes, 8.0), 8.0), boxes, atol=1e-4)


def onnx_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Run ONNX NonMaxSuppression (one batch; one score row per class) in ONNX Runtime."""
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "score"], ["selected"])],
        "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, None])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
        initializer=[helper.make_tensor("max", TensorProto.INT64, [1], [100000]),
                     helper.make_tensor("iou", TensorProto.FLOAT, [1], [iou_threshold]),
                     helper.make_tensor("score", TensorProto.FLOAT, [1], [-1e9])])
    # IR version 10 (ONNX 1.16): readable by every ONNX Runtime this project supports.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"boxes": boxes[None], "scores": scores[None]})[0]


@pytest.mark.parametrize("seed", range(8))
def test_class_aware_nms_keeps_exactly_what_onnx_runtime_keeps(seed):
    rng = np.random.default_rng(seed)
    count, classes = 300, 4
    corners = rng.uniform(0, 200, (count, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 80, (count, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    labels = rng.integers(0, classes, count)
    per_class = np.zeros((classes, count), np.float32) - 1.0  # a box scores only in its own class
    per_class[labels, np.arange(count)] = scores
    selected = onnx_nms(boxes, per_class, 0.5)
    selected = selected[per_class[selected[:, 1], selected[:, 2]] >= 0]  # drop the placeholder rows
    ours = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5)
    assert ours.tolist() == selected[:, 2].tolist()
    assert labels[ours.numpy()].tolist() == selected[:, 1].tolist()


def test_nms_edge_cases():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    same = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert nms(same, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]  # ties: lowest index first
    assert nms(same, torch.tensor([0.1, 0.9, 0.5]), 1.0).tolist() == [1, 2, 0]  # IoU 1 is not > 1
