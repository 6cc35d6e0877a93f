"""Data -> training -> evaluation -> ONNX deployment, and the bad inputs along the way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import archspec
from archspec.detection.checkpoint import CheckpointError, load_checkpoint
from archspec.detection.coco import CocoDetection, DataError, coco_evaluate, letterbox, load_coco, open_split
from archspec.detection.synthetic import synthesize
from archspec.detection.train import TrainOptions, evaluate, train
from archspec.files import RunFolder

from tests.conftest import ROOT, cli_in_process

TINY_SPEC = ROOT / "examples" / "detectors" / "fcos_tiny.yaml"
QUICK = TrainOptions(epochs=2, batch_size=8, max_steps_per_epoch=3, warmup_steps=2, learning_rate=2e-3)
SHARES_TRAINED = pytest.mark.xdist_group("pipeline-trained")
"""Under xdist, the tests that read the module fixture run on one worker: trained once, not once per worker."""
# The commands below run in this process (cli_in_process): what they print and return is under
# test here, not the process (tests/test_cli.py runs the command as users do).


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, num_train=24, num_val=8, seed=3)
    return root


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "fcos"
    torch.manual_seed(0)
    result = train(archspec.load(TINY_SPEC), synth, run, QUICK, progress=False)
    return run, result


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


# -- synthetic data and the reader -------------------------------------------------------------
def test_synth_is_deterministic_and_boxes_are_tight(tmp_path):
    first = synthesize(tmp_path / "a", num_train=6, num_val=2, seed=7)
    synthesize(tmp_path / "b", num_train=6, num_val=2, seed=7)
    synthesize(tmp_path / "c", num_train=6, num_val=2, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    data = json.loads(Path(first["train"]["annotation_file"]).read_text())
    assert {c["id"] for c in data["categories"]} == {1, 2, 3}
    assert len(data["annotations"]) >= 6
    for ann in data["annotations"]:
        image = data["images"][ann["image_id"] - 1]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"] and w > 0 and h > 0
        pixels = np.asarray(Image.open(tmp_path / "a" / "train" / image["file_name"]), dtype=np.int32)
        inside = pixels[y:y + h, x:x + w]
        # tight: the box's border rows/columns contain the shape's colour (not only background)
        colour = np.median(inside[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2].reshape(-1, 3), axis=0)
        for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
            assert (np.abs(edge - colour).sum(axis=-1) < 40).any()


def test_reader_letterboxes_and_flips(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (200, 100), (255, 0, 0)).save(tmp_path / "images" / "wide.png")
    annotations = {"images": [{"id": 5, "file_name": "wide.png", "width": 200, "height": 100}],
                   "annotations": [{"id": 1, "image_id": 5, "category_id": 7, "bbox": [10, 20, 40, 30]},
                                   {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1}],
                   "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    dataset = CocoDetection(tmp_path / "images", tmp_path / "ann.json", image_size=100, train=False)
    image, target = dataset[0]
    assert image.shape == (3, 100, 100) and target["scale"] == 0.5 and target["orig_size"] == (100, 200)
    assert target["labels"].tolist() == [1]  # category 7 -> label 1; the crowd box is no target
    assert target["boxes"].tolist() == [[5.0, 10.0, 25.0, 25.0]]
    assert dataset.label_to_category_id == [3, 7] and dataset.category_names == ["a", "b"]
    assert (image[:, 50:] == 0).all() and (image[:, :50] != 0).any()  # padded below the resized image
    flipping = CocoDetection(tmp_path / "images", tmp_path / "ann.json", image_size=100, train=True, flip_prob=1.0)
    flipped, target = flipping[0]
    assert target["boxes"].tolist() == [[100 - 25.0, 10.0, 100 - 5.0, 25.0]]
    assert torch.equal(flipped[:, :50, :], image[:, :50, :].flip(-1))


def _write(tmp_path, annotations, files=("a.png",)):
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in files:
        Image.new("RGB", (64, 48)).save(tmp_path / "img" / name)
    path = tmp_path / "ann.json"
    path.write_text(annotations if isinstance(annotations, str) else json.dumps(annotations))
    return tmp_path / "img", path


def _doc(**changes):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
           "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}],
           "categories": [{"id": 1, "name": "x"}]}
    doc.update(changes)
    return doc


@pytest.mark.parametrize("doc, words", [
    (_doc(images=[{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                  {"id": 2, "file_name": "gone.png", "width": 64, "height": 48}]), "missing: gone.png"),
    (_doc(annotations=[{"id": 9, "image_id": 1, "category_id": 1, "bbox": [60, 2, 10, 10]}]),
     "annotation 9 (image 1): bbox [60, 2, 10, 10] lies outside the 64x48 image"),
    (_doc(annotations=[{"id": 9, "image_id": 1, "category_id": 4, "bbox": [1, 2, 10, 10]}]),
     "annotation 9 (image 1): category_id 4 is not among the categories [1]"),
    (_doc(annotations=[{"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 2, 0, 10]}]), "has no area"),
    ('{"images": [', "invalid JSON at line 1"),
    (_doc(categories=None), "missing the 'categories' list"),
])
def test_bad_data_is_a_clear_error(tmp_path, doc, words):
    images, annotations = _write(tmp_path, doc)
    with pytest.raises(DataError) as info:
        CocoDetection(images, annotations, image_size=64, train=True)
    assert words in str(info.value) and "ann.json" in str(info.value)


def test_missing_split_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match="archspec data synth"):
        open_split(tmp_path, "train", archspec.load(TINY_SPEC), train=True)


# -- COCO evaluation ----------------------------------------------------------------------------
def test_coco_evaluate_perfect_empty_and_no_images(synth):
    coco = load_coco(synth / "annotations" / "instances_val.json")
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.anns.values()]
    metrics = coco_evaluate(coco, perfect)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert len(metrics["table"].splitlines()) == 12 and metrics["message"] == ""
    none = coco_evaluate(coco, [])
    assert none["AP"] == 0 and none["AR100"] == 0 and "no detections" in none["message"]
    empty = load_coco(_write_empty(synth.parent / "empty.json"))
    assert "empty" in coco_evaluate(empty, perfect[:1])["message"]


def _write_empty(path: Path) -> Path:
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    return path


# -- training, evaluation, deployment ----------------------------------------------------------
@SHARES_TRAINED
def test_training_lowers_the_loss_and_writes_checkpoints(trained):
    run, result = trained
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert {p.name for p in run.iterdir()} >= {"last.pt", "best.pt", "spec.yaml", "history.jsonl"}
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert archspec.load(run / "spec.yaml") == archspec.load(TINY_SPEC)


@SHARES_TRAINED
def test_the_recorded_ap_is_what_the_saved_weights_score(trained, synth):
    """The history's last AP50 is recomputed independently from last.pt's weights."""
    from archspec.detection.model import build_detector

    run, result = trained
    spec = archspec.load(run / "spec.yaml")
    model = build_detector(spec)
    model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
    metrics = evaluate(model, open_split(synth, "val", spec, train=False))
    assert metrics["AP50"] == pytest.approx(result.history[-1]["AP50"], abs=1e-9)
    assert metrics["AP"] == pytest.approx(result.history[-1]["AP"], abs=1e-9)


@SHARES_TRAINED
def test_eval_cli_prints_the_coco_table(trained, synth):
    run, _ = trained
    result = cli_in_process("eval", run, "--data", synth, "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}


@SHARES_TRAINED
def test_onnx_detections_match_pytorch_on_the_validation_set(trained, synth, tmp_path):
    """The deployed graph (decoding + NMS in ONNX) gives the same boxes (1e-3) and labels as PyTorch."""
    import onnx

    from archspec.detection.deploy import OnnxDetector
    from archspec.detection.export import export_detector
    from archspec.detection.model import build_detector
    from archspec.detection.postprocess import detect

    run, _ = trained
    spec = archspec.load(TINY_SPEC)
    model = build_detector(spec)
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    model.eval()
    path = export_detector(spec, tmp_path / "det.onnx", module=model)
    onnx.checker.check_model(str(path), full_check=True)
    deployed = OnnxDetector(path)
    dataset = open_split(synth, "val", spec, train=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    boxes, scores, labels = deployed.run(images.numpy())
    want_boxes, want_scores, want_labels = detect(model, images)
    assert labels.shape == (len(dataset), spec.postprocess.max_detections)
    assert np.array_equal(labels, want_labels.numpy())
    assert (labels >= 0).sum() > 0
    np.testing.assert_allclose(boxes, want_boxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, want_scores.numpy(), atol=1e-4)
    # `archspec detect` draws them and writes the JSON, mapped back to the images' own pixels
    out = tmp_path / "drawn"
    result = cli_in_process("detect", path, synth / "val" / "val_000001.png", synth / "val" / "val_000002.png", "--out", out)
    assert result.returncode == 0, result.stderr
    found = json.loads((out / "detections.json").read_text())
    assert [Path(item["image"]).name for item in found] == ["val_000001.png", "val_000002.png"]
    assert len(found[0]["detections"]) == int((labels[0] >= 0).sum())
    assert (out / "val_000001.png").is_file()


# Kill-and-resume of training at every write point: tests/test_faults.py (through the fault hook).


@SHARES_TRAINED
def test_corrupt_checkpoint_is_a_clear_error_and_is_kept(trained, synth, tmp_path):
    run, _ = trained
    broken = tmp_path / "run"
    with RunFolder(broken, "train") as folder:  # a training run's folder whose last.pt got damaged
        folder.record("last.pt", "spec.yaml")
    data = (run / "last.pt").read_bytes()
    (broken / "last.pt").write_bytes(data[: len(data) // 2])
    (broken / "spec.yaml").write_text((run / "spec.yaml").read_text())
    with pytest.raises(CheckpointError, match="last.pt: not a readable checkpoint"):
        load_checkpoint(broken / "last.pt")
    result = cli_in_process("train", TINY_SPEC, "--data", synth, "--out", broken, "--resume", "--epochs", "3")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "not a readable checkpoint" in result.stderr
    assert (broken / "last.pt").read_bytes() == data[: len(data) // 2]  # nothing overwritten
    again = cli_in_process("train", TINY_SPEC, "--data", synth, "--out", run, "--epochs", "1")
    assert again.returncode == 2 and "--resume" in again.stderr  # a used run folder is never restarted


@SHARES_TRAINED
def test_weights_from_another_spec_are_refused(trained, tmp_path):
    from archspec.detection.checkpoint import load_weights
    from archspec.detection.model import build_detector

    run, _ = trained
    other = archspec.load(TINY_SPEC).model_copy(update={"num_classes": 4, "class_names": None})
    with pytest.raises(CheckpointError, match="belong to spec"):
        load_weights(build_detector(other), run / "best.pt")


def test_data_synth_cli_and_bad_arguments(tmp_path):
    result = cli_in_process("data", "synth", "--out", tmp_path / "d", "--train", "3", "--val", "1", "--size", "64")
    assert result.returncode == 0, result.stderr
    assert "train: 3 images" in result.stdout
    assert (tmp_path / "d" / "annotations" / "instances_val.json").is_file()
    bad = cli_in_process("data", "synth", "--out", tmp_path / "e", "--classes", "9")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    missing = cli_in_process("train", TINY_SPEC, "--data", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert missing.returncode == 2 and "instances_train.json" in missing.stderr and "Traceback" not in missing.stderr


def test_evaluate_runs_on_an_untrained_model(synth):
    from archspec.detection.model import build_detector

    spec = archspec.load(TINY_SPEC)
    metrics = evaluate(build_detector(spec), open_split(synth, "val", spec, train=False))
    # an untrained detector (classifier prior 0.01) finds almost nothing; the table has COCO's 12 rows
    assert metrics["AP"] < 0.02 and metrics["AP50"] < 0.05
    assert len([line for line in metrics["table"].splitlines() if "Average" in line]) == 12


def test_letterbox_pads_with_zero_after_normalisation():
    tensor, box = letterbox(Image.new("RGB", (30, 60), (124, 116, 104)), (64, 64))
    assert (box.scale, box.height, box.width) == (64 / 60, 64, 32)
    assert tensor[:, :, 32:].abs().max() == 0 and tensor[:, :, :32].abs().max() < 0.05
