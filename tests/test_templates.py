"""Templates (spec documents with choices) and the generic `annotated` space: parsing and
validation with field paths, round trips, exact sizes, generic moves, equivalence with the
hand-written DetNAS and CR-NAS spaces (1,000 samples both ways), the property test over every
shipped template, the `archspec space` commands and a search under FLOPs and latency budgets."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_in_process
import yaml

import archspec
from archspec.search_config import AnnotatedSpace, load_search_config
from archspec.search.space import AnnotatedSearchSpace, Rejected, make_space
from archspec.template import ConstraintError, is_template, load_template, parse_template

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "examples" / "search"
SHIPPED = sorted(SEARCH.glob("*_template.yaml"))
STEM = [{"type": "conv", "out_channels": 16, "stride": 2}]


def _template(stages, **extra):
    return parse_template({"type": "staged", "stem": STEM, "stages": stages, **extra})


def _space(template) -> AnnotatedSearchSpace:
    config = AnnotatedSpace(type="annotated", template=template.to_data())
    return AnnotatedSearchSpace(config, None)


# -- parsing and validation ----------------------------------------------------------------------
def test_annotations_make_decisions_in_document_order():
    t = _template([{"block": {"choice": [{"type": "basic"}, {"type": "k1kxk1", "kernel": {"choice": [3, 5]},
                                                                "bottleneck_channels": 16}]},
                    "depth": {"int": [1, 5], "step": 2}, "out_channels": {"choice": [32, 64], "name": "w"}},
                   {"block": {"type": "basic"}, "depth": 1, "out_channels": {"choice": [32, 64], "name": "w"}}])
    assert [d.path for d in t.decisions] == ["stages[0].block", "stages[0].block.choice[1].kernel",
                                              "stages[0].depth", "stages[0].out_channels"]
    assert [d.values for d in t.decisions][1:] == [(3, 5), (1, 3, 5), (32, 64)]
    assert t.decisions[1].conditions == ((0, 1),)
    # basic: 3 depths x 2 widths; k1kxk1: 2 kernels x 3 depths x 2 widths (the named width is one decision)
    assert t.size() == 6 + 12 == len(list(t.enumerate()))
    spec = t.decode((1, 1, 2, 1))
    assert spec.stages[0].block.kernel == 5 and spec.stages[0].depth == 5
    assert spec.stages[0].out_channels == spec.stages[1].out_channels == 64
    # an inactive decision is kept at its default: one genotype per architecture
    assert t.canonical((0, 1, 0, 0)) == (0, 0, 0, 0)


@pytest.mark.parametrize("stages,path,message", [
    ([{"block": {"type": "basic"}, "depth": {"choice": []}, "out_channels": 8}], "stages[0].depth.choice",
     "a choice lists at least one option"),
    ([{"block": {"type": "basic"}, "depth": {"int": [4, 2]}, "out_channels": 8}], "stages[0].depth.int",
     "the range [4, 2] is empty"),
    ([{"block": {"type": "basic"}, "depth": {"int": [1, 4], "stepp": 2}, "out_channels": 8}],
     "stages[0].depth.stepp", "unknown key of a int annotation"),
    ([{"block": {"type": "basic"}, "depth": {"choice": [1, 2], "default": 3}, "out_channels": 8}],
     "stages[0].depth.default", "3 is not one of the options"),
    ([{"block": {"type": "basic"}, "depth": 1, "out_channels": {"choice": [8, 16], "name": "w"}},
      {"block": {"type": "basic"}, "depth": 1, "out_channels": {"choice": [8, 32], "name": "w"}}],
     "stages[1].out_channels", "the decision 'w' is written differently at stages[0].out_channels"),
    # every branch is checked where it can be alone: a kernel no shufflenet block has
    ([{"block": {"type": "shufflenet_v2", "kernel": {"choice": [3, 4]}}, "depth": 1, "out_channels": 32}],
     "stages[0].block.kernel.choice[1]", "Input should be 3, 5 or 7"),
    # ... inside a sub-document option, with the option's own field path
    ([{"block": {"choice": [{"type": "basic"}, {"type": "conv", "kernel": 4}]}, "depth": 1, "out_channels": 32}],
     "stages[0].block.choice[1].kernel", "kernel 4 is even"),
    ([{"block": {"type": "basic"}, "depth": {"int": [0, 2]}, "out_channels": 32}], "stages[0].depth.int",
     "0: Input should be greater than or equal to 1"),
    # a fixed field that no option can save
    ([{"block": {"type": "conv", "kernel": 2}, "depth": {"int": [1, 2]}, "out_channels": 32}],
     "stages[0].block.kernel", "kernel 2 is even"),
])
def test_templates_validate_with_field_paths(stages, path, message):
    with pytest.raises(archspec.SpecError) as caught:
        _template(stages)
    assert any(issue.path == path and message in issue.message for issue in caught.value.issues), caught.value.issues


def test_a_combination_is_not_a_template_error_but_is_refused_when_decoded():
    """Width 96 and expansion 4 divide; 96 and 5 do not, 80 and 5 do: neither option is wrong
    alone, so the template is valid and only the combination is refused, by the validator."""
    t = _template([{"block": {"type": "bottleneck", "expansion": {"choice": [4, 5]}}, "depth": 1,
                    "out_channels": {"choice": [96, 80]}}])
    space = _space(t)
    assert space.decode((0, 0)).stages[0].out_channels == 96
    with pytest.raises(Rejected, match=r"stages\[0\]\.block\.expansion: block 0: 96 output channels are not "
                                       r"divisible by expansion 5"):
        space.decode((1, 0))
    assert space.decode((1, 1)).stages[0].block.expansion == 5


def test_constraints_are_data_and_refuse_with_a_reason():
    t = _template([{"block": {"type": "basic"}, "depth": {"int": [1, 4]}, "out_channels": 16},
                   {"block": {"type": "basic"}, "depth": {"int": [1, 4]}, "out_channels": 16}],
                  constraints=[{"sum": ["stages[*].depth"], "equals": 5}])
    valid = []
    for genotype in t.enumerate():
        try:
            valid.append(tuple(s.depth for s in t.decode(genotype).stages))
        except ConstraintError as exc:
            assert str(exc) == f"constraints[0]: sum of stages[*].depth is {sum(genotype) + 2}; it must equal 5"
    assert valid == [(1, 4), (2, 3), (3, 2), (4, 1)]
    with pytest.raises(archspec.SpecError, match=r"constraints\[0\]\.sum: 'stages\[\*\]\.depht' names no field"):
        _template([{"block": {"type": "basic"}, "depth": 1, "out_channels": 16}],
                  constraints=[{"sum": ["stages[*].depht"], "max": 5}])
    with pytest.raises(archspec.SpecError, match=r"constraints\[0\]: exactly one numeric bound"):
        _template([{"block": {"type": "basic"}, "depth": 1, "out_channels": 16}],
                  constraints=[{"sum": ["stages[*].depth"], "min": 1, "max": 5}])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_templates_round_trip_and_match_the_schema(path, tmp_path):
    import json

    import jsonschema

    first = load_template(path)
    dumped = tmp_path / "again.yaml"
    dumped.write_text(yaml.safe_dump(first.to_data(), sort_keys=False))
    again = load_template(dumped)
    assert again == first and again.to_data() == first.to_data()
    assert [d.path for d in again.decisions] == [d.path for d in first.decisions]
    schema = json.loads((ROOT / "schema" / "archspec.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    assert path.read_text().startswith("# yaml-language-server: $schema=../../schema/archspec.schema.json")


def test_the_schema_refuses_a_misspelt_annotation():
    import json

    import jsonschema

    schema = json.loads((ROOT / "schema" / "archspec.schema.json").read_text())
    data = yaml.safe_load((SEARCH / "my_backbone_template.yaml").read_text())
    data["stages"][0]["depth"] = {"chioce": [1, 2]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


# -- the property test ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_draws_and_mutations_decode_to_valid_specs_or_a_reason(path):
    """1,000 draws and 1,000 mutations (k = 1..3) per shipped template: each decodes to a spec
    that validates again from its own data, or is refused with a reason; nothing else is raised."""
    t = load_template(path)
    rng = random.Random(f"property:{path.name}")
    genotype = t.default
    valid = refused = 0
    for i in range(2000):
        genotype = t.random(rng) if i % 2 == 0 else t.mutate(genotype, rng, rng.randint(1, 3))
        assert t.check(genotype) is None and t.canonical(genotype) == genotype
        try:
            spec = t.decode(genotype)
        except archspec.SpecError as exc:
            assert str(exc) and exc.issues[0].message
            refused += 1
            continue
        assert archspec.fingerprint(archspec.validate(archspec.to_data(spec))) == archspec.fingerprint(spec)
        valid += 1
    assert valid + refused == 2000 and valid > 0


def test_mutate_moves_exactly_k_decisions_and_crossover_mixes_per_decision():
    t = load_template(SEARCH / "detnas_300m_template.yaml")  # unconditional decisions: exact counts
    rng = random.Random(0)
    for k in (1, 2, 5):
        parent = t.random(rng)
        child = t.mutate(parent, rng, k)
        assert 1 <= sum(a != b for a, b in zip(parent, child)) <= k
    a, b = (0,) * 20, (3,) * 20
    child = t.crossover(a, b, random.Random(1))
    assert set(child) == {0, 3} and len(child) == 20


# -- equivalence with the hand-written spaces ----------------------------------------------------
def _hand_written(config_name: str, **space_fields):
    config, base = load_search_config(SEARCH / config_name)
    space_config = config.space.model_copy(update=space_fields)
    return make_space(space_config, base)


def test_detnas_template_is_the_detnas_space_both_ways():
    template = load_template(SEARCH / "detnas_300m_template.yaml")
    hand = _hand_written("detnas_300m.yaml")
    assert template.size() == 4 ** 20
    rng = random.Random("detnas-equivalence")
    for _ in range(1000):  # template -> hand-written: same architecture, same genotype
        genotype = template.random(rng)
        spec = template.decode(genotype)
        encoded = hand.encode(spec)
        hand.check(encoded)
        assert encoded == genotype
        assert archspec.fingerprint(hand.decode(encoded)) == archspec.fingerprint(spec)
    for _ in range(1000):  # hand-written -> template
        genotype = hand.random(rng)
        spec = hand.decode(genotype)
        assert template.match(spec) == genotype


def test_crnas_dilation_template_is_the_crnas_space_at_resnet50s_allocation():
    template = load_template(SEARCH / "crnas_r50_dilation_template.yaml")
    hand = _hand_written("crnas_resnet50.yaml")
    allocation = (3, 4, 6, 3)
    assert template.size() == 3 ** 16
    rng = random.Random("crnas-equivalence")
    for _ in range(1000):  # template -> hand-written
        spec = template.decode(template.random(rng))
        encoded = hand.encode(spec)
        hand.check(encoded)
        assert hand.split(encoded)[0] == allocation
        assert archspec.fingerprint(hand.decode(encoded)) == archspec.fingerprint(spec)
    for _ in range(1000):  # hand-written (allocation fixed) -> template
        genotype = hand.with_allocation(hand.random(rng), allocation)
        spec = hand.decode(genotype)
        matched = template.match(spec)
        assert matched is not None and tuple(template.decisions[i].values[g] for i, g in enumerate(matched)) == \
            hand.split(genotype)[1]
    # another allocation is not in the template: membership is not trivially true
    other = hand.decode(hand.with_allocation(hand.base, (2, 4, 7, 3)))
    assert template.match(other) is None


def test_crnas_allocation_template_with_a_sum_constraint_is_the_crnas_allocations():
    template = load_template(SEARCH / "crnas_r50_allocation_template.yaml")
    hand = _hand_written("crnas_resnet50.yaml")
    found = set()
    for genotype in template.enumerate():
        try:
            found.add(tuple(stage.depth for stage in template.decode(genotype).stages))
        except ConstraintError:
            continue
    assert found == set(hand.allocations) and len(found) == len(hand.allocations)


def test_detnas_search_on_the_template_gives_the_hand_written_spaces_trials(tmp_path):
    """The same strategy, seed and budgets on both spaces propose the same genotypes and find
    the same scores: the template space is the DetNAS space, moves included."""
    text = (SEARCH / "detnas_300m.yaml").read_text()
    hand_cfg = tmp_path / "hand.yaml"
    hand_cfg.write_text(text.replace("base: ../backbones/", f"base: {ROOT / 'examples' / 'backbones'}/"))
    template_cfg = tmp_path / "template.yaml"
    template_cfg.write_text(text.replace("base: ../backbones/detnas_coco_fpn_300m.yaml\n", "")
                            .replace("space: {type: detnas}", f"space: {{type: annotated, template: "
                                                              f"{SEARCH / 'detnas_300m_template.yaml'}}}"))
    from archspec.search.run import run_search

    hand = run_search(hand_cfg, tmp_path / "hand", max_trials=60, progress=False)
    ours = run_search(template_cfg, tmp_path / "template", max_trials=60, progress=False)
    rows = [(tmp_path / name / "trials.csv").read_text().splitlines() for name in ("hand", "template")]
    strip = [[line.rsplit(",", 1)[0] for line in r] for r in rows]  # drop the seconds column
    assert strip[0] == strip[1] and hand.best_score == ours.best_score and hand.trials == 60


# -- configs and the CLI ------------------------------------------------------------------------
def test_annotated_space_config_reads_the_template_in_and_checks_a_given_base(tmp_path):
    config, base = load_search_config(SEARCH / "my_backbone_search.yaml")
    assert isinstance(config.space.template, dict) and is_template(config.space.template)
    assert base.name == "my_backbone" and base.stem[0].out_channels == 32 and base.stem[0].kernel == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"type: search\nbase: {ROOT / 'examples' / 'backbones' / 'resnet50.yaml'}\n"
                   f"space: {{type: annotated, template: {SEARCH / 'detnas_300m_template.yaml'}}}\n"
                   "strategy: {type: aging_evolution}\n")
    with pytest.raises(archspec.SpecError, match=r"bad\.yaml: base: the base spec is not one of the template's"):
        load_search_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("type: search\nstrategy: {type: random}\nspace:\n  type: annotated\n  template:\n"
                      "    type: staged\n    stem: [{type: conv, out_channels: 16, stride: 2}]\n"
                      "    stages: [{block: {type: basic}, depth: {int: [3, 1]}, out_channels: 16}]\n")
    with pytest.raises(archspec.SpecError, match=r"space\.template\.stages\[0\]\.depth\.int: the range \[3, 1\]"):
        load_search_config(broken)


def _cli(*args, cwd=ROOT):
    """`archspec ARGS` through the CLI's entry point, in this process (tests/test_cli.py runs it as a process)."""
    return cli_in_process(*args, cwd=cwd)


