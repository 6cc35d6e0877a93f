"""Detector specs, analytic costs, heads, losses, post-processing and the NMS tail of the ONNX graph."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import archspec
from archspec.errors import SpecError
from archspec.compiler import costs, summarize
from archspec.compiler.hooks import module_macs, module_params
from archspec.detection.boxes import box_iou, decode_deltas, encode_deltas
from archspec.detection.export import _postprocess_nodes
from archspec.detection.losses import assign_locations, centerness_targets, detection_loss, match_anchors
from archspec.detection.model import build_detector, cell_anchors
from archspec.detection.postprocess import select_detections

from tests.conftest import ROOT

DETECTORS = sorted((ROOT / "examples" / "detectors").glob("*.yaml"))

TINY = """
type: detector
backbone: {path}
neck: {{type: fpn, in_features: [C3, C4, C5], max_level: 5, channels: 32, extra_from: output}}
head: {{type: {head}, convs: 1}}
num_classes: 3
input_size: 96
"""


def tiny(head: str = "fcos", **updates):
    spec = archspec.loads(TINY.format(path=ROOT / "examples/backbones/resnet18.yaml", head=head))
    return spec.model_copy(update=updates) if updates else spec


# -- specs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DETECTORS, ids=[p.stem for p in DETECTORS])
def test_shipped_detectors_validate(path):
    spec = archspec.load(path)
    assert spec.type == "detector" and spec.backbone.type in ("staged", "scale_permuted")
    assert spec.num_classes == (3 if path.stem == "fcos_tiny" else 80)


def test_detector_round_trips_and_fingerprint_ignores_the_name():
    spec = archspec.load(ROOT / "examples/detectors/retinanet_r50_fpn.yaml")
    again = archspec.loads(archspec.dumps(spec))
    assert again == spec
    renamed = archspec.loads(archspec.dumps(spec).replace("name: retinanet_r50_fpn", "name: other"))
    assert archspec.fingerprint(renamed) == archspec.fingerprint(spec)


@pytest.mark.parametrize("change, path, words", [
    ("neck: {type: fpn, in_features: [C3, C9]}", "neck.in_features[1]", "no output 'C9'"),
    ("neck: {type: fpn, in_features: [C3, C5]}", "neck.in_features", "not consecutive"),
    ("neck: {type: fpn, min_level: 4}", "neck.min_level", "shallowest input"),
    ("neck: {type: fpn, max_level: 4}", "neck.max_level", "below the deepest input"),
    ("neck: {type: none}", "neck", "C6, C7"),
    ("class_names: [a, b]", "class_names", "2 names for 80 classes"),
    ("head: {type: fcos, channels: 48}", "head.channels", "multiple of 32"),
    ("head: {type: retinanet, negative_iou: 0.6}", "head.negative_iou", "above positive_iou"),
    ("head: {type: yolo}", "head.type", "unknown kind 'yolo'"),
    ("num_classes: 0", "num_classes", "greater than or equal to 1"),
])
def test_detector_errors_name_the_field(change, path, words):
    key = change.split(":")[0]
    lines = [line for line in (ROOT / "examples/detectors/retinanet_r50_fpn.yaml").read_text().splitlines()
             if not line.startswith(key + ":")]
    text = "\n".join(lines + [change])
    with pytest.raises(SpecError) as info:
        archspec.loads(text, base_dir=ROOT / "examples/detectors")
    assert info.value.path == path, str(info.value)
    assert words in str(info.value)


def test_backbone_file_errors_name_the_backbone_field(tmp_path):
    (tmp_path / "det.yaml").write_text("type: detector\nbackbone: missing.yaml\nhead: {type: fcos}\nnum_classes: 2\n")
    with pytest.raises(SpecError) as info:
        archspec.load(tmp_path / "det.yaml")
    assert info.value.path == "backbone" and "missing.yaml: no such file" in str(info.value)
    (tmp_path / "bad.yaml").write_text("type: staged\nstages: []\n")
    (tmp_path / "det.yaml").write_text("type: detector\nbackbone: bad.yaml\nhead: {type: fcos}\nnum_classes: 2\n")
    with pytest.raises(SpecError) as info:
        archspec.load(tmp_path / "det.yaml")
    assert info.value.path == "backbone" and "bad.yaml: stem: required field is missing" in str(info.value)
    (tmp_path / "det.yaml").write_text("type: detector\nbackbone: det.yaml\nhead: {type: fcos}\nnum_classes: 2\n")
    with pytest.raises(SpecError, match="not a backbone spec"):
        archspec.load(tmp_path / "det.yaml")


def test_spinenet_neck_none_needs_equal_widths():
    spec = archspec.load(ROOT / "examples/detectors/retinanet_spinenet49.yaml")
    assert [s.channels for s in __import__("archspec.compiler.detector", fromlist=["x"]).plan_detector(spec).levels.values()] \
        == [256] * 5


# -- analytic costs ----------------------------------------------------------------------------
PINNED = {  # params, MACs at the spec's own input size (MACs: conv multiply-adds; FLOPs = 2 x MACs)
    "retinanet_r50_fpn": (37_968_692, 95_348_556_800),
    "retinanet_spinenet49": (28_294_708, 83_337_036_800),
    "retinanet_spinenet49s": (11_141_555, 29_806_281_975),
    "fcos_r50_fpn": (32_297_370, 127_868_887_808),
    "fcos_tiny": (11_497_675, 659_333_120),
}


@pytest.mark.parametrize("path", DETECTORS, ids=[p.stem for p in DETECTORS])
def test_pinned_detector_costs(path):
    spec = archspec.load(path)
    counts = costs(spec)
    assert (counts.params, counts.macs) == PINNED[spec.name]


def test_spinenet49_retinanet_params_near_the_paper():
    params = costs(archspec.load(ROOT / "examples/detectors/retinanet_spinenet49.yaml")).params
    assert abs(params / 28.5e6 - 1) < 0.01  # SpineNet paper, Table 3: 28.5M at 640


@pytest.mark.parametrize("name", ["retinanet_r50_fpn", "retinanet_spinenet49s", "fcos_r50_fpn", "fcos_tiny"])
def test_analytic_costs_equal_the_module(name):
    """Shared head: params once, MACs once per level, exactly what numel and forward hooks count."""
    spec = archspec.load(ROOT / "examples/detectors" / f"{name}.yaml")
    spec = spec.model_copy(update={"input_size": (160, 224)})
    model = build_detector(spec).eval()
    counts = costs(spec)
    assert module_params(model) == counts.params
    assert module_macs(model, torch.zeros(1, 3, 160, 224)) == counts.macs


def test_summary_reports_parts_and_levels():
    info = summarize(archspec.load(ROOT / "examples/detectors/fcos_tiny.yaml"))
    assert info["input_size"] == [128, 128]
    assert info["outputs"]["P3"]["shape"] == [64, 16, 16] and info["outputs"]["P5"]["stride"] == 32
    parts = info["parts"]
    assert parts["backbone"]["params"] == 11_176_512  # ResNet-18 without its classifier
    # by hand, FPN on C3..C5 (128, 256, 512 channels) at width 64, levels 16x16, 8x8, 4x4 (336 cells):
    # laterals 128*64 + 256*64 + 512*64 (+ 3 * 64 biases), outputs 3 * (64*64*9 + 64)
    assert parts["neck"] == {"params": 8_256 + 16_448 + 32_832 + 3 * 36_928,
                             "macs": 256 * 128 * 64 + 64 * 256 * 64 + 16 * 512 * 64 + 336 * 64 * 64 * 9}
    # FCOS head: 2 towers x 2 convs (64*64*9 + 64) with GroupNorm (2 * 64 each), outputs cls 3, box 4,
    # centerness 1 (64*k*9 + k), one scale per level; MACs per cell 4*36864 + 64*9*(3 + 4 + 1)
    assert parts["head"] == {"params": 4 * 36_928 + 4 * 128 + 1_731 + 2_308 + 577 + 3,
                             "macs": 336 * (4 * 36_864 + 64 * 9 * 8)}


# -- model and priors --------------------------------------------------------------------------
def test_dense_outputs_and_priors_line_up():
    spec = tiny("retinanet")
    model = build_detector(spec).eval()
    dense = model(torch.zeros(2, 3, 96, 96))
    anchors = 9 * (12 * 12 + 6 * 6 + 3 * 3)
    assert dense.class_logits.shape == (2, anchors, 3) and dense.box_regression.shape == (2, anchors, 4)
    assert model.priors.shape == (anchors, 4)
    # first anchors: cell (0, 0) of P3, scales outer, ratios inner; side 4 strides = 32 px
    first = model.priors[:9]
    assert torch.allclose(first[1], torch.tensor([4 - 16, 4 - 16, 4 + 16, 4 + 16.0]))
    assert torch.allclose((first[:, 2:] + first[:, :2]) / 2, torch.full((9, 2), 4.0))
    assert torch.allclose(cell_anchors(spec.head.anchors, 8)[0], torch.tensor([-22.627417, -11.313708,
                                                                               22.627417, 11.313708]))
    # untrained classifier: sigmoid(bias) = prior_prob everywhere
    assert torch.allclose(torch.sigmoid(dense.class_logits), torch.full_like(dense.class_logits, 0.01), atol=2e-3)


def test_box_deltas_round_trip():
    anchors = torch.tensor([[0, 0, 10, 20], [5, 5, 50, 25.0]])
    boxes = torch.tensor([[1, 2, 12, 18], [0, 10, 40, 40.0]])
    assert torch.allclose(decode_deltas(anchors, encode_deltas(anchors, boxes)), boxes, atol=1e-5)


# -- targets and losses ------------------------------------------------------------------------
def test_anchor_matching_thresholds_and_low_quality_matches():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 20, 20], [50, 50, 60, 60.0]])
    boxes = torch.tensor([[0, 0, 10, 10], [52, 52, 70, 70.0]])
    matched = match_anchors(anchors, boxes, positive_iou=0.5, negative_iou=0.4)
    iou = box_iou(boxes, anchors)
    assert matched[0] == 0 and matched[1] == 0  # IoU 1.0 and 0.83
    assert iou[0, 2] < 0.4 and matched[2] == -1  # IoU 0.25: negative
    assert iou[1, 3] < 0.4 and matched[3] == 1  # the box's best anchor, kept although below 0.4


def test_fcos_assignment_ranges_centre_sampling_and_smallest_box():
    points = torch.tensor([[20.0, 20.0], [100.0, 100.0], [24.0, 20.0]])
    strides = torch.tensor([8.0, 8.0, 16.0])
    ranges = torch.tensor([[0, 64.0], [0, 64.0], [64, float("inf")]])
    boxes = torch.tensor([[0, 0, 40, 40.0], [10, 10, 30, 30.0]])
    matched = assign_locations(points, strides, ranges, boxes, radius=1.5)
    assert matched.tolist() == [1, -1, -1]  # both contain point 0: the smaller wins; point 2 is out of range
    assert float(centerness_targets(points[:1], boxes[1:])) == pytest.approx(1.0)


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_loss_goes_down_when_fitting_one_batch(head):
    torch.manual_seed(0)
    spec = tiny(head)
    model = build_detector(spec)
    images = torch.randn(2, 3, 96, 96)
    targets = [{"boxes": torch.tensor([[10, 12, 50, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30, 30, 90, 80.0], [5, 5, 25, 20.0]]), "labels": torch.tensor([0, 2])}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        parts = detection_loss(model, model(images), targets)
        optimizer.zero_grad()
        parts.total.backward()
        optimizer.step()
        losses.append(float(parts.total.detach()))
    assert parts.positives > 0
    assert losses[-1] < 0.7 * losses[0], losses


def test_loss_with_an_image_without_boxes_is_finite():
    model = build_detector(tiny("retinanet"))
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    parts = detection_loss(model, model(torch.randn(1, 3, 96, 96)), empty)
    assert parts.positives == 0 and torch.isfinite(parts.total.detach()) and float(parts.box.detach()) == 0.0
    parts.total.backward()


# -- post-processing: PyTorch reference == the ONNX tail ---------------------------------------
def _tail_session(classes: int, count: int, post) -> ort.InferenceSession:
    limit = min(post.max_detections, classes * count)
    nodes, constants = _postprocess_nodes(count, limit, post)
    graph = helper.make_graph(nodes, "tail", [
        helper.make_tensor_value_info("candidate_boxes", TensorProto.FLOAT, ["batch", count, 4]),
        helper.make_tensor_value_info("candidate_scores", TensorProto.FLOAT, ["batch", classes, count]),
    ], [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", limit, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", limit]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", limit])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("seed", range(4))
def test_select_detections_matches_onnx_nms_tail(seed):
    generator = torch.Generator().manual_seed(seed)
    batch, classes, count = 3, 4, 60
    corners = torch.rand(batch, count, 2, generator=generator) * 80
    boxes = torch.cat([corners, corners + 5 + torch.rand(batch, count, 2, generator=generator) * 30], dim=-1)
    scores = torch.rand(batch, classes, count, generator=generator)
    post = archspec.detector.Postprocess(score_threshold=0.3, iou_threshold=0.45, max_detections=25)
    session = _tail_session(classes, count, post)
    got = session.run(None, {"candidate_boxes": boxes.numpy(), "candidate_scores": scores.numpy()})
    want = select_detections(boxes, scores, score_threshold=0.3, iou_threshold=0.45, max_detections=25)
    assert np.array_equal(got[2], want[2].numpy())
    assert np.allclose(got[1], want[1].numpy()) and np.allclose(got[0], want[0].numpy())
    valid = want[2] >= 0
    assert valid.any() and (want[1][valid] > 0.3).all() and (want[1][~valid] == 0).all()
    # per image and class, no two kept boxes overlap above the NMS threshold
    for image in range(batch):
        for label in range(classes):
            kept = want[0][image][want[2][image] == label]
            overlap = box_iou(kept, kept) - torch.eye(len(kept))
            assert (overlap <= 0.45 + 1e-6).all()


def test_select_detections_with_nothing_above_threshold():
    boxes, scores, labels = select_detections(torch.rand(2, 5, 4), torch.full((2, 3, 5), 0.01), score_threshold=0.05,
                                              iou_threshold=0.5, max_detections=4)
    assert boxes.shape == (2, 4, 4) and (labels == -1).all() and (scores == 0).all()


def test_detector_template_has_exactly_the_detector_fields_but_the_backbone():
    """The search config's `detector:` template and the detector spec cannot drift apart."""
    from archspec.detector import Detector, DetectorTemplate

    def describe(field):  # type, constraints, docstring and default, in one comparable form
        return repr(field), field.get_default(call_default_factory=True)

    wanted = {name: describe(f) for name, f in Detector.model_fields.items()
              if name not in {"type", "name", "description", "backbone"}}
    got = {name: describe(f) for name, f in DetectorTemplate.model_fields.items()}
    assert got == wanted


