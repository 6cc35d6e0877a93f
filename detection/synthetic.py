"""A small synthetic COCO-format dataset: coloured shapes on noisy backgrounds.

    synthesize("data/synth", num_train=256, num_val=64)

writes ``train/*.png``, ``val/*.png`` and ``annotations/instances_{train,val}.json``. One class
per shape kind (square, disc, triangle, cross, ring, diamond in that order); every box is the
tight box of the shape's drawn pixels. Boxes never overlap, so every object is wholly visible
and its box stays tight. The same seed writes the same bytes. No torch needed, only numpy and Pillow.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from archspec.files import atomic_path, atomic_write_text

SHAPES = ("square", "disc", "triangle", "cross", "ring", "diamond")
MIN_GAP = 1
"""Pixels kept free between any two boxes."""


def synthesize(out_dir: str | Path, *, num_train: int = 256, num_val: int = 64, image_size: int = 128,
               num_classes: int = 3, max_objects: int = 4, min_size: float = 0.1, max_size: float = 0.45,
               seed: int = 0) -> dict:
    """Write the dataset; returns its paths and counts. Object sides are drawn between
    `min_size` and `max_size` times the image side."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes {num_classes}: between 1 and {len(SHAPES)} shape kinds are available")
    if image_size < 32:
        raise ValueError(f"image_size {image_size}: at least 32 pixels")
    if num_train < 0 or num_val < 0 or max_objects < 1:
        raise ValueError("num_train and num_val must be >= 0 and max_objects >= 1")
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    summary = {"root": str(out), "classes": list(SHAPES[:num_classes])}
    for split, count, offset in (("train", num_train, 0), ("val", num_val, 1)):
        rng = random.Random(f"archspec-synth:{seed}:{split}")
        data = _split(out, split, count, image_size, num_classes, max_objects, (min_size, max_size), rng)
        path = out / "annotations" / f"instances_{split}.json"
        atomic_write_text(path, json.dumps(data, indent=1))
        summary[split] = {"images": len(data["images"]), "annotations": len(data["annotations"]),
                          "annotation_file": str(path), "image_dir": str(out / split)}
    return summary


def _split(out: Path, split: str, count: int, size: int, num_classes: int, max_objects: int,
           size_range: tuple[float, float], rng: random.Random) -> dict:
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1
        picture, objects = _image(size, num_classes, max_objects, size_range, rng)
        name = f"{split}_{image_id:06d}.png"
        with atomic_path(folder / name) as tmp:
            picture.save(tmp, format="PNG", optimize=False)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for label, (x0, y0, x1, y1) in objects:
            width, height = x1 - x0 + 1, y1 - y0 + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [x0, y0, width, height], "area": width * height, "iscrowd": 0})
    categories = [{"id": i + 1, "name": SHAPES[i], "supercategory": "shape"} for i in range(num_classes)]
    return {"info": {"description": "archspec synthetic shapes"}, "images": images,
            "annotations": annotations, "categories": categories}


def _background(size: int, rng: random.Random) -> np.ndarray:
    noise = np.random.default_rng(rng.getrandbits(32))
    start, end = np.array(_colour(rng), float), np.array(_colour(rng), float)
    ramp = np.linspace(0, 1, size)[:, None, None]
    pixels = start * (1 - ramp) + end * ramp
    pixels = 0.5 * pixels + 0.5 * 110 + noise.normal(0, 12, (size, size, 3))
    return np.broadcast_to(pixels, (size, size, 3)).clip(0, 255).astype(np.uint8)


def _image(size: int, num_classes: int, max_objects: int, size_range, rng: random.Random):
    picture = Image.fromarray(_background(size, rng))
    boxes: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(rng.randint(1, max_objects)):
        label = rng.randrange(num_classes)
        for _attempt in range(30):
            side = rng.uniform(*size_range) * size
            aspect = rng.uniform(0.7, 1.4) if SHAPES[label] in ("square", "disc") else 1.0
            width, height = max(6, int(side * aspect)), max(6, int(side / aspect))
            if width >= size or height >= size:
                continue
            x0, y0 = rng.randrange(0, size - width), rng.randrange(0, size - height)
            mask = Image.new("L", (size, size), 0)
            _draw(ImageDraw.Draw(mask), SHAPES[label], (x0, y0, x0 + width - 1, y0 + height - 1))
            box = _tight_box(np.asarray(mask))
            if box is None or any(_near(box, other) for other in boxes):
                continue
            picture.paste(Image.new("RGB", (size, size), _colour(rng, bright=True)), mask=mask)
            boxes.append(box)
            objects.append((label, box))
            break
    return picture, objects


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    thick = max(2, (x1 - x0) // 4)
    if shape == "square":
        draw.rectangle(box, fill=255)
    elif shape == "disc":
        draw.ellipse(box, fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "cross":
        draw.rectangle((cx - thick / 2, y0, cx + thick / 2, y1), fill=255)
        draw.rectangle((x0, cy - thick / 2, x1, cy + thick / 2), fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse((x0 + thick, y0 + thick, x1 - thick, y1 - thick), fill=0)
    else:  # diamond
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _near(a, b) -> bool:
    """Whether two inclusive pixel boxes overlap or come closer than `MIN_GAP`."""
    return not (a[2] + MIN_GAP < b[0] or b[2] + MIN_GAP < a[0] or a[3] + MIN_GAP < b[1] or b[3] + MIN_GAP < a[1])


def _colour(rng: random.Random, bright: bool = False) -> tuple[int, int, int]:
    low = 120 if bright else 0
    colour = [rng.randint(low, 255) for _ in range(3)]
    if bright:
        colour[rng.randrange(3)] = rng.randint(0, 60)  # saturated, so shapes stand out from grey-ish backgrounds
    return tuple(colour)
