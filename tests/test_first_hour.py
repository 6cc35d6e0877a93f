"""Issue 18, what a newcomer meets in the first hour: stage names and outputs, every error with
spelling suggestions, fingerprints of the resolved spec, search configs as documents (validate,
summary, schema; every shipped file against the JSON Schema), the CLI's conveniences, and the
import-name conflict check. CLI tests run the command line as users do (a subprocess)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import archspec
from archspec import SpecError
from tests.conftest import ROOT

EXAMPLES = sorted(ROOT.glob("examples/**/*.yaml"))
DILATED = ROOT / "examples" / "backbones" / "dilated_3stage.yaml"


def cli(*args: str, env: dict | None = None, module: str = "archspec") -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "80", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env=environment, timeout=600)


def three_stage(**changes) -> dict:
    """The issue's case: a 3-stage ResNet-like spec whose last stage is dilated at stride 1."""
    doc = {"type": "staged", "name": "three",
           "stem": [{"type": "conv", "out_channels": 32, "kernel": 3, "stride": 2}],
           "stages": [{"block": {"type": "basic"}, "depth": 1, "out_channels": 64},
                      {"block": {"type": "basic"}, "depth": 1, "out_channels": 128},
                      {"block": {"type": "basic", "dilation": 2}, "depth": 1, "out_channels": 256, "stride": 1}]}
    doc.update(changes)
    return doc


def error_of(doc) -> SpecError:
    with pytest.raises(SpecError) as info:
        archspec.validate(doc)
    return info.value


# -- 1. stage names and outputs --------------------------------------------------------------------
def test_the_dilated_example_exposes_all_three_stages():
    from archspec.compiler import summarize

    spec = archspec.load(DILATED)
    assert [stage.name for stage in spec.stages] == ["res2", "res3", "res4_dilated"]
    outputs = summarize(spec, (224, 224))["outputs"]
    assert {name: (o["channels"], o["stride"]) for name, o in outputs.items()} == {
        "res2": (64, 4), "res3": (128, 8), "res4_dilated": (256, 8)}


def test_outputs_refer_to_stages_by_name_and_levels_stay_where_they_are():
    doc = three_stage()
    doc["stages"][1]["name"] = "mid"
    spec = archspec.validate({**doc, "outputs": ["C2", "mid", "C3"]})
    layers = spec.output_layers()
    assert layers["mid"].stage == 1 and layers["C3"].stage == 2 and layers["C2"].stage == 0
    from archspec.compiler import build
    import torch

    out = build(spec)(torch.zeros(1, 3, 64, 64))
    assert list(out) == ["C2", "mid", "C3"]
    assert out["mid"].shape == (1, 128, 8, 8) and out["C3"].shape == (1, 256, 8, 8)


def test_level_one_is_not_offered_and_unknown_names_list_what_is():
    error = error_of(three_stage(outputs=["C2", "C3", "C4"]))
    assert error.path == "outputs[2]"
    assert error.message == "no output named 'C4'; available: C2, C3"


def test_stage_names_are_unique_and_do_not_shadow_levels():
    doc = three_stage()
    doc["stages"][0]["name"] = "C3"
    doc["stages"][1]["name"] = "a"
    doc["stages"][2]["name"] = "a"
    issues = [str(i) for i in error_of(doc).issues]
    assert issues == ["stages[0].name: 'C3' is reserved for levels and the head (C<k>, P<k>, logits); choose another name",
                      "stages[2].name: 'a' is also the name of stages[1]"]


def test_stage_names_must_be_identifiers():
    doc = three_stage()
    doc["stages"][0]["name"] = "res 2"
    assert error_of(doc).path == "stages[0].name"


