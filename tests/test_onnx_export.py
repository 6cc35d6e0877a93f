"""ONNX export: parity with PyTorch for every zoo spec, the checker's full check, metadata
round trip, dynamic batch, the legacy-exporter fallback, and the `export`/`summary` commands.

The dynamo exporter takes 3-30 s per zoo spec on a 2-core CPU (torch.export and its
decompositions dominate), so each spec is exported once per module at a small input size
(64x64; SpineNet needs a multiple of 2**7, 128x128) and every check reuses the file. The deep
variants are marked slow (they still run in CI)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import archspec
from archspec import compiler
from archspec.compiler.export import (EXPORTERS, METADATA_FINGERPRINT, METADATA_SPEC, ExportFallbackWarning, export,
                             export_onnx, export_spec, io_shapes, optimize_onnx, read_metadata, spec_from_onnx)
from tests.conftest import ZOO

SLOW = {"resnet101", "cr_resnet101", "detnas_coco_fpn_3p8g", "spinenet143", "spinenet190", "spinenet96", "maedet_l"}
TOLERANCE = 1e-4
"""Max abs difference relative to the output's max abs value."""


def _zoo_params():
    return [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else []) for p in ZOO]


def _size(spec) -> tuple[int, int]:
    return (128, 128) if spec.type == "scale_permuted" else (64, 64)


def _randomize_norms(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters, so exported BN (folded or not) is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                n = layer.num_features
                layer.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
                layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return module.eval()


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.abs(expected).max())
    return float(np.abs(actual - expected).max()) / max(scale, 1e-12)


