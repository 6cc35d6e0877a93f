"""Detector specs: a backbone, a neck and a dense head (RetinaNet or FCOS).

    type: detector
    backbone: ../backbones/resnet50.yaml      # a file (relative to this one) or an inline spec
    neck: {type: fpn, in_features: [C3, C4, C5], min_level: 3, max_level: 7, channels: 256}
    head: {type: retinanet}
    num_classes: 80
    input_size: 640

Levels follow the backbones' naming: ``C<k>`` is a backbone output at stride 2**k and the
neck's outputs ``P<k>`` are at the same strides. The neck sizes itself from the backbone's
outputs (channels are never repeated here); the head is shared by every level, as in the papers.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from archspec.backbones import MAX_LEVEL, StagedBackbone
from archspec.blocks import MAX_CHANNELS, Spec, registered_union
from archspec.errors import Issue, SpecError
from archspec.registry import Registry
from archspec.scale_permuted import ScalePermutedBackbone
from archspec.sizes import parse_input_size

BackboneSpec = Annotated[Union[StagedBackbone, ScalePermutedBackbone], Field(discriminator="type")]
"""Any backbone kind."""

GROUP_NORM_GROUPS = 32
"""Groups of the heads' GroupNorm (FCOS, following Wu and He, "Group Normalization", 2018)."""

Level = Annotated[int, Field(ge=2, le=MAX_LEVEL)]
ImageSide = Annotated[int, Field(ge=32, le=4096)]
_StrictSide = Annotated[int, Field(ge=32, le=4096, strict=True)]
# a list or tuple of exactly two strict integers (a YAML list arrives as a list, so the pair itself is lax)
DetectorInputSize = ImageSide | Annotated[tuple[_StrictSide, _StrictSide], Field(strict=False)]
"""A detector's input size as written: one side (square) or exactly (height, width)."""
Channels = Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
Probability = Annotated[float, Field(gt=0, lt=1)]


class FPNNeck(Spec):
    """Feature pyramid network (Lin et al. 2017) as used by RetinaNet and FCOS: a 1x1 lateral
    conv per input, top-down nearest upsampling and addition, a 3x3 output conv per level, and
    stride-2 3x3 convs for the levels above the deepest input (P6, then ReLU and P7)."""

    type: Literal["fpn"]
    """Neck kind tag."""
    in_features: list[str] = Field(default_factory=lambda: ["C3", "C4", "C5"], min_length=1, max_length=6)
    """Backbone outputs fed to the FPN, at consecutive levels, shallowest first."""
    min_level: Level = 3
    """Shallowest output level (P<min_level>): the level of the first input."""
    max_level: Level = 7
    """Deepest output level; levels above the deepest input are made by stride-2 convs."""
    channels: Channels = 256
    """Width of every output level."""
    extra_from: Literal["input", "output"] = "input"
    """Source of the first extra level (P6): the deepest backbone input (RetinaNet, ``input``)
    or the deepest FPN output (FCOS, ``output``)."""


class NoNeck(Spec):
    """The backbone's outputs go to the head unchanged (SpineNet emits C3..C7 at one width)."""

    type: Literal["none"]
    """Neck kind tag."""
    min_level: Level = 3
    """Shallowest level passed to the head."""
    max_level: Level = 7
    """Deepest level passed to the head; the backbone must output every level in between."""


Neck = Annotated[Union[FPNNeck, NoNeck], Field(discriminator="type")]


class Anchors(Spec):
    """RetinaNet anchors: at a level with stride s, boxes of side ``size * s * 2**(i / scales)``
    for i < scales, each at every aspect ratio (height / width), centred on the cell."""

    size: Annotated[float, Field(gt=0, le=64)] = 4.0
    """Base anchor side in strides (RetinaNet: 4, i.e. 32 px at P3)."""
    scales_per_octave: Annotated[int, Field(ge=1, le=8)] = 3
    """Anchor scales per level (RetinaNet: 3, i.e. 2**0, 2**(1/3), 2**(2/3))."""
    aspect_ratios: list[Annotated[float, Field(gt=0, le=16)]] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0], min_length=1, max_length=8)
    """Height / width ratios."""

    def per_location(self) -> int:
        return self.scales_per_octave * len(self.aspect_ratios)


