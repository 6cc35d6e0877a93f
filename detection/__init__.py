"""detection: detectors built on compiled backbones (issue 7, in progress).

So far: box operations and class-aware NMS with ONNX NonMaxSuppression semantics (`boxes`).
"""
