"""Running an exported detector in ONNX Runtime on image files.

    detector = OnnxDetector("det.onnx", provider="cpu")
    found = detector.detect_files(["a.jpg", "b.png"])        # per image: boxes in its own pixels
    write_outputs(found, "out/")                               # drawn images + detections.json

The ONNX file carries its spec (metadata), so the input size and the class names come from it.
Images are letterboxed exactly as in training (`detection.coco.letterbox`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archspec.detection.coco import letterbox, read_image
from archspec.files import RunFolder, atomic_path, atomic_write_text, read_bytes

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


@dataclass
class ImageDetections:
    path: Path
    size: tuple[int, int]
    """(height, width) of the original image."""
    boxes: list[list[float]]
    """x1, y1, x2, y2 in the original image's pixels."""
    scores: list[float]
    labels: list[int]
    names: list[str]

    def as_dict(self) -> dict:
        return {"image": str(self.path), "height": self.size[0], "width": self.size[1],
                "detections": [{"box": [round(v, 2) for v in box], "score": round(score, 4), "label": label,
                                "class": name}
                               for box, score, label, name in zip(self.boxes, self.scores, self.labels, self.names)]}


class OnnxDetector:
    """An exported detector (images -> boxes, scores, labels) in an ORT session."""

    def __init__(self, path: str | Path, *, provider: str = "cpu", threads: int | None = None):
        from archspec.compiler.export import spec_from_onnx
        from archspec.compiler.runtime import create_session

        self.path = Path(path)
        self.spec = spec_from_onnx(self.path)
        if self.spec.type != "detector":
            raise ValueError(f"{self.path}: exported from a {self.spec.type!r} spec, not a detector")
        # the bytes, not the path: ONNX Runtime then never opens other files (external data)
        self.session = create_session(read_bytes(self.path, kind="ONNX file"), provider=provider, threads=threads)
        names = [value.name for value in self.session.get_inputs()]
        outputs = {value.name for value in self.session.get_outputs()}
        if names != ["images"] or not {"boxes", "scores", "labels"} <= outputs:
            raise ValueError(f"{self.path}: not an exported detector (inputs {names}, outputs {sorted(outputs)}; "
                             "expected images -> boxes, scores, labels)")
        self.class_names = self.spec.class_names or [str(i) for i in range(self.spec.num_classes)]

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 3, H, W) float32 letterboxed images -> boxes, scores, labels (padded rows: label -1)."""
        boxes, scores, labels = self.session.run(["boxes", "scores", "labels"], {"images": images})
        return boxes, scores, labels

    def detect_files(self, paths) -> list[ImageDetections]:
        """Detections of every image file (see `iter_detections`)."""
        return list(self.iter_detections(paths))

    def iter_detections(self, paths) -> Iterator[ImageDetections]:
        """Detections of each image file in turn: one image is decoded and held at a time, so
        memory does not grow with the number of files."""
        for path in map(Path, paths):
            picture = read_image(path)
            tensor, box = letterbox(picture, self.spec.image_size)
            boxes, scores, labels = self.run(tensor.numpy()[None].astype(np.float32))
            keep = labels[0] >= 0
            found = (boxes[0][keep] / box.scale).tolist()
            kept_labels = [int(v) for v in labels[0][keep]]
            yield ImageDetections(path, (picture.height, picture.width), found, [float(s) for s in scores[0][keep]],
                                  kept_labels, [self.class_names[v] for v in kept_labels])


def draw(detections: ImageDetections, path: str | Path, min_score: float = 0.0) -> Path:
    """The image with its boxes and labels drawn, saved (atomically, as PNG) to `path`."""
    from PIL import ImageDraw

    picture = read_image(detections.path)
    pen = ImageDraw.Draw(picture)
    for box, score, label, name in zip(detections.boxes, detections.scores, detections.labels, detections.names):
        if score < min_score:
            continue
        colour = PALETTE[label % len(PALETTE)]
        pen.rectangle(box, outline=colour, width=2)
        pen.text((box[0] + 2, max(0, box[1] - 11)), f"{name} {score:.2f}", fill=colour)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def write_outputs(found: Iterable[ImageDetections], out_dir: str | Path, min_score: float = 0.0,
                  folder: RunFolder | None = None) -> Path:
    """Drawn images (``<stem>.png``) and ``detections.json`` in `out_dir`; returns the JSON path.
    `found` may be a generator: each image is drawn as it comes. With `folder` (the run folder
    held by `archspec detect`) every file is recorded in its marker before it is written. An
    output that would replace one of the input images is refused."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    rows = []
    for item in found:
        stem = item.path.stem
        while stem in used:
            stem += "_"
        used.add(stem)
        target = out / f"{stem}.png"
        if target.resolve() == item.path.resolve():
            raise ValueError(f"{item.path}: the drawn image would replace this input; choose another --out")
        if folder is not None:
            folder.record(target.name)
        draw(item, target, min_score)
        rows.append(item.as_dict())
    path = out / "detections.json"
    if folder is not None:
        folder.record(path.name)
    atomic_write_text(path, json.dumps(rows, indent=2) + "\n")
    return path