def _run(path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """spec path -> (spec, module, onnx path), exported once per module."""
    cache = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(path):
        if path not in cache:
            torch.manual_seed(0)
            spec = archspec.load(path)
            module = _randomize_norms(compiler.build(spec))
            onnx_path = export_spec(spec, folder / f"{path.stem}.onnx", input_size=_size(spec), module=module)
            cache[path] = (spec, module, onnx_path)
        return cache[path]

    return get


@pytest.mark.parametrize("path", _zoo_params())
def test_onnx_runtime_matches_torch(exported, path):
    spec, module, onnx_path = exported(path)
    x = torch.randn(1, spec.in_channels, *_size(spec), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in module(x).items()}
    actual = _run(onnx_path, x.numpy())
    assert list(actual) == spec.output_names()
    for name in spec.output_names():
        assert actual[name].shape == expected[name].shape, name
        assert _relative_error(actual[name], expected[name]) < TOLERANCE, name
    # The file is valid under the checker's full check (operator schemas + strict shape inference)
    # and carries the spec, which round-trips to the same architecture.
    onnx.checker.check_model(str(onnx_path), full_check=True)
    assert archspec.fingerprint(spec_from_onnx(onnx_path)) == archspec.fingerprint(spec)


def test_metadata_round_trip(exported):
    spec, _, path = exported(ZOO[[p.stem for p in ZOO].index("resnet18")])
    metadata = read_metadata(path)
    assert json.loads(metadata[METADATA_SPEC]) == archspec.to_data(spec)
    assert metadata[METADATA_FINGERPRINT] == archspec.fingerprint(spec)
    assert metadata["archspec.input_size"] == "64x64"
    assert metadata["archspec.exporter"] == "dynamo"
    rebuilt = spec_from_onnx(path)
    assert rebuilt == spec
    shapes = io_shapes(path)
    assert shapes["inputs"] == {"images": [1, 3, 64, 64]}
    assert shapes["outputs"] == {"C2": [1, 64, 16, 16], "C3": [1, 128, 8, 8], "C4": [1, 256, 4, 4],
                                 "C5": [1, 512, 2, 2]}


def test_dynamic_batch_runs_batch_1_and_3_through_one_file(tmp_path):
    spec = archspec.load(ZOO[[p.stem for p in ZOO].index("mobilenet_v2")])
    module = _randomize_norms(compiler.build(spec))
    path = export_spec(spec, tmp_path / "dyn.onnx", input_size=64, dynamic_batch=True, module=module)
    assert io_shapes(path)["inputs"]["images"][0] == "batch"
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = module(x)
        actual = _run(path, x.numpy())
        for name, value in expected.items():
            assert actual[name].shape[0] == batch
            assert _relative_error(actual[name], value.numpy()) < TOLERANCE


def test_legacy_fallback_warns_with_the_reason(tmp_path, monkeypatch):
    import archspec.compiler.export as export_module

    def broken(*args, **kwargs):
        raise RuntimeError("simulated dynamo failure: unsupported op foo")

    monkeypatch.setattr(export_module, "_export_dynamo", broken)
    spec = archspec.load(ZOO[[p.stem for p in ZOO].index("resnet18")])
    module = _randomize_norms(compiler.build(spec))
    with pytest.warns(ExportFallbackWarning, match=r"dynamo ONNX exporter failed \(RuntimeError: simulated dynamo "
                                                   r"failure: unsupported op foo\); falling back to the legacy"):
        path = export_spec(spec, tmp_path / "legacy.onnx", input_size=64, module=module)
    assert read_metadata(path)["archspec.exporter"] == "legacy"
    onnx.checker.check_model(str(path), full_check=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = module(x)
    actual = _run(path, x.numpy())
    assert list(actual) == spec.output_names()
    for name, value in expected.items():
        assert _relative_error(actual[name], value.numpy()) < TOLERANCE


def test_export_onnx_handles_tuple_outputs_and_checks_names(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)), torch.relu(x)

    x = torch.randn(2, 4, 8, 8)
    path = export_onnx(Pair(), x, tmp_path / "pair.onnx", output_names=["pooled", "features"],
                       metadata={"purpose": "test"})
    assert list(_run(path, x.numpy())) == ["pooled", "features"]
    assert read_metadata(path)["purpose"] == "test"
    with pytest.raises(ValueError, match="returns 2 outputs but 1 output names"):
        export_onnx(Pair(), x, tmp_path / "bad.onnx", output_names=["only"])


def test_optimize_keeps_outputs_metadata_and_checker(tmp_path, exported):
    spec, module, path = exported(ZOO[[p.stem for p in ZOO].index("resnet18")])
    optimized = optimize_onnx(path, tmp_path / "opt.onnx")
    onnx.checker.check_model(str(optimized), full_check=True)
    assert read_metadata(optimized)[METADATA_SPEC] == read_metadata(path)[METADATA_SPEC]
    model = onnx.load(str(optimized))
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    before, after = _run(path, x), _run(optimized, x)
    for name in spec.output_names():
        assert _relative_error(after[name], before[name]) < TOLERANCE


def test_exporter_registry_dispatches_by_spec_type(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(EXPORTERS, "staged", lambda spec, path, **kw: calls.append((spec.name, kw)) or path)
    spec = archspec.load(ZOO[0])
    assert export(spec, tmp_path / "x.onnx", input_size=(64, 64)) == tmp_path / "x.onnx"
    assert calls == [(spec.name, {"input_size": (64, 64)})]


def test_cli_export_and_summary_of_the_file(tmp_path, capsys):
    from archspec.cli import main

    path = tmp_path / "r18.onnx"
    main(["export", str(ZOO[[p.stem for p in ZOO].index("resnet18")]), "-o", str(path), "--input-size", "64",
          "--dynamic-batch"])
    assert "wrote" in capsys.readouterr().out
    main(["summary", str(path), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "resnet18" and info["input_size"] == [64, 64]
    assert info["onnx"]["inputs"] == {"images": ["batch", 3, 64, 64]}
    assert info["onnx"]["outputs"]["C5"] == ["batch", 512, 2, 2]


def test_summary_of_an_onnx_file_without_metadata_is_a_clear_error(tmp_path, capsys):
    from archspec.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(torch.nn.ReLU(), torch.randn(1, 3, 4, 4), tmp_path / "plain.onnx", output_names=["y"])
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", str(path)])
    assert exit_info.value.code == 2
    assert "no 'archspec.spec' metadata" in capsys.readouterr().err
