"""COCO-format data: a checked dataset reader, batching, and COCOeval.

    dataset = open_split("data/synth", "val", spec, train=False)
    images, targets = next(iter(make_loader(dataset, batch_size=8)))
    metrics = coco_evaluate(dataset.coco, results)     # the 12 standard numbers and the table

Images are letterboxed to the detector's input size: resized by one factor (`scale`) so the whole
image fits, then padded at the bottom and right, so boxes map back by dividing by `scale`.
Annotations are checked when the dataset opens: missing image files, boxes outside the image or
with no area, and unknown category ids are a `DataError` naming the file and the id. Category ids
map to contiguous labels 0..K-1 in ascending id order. Crowd boxes are not training targets.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
"""Per-channel normalisation of [0, 1] RGB (ImageNet statistics, as the backbones expect)."""
BOX_TOLERANCE = 1.0
"""Pixels a box may stick out of its image (rounding in annotation tools) before it is an error."""
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class DataError(ValueError):
    """Unusable data; the message names the file and the image or annotation id."""


@dataclass(frozen=True)
class Letterbox:
    scale: float
    height: int
    """Height of the resized image inside the padded input."""
    width: int


def letterbox(image: Image.Image, size: tuple[int, int]) -> tuple[torch.Tensor, Letterbox]:
    """Resize (one factor, whole image fits) and pad bottom/right to `size`; normalised CHW."""
    height, width = size
    scale = min(height / image.height, width / image.width)
    new_h, new_w = max(1, round(image.height * scale)), max(1, round(image.width * scale))
    if (new_h, new_w) != (image.height, image.width):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    pixels = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    out = torch.zeros(3, height, width)
    out[:, :new_h, :new_w] = pixels
    return out, Letterbox(scale, new_h, new_w)


MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width x height) read; checked from the header before decoding (a 140 KB PNG
can hold 12000 x 12000 pixels, 430 MB once decoded)."""


def read_image(path: Path) -> Image.Image:
    """An image file as RGB: a regular file under the image cap, its pixel count checked from
    the header before any decoding."""
    from archspec.files import FileRefused, read_bytes

    try:
        data = read_bytes(path, kind="image")
    except FileRefused as exc:
        raise DataError(str(exc)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is lower
            image = Image.open(io.BytesIO(data))
        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: the image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,} "
                                "pixels are read")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