def test_search_config_detector_template_is_checked_against_the_base(tmp_path):
    from archspec.errors import SpecError
    from archspec.search_config import load_search_config

    resnet18 = (Path(__file__).resolve().parents[1] / "examples/backbones/resnet18.yaml").as_posix()
    config = tmp_path / "search.yaml"
    config.write_text(f"type: search\nbase: {resnet18}\nspace: {{type: crnas}}\nstrategy: {{type: crnas_two_step}}\n"
                      "detector: {neck: {type: fpn, in_features: [C3, C4, C9], channels: 64}, head: {type: fcos},"
                      " num_classes: 3, input_size: 128}\n")
    with pytest.raises(SpecError) as info:
        load_search_config(config)
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("detector.neck.in_features[2]", "the backbone has no output 'C9'; it has C2, C3, C4, C5")]
    config.write_text(config.read_text().replace("C9", "C5"))
    loaded, base = load_search_config(config)
    detector = loaded.detector.around(base, name="best")
    assert (detector.type, detector.name, detector.num_classes, detector.image_size) == ("detector", "best", 3, (128, 128))
    assert detector.backbone == base


# -- ONNX export: the direct writer against torch (every shipped detector) and the dynamo oracle ----
EXPORT_SIZE = 64
"""Every shipped detector exported at 64x64 (P6 and P7 are 1x1): parity does not depend on the size."""