def test_space_summary_lists_decisions_size_and_cost_range():
    done = _cli("space", "summary", str(SEARCH / "crnas_r50_dilation_template.yaml"), "--samples", "20", "--json")
    assert done.returncode == 0, done.stderr
    import json

    info = json.loads(done.stdout)
    assert info["size"] == 3 ** 16 and len(info["decisions"]) == 16
    assert info["decisions"][0] == {"path": "stages[0].dilations[0]", "options": ["1", "2", "3"], "default": "1",
                                    "name": None, "when": []}
    # dilation changes neither params nor FLOPs: the range is one point, ResNet-50's
    from archspec.compiler import costs

    resnet = costs(archspec.load(ROOT / "examples" / "backbones" / "resnet50.yaml"), (224, 224))
    assert info["flops"] == [resnet.flops, resnet.flops] and info["params"] == [resnet.params, resnet.params]
    text = _cli("space", "summary", str(SEARCH / "my_backbone_search.yaml"), "--samples", "20")
    assert text.returncode == 0, text.stderr
    assert "stages[2].block.choice[1].kernel: 3 | 5  [name late_kernel]  (when stages[2].block = k1kxk1(" in text.stdout
    assert "size: 96,367,968 architectures" in text.stdout


def test_space_sample_writes_valid_specs_and_never_overwrites(tmp_path):
    out = tmp_path / "samples"
    done = _cli("space", "sample", str(SEARCH / "my_backbone_search.yaml"), "-n", "5", "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = sorted(out.glob("*.yaml"))
    assert [p.name for p in written] == [f"sample_{i:03d}.yaml" for i in range(5)]
    template = load_template(SEARCH / "my_backbone_template.yaml")
    specs = [archspec.load(p) for p in written]
    assert len({archspec.fingerprint(s) for s in specs}) == 5
    assert all(template.match(s) is not None for s in specs)
    before = written[0].read_text()
    again = _cli("space", "sample", str(SEARCH / "my_backbone_template.yaml"), "-n", "2", "--out", str(out))
    assert again.returncode == 2 and again.stderr.startswith("error: ") and len(again.stderr.splitlines()) == 1
    assert written[0].read_text() == before


def test_space_commands_refuse_bad_input_in_one_line(tmp_path):
    plain = _cli("space", "summary", str(ROOT / "examples" / "backbones" / "resnet50.yaml"))
    assert plain.returncode == 2 and plain.stderr.splitlines() == [
        f"error: {ROOT / 'examples' / 'backbones' / 'resnet50.yaml'}: neither a search config (type: search) nor a "
        f"template (a spec with choices)"]
    bad = tmp_path / "t.yaml"
    bad.write_text("type: staged\nstem: [{type: conv, out_channels: 16, stride: 2}]\n"
                   "stages: [{block: {type: shufflenet_v2, kernel: {choice: [3, 9]}}, depth: 1, out_channels: 32}]\n")
    done = _cli("space", "summary", str(bad))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: {bad}: stages[0].block.kernel.choice[1]: ")


def test_my_backbone_is_searched_under_flops_and_latency_budgets(tmp_path):
    """The shipped user example's search (aging evolution, FLOPs and latency budgets), twice, with
    budgets whose outcome does not depend on how fast this machine is: a latency budget nothing
    can meet (every candidate within FLOPs is refused by it), and one everything meets (the FLOPs
    budget decides). Latency is really measured both times."""
    import csv

    from archspec.search.run import run_search

    text = (SEARCH / "my_backbone_search.yaml").read_text().replace(
        "template: my_backbone_template.yaml", f"template: {SEARCH / 'my_backbone_template.yaml'}")
    assert "max_flops: 8.0e9" in text and "max_latency_ms: 40" in text
    runs = {}
    for name, flops, latency in (("strict", "8.0e9", "0.0001"), ("loose", "2.5e9", "1.0e6")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text.replace("max_flops: 8.0e9", f"max_flops: {flops}")
                        .replace("max_latency_ms: 40", f"max_latency_ms: {latency}"))
        result = run_search(path, tmp_path / name, max_trials=20, progress=False)
        rows = list(csv.DictReader((tmp_path / name / "trials.csv").open()))
        runs[name] = (result, rows)
        assert result.trials == 20 == len(rows)
        checked = [r for r in rows if r["latency_ms"] and r["status"] != "duplicate"]
        assert checked and all(float(r["latency_ms"]) > 0 for r in checked)
        assert all(float(r["flops"]) <= float(flops) for r in checked)  # latency only after FLOPs
    strict, strict_rows = runs["strict"]
    assert strict.feasible == 0 and strict.best_spec is None
    assert all(r["status"] == "infeasible" and r["reason"].startswith("max_latency_ms:")
               for r in strict_rows if r["latency_ms"] and r["status"] != "duplicate")
    loose, loose_rows = runs["loose"]
    feasible = [r for r in loose_rows if r["status"] == "feasible"]
    assert feasible and all(float(r["flops"]) <= 2.5e9 for r in feasible)
    assert all(r["reason"].startswith("max_flops:") for r in loose_rows if r["status"] == "infeasible")
    assert load_template(SEARCH / "my_backbone_template.yaml").match(loose.best_spec) is not None


def test_detector_templates_choose_neck_and_head_fields_with_paths():
    """Detector documents take choices too (here inline backbone, neck width, head kind)."""
    backbone = yaml.safe_load((ROOT / "examples" / "backbones" / "resnet18.yaml").read_text())
    doc = {"type": "detector", "backbone": backbone,
           "neck": {"type": "fpn", "in_features": ["C3", "C4", "C5"], "min_level": 3, "max_level": 5,
                    "channels": {"choice": [64, 128]}},
           "head": {"choice": [{"type": "retinanet"}, {"type": "fcos", "convs": {"int": [1, 4]}}]},
           "num_classes": 3, "input_size": 256}
    t = parse_template(doc)
    assert t.kind == "detector" and t.size() == 2 * (1 + 4)
    spec = t.decode((1, 1, 2))
    assert spec.neck.channels == 128 and spec.head.type == "fcos" and spec.head.convs == 3
    assert t.match(spec) == (1, 1, 2)
    doc["head"]["choice"][1]["convs"] = {"int": [7, 9]}
    with pytest.raises(archspec.SpecError) as caught:
        parse_template(doc)
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("head.choice[1].convs.int", "9: Input should be less than or equal to 8")]


