"""detection: one-stage detectors on compiled backbones.

    spec = archspec.load("examples/detectors/fcos_tiny.yaml")
    model = detection.model.build_detector(spec)            # backbone -> FPN -> shared head
    detection.train.train(spec, "data/synth", "runs/fcos")  # seeded, resumable, COCOeval per epoch
    detection.export.export_detector(spec, "det.onnx", module=model)   # NMS inside the graph

Modules: `boxes` (IoU, box coding, NMS with ONNX semantics), `model`, `losses`, `postprocess`,
`export`, `synthetic` and `coco` (data and COCOeval), `train`, `checkpoint`, `deploy` (ORT runner).
Shapes and costs come from `compiler.detector`, without torch.
"""

from archspec.detection import export as _export  # noqa: F401  (registers the ``detector`` ONNX exporter)
