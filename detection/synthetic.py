"""A small synthetic COCO-format dataset: coloured shapes on noisy backgrounds.

    synthesize("data/synth", num_train=256, num_val=64)
    synthesize_hard("data/hard", HardPreset(num_train=512))

`synthesize` (the ``easy`` preset) writes ``train/*.png``, ``val/*.png`` and
``annotations/instances_{train,val}.json``. One class per shape kind (square, disc, triangle,
cross, ring, diamond in that order); every box is the tight box of the shape's drawn pixels.
Boxes never overlap, so every object is wholly visible and its box stays tight.

`synthesize_hard` (the ``hard`` preset, `HardPreset`) makes a set on which architectures differ:
look-alike classes (square vs diamond, disc vs ring, triangle vs arrow), objects from about 8
pixels to most of the image, overlap and occlusion with boxes of the *visible* pixels, shapes of
no class, textured backgrounds, noise and colour jitter.

The same seed writes the same bytes. No torch needed, only numpy and Pillow.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


# -- the hard preset ------------------------------------------------------------------------------
HARD_SHAPES = ("square", "diamond", "disc", "ring", "triangle", "arrow", "cross", "frame")
"""Classes of the hard preset, in category order: look-alike pairs side by side (a diamond is a
square turned 45 degrees, a ring a disc with a hole, an arrow a triangle on a stem, a frame a
square with a hole)."""
DISTRACTORS = ("line", "arc", "star", "blob")
"""Shapes of no class drawn among the objects (they occlude, and are never annotated)."""


class HardPreset(BaseModel):
    """Knobs of the hard synthetic benchmark (`archspec data synth --preset hard --knob NAME=VALUE`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train: int = Field(512, ge=0, description="Training images.")
    num_val: int = Field(128, ge=0, description="Validation images.")
    image_size: int = Field(128, ge=32, le=2048, description="Image side in pixels.")
    num_classes: int = Field(8, ge=1, le=len(HARD_SHAPES), description="Classes: the first N of HARD_SHAPES.")
    min_objects: int = Field(2, ge=0, description="Fewest objects placed per image.")
    max_objects: int = Field(8, ge=1, le=50, description="Most objects placed per image.")
    min_side_px: float = Field(8.0, gt=3, description="Smallest object side, pixels.")
    max_side: float = Field(0.8, gt=0, le=1, description="Largest object side, as a fraction of the image side.")
    min_visible: float = Field(0.5, gt=0, le=1, description=(
        "An object keeps at least this fraction of its pixels visible: a later shape that would hide more is "
        "placed elsewhere, so every annotated object is mostly visible and no drawn object goes unannotated."))
    max_overlap_tries: int = Field(20, ge=1, description="Placements tried per shape before it is skipped.")
    distractors: int = Field(3, ge=0, le=50, description="Most shapes of no class per image (0..N, uniform).")
    texture: float = Field(0.6, ge=0, le=1, description="Strength of the background texture (gratings and blobs).")
    noise_std: float = Field(14.0, ge=0, description="Std of the Gaussian pixel noise added at the end (0..255 scale).")
    contrast: tuple[float, float] = Field((0.35, 1.0), description=(
        "Range of an object's colour distance from the background under it, as a fraction of the full step "
        "(low values are faint objects)."))
    colour_jitter: float = Field(0.15, ge=0, le=1, description="Per-image brightness/contrast jitter (fraction).")
    blur: float = Field(0.3, ge=0, le=1, description="Probability that an image is blurred slightly (radius 0.5..1).")
    seed: int = Field(0, description="Same seed, same bytes.")

    @model_validator(mode="after")
    def _ranges(self) -> "HardPreset":
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects {self.min_objects} exceeds max_objects {self.max_objects}")
        if self.min_side_px >= self.max_side * self.image_size:
            raise ValueError(f"min_side_px {self.min_side_px} is not below max_side x image_size "
                             f"({self.max_side * self.image_size:g})")
        low, high = self.contrast
        if not 0 < low <= high <= 1:
            raise ValueError(f"contrast {self.contrast}: need 0 < low <= high <= 1")
        return self


def synthesize_hard(out_dir: str | Path, preset: HardPreset = HardPreset()) -> dict:
    """Write the hard dataset (train and val splits, COCO JSON); returns its paths and counts."""
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    classes = list(HARD_SHAPES[:preset.num_classes])
    summary = {"root": str(out), "classes": classes, "preset": preset.model_dump(mode="json")}
    for split, count in (("train", preset.num_train), ("val", preset.num_val)):
        rng = random.Random(f"archspec-synth-hard:{preset.seed}:{split}")
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image_id = index + 1
            picture, objects = _hard_image(preset, rng)
            name = f"{split}_{image_id:06d}.png"
            with atomic_path(folder / name) as tmp:
                picture.save(tmp, format="PNG", optimize=False)
            images.append({"id": image_id, "file_name": name, "width": preset.image_size,
                           "height": preset.image_size})
            for label, (x0, y0, x1, y1), visible in objects:
                width, height = x1 - x0 + 1, y1 - y0 + 1
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                    "bbox": [x0, y0, width, height], "area": int(visible), "iscrowd": 0})
        categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)]
        data = {"info": {"description": "archspec synthetic shapes (hard preset)",
                         "preset": preset.model_dump(mode="json")},
                "images": images, "annotations": annotations, "categories": categories}
        path = out / "annotations" / f"instances_{split}.json"
        atomic_write_text(path, json.dumps(data, indent=1))
        summary[split] = {"images": len(images), "annotations": len(annotations),
                          "annotation_file": str(path), "image_dir": str(folder)}
    return summary