def test_validate_command_checks_templates_as_templates(tmp_path):
    ok = _cli("validate", str(SEARCH / "my_backbone_template.yaml"))
    assert ok.returncode == 0
    assert ok.stdout == (f"ok: {SEARCH / 'my_backbone_template.yaml'} (template of staged specs: 24 decisions, "
                         f"96,367,968 architectures)\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: staged\nstem: [{type: conv, out_channels: 16, stride: 2}]\n"
                   "stages: [{block: {type: basic}, depth: {choice: [1, 1]}, out_channels: 32}]\n")
    done = _cli("validate", str(bad))
    assert done.returncode == 2
    assert done.stderr == f"error: {bad}: stages[0].depth.choice[1]: 1 is listed twice\n"


def test_scale_permuted_templates_choose_kinds_parents_and_filter_scale():
    data = yaml.safe_load((ROOT / "examples" / "backbones" / "spinenet49.yaml").read_text())
    data["filter_size_scale"] = {"choice": [0.5, 1.0]}
    data["blocks"][1]["block"] = {"choice": [{"type": "basic"}, {"type": "bottleneck"}]}
    data["blocks"][4]["parents"] = {"choice": [[3, 5], [2, 5]]}
    t = parse_template(data)
    assert t.kind == "scale_permuted" and t.size() == 8 == len(list(t.enumerate()))
    base = archspec.load(ROOT / "examples" / "backbones" / "spinenet49.yaml")
    assert t.match(base) == (1, 0, 0)  # spinenet49 itself is a member
    spec = t.decode((0, 1, 1))
    assert spec.filter_size_scale == 0.5 and spec.blocks[1].block.type == "bottleneck"
    assert spec.blocks[4].parents == [2, 5]
    space = _space(t)
    assert sorted(space.enumerate()) == sorted(itertools.product(range(2), range(2), range(2)))
