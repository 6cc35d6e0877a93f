"""ONNX export: the direct writer (the default) against PyTorch for every zoo spec, the
checker's full check, metadata round trip, dynamic batch, strict weights, export without torch,
the dynamo exporter as an oracle (resnet18, spinenet49s; the detectors' oracle is in
tests/test_detector.py), the legacy-exporter fallback, and the `export`/`summary` commands.

The direct writer takes milliseconds per spec; what each parity case costs is building the torch
reference and running both at 64x64. The dynamo exporter takes 3-30 s per spec on a 2-core CPU,
so only the oracle cases use it. The deepest variants are marked slow (they still run in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import archspec
from archspec import compiler
from archspec.compiler.export import (EXPORTERS, METADATA_FINGERPRINT, METADATA_SPEC, ExportError,
                                      ExportFallbackWarning, export, export_onnx, export_spec, io_shapes,
                                      optimize_onnx, read_metadata, spec_from_onnx)
from tests.conftest import ROOT, ZOO

SLOW = {"spinenet190", "spinenet143"}
"""Over 60 M parameters each: building the torch reference dominates."""
TOLERANCE = 1e-4
"""Max abs difference relative to the output's max abs value."""
SIZE = (64, 64)
"""Every zoo spec (SpineNet's L7 included: 1x1) at 64x64."""


def _zoo_params():
    return [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else []) for p in ZOO]


def _zoo(name: str):
    return ZOO[[p.stem for p in ZOO].index(name)]


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
    """The file's outputs in ONNX Runtime, the graph as written (optimizing a deep graph costs
    more than running it at 64x64; `test_optimize_*` checks the optimized graph)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """spec path -> (spec, module, onnx path): the direct writer with the module's weights,
    exported once per module."""
    cache = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(path):
        if path not in cache:
            torch.manual_seed(0)
            spec = archspec.load(path)
            module = _randomize_norms(compiler.build(spec))
            onnx_path = export_spec(spec, folder / f"{path.stem}.onnx", input_size=SIZE, module=module)
            cache[path] = (spec, module, onnx_path)
        return cache[path]

    return get


@pytest.mark.parametrize("path", _zoo_params())
def test_onnx_runtime_matches_torch(exported, path):
    spec, module, onnx_path = exported(path)
    x = torch.randn(1, spec.in_channels, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in module(x).items()}
    actual = _run(onnx_path, x.numpy())
    assert list(actual) == spec.output_names()
    for name in spec.output_names():
        assert actual[name].shape == expected[name].shape, name
        assert _relative_error(actual[name], expected[name]) < TOLERANCE, name
    # The file is valid under the checker's full check (operator schemas + strict shape inference)
    # and carries the spec (read once: the deep variants' files are hundreds of MB).
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata[METADATA_FINGERPRINT] == archspec.fingerprint(spec)
    assert json.loads(metadata[METADATA_SPEC]) == archspec.to_data(spec)
    assert metadata["archspec.exporter"] == "direct"


def test_metadata_round_trip(exported):
    spec, _, path = exported(_zoo("resnet18"))
    metadata = read_metadata(path)
    assert json.loads(metadata[METADATA_SPEC]) == archspec.to_data(spec)
    assert metadata[METADATA_FINGERPRINT] == archspec.fingerprint(spec)
    assert metadata["archspec.input_size"] == "64x64"
    assert metadata["archspec.exporter"] == "direct"
    rebuilt = spec_from_onnx(path)
    assert rebuilt == spec
    shapes = io_shapes(path)
    assert shapes["inputs"] == {"images": [1, 3, 64, 64]}
    assert shapes["outputs"] == {"C2": [1, 64, 16, 16], "C3": [1, 128, 8, 8], "C4": [1, 256, 4, 4],
                                 "C5": [1, 512, 2, 2]}


def _without_values(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its initializers' values cleared (what `onnx_header.load_header` leaves out)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for tensor in model.graph.initializer:
        for name in ("float_data", "int32_data", "string_data", "int64_data", "raw_data", "double_data",
                     "uint64_data"):
            tensor.ClearField(name)
    return model


def test_the_header_is_the_model_without_its_weight_values(exported, tmp_path):
    """Read from the tags alone: everything of the file but the initializers' values (a direct
    export with raw data; a hand-made model with typed value fields, its initializers listed
    among the graph's inputs as older files do, and a doc string)."""
    from onnx import TensorProto, helper

    from archspec.compiler.onnx_header import load_header

    _, _, path = exported(_zoo("resnet18"))
    full = onnx.load(str(path))
    header = load_header(path)
    assert header == _without_values(full) and len(header.graph.initializer) == len(full.graph.initializer) > 50
    assert header.ByteSize() < full.ByteSize() / 100

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.5] * 6)  # float_data, not raw
    steps = helper.make_tensor("k", TensorProto.INT64, [1], [7])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [weight, steps],
                              doc_string="made by hand")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"purpose": "test"})
    onnx.save(model, str(tmp_path / "hand.onnx"))
    assert load_header(tmp_path / "hand.onnx") == _without_values(model)
    assert io_shapes(tmp_path / "hand.onnx") == {"inputs": {"x": ["n", 2]}, "outputs": {"y": ["n", 3]}}
    assert read_metadata(tmp_path / "hand.onnx") == {"purpose": "test"}


