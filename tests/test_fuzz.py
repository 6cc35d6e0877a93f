"""Property tests: whatever document comes in, the loader either returns a valid spec (which
then lowers, infers shapes and costs without error) or raises SpecError. Nothing else."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archspec
from archspec import compiler
from archspec import SpecError
from tests.conftest import ZOO

ZOO_DOCS = [yaml.safe_load(p.read_text()) for p in ZOO if yaml.safe_load(p.read_text())["type"] == "staged"]

FIELD_WORDS = ["type", "stem", "stages", "block", "blocks", "depth", "out_channels", "stride", "dilation",
               "dilations", "kernel", "groups", "expansion", "width_per_group", "bottleneck_channels", "se_ratio",
               "activation", "outputs", "head", "num_classes", "norm", "bias", "in_channels", "name"]
TAG_WORDS = ["staged", "conv", "max_pool", "basic", "bottleneck", "inverted_residual", "shufflenet_v2",
             "shuffle_xception", "k1kx", "k1kxk1", "classifier", "relu", "silu", "C2", "C5", "logits"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(TAG_WORDS), st.text(max_size=6))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(FIELD_WORDS), st.text(max_size=4)), inner,
                                            max_size=5)),
    max_leaves=25)


def check_outcome(doc) -> None:
    try:
        spec = archspec.validate(doc)
    except SpecError as err:
        assert err.issues and all(isinstance(i.path, str) and i.message for i in err.issues)
        return
    # A valid spec must always lower and cost cleanly.
    compiler.costs(spec, (64, 64))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


@st.composite
def mutated_zoo_docs(draw):
    doc = copy.deepcopy(draw(st.sampled_from(ZOO_DOCS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "small_int", "duplicate"]))
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "small_int":
            parent[key] = draw(st.integers(-2, 9))
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        else:
            parent[key] = draw(documents)
    return doc


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(documents)
def test_random_documents_give_a_spec_or_a_spec_error(doc):
    check_outcome(doc)


@FUZZ
@given(mutated_zoo_docs())
def test_mutated_zoo_documents_give_a_spec_or_a_spec_error(doc):
    check_outcome(doc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_text_gives_a_spec_or_a_spec_error(text):
    try:
        archspec.loads(text)
    except SpecError:
        pass
