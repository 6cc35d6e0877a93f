"""The spec language: loading, saving, fingerprints, schema and error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import archspec
from archspec import SpecError
from tests.conftest import ROOT, ZOO, zoo_ids


def resnet_doc(**stage_overrides) -> dict:
    stages = [
        {"block": {"type": "bottleneck"}, "depth": 3, "out_channels": 256, "stride": 1},
        {"block": {"type": "bottleneck"}, "depth": 4, "out_channels": 512},
        {"block": {"type": "bottleneck"}, "depth": 6, "out_channels": 1024},
    ]
    for index, update in stage_overrides.items():
        stages[int(index[1:])].update(update)
    return {"type": "staged", "name": "r", "stem": [{"type": "conv", "out_channels": 64, "kernel": 7, "stride": 2},
                                                    {"type": "max_pool", "kernel": 3, "stride": 2}],
            "stages": stages}


def error_of(doc) -> SpecError:
    with pytest.raises(SpecError) as info:
        archspec.validate(doc)
    return info.value


@pytest.mark.parametrize("path", ZOO, ids=zoo_ids())
def test_zoo_round_trips_through_yaml_and_json(path, tmp_path):
    spec = archspec.load(path)
    for suffix in (".yaml", ".json"):
        saved = archspec.save(spec, tmp_path / f"copy{suffix}")
        again = archspec.load(saved)
        assert again == spec
        assert archspec.fingerprint(again) == archspec.fingerprint(spec)


def test_fingerprint_ignores_field_order_format_name_and_explicit_defaults():
    doc = resnet_doc()
    reordered = dict(reversed(list(doc.items())))
    reordered["stages"] = [dict(reversed(list(s.items()))) for s in doc["stages"]]
    explicit = json.loads(json.dumps(doc))
    explicit["in_channels"] = 3
    explicit["stages"][1]["stride"] = 2
    explicit["name"] = "another name"
    prints = {archspec.fingerprint(archspec.validate(d)) for d in (doc, reordered, explicit)}
    prints.add(archspec.fingerprint(archspec.loads(json.dumps(doc), format="json")))
    prints.add(archspec.fingerprint(archspec.loads(yaml.safe_dump(doc))))
    assert len(prints) == 1


def test_fingerprint_changes_with_the_architecture():
    base = archspec.fingerprint(archspec.validate(resnet_doc()))
    deeper = archspec.fingerprint(archspec.validate(resnet_doc(s2={"depth": 7})))
    dilated = archspec.fingerprint(archspec.validate(resnet_doc(s2={"dilations": [1, 1, 1, 1, 1, 2]})))
    assert len({base, deeper, dilated}) == 3


def test_saved_yaml_leaves_defaults_out():
    text = archspec.dumps(archspec.validate(resnet_doc()))
    assert "dilation" not in text and "in_channels" not in text
    assert yaml.safe_load(text)["stages"][0]["block"] == {"type": "bottleneck"}


def test_dilations_length_error_names_the_field():
    err = error_of(resnet_doc(s2={"dilations": [1, 2, 1, 1, 2]}))
    assert str(err) == "stages[2].dilations: 5 values for depth 6"
    assert err.path == "stages[2].dilations"
    assert isinstance(err, ValueError)


def test_dilation_value_error_names_the_element():
    err = error_of(resnet_doc(s2={"dilations": [1, 2, 1, 0, 2, 1]}))
    assert err.path == "stages[2].dilations[3]"


def test_override_groups_error_names_block_and_field():
    blocks = [None] * 4
    blocks[3] = {"type": "conv", "groups": 32}
    err = error_of(resnet_doc(s1={"out_channels": 48, "blocks": blocks}))
    assert err.path == "stages[1].blocks[3].groups"
    assert "48 input channels are not divisible by 32 groups" in err.message


def test_shared_block_error_says_which_block():
    err = error_of(resnet_doc(s1={"block": {"type": "shufflenet_v2"}, "out_channels": 256}))
    assert err.path == "stages[1].block"
    assert err.message.startswith("block 0: ") and "more than 256 output channels, not 256" in err.message


def test_bottleneck_expansion_must_divide_the_width():
    err = error_of(resnet_doc(s1={"out_channels": 510}))
    assert err.path == "stages[1].block.expansion"


@pytest.mark.parametrize("mutate, path, words", [
    (lambda d: d["stages"][0]["block"].update(type="bottlenek"), "stages[0].block.type", "unknown kind 'bottlenek'"),
    (lambda d: d["stages"][0].update(out_chanels=3), "stages[0].out_chanels", "unknown field"),
    (lambda d: d["stages"][0].update(out_channels=0), "stages[0].out_channels", "greater than or equal to 1"),
    (lambda d: d["stages"][1].update(out_channels=-8), "stages[1].out_channels", "greater than or equal to 1"),
    (lambda d: d["stages"][1].update(stride=3), "stages[1].stride", "1 or 2"),
    (lambda d: d["stem"][0].update(dilation=0), "stem[0].dilation", "greater than or equal to 1"),
    (lambda d: d["stem"][0].update(kernel=4), "stem[0].kernel", "even"),
    (lambda d: d["stages"][1]["block"].pop("type"), "stages[1].block.type", "missing 'type'"),
    (lambda d: d.pop("stages"), "stages", "required field is missing"),
    (lambda d: d.update(outputs=["C9"]), "outputs[0]", "no output named 'C9'"),
    (lambda d: d.update(type="resnet"), "type", "unknown kind 'resnet'"),
])
def test_bad_fields_get_precise_errors(mutate, path, words):
    doc = resnet_doc()
    mutate(doc)
    err = error_of(doc)
    assert err.path == path
    assert words in err.message


def test_too_deep_a_backbone_is_rejected():
    doc = resnet_doc()
    doc["stages"] += [{"block": {"type": "basic"}, "depth": 1, "out_channels": 64}] * 3
    assert archspec.validate(doc).layers()[-1].level_out == 7  # SpineNet's deepest level is fine
    doc["stages"].append(doc["stages"][-1])
    err = error_of(doc)
    assert err.path == "stages[6].stride" and "L7" in err.message


@pytest.mark.parametrize("document, words", [([1, 2], "not list"), (3, "not int"), (None, "not nothing"),
                                             ("text", "not str")])
def test_documents_that_are_not_mappings(document, words):
    assert words in error_of(document).message


def test_malformed_yaml_and_json_name_the_position(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("type: staged\nstages: [1, 2\n")
    with pytest.raises(SpecError, match=r"bad.yaml: invalid YAML at line \d+ column \d+"):
        archspec.load(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"type": "staged",}')
    with pytest.raises(SpecError, match=r"bad.json: invalid JSON at line 1 column 19"):
        archspec.load(bad_json)
    with pytest.raises(SpecError, match="no such file"):
        archspec.load(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely():
    with pytest.raises(SpecError, match="invalid YAML"):
        archspec.loads("!!python/object/apply:os.system ['echo hacked']")


def test_every_error_is_reported():
    doc = resnet_doc(s0={"dilations": [1]}, s2={"blocks": [None]})
    assert [i.path for i in error_of(doc).issues] == ["stages[0].dilations", "stages[2].blocks"]


def test_specs_are_immutable():
    spec = archspec.validate(resnet_doc())
    with pytest.raises(Exception):
        spec.stages[0].depth = 5  # type: ignore[misc]


def test_schema_file_is_current_and_examples_point_at_it():
    shipped = json.loads((ROOT / "schema" / "archspec.schema.json").read_text())
    assert shipped == json.loads(json.dumps(archspec.json_schema()))
    for path in ZOO:
        assert path.read_text().startswith("# yaml-language-server: $schema=../../schema/archspec.schema.json")


def test_schema_documents_every_field():
    schema = archspec.json_schema()
    for name, definition in schema["$defs"].items():
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


@pytest.mark.parametrize("style", ["flow list", "flow mapping", "block list"])
def test_yaml_nested_past_the_limit_is_refused_at_the_limit(style):
    """A document whose deepest path holds more than `MAX_DEPTH` nodes is one error; at the limit it loads."""
    from archspec.parsing import MAX_DEPTH

    def nested(depth: int) -> str:  # root mapping, depth - 2 collections, a scalar
        inner = depth - 2
        if style == "block list":
            return "\n".join(["b:"] + ["  " * (i + 1) + "-" for i in range(inner)]) + " 1\n"
        opening, closing = ("[", "]") if style == "flow list" else ("{a: ", "}")
        return "b: " + opening * inner + "1" + closing * inner + "\n"

    value = archspec.io.parse_text(nested(MAX_DEPTH))["b"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0] if isinstance(value, list) else value["a"]
    assert value == 1
    with pytest.raises(SpecError, match=rf"deep.yaml: invalid YAML at line \d+ column \d+: the document is nested "
                                        rf"more than {MAX_DEPTH} levels deep"):
        archspec.io.parse_text(nested(MAX_DEPTH + 1), source="deep.yaml")


def test_importing_archspec_does_not_import_torch():
    code = "import archspec, archspec.cli, archspec.cli.spec_commands, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
