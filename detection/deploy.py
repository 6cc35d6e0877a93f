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
import math
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


DRAWING_MIN_SIDE = 640
"""Pictures are drawn at least this many pixels on their shorter side (small inputs are scaled
up by a whole factor, pixels kept sharp), so that labels stay readable on 128-pixel images."""


def draw(detections: ImageDetections, path: str | Path, min_score: float = 0.0) -> Path:
    """The image with the boxes scoring at least `min_score` drawn, labelled with class and
    score; line width and label size follow the picture's size. Saved atomically, as PNG, to `path`."""
    from PIL import Image, ImageDraw, ImageFont

    picture = read_image(detections.path)
    factor = max(1, math.ceil(DRAWING_MIN_SIDE / max(1, min(picture.size))))
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    side = min(picture.size)
    font = ImageFont.load_default(size=max(12, round(side / 32)))
    width = max(2, round(side / 240))
    pen = ImageDraw.Draw(picture)
    kept = [(box, score, label, name) for box, score, label, name in
            zip(detections.boxes, detections.scores, detections.labels, detections.names) if score >= min_score]
    for box, score, label, name in sorted(kept, key=lambda item: item[1]):  # best on top
        colour = PALETTE[label % len(PALETTE)]
        x0, y0, x1, y1 = (value * factor for value in box)
        pen.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        tag_y = y0 - (bottom - top) - 2 * width if y0 - (bottom - top) - 2 * width >= 0 else y0
        pen.rectangle((x0, tag_y, x0 + right - left + 2 * width, tag_y + bottom - top + 2 * width), fill=colour)
        pen.text((x0 + width - left, tag_y + width - top), text, fill=(0, 0, 0) if sum(colour) > 400 else (255, 255, 255),
                 font=font)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def drawn_count(found: Iterable[ImageDetections], min_score: float) -> int:
    """Detections at or above the drawing threshold, over all images."""
    return sum(score >= min_score for item in found for score in item.scores)


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