class CocoDetection(torch.utils.data.Dataset):
    """Images and boxes of one COCO-format split, letterboxed to `image_size`.

    Item i: (image (3, H, W) float, target dict: ``boxes`` (G, 4) x1y1x2y2 in input pixels,
    ``labels`` (G,) contiguous, ``image_id``, ``scale``, ``orig_size`` (h, w))."""

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, *, image_size, train: bool,
                 flip_prob: float = 0.5, seed: int = 0):
        from archspec.sizes import parse_input_size

        self.image_dir, self.annotation_file = Path(image_dir), Path(annotation_file)
        self.image_size = parse_input_size(image_size)
        self.train, self.flip_prob, self.seed, self.epoch = train, flip_prob, seed, 0
        self.coco = load_coco(self.annotation_file)
        category_ids = sorted(self.coco.cats)
        self.label_to_category_id = category_ids
        self.category_to_label = {cat: label for label, cat in enumerate(category_ids)}
        self.category_names = [self.coco.cats[cat].get("name", str(cat)) for cat in category_ids]
        self.image_ids = sorted(self.coco.imgs)
        self._check()

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Flips are drawn from (seed, epoch, index): call before each training epoch."""
        self.epoch = epoch

    def __getitem__(self, index: int):
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = read_image(self.image_dir / info["file_name"])
        if (image.width, image.height) != (info["width"], info["height"]):
            raise DataError(f"{self.image_dir / info['file_name']}: the image is {image.width}x{image.height} but "
                            f"{self.annotation_file.name} says {info['width']}x{info['height']} (image {image_id})")
        tensor, box = letterbox(image, self.image_size)
        boxes, labels = self._targets(image_id)
        boxes = boxes * box.scale
        if self.train and random.Random(f"{self.seed}:{self.epoch}:{index}").random() < self.flip_prob:
            tensor[:, :box.height, :box.width] = tensor[:, :box.height, :box.width].flip(-1)
            boxes = torch.stack([box.width - boxes[:, 2], boxes[:, 1], box.width - boxes[:, 0], boxes[:, 3]], dim=-1)
        target = {"boxes": boxes, "labels": labels, "image_id": image_id, "scale": box.scale,
                  "orig_size": (image.height, image.width)}
        return tensor, target

    def _targets(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in rows], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.category_to_label[a["category_id"]] for a in rows], dtype=torch.long)
        return boxes, labels

    # -- checks ----------------------------------------------------------------------------
    def _check(self) -> None:
        missing = [info["file_name"] for info in self.coco.imgs.values()
                   if not (self.image_dir / info["file_name"]).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DataError(f"{self.image_dir}: {len(missing)} image file(s) listed in {self.annotation_file.name} "
                            f"are missing: {shown}")
        for ann in self.coco.anns.values():
            self._check_annotation(ann)

    def _check_annotation(self, ann: dict) -> None:
        where = f"{self.annotation_file}: annotation {ann.get('id')} (image {ann.get('image_id')})"
        if ann.get("image_id") not in self.coco.imgs:
            raise DataError(f"{where}: image_id is not among the images")
        if ann.get("category_id") not in self.category_to_label:
            raise DataError(f"{where}: category_id {ann.get('category_id')} is not among the categories "
                            f"{sorted(self.category_to_label)}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            raise DataError(f"{where}: bbox must be four finite numbers [x, y, width, height], not {bbox!r}")
        x, y, width, height = bbox
        info = self.coco.imgs[ann["image_id"]]
        if width <= 0 or height <= 0:
            raise DataError(f"{where}: bbox {bbox} has no area")
        if (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + width > info["width"] + BOX_TOLERANCE
                or y + height > info["height"] + BOX_TOLERANCE):
            raise DataError(f"{where}: bbox {bbox} lies outside the {info['width']}x{info['height']} image")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_coco(path: str | Path):
    """pycocotools' COCO for an annotation file, with readable errors (and no printing). The
    file is read through `archspec.files` (a regular file under the cap); its structure is
    checked before pycocotools indexes it: every entry an object, ids integers and unique,
    file names relative paths inside the image folder."""
    from pycocotools.coco import COCO

    from archspec.files import FileRefused, read_text
    from archspec.parsing import load_json

    path = Path(path)
    try:
        data = load_json(read_text(path, kind="COCO annotation file"))
    except FileRefused as exc:
        raise DataError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: invalid JSON: {str(exc)[:200] or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO annotation file is a JSON object, not {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the {key!r} list")
    _check_entries(path, data["images"], "images", ("id", "file_name", "width", "height"))
    _check_entries(path, data["annotations"], "annotations", ("id", "image_id", "category_id", "bbox"))
    _check_entries(path, data["categories"], "categories", ("id",))
    for i, image in enumerate(data["images"]):
        for key in ("width", "height"):
            if not (_is_int(image[key]) and image[key] > 0):
                raise DataError(f"{path}: image {image['id']} (images[{i}]): {key} must be a positive integer, "
                                f"not {image[key]!r}")
        name = image["file_name"]
        if not (isinstance(name, str) and name and not Path(name).is_absolute() and ".." not in Path(name).parts):
            raise DataError(f"{path}: images[{i}].file_name must be a relative path inside the image folder, "
                            f"not {name!r}")
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {ann['id']} (annotations[{i}])"
        for key in ("image_id", "category_id"):
            if not _is_int(ann[key]):
                raise DataError(f"{where}: {key} must be an integer, not {ann[key]!r}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            raise DataError(f"{where}: bbox must be four finite numbers [x, y, width, height], not {bbox!r}")
        if "iscrowd" in ann and (not _is_int(ann["iscrowd"]) or ann["iscrowd"] not in (0, 1)):
            raise DataError(f"{where}: iscrowd must be 0 or 1, not {ann['iscrowd']!r}")
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entries(path: Path, entries: list, key: str, required: tuple[str, ...]) -> None:
    """Every entry of a COCO list is an object with the `required` fields and a unique integer id."""
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: {key}[{i}] must be an object, not {type(entry).__name__}")
        missing = [field for field in required if field not in entry]
        if missing:
            raise DataError(f"{path}: {key}[{i}] needs {', '.join(required)} (missing {', '.join(missing)})")
        if not _is_int(entry["id"]):
            raise DataError(f"{path}: {key}[{i}].id must be an integer, not {entry['id']!r}")
        if entry["id"] in seen:
            raise DataError(f"{path}: {key}[{i}].id {entry['id']} is used twice")
        seen.add(entry["id"])


def split_paths(data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of a split: ``<split>/`` and ``annotations/instances_<split>.json``,
    or COCO's own ``<split>2017/`` and ``annotations/instances_<split>2017.json``."""
    root = Path(data_dir)
    for suffix in ("", "2017"):
        annotations = root / "annotations" / f"instances_{split}{suffix}.json"
        if annotations.is_file():
            return root / f"{split}{suffix}", annotations
    raise DataError(f"{root}: no annotations/instances_{split}.json (or instances_{split}2017.json); "
                    "make a dataset with `archspec data synth --out DIR` or point at a COCO folder")


