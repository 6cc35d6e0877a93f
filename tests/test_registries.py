"""Every member of every kind union of the spec layer has an entry in every registry it needs,
and every registry is the one `Registry` type (a miss names the registry and what it holds)."""

from __future__ import annotations

import inspect
from typing import get_args

import pytest

import archspec.detection  # noqa: F401 - registers the detector exporter and the head modules
from archspec.backbones import StemLayer
from archspec.blocks import BLOCK_SPECS, Activation, block_tag
from archspec.compiler.detector import HEADS, NECK_PLANS
from archspec.compiler.export import EXPORTERS
from archspec.compiler.latency.kernels import DECOMPOSERS, KERNEL_GRAPHS
from archspec.compiler.lowering import LOWER_SPEC, LOWERINGS
from archspec.compiler.ops import ACTIVATIONS, OPS, Op
from archspec.detection.heads import HEAD_MODULES, DenseHead
from archspec.detection.model import NECK_MODULES
from archspec.detector import HEAD_SPECS, Neck
from archspec.io import AnySpec
from archspec.registry import Registry, RegistryError
from archspec.scale_permuted import PermutedBlockKind
from archspec.search.score import SCORERS


def _union_tags(union) -> set[str]:
    members = get_args(get_args(union)[0])
    return {block_tag(member) for member in members}


def test_block_kinds_have_lowerings():
    kinds = set(BLOCK_SPECS) | _union_tags(StemLayer) | _union_tags(PermutedBlockKind)
    assert kinds == {"conv", "basic", "bottleneck", "inverted_residual", "shufflenet_v2", "shuffle_xception",
                     "k1kx", "k1kxk1", "max_pool"}
    assert kinds <= set(LOWERINGS)
    for tag, cls in BLOCK_SPECS.items():
        assert block_tag(cls) == tag


def test_backbone_kinds_lower_export_and_decompose():
    kinds = _union_tags(AnySpec) - {"detector"}
    assert kinds == {"staged", "scale_permuted"}
    assert kinds <= set(LOWER_SPEC) and kinds <= set(DECOMPOSERS)
    assert "detector" in EXPORTERS and "staged" in EXPORTERS  # scale_permuted: the generic graph exporter
    assert {"layer", "classifier", "resample", "merge"} <= set(KERNEL_GRAPHS)


def test_neck_and_head_kinds_have_plans_and_modules():
    necks = _union_tags(Neck)
    assert necks == {"fpn", "none"} and necks <= set(NECK_PLANS) and necks <= set(NECK_MODULES)
    assert set(HEAD_SPECS) == {"retinanet", "fcos"}
    for tag, spec_class in HEAD_SPECS.items():
        assert HEADS[tag].spec_class is spec_class
        assert issubclass(HEAD_MODULES[tag], HEADS[tag]) and issubclass(HEAD_MODULES[tag], DenseHead)


def test_every_op_implements_every_backend():
    assert len(OPS) == 15
    for kind, cls in OPS.items():
        assert cls.kind == kind
        if cls.arity == 0:
            continue
        assert cls.emit_onnx is not Op.emit_onnx, f"{kind}: no ONNX emission"
        assert cls.torch_module is not Op.torch_module or cls.emit_torch is not Op.emit_torch, f"{kind}: no torch"


def test_every_activation_of_the_spec_has_torch_and_onnx_forms():
    assert set(get_args(Activation)) == set(ACTIVATIONS)


def test_scorers_match_the_score_command():
    from archspec.cli.search_commands import score

    choices = next(p.type.choices for p in score.params if p.name == "scorer")
    assert list(choices) == list(SCORERS)


def test_registries_are_one_type_and_misses_name_the_registry():
    for registry in (BLOCK_SPECS, LOWERINGS, LOWER_SPEC, OPS, ACTIVATIONS, HEADS, HEAD_SPECS, HEAD_MODULES,
                     NECK_PLANS, NECK_MODULES, EXPORTERS, DECOMPOSERS, KERNEL_GRAPHS, SCORERS):
        assert isinstance(registry, Registry) and Registry.all()[registry.name] is registry
    with pytest.raises(RegistryError, match="unknown block lowering 'nope'; registered: 'basic', 'bottleneck'"):
        LOWERINGS["nope"]
    with pytest.raises(RegistryError, match="block kind 'conv' is registered already"):
        BLOCK_SPECS.register("conv", BLOCK_SPECS["basic"])
    assert inspect.isclass(OPS["conv"])
