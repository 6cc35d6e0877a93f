"""Scale-permuted backbones: the SpineNet zoo, its counts against the paper, validation with
field paths, and random permutations / rewirings that must compile and run or fail cleanly."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archspec
from archspec import compiler
from archspec import SpecError
from archspec.scale_permuted import PERMUTED_BLOCK_TYPES, permute_levels, rewire, with_block
from archspec.compiler.hooks import module_macs, module_params
from tests.conftest import ROOT
from tests.test_fuzz import _paths, check_outcome

BACKBONES = ROOT / "examples" / "backbones"
VARIANTS = ["spinenet49s", "spinenet49", "spinenet96", "spinenet143", "spinenet190"]

# Exact backbone counts (endpoint convs included): params, MACs at 224x224, MACs at the paper's size.
GOLDEN = {
    "spinenet49s": (9089215, 1516281141, 640, 12325257975),
    "spinenet49": (21831488, 3477684224, 640, 28261990400),
    "spinenet96": (36262976, 5723275264, 1024, 119054270464),
    "spinenet143": (60247616, 9086615552, 1280, 295259340800),
    "spinenet190": (126587664, 19111315632, 1280, 620983084800),
}

# MODEL_ZOO.md (tensorflow/tpu detection): RetinaNet detector totals, params (M) and 'FLOPs' (B, multiply-adds),
# with the head of each official config: (width, convs per branch).
PAPER = {
    "spinenet49s": (11.9, 33.8, 128, 4),
    "spinenet49": (28.5, 85.4, 256, 4),
    "spinenet96": (43.0, 265.4, 256, 4),
    "spinenet143": (67.0, 524.0, 256, 4),
    "spinenet190": (163.6, 1885.0, 512, 7),
}


def load(name: str):
    return archspec.load(BACKBONES / f"{name}.yaml")


def doc_of(name: str) -> dict:
    return yaml.safe_load((BACKBONES / f"{name}.yaml").read_text())


def retinanet_head(width: int, convs: int, size: int, classes: int = 91, anchors: int = 9) -> tuple[int, int]:
    """Params and MACs of the TF RetinaNet head on levels 3..7 at size x size: per branch `convs`
    3x3 convs with bias shared across levels and a BN per level, then a 3x3 prediction conv
    with bias (classes x anchors, 4 x anchors)."""
    tower = convs * (9 * width * width + width) + convs * 5 * 2 * width
    predict = sum(9 * width * outs + outs for outs in (classes * anchors, 4 * anchors))
    positions = sum((-(-size // 2 ** level)) ** 2 for level in range(3, 8))
    macs = positions * (2 * convs * 9 * width * width + 9 * width * (classes + 4) * anchors)
    return 2 * tower + predict, macs


def test_head_helper_by_hand():
    # 256 wide, 4 convs: 2 x (4 x (589,824 + 256) + 4 x 5 x 512) + 1,887,795 + 82,980 params.
    params, macs = retinanet_head(256, 4, 640)
    assert params == 2 * (4 * 590080 + 10240) + 1887795 + 82980 == 6711895
    assert macs == (6400 + 1600 + 400 + 100 + 25) * (8 * 589824 + 2304 * 95 * 9)


@pytest.mark.parametrize("name", VARIANTS)
def test_golden_counts(name):
    params, macs_224, size, macs_paper = GOLDEN[name]
    spec = load(name)
    assert compiler.costs(spec, 224).params == params
    assert compiler.costs(spec, 224).macs == macs_224
    assert compiler.costs(spec, size).macs == macs_paper


@pytest.mark.parametrize("name", ["spinenet49", "spinenet96", "spinenet143", "spinenet190"])
def test_backbone_plus_retinanet_head_matches_the_paper(name):
    _, _, size, macs = GOLDEN[name]
    paper_params, paper_flops, width, convs = PAPER[name]
    head_params, head_macs = retinanet_head(width, convs, size)
    assert (GOLDEN[name][0] + head_params) / 1e6 == pytest.approx(paper_params, rel=0.002)
    assert (macs + head_macs) / 1e9 == pytest.approx(paper_flops, rel=0.002)


def test_spinenet49s_with_its_official_128_wide_head_stays_short_of_the_paper():
    # Endpoints 128 and retinanet_head_num_filters 128 (configs/spinenet/spinenet49S_retinanet.yaml)
    # give 11.27M / 30.8 GMACs against the paper's 11.9M / 33.8B: a gap the official code does not explain.
    head_params, head_macs = retinanet_head(128, 4, 640)
    total_params = (GOLDEN["spinenet49s"][0] + head_params) / 1e6
    total_macs = (GOLDEN["spinenet49s"][3] + head_macs) / 1e9
    assert round(total_params, 2) == 11.27 and round(total_macs, 1) == 30.8
    wide_params, wide_macs = retinanet_head(256, 4, 640)  # a 256 head overshoots far more
    assert (GOLDEN["spinenet49s"][0] + wide_params) / 1e6 > 15


def test_paper_spec_tables_are_encoded():
    spec = load("spinenet49")
    assert [(b.level, b.block.type, tuple(b.parents), b.output) for b in spec.blocks][:3] == [
        (2, "bottleneck", (0, 1), False), (4, "basic", (0, 1), False), (3, "bottleneck", (2, 3), False)]
    scaling = {name: (s.endpoint_channels, s.filter_size_scale, s.resample_alpha, s.block_repeats)
               for name in VARIANTS for s in [load(name)]}
    assert scaling == {"spinenet49s": (128, 0.65, 0.5, 1), "spinenet49": (256, 1.0, 0.5, 1),
                       "spinenet96": (256, 1.0, 0.5, 2), "spinenet143": (256, 1.0, 1.0, 3),
                       "spinenet190": (512, 1.3, 1.0, 4)}


def test_unused_block_is_merged_into_the_output_of_its_level():
    # As in the official code: blocks[9] (index 11, L5) has no consumer and merges into the L5 output.
    nodes = load("spinenet49").resolve()
    assert [(n.index, n.merged) for n in nodes if n.merged] == [(14, (11,))]
    graph = compiler.lower(load("spinenet49"))
    assert "block11.rep0.act_out" in graph.inputs_of("block14.sum")


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_returns_c3_to_c7_with_strides_and_channels(name):
    spec = load(name)
    model = compiler.build(spec).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 256, 256))
    width = spec.endpoint_channels
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        f"C{k}": (1, width, 256 // 2 ** k, 256 // 2 ** k) for k in range(3, 8)}
    assert {k: (i.channels, i.stride) for k, i in model.output_shape().items()} == {
        f"C{k}": (width, 2 ** k) for k in range(3, 8)}


@pytest.mark.parametrize("name, size", [("spinenet49s", (100, 150)), ("spinenet49s", (224, 224)),
                                        ("spinenet96", (128, 192))])
def test_analytic_counts_equal_module_counts(name, size):
    spec = load(name)
    model = compiler.build(spec).eval()
    analytic = compiler.costs(spec, size)
    assert module_params(model) == analytic.params
    assert module_macs(model, torch.randn(1, 3, *size)) == analytic.macs
    with torch.no_grad():
        shapes = {k: list(v.shape[1:]) for k, v in model(torch.randn(1, 3, *size)).items()}
    assert shapes == {k: v["shape"] for k, v in compiler.summarize(spec, size)["outputs"].items()}


def test_inputs_not_divisible_by_128_take_the_official_level_sizes():
    # Level k is ceil(size / 2**k) everywhere (the official target_width); upsampled maps are cropped to it.
    outputs = compiler.summarize(load("spinenet49"), 224)["outputs"]
    assert [v["shape"][1:] for v in outputs.values()] == [[28, 28], [14, 14], [7, 7], [4, 4], [2, 2]]


def test_torch_export_accepts_a_spinenet():
    model = compiler.build(load("spinenet49s")).eval()
    x = torch.randn(1, 3, 160, 224)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        expected, got = model(x), program.module()(x)
    assert list(got) == ["C3", "C4", "C5", "C6", "C7"]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])


def test_graph_renders_levels_as_rows(tmp_path):
    from archspec.compiler import render

    graph = compiler.lower(load("spinenet49"))
    dot = render.to_dot(graph)
    for level in range(2, 8):
        assert f'cluster_L{level}' in dot
    assert "n_block11 -> n_block14 [constraint=false];" in dot and "n_input -> n_block" not in dot
    assert 'subgraph L7["L7 (stride 128)"]' in render.to_mermaid(graph)
    assert render.to_png(graph, tmp_path / "spinenet49.png").stat().st_size > 10000


def test_summary_cli_lists_every_output_level():
    from click.testing import CliRunner

    from archspec.cli import cli

    result = CliRunner().invoke(cli, ["summary", str(BACKBONES / "spinenet49.yaml"), "--input-size", "640", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["type"] == "scale_permuted" and info["macs"] == GOLDEN["spinenet49"][3]
    assert {k: (v["channels"], v["stride"]) for k, v in info["outputs"].items()} == {
        f"C{k}": (256, 2 ** k) for k in range(3, 8)}


# -- validation --------------------------------------------------------------------------------------
def _set(path, value):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize("mutate, path, words", [
    (_set(["blocks", 7, "parents"], [6, 20]), "blocks[7].parents[1]", "does not precede block 7"),
    (_set(["blocks", 7, "parents"], [6, -1]), "blocks[7].parents[1]", "does not precede"),
    (_set(["blocks", 7, "parents"], [6, 6]), "blocks[7].parents[1]", "listed twice"),
    (_set(["blocks", 0, "parents"], [0, 2]), "blocks[0].parents[1]", "stem blocks 0..1"),
    (_set(["blocks", 7, "parents"], []), "blocks[7].parents", "at least 1"),
    (_set(["blocks", 7, "level"], 8), "blocks[7].level", "less than or equal to 7"),
    (_set(["blocks", 7, "level"], 1), "blocks[7].level", "greater than or equal to 2"),
    (_set(["blocks", 7, "block"], {"type": "conv"}), "blocks[7].block.type", "unknown kind 'conv'"),
    (_set(["blocks", 7, "block", "groups"], 3), "blocks[7].block.groups", "unknown field"),
    (_set(["blocks", 8, "block"], {"type": "inverted_residual", "kernel": 4}), "blocks[8].block.kernel", "even"),
    (_set(["stem", 0, "groups"], 2), "stem[0].groups", "3 input channels are not divisible by 2 groups"),
    (_set(["blocks", 14, "output"], False), "blocks", "no output block at L6"),
    (_set(["blocks", 14, "level"], 5), "blocks[14].output", "a second output at level 5"),
    (_set(["blocks", 0, "output"], True), "blocks[0].output", "levels 3...7, not at level 2"),
    (_set(["blocks", 9, "block"], {"type": "basic"}), "blocks[9]", "nothing uses this block"),
    (_set(["level_filters"], {2: 64}), "level_filters", "no filters for level 3"),
    (_set(["filter_size_scale"], 0.001), "filter_size_scale", "to nothing"),
    (_set(["resample_alpha"], 0.001), "resample_alpha", "leaves no channels"),
    (_set(["stem"], [{"type": "conv", "out_channels": 8, "stride": 2}]), "stem", "reaches level 1"),
    (_set(["stem", 1, "kernel"], 4), "stem[1].kernel", "even"),
])
def test_bad_specs_name_the_field(mutate, path, words):
    doc = doc_of("spinenet49")
    mutate(doc)
    with pytest.raises(SpecError) as info:
        archspec.validate(doc)
    assert info.value.path == path
    assert words in info.value.message


def test_edits_return_new_validated_specs():
    spec = load("spinenet49")
    changed = with_block(spec, 1, kind="bottleneck")
    assert changed.blocks[1].block.type == "bottleneck" and spec.blocks[1].block.type == "basic"
    assert compiler.costs(changed, 256).params > compiler.costs(spec, 256).params
    with pytest.raises(SpecError) as info:
        with_block(spec, 7, parents=[6, 30])
    assert info.value.path == "blocks[7].parents[1]"
    with pytest.raises(SpecError) as info:
        rewire(spec, [[0, 1]] * 14)
    assert info.value.path == "blocks"
    levels = [b.level for b in spec.blocks]
    assert permute_levels(spec, levels) == spec


def test_mbconv_blocks_compile_and_run():
    # SpineNet-Mobile style: every block an inverted residual with squeeze-excite, Mobile filter sizes.
    doc = doc_of("spinenet49")
    doc["level_filters"] = {2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112}
    doc["endpoint_channels"] = 48
    doc["stem_blocks"] = [{"type": "inverted_residual", "se_ratio": 0.2}] * 2
    for block in doc["blocks"]:
        block["block"] = {"type": "inverted_residual", "se_ratio": 0.2, "activation": "silu"}
    spec = archspec.validate(doc)
    model = compiler.build(spec).eval()
    x = torch.randn(1, 3, 128, 128)
    assert module_params(model) == compiler.costs(spec, 128).params
    assert module_macs(model, x) == compiler.costs(spec, 128).macs
    with torch.no_grad():
        assert {k: v.shape[1] for k, v in model(x).items()} == {f"C{k}": 48 for k in range(3, 8)}


# -- random permutations and rewirings ---------------------------------------------------------------
SMALL = dict(doc_of("spinenet49s"), filter_size_scale=0.125, endpoint_channels=16)
"""SpineNet-49 at 1/8 width: the structure under test, cheap to build and run."""

FIELDS = {"blocks", "stem", "stem_blocks", "level_filters", "filter_size_scale", "resample_alpha"}


def random_edit(spec, rng: random.Random):
    """One search-like edit through the pure edit functions (may be invalid on purpose)."""
    n = len(spec.blocks)
    move = rng.choice(["permute", "permute", "rewire", "kind", "level", "output", "parents"])
    if move == "permute":  # shuffle levels among outputs and among the others: often valid
        levels = [b.level for b in spec.blocks]
        outputs = [i for i in range(n) if spec.blocks[i].output]
        others = [i for i in range(n) if not spec.blocks[i].output]
        for group in (outputs, others):
            values = [levels[i] for i in group]
            rng.shuffle(values)
            for i, value in zip(group, values):
                levels[i] = value
        if rng.random() < 0.3:  # and sometimes move one intermediate block to any level
            levels[rng.choice(others)] = rng.randint(2, 7)
        return permute_levels(spec, levels)
    index = rng.randrange(n)
    earlier = len(spec.stem_blocks) + index
    if move == "rewire":
        return rewire(spec, [rng.sample(range(len(spec.stem_blocks) + i), 2) if i == index else list(b.parents)
                             for i, b in enumerate(spec.blocks)])
    if move == "parents":  # anything, out of range and duplicates included
        return with_block(spec, index, parents=[rng.randint(-2, earlier + 2) for _ in range(rng.randint(1, 3))])
    if move == "kind":
        return with_block(spec, index, kind=rng.choice(PERMUTED_BLOCK_TYPES + ("conv",)))
    if move == "level":
        return with_block(spec, index, level=rng.randint(1, 8))
    return with_block(spec, index, output=not spec.blocks[index].output)


def test_random_permutations_compile_or_fail_with_a_spec_error():
    rng = random.Random(20200614)
    base = archspec.validate(copy.deepcopy(SMALL))
    valid, invalid, built = 0, 0, 0
    for _ in range(600):
        spec = base
        try:
            for _ in range(rng.randint(1, 4)):
                spec = random_edit(spec, rng)
        except SpecError as err:
            invalid += 1
            assert err.issues and all(issue.message for issue in err.issues)
            assert err.path.split("[")[0].split(".")[0] in FIELDS, str(err)
            continue
        valid += 1
        graph = compiler.lower(spec)
        for size in ((128, 128), (96, 160)):
            shapes = graph.shapes(size)
            for name, node in graph.outputs.items():
                level = int(name[1:])
                assert shapes[node].height == -(-size[0] // 2 ** level)
        if valid % 15 == 1:  # build and run a subset
            built += 1
            model = compiler.build(graph).eval()
            x = torch.randn(1, 3, 96, 160)
            assert module_macs(model, x) == compiler.costs(graph, (96, 160)).macs
            assert module_params(model) == compiler.costs(graph, (96, 160)).params
    assert valid >= 150 and invalid >= 150 and built >= 5, (valid, invalid, built)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(["scale_permuted", "bottleneck", "basic", "inverted_residual", "conv", "relu"]),
                    st.text(max_size=4))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["type", "level", "parents", "block"]), inner,
                                                 max_size=3)), max_leaves=8)


@st.composite
def mutated_spinenet_docs(draw):
    """SpineNet-49S documents with 1-3 fields replaced by arbitrary data, deleted or nudged."""
    doc = copy.deepcopy(SMALL)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "small_int"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "small_int":
            parent[path[-1]] = draw(st.integers(-2, 20))
        else:
            parent[path[-1]] = draw(documents)
    return doc


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_spinenet_docs())
def test_mutated_spinenet_documents_give_a_spec_or_a_spec_error(doc):
    check_outcome(doc)


def test_downsampling_follows_the_official_pool_rule():
    # d levels down: a 3x3 stride-2 conv, then for d >= 2 a max-pool of stride 2**(d-1), kernel 3 if 2**d <= 4 else 5.
    spec = with_block(load("spinenet49"), 7, parents=[0, 8])  # block9 at L7 now also reads stem block 0 at L2
    graph = compiler.lower(spec)
    nodes = spec.resolve()
    seen = {}
    for node in nodes:
        for k, parent in enumerate(node.parents):
            levels = node.level - nodes[parent].level
            prefix = f"{node.name}.resample{k}"
            pool = graph.node(f"{prefix}.pool").op if f"{prefix}.pool" in graph else None
            assert (f"{prefix}.conv_down" in graph) == (levels > 0)
            assert (f"{prefix}.upsample" in graph) == (levels < 0)
            seen[levels] = None if pool is None else (pool.kernel, pool.stride)
    assert {d: seen[d] for d in (1, 2, 3, 5)} == {1: None, 2: (3, 2), 3: (5, 4), 5: (5, 16)}
    assert compiler.summarize(spec, 256)["outputs"]["C7"]["shape"] == [256, 2, 2]
