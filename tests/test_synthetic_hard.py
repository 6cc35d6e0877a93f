"""The hard synthetic preset (issue 19): deterministic bytes, boxes of the visible pixels, the
variety it promises (look-alike classes, 8 px to most of the image, occlusion), the CLI's knobs,
and the easy preset left byte-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from archspec.detection.synthetic import HARD_SHAPES, HardPreset, keeps_visible, synthesize, synthesize_hard, \
    visible_objects

SMALL = HardPreset(num_train=6, num_val=3, image_size=64, min_side_px=6, seed=3)


def digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (run markers excluded)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith(".archspec-run"):
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory) -> tuple[Path, dict]:
    """A 48-image hard set at 128 px (the preset's size): enough objects for the statistics."""
    root = tmp_path_factory.mktemp("hard")
    synthesize_hard(root, HardPreset(num_train=0, num_val=48, seed=0))
    return root, json.loads((root / "annotations" / "instances_val.json").read_text())


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    synthesize_hard(tmp_path / "a", SMALL)
    synthesize_hard(tmp_path / "b", SMALL)
    synthesize_hard(tmp_path / "c", SMALL.model_copy(update={"seed": 4}))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_easy_preset_keeps_the_bytes_it_had_before_the_hard_preset(tmp_path):
    # the digest of synthesize(num_train=3, num_val=2, seed=7) written by the generator as it was
    # before the hard preset existed (commit 85bf451)
    synthesize(tmp_path, num_train=3, num_val=2, seed=7)
    assert digest(tmp_path) == "689b8396d3b06112bd653bac60998bcd8b9693509cbd0350065c6ccc66079dfc"


def test_boxes_bound_the_visible_pixels_of_an_occluded_shape():
    owner = np.full((20, 20), -1)
    owner[2:12, 2:12] = 0  # a 10 x 10 square
    owner[2:12, 7:15] = 1  # painted later over its right half
    owner[15:18, 15:18] = 2  # a distractor
    objects = visible_objects(owner, [4, 0, None])
    assert objects == [(4, (2, 2, 6, 11), 50), (0, (7, 2, 14, 11), 80)]


def test_a_shape_that_would_hide_most_of_an_object_is_refused():
    owner = np.full((10, 10), -1)
    owner[0:10, 0:4] = 0  # 40 pixels, all visible
    over_half = np.zeros((10, 10), bool)
    over_half[0:10, 0:3] = True  # would hide 30 of 40
    under_half = np.zeros((10, 10), bool)
    under_half[0:5, 0:4] = True  # would hide 20 of 40
    assert not keeps_visible(owner, over_half, [40], [1], 0.5)
    assert keeps_visible(owner, under_half, [40], [1], 0.5)
    assert keeps_visible(owner, over_half, [40], [None], 0.5)  # distractors may vanish


def test_the_set_has_every_class_small_and_large_objects_and_occlusion(hard_set):
    _root, data = hard_set
    assert [c["name"] for c in data["categories"]] == list(HARD_SHAPES)
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, len(HARD_SHAPES) + 1))
    sides = [max(a["bbox"][2:]) for a in data["annotations"]]
    assert min(sides) <= 10 and max(sides) >= 0.6 * 128
    overlapping = 0
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
        assert 0 < a["area"] <= w * h  # visible pixels inside their box
    for boxes in by_image.values():
        for i, (x0, y0, w0, h0) in enumerate(boxes):
            for x1, y1, w1, h1 in boxes[i + 1:]:
                overlapping += x0 < x1 + w1 and x1 < x0 + w0 and y0 < y1 + h1 and y1 < y0 + h0
    assert overlapping >= 5


def test_every_size_and_seed_generates(tmp_path):
    for size, seed in ((32, 0), (48, 1), (96, 2)):
        preset = HardPreset(num_train=3, num_val=0, image_size=size, min_side_px=6, seed=seed)
        summary = synthesize_hard(tmp_path / f"{size}", preset)
        assert summary["train"]["images"] == 3


def cli(capsys, *args: str) -> tuple[int, str]:
    """`archspec data synth ARGS` in this process (the same boundary as the console script): exit
    code and stderr."""
    from archspec.cli import main

    capsys.readouterr()
    try:
        main(["data", "synth", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_cli_knobs_reach_the_preset_and_bad_ones_are_one_line(tmp_path, capsys):
    code, err = cli(capsys, "--out", str(tmp_path / "k"), "--preset", "hard", "--train", "2", "--val", "1",
                    "--size", "64", "--seed", "3", "--knob", "min_side_px=6", "--knob", "contrast=[0.5, 0.9]")
    assert code == 0, err
    info = json.loads((tmp_path / "k" / "annotations" / "instances_train.json").read_text())["info"]["preset"]
    assert info["contrast"] == [0.5, 0.9] and info["image_size"] == 64 and info["seed"] == 3
    for bad in (["--knob", "bogus=1"], ["--knob", "contrast=[0.9,0.5]"], ["--knob", "noise_std=-1"],
                ["--preset", "easy", "--knob", "texture=0.1"], ["--preset", "easy", "--classes", "7"]):
        if bad[0] != "--preset":
            bad = ["--preset", "hard", *bad]
        code, err = cli(capsys, "--out", str(tmp_path / "bad"), *bad)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (bad, err)