def test_a_header_the_walk_cannot_read_falls_back_to_the_full_parse(exported, tmp_path, monkeypatch):
    import archspec.compiler.onnx_header as onnx_header

    _, _, path = exported(_zoo("resnet18"))
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.onnx: not a valid ONNX file"):
        io_shapes(tmp_path / "cut.onnx")
    (tmp_path / "noise.onnx").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError, match=r"noise\.onnx: not a valid ONNX file"):
        read_metadata(tmp_path / "noise.onnx")
    monkeypatch.setattr(onnx_header, "MAX_FIELDS", 10)  # more fields than that: the full parse reads it
    monkeypatch.setattr(onnx_header, "_recent", type(onnx_header._recent)())  # not the header walked before
    assert onnx_header.load_header(path) == onnx.load(str(path))


def test_a_header_is_walked_once_until_its_file_changes(exported, tmp_path, monkeypatch):
    """`archspec summary x.onnx` reads the metadata, the spec and the shapes of one file: the
    tags are walked once. A file written again (in place, or replaced) is walked again."""
    import archspec.compiler.onnx_header as onnx_header

    walks = []
    walk = onnx_header.header_bytes
    monkeypatch.setattr(onnx_header, "header_bytes", lambda fd, size: walks.append(size) or walk(fd, size))
    spec, _, source = exported(_zoo("resnet18"))
    path = tmp_path / "copy.onnx"
    path.write_bytes(source.read_bytes())
    assert spec_from_onnx(path) == spec and "images" in io_shapes(path)["inputs"]
    assert read_metadata(path)["archspec.name"] == spec.name
    assert len(walks) == 1

    model = onnx.load(str(path))
    model.metadata_props.add(key="note", value="written again")
    with path.open("r+b") as handle:  # in place: the same inode
        handle.write(model.SerializeToString())
    assert read_metadata(path)["note"] == "written again" and len(walks) == 2
    model.metadata_props[-1].value = "replaced"
    (tmp_path / "new.onnx").write_bytes(model.SerializeToString())
    (tmp_path / "new.onnx").replace(path)
    assert read_metadata(path)["note"] == "replaced" and len(walks) == 3


def test_dynamic_batch_runs_batch_1_and_3_through_one_file(tmp_path):
    spec = archspec.load(_zoo("mobilenet_v2"))
    module = _randomize_norms(compiler.build(spec))
    path = export_spec(spec, tmp_path / "dyn.onnx", input_size=64, dynamic_batch=True, module=module)
    assert io_shapes(path)["inputs"]["images"][0] == "batch"
    assert all(shape[0] == "batch" for shape in io_shapes(path)["outputs"].values())
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = module(x)
        actual = _run(path, x.numpy())
        for name, value in expected.items():
            assert actual[name].shape[0] == batch
            assert _relative_error(actual[name], value.numpy()) < TOLERANCE


