"""Deploying a detector: one ONNX file from image to `boxes`, `scores`, `labels`.

The network and the decoding (priors, box coding, top-k candidates) come from one of two
exporters: ``direct`` (the default: `compiler.detector.detector_to_onnx` writes them from the
spec, without torch unless trained weights are given) or ``dynamo`` (`torch.onnx` on the built
module, the oracle of the parity tests). The post-processing is then appended as plain ONNX
operators (NonMaxSuppression, ScatterND, TopK, GatherElements), which is the same computation as
`detection.postprocess.select_detections` (see there for the steps). Writing the tail by hand
keeps it independent of which exporter ran and of how torch would translate a data-dependent NMS.

    export_detector(spec, "det.onnx")                     # direct, random weights, no torch
    export_detector(spec, "det.onnx", module=trained)     # direct, the module's weights
    export_detector(spec, "det.onnx", exporter="dynamo")  # torch.onnx; dynamic batch, same metadata
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archspec.compiler.detector import CANDIDATE_OUTPUTS, DirectExportUnsupported, detector_to_onnx
from archspec.compiler.export import (DEFAULT_EXPORTER, ExportFallbackWarning, _check_exporter,
                                      _direct_opset, export_onnx, save_direct, set_metadata, spec_metadata)
from archspec.files import atomic_path

OUTPUTS = ("boxes", "scores", "labels")


def candidate_module(detector):
    """A torch module: images -> top-k decoded boxes (B, n, 4) and class-major scores (B, K, n)
    (what the dynamo exporter traces; torch is imported only here)."""
    from torch import nn

    class CandidateModule(nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, images):
            return self.detector.candidates(self.detector(images))

    return CandidateModule(detector)


def export_detector(spec, path: str | Path, *, module=None, weights=None, input_size=None,
                    dynamic_batch: bool = True, opset: int | None = None, exporter: str = DEFAULT_EXPORTER,
                    seed: int = 0) -> Path:
    """Export a detector spec: weights of `module` (a `detection.model.Detector`), or `weights`
    (its state dict), or random ones (direct: drawn from `seed`; dynamo: the module's
    initialisation). The input is ``images`` (B, 3, H, W) at the spec's input size;
    `input_size`, if given, must be it. A head or neck without an ONNX form of its own falls
    back to the dynamo exporter with an `ExportFallbackWarning`."""
    from archspec.sizes import parse_input_size

    _check_exporter(exporter)
    if input_size is not None and parse_input_size(input_size) != spec.image_size:
        height, width = spec.image_size
        raise ValueError(f"input size {input_size}: a detector is exported at its spec's input_size "
                         f"{height}x{width} (its priors depend on it); change input_size in the spec")
    if exporter == "direct":
        state = module.state_dict() if module is not None else weights
        try:
            model = detector_to_onnx(spec, weights=state, seed=seed, batch=None if dynamic_batch else 1,
                                     opset=_direct_opset(opset))
        except DirectExportUnsupported as exc:
            warnings.warn(f"{exc}; falling back to the dynamo exporter", ExportFallbackWarning, stacklevel=2)
        else:
            append_postprocess(model, spec)
            return save_direct(model, path, spec_metadata(spec, spec.image_size))
    return _export_detector_dynamo(spec, path, module, weights, dynamic_batch, opset)


def _export_detector_dynamo(spec, path, module, weights, dynamic_batch: bool, opset: int | None) -> Path:
    import torch

    from archspec.detection.model import build_detector

    if module is None:
        module = build_detector(spec)
        if weights is not None:
            module.load_state_dict(weights)
    detector = module.eval()
    example = torch.rand(1, spec.backbone.in_channels, *spec.image_size, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # the file appears once complete (post-processing included)
        export_onnx(candidate_module(detector), example, tmp, output_names=list(CANDIDATE_OUTPUTS),
                    dynamic_batch=dynamic_batch, opset=opset, metadata=spec_metadata(spec, spec.image_size))
        model = onnx.load(str(tmp))
        append_postprocess(model, spec)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
    return path


def append_postprocess(model: onnx.ModelProto, spec) -> None:
    """Replace the candidate outputs of `model` by `boxes` (B, D, 4), `scores` (B, D) and
    `labels` (B, D) int64 computed by NMS + top-k, in place."""
    post = spec.postprocess
    outputs = {value.name: value for value in model.graph.output}
    candidate_scores = outputs[CANDIDATE_OUTPUTS[1]]
    dims = candidate_scores.type.tensor_type.shape.dim
    classes, count = dims[1].dim_value, dims[2].dim_value
    limit = min(post.max_detections, classes * count)
    nodes, constants = _postprocess_nodes(count, limit, post)
    model.graph.initializer.extend(constants)
    model.graph.node.extend(nodes)
    batch = dims[0].dim_param or dims[0].dim_value
    del model.graph.output[:]
    model.graph.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, limit, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, limit]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, limit]),
    ])
    set_metadata(model, {"archspec.outputs": "boxes,scores,labels",
                         "archspec.postprocess": "nms+topk (detection.postprocess.select_detections)"})


def _postprocess_nodes(count: int, limit: int, post) -> tuple[list, list]:
    boxes, scores = CANDIDATE_OUTPUTS
    constants = [
        numpy_helper.from_array(np.array([post.max_detections], np.int64), "pp_max_per_class"),
        numpy_helper.from_array(np.array([post.iou_threshold], np.float32), "pp_iou"),
        numpy_helper.from_array(np.array([post.score_threshold], np.float32), "pp_score"),
        numpy_helper.from_array(np.array(post.score_threshold, np.float32), "pp_score_scalar"),
        numpy_helper.from_array(np.array([0], np.int64), "pp_zero"),
        numpy_helper.from_array(np.array([1], np.int64), "pp_one"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "pp_flat_shape"),
        numpy_helper.from_array(np.array([limit], np.int64), "pp_limit"),
        numpy_helper.from_array(np.array(count, np.int64), "pp_count"),
        numpy_helper.from_array(np.array([4], np.int64), "pp_four"),
        numpy_helper.from_array(np.array([2], np.int64), "pp_axis2"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "pp_minus_one"),
        numpy_helper.from_array(np.array(0.0, np.float32), "pp_zero_f"),
        numpy_helper.from_array(np.array(-1, np.int64), "pp_minus_one_i"),
    ]
    node = helper.make_node
    nodes = [
        node("NonMaxSuppression", [boxes, scores, "pp_max_per_class", "pp_iou", "pp_score"], ["pp_selected"]),
        # a (B, K, n) mask with 1 where NMS kept (image, class, box)
        node("Shape", ["pp_selected"], ["pp_selected_shape"]),
        node("Slice", ["pp_selected_shape", "pp_zero", "pp_one"], ["pp_selected_count"]),
        node("ConstantOfShape", ["pp_selected_count"], ["pp_ones"],
             value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        node("Shape", [scores], ["pp_scores_shape"]),
        node("ConstantOfShape", ["pp_scores_shape"], ["pp_zeros"],
             value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        node("ScatterND", ["pp_zeros", "pp_selected", "pp_ones"], ["pp_kept_mask"]),
        node("Cast", ["pp_kept_mask"], ["pp_kept"], to=TensorProto.BOOL),
        node("Where", ["pp_kept", scores, "pp_minus_one"], ["pp_kept_scores"]),
        # best `limit` kept entries per image
        node("Reshape", ["pp_kept_scores", "pp_flat_shape"], ["pp_flat"]),
        node("TopK", ["pp_flat", "pp_limit"], ["pp_top_scores", "pp_top_index"], axis=-1, largest=1, sorted=1),
        node("Div", ["pp_top_index", "pp_count"], ["pp_labels_raw"]),
        node("Mod", ["pp_top_index", "pp_count"], ["pp_box_index"]),
        node("Unsqueeze", ["pp_box_index", "pp_axis2"], ["pp_box_index3"]),
        node("Shape", ["pp_box_index"], ["pp_index_shape"]),
        node("Concat", ["pp_index_shape", "pp_four"], ["pp_gather_shape"], axis=0),
        node("Expand", ["pp_box_index3", "pp_gather_shape"], ["pp_gather_index"]),
        node("GatherElements", [boxes, "pp_gather_index"], ["pp_top_boxes"], axis=1),
        # rows that NMS did not keep: score 0, label -1, zero box
        node("Greater", ["pp_top_scores", "pp_score_scalar"], ["pp_valid"]),
        node("Unsqueeze", ["pp_valid", "pp_axis2"], ["pp_valid3"]),
        node("Where", ["pp_valid3", "pp_top_boxes", "pp_zero_f"], ["boxes"]),
        node("Where", ["pp_valid", "pp_top_scores", "pp_zero_f"], ["scores"]),
        node("Where", ["pp_valid", "pp_labels_raw", "pp_minus_one_i"], ["labels"]),
    ]
    return nodes, constants


def export_detector_spec(spec, path: str | Path, *, input_size=None, dynamic_batch: bool = True,
                         opset: int | None = None, module=None, weights=None, exporter: str = DEFAULT_EXPORTER,
                         seed: int = 0) -> Path:
    """`compiler.export.EXPORTERS` entry for ``type: detector``."""
    return export_detector(spec, path, module=module, weights=weights, input_size=input_size,
                           dynamic_batch=dynamic_batch, opset=opset, exporter=exporter, seed=seed)