def _export_spec(path) -> archspec.detector.Detector:
    """A shipped detector at the export test size, scoring everything (score_threshold 0) so the
    NMS tail has work."""
    return archspec.load(path, overrides=(f"input_size={EXPORT_SIZE}", "postprocess.score_threshold=0.0",
                                          "postprocess.pre_nms_top_k=300", "postprocess.max_detections=40"))


def _sharpened(spec) -> torch.nn.Module:
    """A detector whose scores spread: random BN statistics, head outputs rescaled to class
    logits of std 2 and box outputs of std 0.5 on test images (the prior-probability
    initialisation scores every location alike, and near-equal scores make top-k order a coin toss)."""
    torch.manual_seed(0)
    model = build_detector(spec).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2, generator=generator)
                layer.running_var.uniform_(0.5, 1.5, generator=generator)
        for name, parameter in model.head.named_parameters():
            if name.endswith("_out.weight"):
                parameter.normal_(0, 0.05, generator=generator)
        dense = model(torch.rand(1, 3, *spec.image_size, generator=generator))
        for conv, value, target in (("cls_out", dense.class_logits, 2.0), ("box_out", dense.box_regression, 0.5)):
            layer = getattr(model.head, conv)
            layer.weight.mul_(target / float(value.std()))
            layer.bias.normal_(0, 0.1, generator=generator)
    return model