# -- 2. every error, with suggestions ----------------------------------------------------------------
def test_every_problem_is_reported_and_a_typo_is_named():
    doc = three_stage()
    del doc["stem"][0]["out_channels"]
    doc["stages"][1]["deph"] = doc["stages"][1].pop("depth")
    doc["stages"][2]["block"]["type"] = "basc"
    doc["stages"][0]["dilations"] = ["x"]
    error = error_of(doc)
    assert [str(i) for i in error.issues] == [
        "stem[0].out_channels: required field is missing",
        "stages[0].dilations[0]: Input should be a valid integer, unable to parse string as an integer",
        "stages[1].deph: unknown field; did you mean 'depth' (a required field that is missing)?",
        "stages[2].block.type: unknown kind 'basc'; expected one of 'conv', 'basic', 'bottleneck', "
        "'inverted_residual', 'shufflenet_v2', 'shuffle_xception', 'k1kx', 'k1kxk1'",
    ]
    assert str(error).count("\n") == 3


def test_an_unknown_field_with_a_close_known_name_gets_a_suggestion():
    doc = three_stage()
    doc["stem"][0]["kernal"] = 5
    assert str(error_of(doc)) == "stem[0].kernal: unknown field; did you mean 'kernel'?"


def test_a_value_fitting_no_member_of_a_union_is_one_line_without_pydantic_labels():
    doc = {"type": "detector", "backbone": three_stage(), "head": {"type": "fcos"}, "num_classes": 3,
           "neck": {"type": "fpn", "in_features": ["C2", "C3"], "min_level": 2}, "input_size": "big"}
    assert str(error_of(doc)) == "input_size: should be an integer or a list"


def test_errors_are_capped_with_a_count_of_the_rest():
    from archspec.errors import MAX_SHOWN_ISSUES

    doc = three_stage()
    doc["stages"] = [{"block": {"type": "basic"}} for _ in range(15)]  # 2 missing fields each
    error = error_of(doc)
    assert len(error.issues) == 30
    lines = str(error).splitlines()
    assert len(lines) == MAX_SHOWN_ISSUES + 1 and lines[-1] == "... and 10 more problems"


def test_cli_prints_every_problem_with_file_and_exits_2(tmp_path):
    doc = three_stage()
    doc["stages"][1]["deph"] = doc["stages"][1].pop("depth")
    doc["stages"][2]["out_channels"] = -1
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {path}: stages[1].deph: unknown field; did you mean 'depth' (a required field that is missing)?",
        f"error: {path}: stages[2].out_channels: Input should be greater than or equal to 1"]


# -- 4. fingerprints of the resolved spec --------------------------------------------------------------
def test_fingerprint_is_the_same_whether_outputs_are_written_or_defaulted():
    defaulted = archspec.validate(three_stage())
    written = archspec.validate(three_stage(outputs=defaulted.output_names()))
    assert defaulted.outputs is None and written.outputs == ["C2", "C3"]
    assert archspec.fingerprint(defaulted) == archspec.fingerprint(written)
    other = archspec.validate(three_stage(outputs=["C3"]))
    assert archspec.fingerprint(other) != archspec.fingerprint(defaulted)


def test_fingerprint_of_a_detector_ignores_its_backbones_name_and_defaults():
    base = {"type": "detector", "head": {"type": "fcos"}, "num_classes": 3,
            "neck": {"type": "fpn", "in_features": ["C2", "C3"], "min_level": 2, "max_level": 4}}
    one = archspec.validate({**base, "backbone": three_stage()})
    two = archspec.validate({**base, "backbone": three_stage(name="renamed", outputs=["C2", "C3"])})
    assert archspec.fingerprint(one) == archspec.fingerprint(two)


def test_unnamed_stages_hash_as_before_stage_names_existed():
    # The pinned value is ResNet-18's fingerprint from before stage names (and before outputs
    # were resolved): the zoo's fingerprints must not move.
    assert archspec.fingerprint(archspec.load(ROOT / "examples/backbones/resnet18.yaml")) == "68365dd291d01221"
    named = copy.deepcopy(three_stage())
    named["stages"][0]["name"] = "first"
    assert archspec.fingerprint(archspec.validate(named)) != archspec.fingerprint(archspec.validate(three_stage()))