class HeadSpec(Spec):
    """Fields both dense heads have: two towers of 3x3 convs shared across levels."""

    convs: Annotated[int, Field(ge=0, le=8)] = 4
    """3x3 conv + activation layers in each tower (classification and box)."""
    channels: Channels | None = None
    """Width of the towers; the neck's width when left out."""
    norm: Literal["none", "group_norm"] = "none"
    """Normalisation after each tower conv (FCOS: GroupNorm with 32 groups, shared across levels)."""
    prior_prob: Probability = 0.01
    """Initial foreground probability: the classifier bias is -log((1 - p) / p) (focal loss paper)."""
    focal_alpha: Probability = 0.25
    """Focal loss alpha."""
    focal_gamma: Annotated[float, Field(ge=0, le=10)] = 2.0
    """Focal loss gamma."""


class RetinaNetHead(HeadSpec):
    """RetinaNet (Lin et al. 2017): per anchor, K sigmoid class scores and 4 box deltas."""

    type: Literal["retinanet"]
    """Head kind tag."""
    anchors: Anchors = Field(default_factory=Anchors)
    """Anchor layout."""
    positive_iou: Probability = 0.5
    """Anchors with IoU >= this with a ground-truth box are positives."""
    negative_iou: Probability = 0.4
    """Anchors whose best IoU is below this are negatives; those in between are ignored."""
    box_loss: Literal["smooth_l1", "giou"] = "smooth_l1"
    """Box regression loss: smooth L1 on the deltas (RetinaNet) or GIoU on decoded boxes."""
    smooth_l1_beta: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Transition point of the smooth L1 loss (detectron2's RetinaNet: 0.1)."""

    @model_validator(mode="after")
    def _check_thresholds(self) -> "RetinaNetHead":
        if self.negative_iou > self.positive_iou:
            raise SpecError("negative_iou", f"{self.negative_iou} is above positive_iou {self.positive_iou}")
        return self


class FCOSHead(HeadSpec):
    """FCOS (Tian et al. 2019): per location, K sigmoid class scores, 4 distances (l, t, r, b)
    in strides with a learned scale per level, and centerness (on the box tower)."""

    type: Literal["fcos"]
    """Head kind tag."""
    norm: Literal["none", "group_norm"] = "group_norm"
    """Normalisation after each tower conv (FCOS: GroupNorm)."""
    center_sampling_radius: Annotated[float, Field(ge=0, le=8)] = 1.5
    """Locations within this many strides of a box centre (and inside the box) are positives;
    0 uses every location inside the box (the original FCOS)."""


HEAD_SPECS: Registry[type[HeadSpec]] = Registry("head kind")
"""Head `type` tag -> head spec class: every head a detector's `head` may be."""
HEAD_SPECS.register("retinanet", RetinaNetHead)
HEAD_SPECS.register("fcos", FCOSHead)

Head = registered_union(HEAD_SPECS, HeadSpec)
"""Any registered head kind (`HEAD_SPECS`), chosen by its `type` tag."""


class Postprocess(Spec):
    """Turning dense predictions into detections (the same in PyTorch and in the ONNX graph)."""

    score_threshold: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Candidates scoring at or below this are dropped."""
    iou_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Class-aware NMS: a box is suppressed when its IoU with a kept box of its class is above this."""
    pre_nms_top_k: Annotated[int, Field(ge=1, le=100000)] = 1000
    """Boxes (by their best class score) kept per image before NMS."""
    max_detections: Annotated[int, Field(ge=1, le=10000)] = 100
    """Detections kept per image after NMS."""


class Detector(Spec):
    """A one-stage detector: backbone -> neck -> shared dense head over levels."""

    type: Literal["detector"]
    """Document kind tag."""
    name: str = "detector"
    """A name for people; not part of the fingerprint."""
    description: str = ""
    """Free text: provenance, assumptions; not part of the fingerprint."""
    backbone: BackboneSpec
    """The backbone: an inline spec, or in files a path relative to the detector file."""
    neck: Neck = Field(default_factory=lambda: FPNNeck(type="fpn"))
    """Neck: `fpn` or `none`."""
    head: Head
    """Dense head: `retinanet` or `fcos`."""
    num_classes: Annotated[int, Field(ge=1, le=10000)]
    """Number of object classes (no background class: the heads use sigmoids)."""
    class_names: list[str] | None = None
    """Names of the classes, in label order (length `num_classes`)."""
    input_size: DetectorInputSize = 640
    """Input height and width (one number for a square input); images are resized to it."""
    postprocess: Postprocess = Field(default_factory=Postprocess)
    """Score threshold, NMS and detection limits."""

    @model_validator(mode="after")
    def _check_structure(self) -> "Detector":
        issues = self.problems()
        if issues:
            raise SpecError(issues=issues)
        return self

    # -- resolution ------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return parse_input_size(self.input_size)

    @property
    def levels(self) -> list[int]:
        """Levels the head runs on, shallowest first."""
        return list(range(self.neck.min_level, self.neck.max_level + 1))

    def level_inputs(self) -> dict[int, str]:
        """Level -> backbone output the neck reads at that level."""
        if isinstance(self.neck, FPNNeck):
            return {output_level(name): name for name in self.neck.in_features}
        return {level: f"C{level}" for level in self.levels}

    def output_names(self) -> list[str]:
        """Names of the dense outputs, one pair per level (the deployed graph has boxes,
        scores and labels instead)."""
        return [f"P{level}" for level in self.levels]

    # -- validation ------------------------------------------------------------------------
    def problems(self) -> list[Issue]:
        available = self.backbone.output_names()
        issues = self._neck_problems(available)
        if self.head.norm == "group_norm":
            width = self.head.channels or _neck_width(self.neck)
            if width is not None and width % GROUP_NORM_GROUPS:
                issues.append(Issue("head.channels", f"{width} channels; GroupNorm uses {GROUP_NORM_GROUPS} groups, "
                                                     f"so the width must be a multiple of {GROUP_NORM_GROUPS}"))
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            issues.append(Issue("class_names", f"{len(self.class_names)} names for {self.num_classes} classes"))
        return issues

    def _neck_problems(self, available: list[str]) -> list[Issue]:
        neck = self.neck
        if neck.min_level > neck.max_level:
            return [Issue("neck.min_level", f"{neck.min_level} is above max_level {neck.max_level}")]
        if isinstance(neck, NoNeck):
            missing = [f"C{level}" for level in self.levels if f"C{level}" not in available]
            return [Issue("neck", f"type 'none' needs backbone outputs {', '.join(missing)}; the backbone "
                                  f"has {', '.join(available) or 'none'} (use an fpn neck)")] if missing else []
        issues: list[Issue] = []
        levels = []
        for i, name in enumerate(neck.in_features):
            if name not in available:
                issues.append(Issue(f"neck.in_features[{i}]", f"the backbone has no output {name!r}; it has "
                                                              f"{', '.join(available) or 'none'}"))
            elif output_level(name) is None:
                issues.append(Issue(f"neck.in_features[{i}]", f"{name!r} is not a feature level (C<k>)"))
            else:
                levels.append(output_level(name))
        if issues:
            return issues
        if levels != list(range(levels[0], levels[0] + len(levels))):
            return [Issue("neck.in_features", f"levels {levels} are not consecutive and increasing")]
        if neck.min_level != levels[0]:
            issues.append(Issue("neck.min_level", f"{neck.min_level}: the FPN's shallowest output is its "
                                                  f"shallowest input, level {levels[0]}"))
        if neck.max_level < levels[-1]:
            issues.append(Issue("neck.max_level", f"{neck.max_level} is below the deepest input level {levels[-1]}"))
        return issues


class DetectorTemplate(Spec):
    """A detector without its backbone: what a search config's ``detector:`` wraps around every
    candidate, so that `best.yaml` is a complete detector and trained evaluators (proxy training,
    the supernet) train detectors. The fields are exactly `Detector`'s, minus ``type``, ``name``,
    ``description`` and ``backbone`` (a test keeps the two in step)."""

    neck: Neck = Field(default_factory=lambda: FPNNeck(type="fpn"))
    """Neck: `fpn` or `none`."""
    head: Head
    """Dense head: `retinanet` or `fcos`."""
    num_classes: Annotated[int, Field(ge=1, le=10000)]
    """Number of object classes (no background class: the heads use sigmoids)."""
    class_names: list[str] | None = None
    """Names of the classes, in label order (length `num_classes`)."""
    input_size: DetectorInputSize = 640
    """Input height and width (one number for a square input); images are resized to it."""
    postprocess: Postprocess = Field(default_factory=Postprocess)
    """Score threshold, NMS and detection limits."""

    def around(self, backbone, *, name: str = "detector", description: str = "") -> Detector:
        """The detector with this neck, head and classes on `backbone` (validated; a mismatch
        between the template and the backbone raises `SpecError` with the field path)."""
        from archspec.io import to_data, validate

        return validate({"type": "detector", "name": name, "description": description,
                         "backbone": to_data(backbone), **to_data(self)})


def output_level(name: str) -> int | None:
    """``C4`` -> 4; None for names that are not levels (``logits``)."""
    return int(name[1:]) if len(name) > 1 and name[0] in "CP" and name[1:].isdigit() else None


def _neck_width(neck) -> int | None:
    return neck.channels if isinstance(neck, FPNNeck) else None