def test_given_weights_are_used_strictly(tmp_path):
    """A weight the graph needs but the state dict lacks, one nothing reads, or one of the wrong
    shape is an error: a renamed layer never exports silently with random values."""
    spec = archspec.load(_zoo("resnet18"))
    state = compiler.build(spec).state_dict()
    missing = {k: v for k, v in state.items() if k != "stem.layer0.conv.weight"}
    with pytest.raises(ValueError, match="weight 'stem.layer0.conv.weight' is missing"):
        export_spec(spec, tmp_path / "a.onnx", input_size=32, weights=missing)
    with pytest.raises(ValueError, match="1 given weights are not used by the graph: extra.weight"):
        export_spec(spec, tmp_path / "b.onnx", input_size=32, weights={**state, "extra.weight": torch.zeros(3)})
    wrong = {**state, "stem.layer0.conv.weight": torch.zeros(1, 1, 1, 1)}
    with pytest.raises(ValueError, match=r"shape \(1, 1, 1, 1\), expected \(64, 3, 7, 7\)"):
        export_spec(spec, tmp_path / "c.onnx", input_size=32, weights=wrong)
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_training_and_search_workers_do_not_import_onnx():
    """onnx (with ml_dtypes) takes a second or more to import: a training run or a spawned search
    worker that never exports must not pay it (the detector exporter is registered lazily)."""
    code = ("import sys\nimport archspec.detection.train, archspec.search.run, archspec.search.executor\n"
            "import archspec.search.supernet_eval, archspec.search.proxy_train\n"
            "from archspec.compiler.export import EXPORTERS\nassert 'detector' in EXPORTERS\n"
            "print(sorted(m for m in ('onnx', 'ml_dtypes') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_random_weights_export_without_torch_and_repeat_by_seed(tmp_path):
    """Random weights need no torch at all (not even imported), for a backbone and a detector;
    the same seed writes the same file."""
    code = (
        "import sys; import archspec, archspec.detection\n"
        "assert 'onnx' not in sys.modules, 'importing archspec.detection imported onnx'\n"
        "from archspec.compiler.export import export\n"
        f"root, out = {str(ROOT)!r}, {str(tmp_path)!r}\n"
        "r18 = archspec.load(root + '/examples/backbones/resnet18.yaml')\n"
        "det = archspec.load(root + '/examples/detectors/fcos_tiny.yaml')\n"
        "for i in (1, 2):\n"
        "    export(r18, f'{out}/r18_{i}.onnx', input_size=(32, 32), seed=7)\n"
        "export(r18, out + '/r18_other.onnx', input_size=(32, 32), seed=8)\n"
        "export(det, out + '/det.onnx')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r18_1.onnx").read_bytes() == (tmp_path / "r18_2.onnx").read_bytes()
    assert (tmp_path / "r18_1.onnx").read_bytes() != (tmp_path / "r18_other.onnx").read_bytes()
    for name in ("r18_1", "det"):
        onnx.checker.check_model(str(tmp_path / f"{name}.onnx"), full_check=True)
        assert read_metadata(tmp_path / f"{name}.onnx")["archspec.exporter"] == "direct"
    # random weights keep a random network's activations finite and non-trivial
    features = _run(tmp_path / "r18_1.onnx", np.random.default_rng(0).standard_normal((1, 3, 32, 32), np.float32))
    assert all(np.isfinite(v).all() and np.abs(v).max() > 0 for v in features.values())
    session = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": np.zeros((2, 3, 128, 128), np.float32)})
    assert boxes.shape == (2, 50, 4) and labels.dtype == np.int64


def test_direct_opset_range_is_checked(tmp_path):
    spec = archspec.load(_zoo("resnet18"))
    with pytest.raises(ExportError, match=r"opset 12: the direct writer emits opsets 18\.\.21"):
        export_spec(spec, tmp_path / "old.onnx", input_size=32, opset=12)
    path = export_spec(spec, tmp_path / "o19.onnx", input_size=32, opset=19)
    assert onnx.load(str(path)).opset_import[0].version == 19


@pytest.mark.parametrize("name", ["resnet18", "spinenet49s"])
def test_dynamo_oracle_agrees_with_the_direct_writer(tmp_path, name):
    """The dynamo exporter (torch.onnx on the built module) and the direct writer, given the
    same weights, compute the same outputs (and both match torch)."""
    spec = archspec.load(_zoo(name))
    torch.manual_seed(0)
    module = _randomize_norms(compiler.build(spec))
    size = (32, 32)
    direct = export_spec(spec, tmp_path / "direct.onnx", input_size=size, module=module)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportFallbackWarning)  # the oracle is dynamo itself, never the fallback
        dynamo = export_spec(spec, tmp_path / "dynamo.onnx", input_size=size, module=module, exporter="dynamo")
    assert read_metadata(dynamo)["archspec.exporter"] == "dynamo"
    assert {k: v for k, v in read_metadata(dynamo).items() if k != "archspec.exporter"} == \
        {k: v for k, v in read_metadata(direct).items() if k != "archspec.exporter"}
    assert io_shapes(dynamo) == io_shapes(direct)
    x = np.random.default_rng(3).standard_normal((1, 3, *size), dtype=np.float32)
    a, b = _run(direct, x), _run(dynamo, x)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    assert list(a) == list(b) == spec.output_names()
    for name_ in a:
        assert _relative_error(a[name_], b[name_]) < TOLERANCE, name_
        assert _relative_error(b[name_], expected[name_].numpy()) < TOLERANCE, name_