def _hard_image(preset: HardPreset, rng: random.Random):
    """One picture and its objects ``(label, visible box, visible pixels)``. Shapes are painted
    in order onto an owner map (which shape each pixel shows); boxes come from the owner map
    after every shape is painted, so they bound what is visible."""
    size = preset.image_size
    noise = np.random.default_rng(rng.getrandbits(32))
    pixels = _textured_background(size, preset.texture, rng, noise)
    owner = np.full((size, size), -1, dtype=np.int32)
    drawn: list[int] = []  # pixel count of every painted shape, by owner index
    labels: list[int | None] = []  # class of every painted shape (None: a distractor)
    kinds = [rng.randrange(preset.num_classes) for _ in range(rng.randint(preset.min_objects, preset.max_objects))]
    kinds += [None] * rng.randint(0, preset.distractors)
    rng.shuffle(kinds)
    for label in kinds:
        for _attempt in range(preset.max_overlap_tries):
            mask = _hard_mask(preset, label, rng)
            if mask is None:
                continue
            if not keeps_visible(owner, mask, drawn, labels, preset.min_visible):
                continue
            pixels = _paint(pixels, mask, _object_colour(pixels, mask, preset.contrast, rng))
            owner[mask] = len(drawn)
            drawn.append(int(mask.sum()))
            labels.append(label)
            break
    pixels = _finish(pixels, preset, rng, noise)
    return Image.fromarray(pixels), visible_objects(owner, labels)


def visible_objects(owner: np.ndarray, labels: list[int | None]) -> list[tuple[int, tuple[int, int, int, int], int]]:
    """``(label, tight box of the visible pixels, visible pixel count)`` of every labelled shape
    in `owner` (the index of the shape each pixel shows, -1 for background); shapes painted over
    entirely and distractors (label None) are left out."""
    objects = []
    for index, label in enumerate(labels):
        if label is None:
            continue
        visible = owner == index
        box = _tight_box(visible)
        if box is not None:
            objects.append((label, box, int(visible.sum())))
    return objects


def keeps_visible(owner: np.ndarray, mask: np.ndarray, drawn: list[int], labels: list, min_visible: float) -> bool:
    """Whether painting `mask` leaves every object painted so far at least `min_visible` of its
    pixels visible (distractors may be hidden entirely)."""
    if not drawn:
        return True
    visible = np.bincount(owner[owner >= 0], minlength=len(drawn))
    covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(drawn))
    return all(visible[i] - covered[i] >= min_visible * drawn[i]
               for i in range(len(drawn)) if labels[i] is not None and covered[i])


def _hard_mask(preset: HardPreset, label: int | None, rng: random.Random) -> np.ndarray | None:
    size = preset.image_size
    low, high = math.log(preset.min_side_px), math.log(preset.max_side * size)
    side = math.exp(rng.uniform(low, high))  # log-uniform: as many small objects as large ones
    kind = HARD_SHAPES[label] if label is not None else rng.choice(DISTRACTORS)
    aspect = rng.uniform(0.75, 1.33) if kind in ("disc", "ring", "frame", "square", "blob", "arc") else 1.0
    width, height = max(6, int(side * aspect)), max(6, int(side / aspect))
    if width >= size or height >= size:
        return None
    x0, y0 = rng.randrange(0, size - width), rng.randrange(0, size - height)
    image = Image.new("L", (size, size), 0)
    _draw_hard(ImageDraw.Draw(image), kind, (x0, y0, x0 + width - 1, y0 + height - 1), rng)
    mask = np.asarray(image) > 0
    return mask if mask.sum() >= 6 else None