def open_split(data_dir: str | Path, split: str, spec, *, train: bool, seed: int = 0) -> CocoDetection:
    """The `split` of a COCO-format folder, at the detector spec's input size."""
    image_dir, annotations = split_paths(data_dir, split)
    return CocoDetection(image_dir, annotations, image_size=spec.image_size, train=train, seed=seed)


def collate(batch):
    """Stack images; keep targets as a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


def batches(dataset, indices: list[int], size: int):
    """Collated mini-batches of `dataset` at `indices`, in that order, `size` images each (the
    last one shorter)."""
    for at in range(0, len(indices), size):
        yield collate([dataset[i] for i in indices[at:at + size]])


def seeded_subset(rng: random.Random, total: int, wanted: int) -> list[int]:
    """`wanted` indices out of `total`, seeded, in increasing order (all when fewer)."""
    return sorted(rng.sample(range(total), min(wanted, total)))


def make_loader(dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, num_workers: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                       collate_fn=collate, num_workers=num_workers)


# -- evaluation ----------------------------------------------------------------------------
def to_coco_results(dataset: CocoDetection, target: dict, boxes: torch.Tensor, scores: torch.Tensor,
                    labels: torch.Tensor) -> list[dict]:
    """Detections of one image (input pixels, contiguous labels) as COCO result rows
    (original pixels, xywh, category ids)."""
    scale = target["scale"]
    rows = []
    for box, score, label in zip((boxes / scale).tolist(), scores.tolist(), labels.tolist()):
        x0, y0, x1, y1 = box
        rows.append({"image_id": int(target["image_id"]), "category_id": dataset.label_to_category_id[int(label)],
                     "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                     "score": round(float(score), 5)})
    return rows


def coco_evaluate(coco_gt, results: list[dict]) -> dict:
    """COCOeval (bbox) over every image of `coco_gt`: the 12 standard numbers by name, the
    printed ``table`` and a ``message`` when there was nothing to evaluate (all zeros then)."""
    from pycocotools.cocoeval import COCOeval

    zeros = {name: 0.0 for name in METRIC_NAMES}
    if not coco_gt.getImgIds():
        return {**zeros, "table": "", "message": "the image set is empty: nothing to evaluate (AP 0)"}
    if not results:
        return {**zeros, "table": "", "message": "no detections: every AP is 0"}
    unknown = sorted({row["image_id"] for row in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"detections for image ids not in the ground truth: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    if not coco_gt.getAnnIds():
        return {**zeros, "table": "", "message": "the ground truth has no boxes: every AP is 0"}
    results = [dict(row) for row in results]  # loadRes adds keys to the rows it is given
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        detections = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    table = "\n".join(line for line in printed.getvalue().splitlines() if line.startswith(" Average"))
    # COCOeval reports -1 for an area range without ground truth; that is "no data", shown as 0
    values = {name: max(0.0, float(v)) for name, v in zip(METRIC_NAMES, evaluator.stats)}
    return {**values, "table": table, "message": ""}


def coco_subset(coco, image_ids: list[int]):
    """A COCO ground truth restricted to `image_ids` (AP over the subset, not the whole split)."""
    from pycocotools.coco import COCO

    keep = set(image_ids)
    subset = COCO()
    subset.dataset = {**{k: v for k, v in coco.dataset.items() if k not in ("images", "annotations")},
                      "images": [img for img in coco.dataset["images"] if img["id"] in keep],
                      "annotations": [a for a in coco.dataset.get("annotations", []) if a["image_id"] in keep],
                      "categories": coco.dataset.get("categories", [])}
    with contextlib.redirect_stdout(io.StringIO()):
        subset.createIndex()
    return subset