def test_legacy_fallback_warns_with_the_reason(tmp_path, monkeypatch):
    import archspec.compiler.export as export_module

    def broken(*args, **kwargs):
        raise RuntimeError("simulated dynamo failure: unsupported op foo")

    monkeypatch.setattr(export_module, "_export_dynamo", broken)
    spec = archspec.load(_zoo("resnet18"))
    module = _randomize_norms(compiler.build(spec))
    with pytest.warns(ExportFallbackWarning, match=r"dynamo ONNX exporter failed \(RuntimeError: simulated dynamo "
                                                   r"failure: unsupported op foo\); falling back to the legacy"):
        path = export_spec(spec, tmp_path / "legacy.onnx", input_size=32, module=module, exporter="dynamo")
    assert read_metadata(path)["archspec.exporter"] == "legacy"
    onnx.checker.check_model(str(path), full_check=True)
    x = torch.randn(1, 3, 32, 32)
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
    spec, module, path = exported(_zoo("resnet18"))
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
    main(["export", str(_zoo("resnet18")), "-o", str(path), "--input-size", "64", "--dynamic-batch"])
    assert "wrote" in capsys.readouterr().out
    main(["summary", str(path), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "resnet18" and info["input_size"] == [64, 64]
    assert info["onnx"]["inputs"] == {"images": ["batch", 3, 64, 64]}
    assert info["onnx"]["outputs"]["C5"] == ["batch", 512, 2, 2]
    assert read_metadata(path)["archspec.exporter"] == "direct"


def test_cli_exporter_option_and_opset_error(tmp_path, capsys, monkeypatch):
    """`--exporter dynamo` reaches the dynamo path (stubbed here: the oracle tests run it); a
    bad opset for the direct writer is one error line, exit 2."""
    import archspec.compiler.export as export_module
    from archspec.cli import main

    calls = []
    monkeypatch.setattr(export_module, "_export_spec_dynamo", lambda *args: calls.append(args) or args[1])
    spec = str(_zoo("resnet18"))
    with pytest.raises(SystemExit):  # the stub writes no ONNX; what matters is the route taken
        main(["export", spec, "-o", str(tmp_path / "dyn.onnx"), "--input-size", "32", "--exporter", "dynamo"])
    assert len(calls) == 1 and calls[0][2] == (32, 32)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", spec, "-o", str(tmp_path / "x.onnx"), "--opset", "12"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opset 12: the direct writer emits opsets 18..21" in err[0]


def test_summary_of_an_onnx_file_without_metadata_is_a_clear_error(tmp_path, capsys):
    from archspec.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(torch.nn.ReLU(), torch.randn(1, 3, 4, 4), tmp_path / "plain.onnx", output_names=["y"])
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", str(path)])
    assert exit_info.value.code == 2
    assert "no 'archspec.spec' metadata" in capsys.readouterr().err