def _draw_hard(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    thick = max(2, round(min(w, h) * rng.uniform(0.18, 0.3)))
    if kind in ("square", "disc", "triangle", "cross", "diamond"):
        _draw(draw, kind, box)
    elif kind == "ring":  # the hole's width from the shorter side (rings here may be elliptic)
        hole = max(1, min(w, h) // 4)
        draw.ellipse(box, fill=255)
        draw.ellipse((x0 + hole, y0 + hole, x1 - hole, y1 - hole), fill=0)
    elif kind == "arrow":  # a triangle head on a stem: a triangle's look-alike
        head = y0 + h * rng.uniform(0.45, 0.6)
        draw.polygon([(cx, y0), (x1, head), (x0, head)], fill=255)
        draw.rectangle((cx - max(1, w * 0.18), head, cx + max(1, w * 0.18), y1), fill=255)
    elif kind == "frame":  # a square with a square hole: the square's look-alike as the ring is the disc's
        draw.rectangle(box, fill=255)
        draw.rectangle((x0 + thick, y0 + thick, x1 - thick, y1 - thick), fill=0)
    elif kind == "line":
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=255, width=max(1, thick // 2))
        else:
            draw.line((x0, y1, x1, y0), fill=255, width=max(1, thick // 2))
    elif kind == "arc":
        start = rng.uniform(0, 360)
        draw.arc(box, start, start + rng.uniform(90, 220), fill=255, width=max(1, thick // 2))
    elif kind == "star":
        points = []
        for k in range(10):
            radius = 0.5 if k % 2 == 0 else 0.22
            angle = math.pi * k / 5 - math.pi / 2
            points.append((cx + radius * w * math.cos(angle), cy + radius * h * math.sin(angle)))
        draw.polygon(points, fill=255)
    else:  # blob: a few overlapping ellipses
        for _ in range(3):
            ex, ey = rng.uniform(x0, cx), rng.uniform(y0, cy)
            draw.ellipse((ex, ey, ex + w / 2, ey + h / 2), fill=255)


def _textured_background(size: int, strength: float, rng: random.Random, noise: np.random.Generator) -> np.ndarray:
    """A colour ramp plus sinusoidal gratings and soft blobs: edges and texture everywhere, so that
    an edge is no evidence of an object."""
    start, end = np.array(_colour(rng), float), np.array(_colour(rng), float)
    ramp = np.linspace(0, 1, size)[:, None, None]
    pixels = 0.5 * (start * (1 - ramp) + end * ramp) + 0.5 * 110
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    texture = np.zeros((size, size))
    for _ in range(rng.randint(1, 3)):
        angle, frequency, phase = rng.uniform(0, math.pi), rng.uniform(2, 14), rng.uniform(0, 2 * math.pi)
        texture += np.sin(2 * math.pi * frequency * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    for _ in range(rng.randint(2, 6)):
        bx, by, radius = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
        texture += rng.choice((-1.5, 1.5)) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * radius ** 2))
    tint = np.array([rng.uniform(0.5, 1.0) for _ in range(3)])
    pixels = pixels + strength * 30 * texture[:, :, None] * tint
    return np.broadcast_to(pixels, (size, size, 3)).astype(np.float64)


def _object_colour(pixels: np.ndarray, mask: np.ndarray, contrast: tuple[float, float],
                   rng: random.Random) -> np.ndarray:
    """A colour at a random distance from the mean colour under the shape: faint to vivid."""
    under = pixels[mask].mean(axis=0)
    target = np.array([rng.randint(0, 255) for _ in range(3)], float)
    if np.abs(target - under).max() < 60:  # make sure there is a step to take
        target = np.where(under > 127, under - 120, under + 120)
    return under + rng.uniform(*contrast) * (target - under)


def _paint(pixels: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    pixels = pixels.copy()
    pixels[mask] = colour
    return pixels


def _finish(pixels: np.ndarray, preset: HardPreset, rng: random.Random, noise: np.random.Generator) -> np.ndarray:
    """Colour jitter (brightness, contrast), an occasional slight blur, then pixel noise."""
    jitter = preset.colour_jitter
    gain, shift = 1 + rng.uniform(-jitter, jitter), 255 * rng.uniform(-jitter, jitter) / 2
    pixels = (pixels - 128) * gain + 128 + shift
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    if rng.random() < preset.blur:
        radius = rng.uniform(0.5, 1.0)
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    noisy = image.astype(np.float64) + noise.normal(0, preset.noise_std, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