def _with_outputs(model: onnx.ModelProto, names: dict[str, int]) -> ort.InferenceSession:
    """A session on a copy of the model with inner values added as outputs (name -> element type)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for name, kind in names.items():
        model.graph.output.append(helper.make_tensor_value_info(name, kind, None))
    options = ort.SessionOptions()  # the graph as written: optimizing a 40 M-parameter graph costs more than running it
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _relative(actual, expected) -> float:
    return float(np.abs(actual - expected).max()) / max(float(np.abs(expected).max()), 1e-12)


INNER = {"decode.clipped": TensorProto.FLOAT, "decode.scores": TensorProto.FLOAT,
         "candidates.top_index": TensorProto.INT64, "candidate_boxes": TensorProto.FLOAT,
         "candidate_scores": TensorProto.FLOAT}


@pytest.mark.parametrize("path", DETECTORS, ids=[p.stem for p in DETECTORS])
def test_direct_detector_export_matches_torch(path, tmp_path):
    """Network and decoding to 1e-4 of each output's scale; the same top-k candidates (up to
    near-ties); the NMS tail equal to `select_detections` on those candidates; full checker,
    metadata, dynamic batch."""
    from archspec.detection.export import export_detector

    spec = _export_spec(path)
    model = _sharpened(spec)
    onnx_path = export_detector(spec, tmp_path / "det.onnx", module=model)
    written = onnx.load(str(onnx_path))  # read once: every check below looks at this file
    onnx.checker.check_model(written, full_check=True)
    metadata = {p.key: p.value for p in written.metadata_props}
    assert metadata["archspec.exporter"] == "direct" and metadata["archspec.outputs"] == "boxes,scores,labels"
    assert metadata["archspec.fingerprint"] == archspec.fingerprint(spec)
    assert archspec.fingerprint(archspec.loads(metadata["archspec.spec"])) == archspec.fingerprint(spec)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in written.graph.input] == [("images", ["batch", 3, EXPORT_SIZE, EXPORT_SIZE])]
    assert [v.name for v in written.graph.output] == ["boxes", "scores", "labels"]

    images = torch.rand(2, 3, EXPORT_SIZE, EXPORT_SIZE, generator=torch.Generator().manual_seed(2))
    session = _with_outputs(written, INNER)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images.numpy()})))
    with torch.no_grad():
        boxes, scores = model.decode(model(images))
    assert _relative(got["decode.clipped"], boxes.numpy()) < 1e-4
    assert _relative(got["decode.scores"], scores.numpy()) < 1e-4
    # top-k: the same candidates wherever the best scores are not tied to float precision
    best = scores.amax(-1)
    want_index = best.topk(got["candidates.top_index"].shape[1], dim=1).indices.numpy()
    same = got["candidates.top_index"] == want_index
    gap = np.abs(np.take_along_axis(best.numpy(), got["candidates.top_index"], 1) -
                 np.take_along_axis(best.numpy(), want_index, 1))
    assert (same | (gap < 1e-5)).all() and same.mean() > 0.8
    want_boxes = np.take_along_axis(boxes.numpy(), want_index[..., None], 1)
    assert _relative(got["candidate_boxes"][same], want_boxes[same]) < 1e-4
    # the tail: exactly the PyTorch reference on the candidates the graph chose
    post = spec.postprocess
    want = select_detections(torch.from_numpy(got["candidate_boxes"]), torch.from_numpy(got["candidate_scores"]),
                             score_threshold=post.score_threshold, iou_threshold=post.iou_threshold,
                             max_detections=post.max_detections)
    assert (got["labels"] >= 0).sum() > 0
    assert np.array_equal(got["labels"], want[2].numpy())
    assert _relative(got["boxes"], want[0].numpy()) < 1e-6 and _relative(got["scores"], want[1].numpy()) < 1e-6


def test_dynamo_oracle_agrees_with_direct_detector_export(tmp_path):
    """fcos_tiny through torch.onnx (dynamo) and through the direct writer, same weights: the same
    candidates and detections."""
    from archspec.compiler.export import ExportFallbackWarning, read_metadata
    from archspec.detection.export import export_detector

    spec = _export_spec(DETECTORS[[p.stem for p in DETECTORS].index("fcos_tiny")])
    model = _sharpened(spec)
    direct = export_detector(spec, tmp_path / "direct.onnx", module=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportFallbackWarning)
        dynamo = export_detector(spec, tmp_path / "dynamo.onnx", module=model, exporter="dynamo")
    assert read_metadata(dynamo)["archspec.exporter"] == "dynamo"
    images = np.random.default_rng(4).random((2, 3, EXPORT_SIZE, EXPORT_SIZE), dtype=np.float32)
    names = {"candidate_boxes": TensorProto.FLOAT, "candidate_scores": TensorProto.FLOAT}
    a = _with_outputs(onnx.load(str(direct)), names).run(None, {"images": images})
    b = _with_outputs(onnx.load(str(dynamo)), names).run(None, {"images": images})
    for got, want in zip(a, b):
        if got.dtype == np.int64:
            assert np.array_equal(got, want)
        else:
            assert _relative(got, want) < 1e-4


def test_a_head_without_its_own_onnx_form_falls_back_to_dynamo(monkeypatch):
    """A head class that does not define `decode_onnx` itself is never written with its parent's
    ONNX form: the direct writer refuses it (export_detector then warns and uses dynamo)."""
    from archspec.compiler.detector import HEADS, DirectExportUnsupported, FcosStructure, detector_to_onnx, onnx_head

    class ChangedFcos(FcosStructure):
        """Changes nothing here, but could change the torch decoding in its detection subclass."""

    spec = tiny("fcos")
    assert onnx_head(spec.head) is FcosStructure
    monkeypatch.setitem(HEADS, "fcos", ChangedFcos)
    assert onnx_head(spec.head) is None
    with pytest.raises(DirectExportUnsupported, match="no form for the head 'fcos'"):
        detector_to_onnx(spec)


def test_numpy_priors_and_clamps_are_the_torch_heads():
    from archspec.compiler.detector import BOX_DELTA_CLAMP
    from archspec.detection.boxes import BOX_DELTA_CLAMP as TORCH_CLAMP

    assert BOX_DELTA_CLAMP == TORCH_CLAMP
    for head in ("fcos", "retinanet"):
        model = build_detector(tiny(head))
        priors, strides = type(model.head).prior_arrays(model.plan)
        assert np.array_equal(priors, model.priors.numpy()) and np.array_equal(strides, model.prior_strides.numpy())
