"""detection: one-stage detectors on compiled backbones.

    spec = archspec.load("examples/detectors/fcos_tiny.yaml")
    model = detection.model.build_detector(spec)            # backbone -> FPN -> shared head
    detection.train.train(spec, "data/synth", "runs/fcos")  # seeded, resumable, COCOeval per epoch
    detection.export.export_detector(spec, "det.onnx", module=model)   # NMS inside the graph

Modules: `boxes` (IoU, box coding, NMS with ONNX semantics), `model`, `losses`, `postprocess`,
`export`, `synthetic` and `coco` (data and COCOeval), `train`, `checkpoint`, `deploy` (ORT runner).
Shapes and costs come from `compiler.detector`, without torch.
"""

from archspec.compiler.export import EXPORTERS


def _export_detector_spec(spec, path, **options):
    """The ``detector`` ONNX exporter (`detection.export.export_detector_spec`), imported when
    used: the exporter's onnx import costs a second that training and search workers never need."""
    from archspec.detection.export import export_detector_spec

    return export_detector_spec(spec, path, **options)


EXPORTERS.register("detector", _export_detector_spec)
