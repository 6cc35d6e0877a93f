"""Runtime measurement plumbing: explicit providers (no silent fallback), pinned threads,
statistics, machine fingerprint, the IR -> ONNX writer's parity, and `archspec bench`.
No assertion depends on how fast anything runs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

import archspec
from archspec import compiler
from archspec.compiler import runtime
from archspec.compiler.onnx_writer import graph_to_onnx
from archspec.compiler.runtime import (LatencyStats, ProviderError, create_session, machine_fingerprint, measure_onnx,
                              measure_torch, physical_cores, session_options)
from tests.conftest import ZOO, zoo_ids


def test_stats_from_samples():
    stats = LatencyStats.from_samples([5.0, 1.0, 4.0, 2.0, 3.0], runtime="ort", provider="cpu", threads=2,
                                      repeats=5, warmup=1)
    assert (stats.median_ms, stats.min_ms) == (3.0, 1.0)
    assert stats.p10_ms == pytest.approx(1.4) and stats.p90_ms == pytest.approx(4.6)
    assert stats.std_ms == pytest.approx(np.std([1, 2, 3, 4, 5]))
    assert stats.as_dict()["threads"] == 2
    with pytest.raises(ValueError, match="no timing samples"):
        LatencyStats.from_samples([], runtime="ort", provider="cpu", threads=1, repeats=0, warmup=0)


def test_machine_fingerprint_names_what_latency_depends_on():
    info = machine_fingerprint()
    assert {"cpu_model", "physical_cores", "onnxruntime", "torch", "hash"} <= set(info)
    assert info["physical_cores"] == physical_cores() >= 1
    assert len(info["hash"]) == 12 and info["onnxruntime"] == ort.__version__


def test_session_options_pin_threads_and_run_sequentially():
    options = session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session_options().intra_op_num_threads == physical_cores()


def _tiny_model() -> bytes:
    spec = archspec.validate({"type": "staged", "stem": [{"type": "conv", "out_channels": 8, "stride": 2}],
                              "stages": [{"block": {"type": "basic"}, "depth": 1, "out_channels": 8}]})
    return graph_to_onnx(compiler.lower(spec), (16, 16)).SerializeToString()


def test_unknown_or_unavailable_provider_is_an_error(monkeypatch):
    with pytest.raises(ProviderError, match="provider 'npu': expected one of cpu, cuda, tensorrt"):
        create_session(_tiny_model(), provider="npu")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match=r"provider 'cuda' \(CUDAExecutionProvider\) is not available"):
        create_session(_tiny_model(), provider="cuda")


def test_silent_fallback_to_cpu_is_an_error(monkeypatch):
    """onnxruntime-gpu lists CUDA even without a usable GPU and then quietly runs on the CPU."""
    real = ort.InferenceSession

    class FallingBack(real):
        def __init__(self, model, options=None, providers=None):
            super().__init__(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FallingBack)
    with pytest.raises(ProviderError, match="the session fell back to CPUExecutionProvider"):
        create_session(_tiny_model(), provider="cuda")


def test_measure_onnx_and_torch_report_their_settings():
    stats = measure_onnx(_tiny_model(), threads=1, warmup=2, repeat=7)
    assert (stats.runtime, stats.provider, stats.threads, stats.repeats, stats.warmup) == ("ort", "cpu", 1, 7, 2)
    assert stats.input_shape == (1, 3, 16, 16) and 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    before = torch.get_num_threads()
    stats = measure_torch(torch.nn.Conv2d(3, 4, 3), (1, 3, 16, 16), threads=1, warmup=1, repeat=5)
    assert (stats.runtime, stats.threads, stats.repeats) == ("torch", 1, 5)
    assert torch.get_num_threads() == before


# One spec per family (staged, mobile, scale-permuted) with BatchNorm statistics drawn at random;
# every zoo spec's writer parity is in test_onnx_export (the writer is the default exporter).
WRITER_CASES = [p for p in ZOO if p.stem in ("resnet18", "mobilenet_v2", "spinenet49s")]


@pytest.mark.parametrize("path", WRITER_CASES, ids=[p.stem for p in WRITER_CASES])
def test_writer_matches_the_built_module(path):
    """The torch-free IR -> ONNX writer used for kernels computes what the built module does."""
    spec = archspec.load(path)
    size = (128, 128) if spec.type == "scale_permuted" else (64, 64)
    torch.manual_seed(0)
    graph = compiler.lower(spec)
    module = compiler.build(graph).eval()
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
    model = graph_to_onnx(graph, size, weights=module.state_dict())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, spec.in_channels, *size), dtype=np.float32)
    actual = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x})))
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    assert list(actual) == list(expected)
    for name, value in expected.items():
        value = value.numpy()
        assert np.abs(actual[name] - value).max() / np.abs(value).max() < 1e-4, name


def test_deploy_modules_do_not_import_torch():
    code = ("import sys, archspec, archspec.cli.deploy_commands, compiler.latency, compiler.runtime, "
            "compiler.export, compiler.onnx_writer; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_bench_both_runtimes_json(tmp_path, capsys):
    from archspec.cli import main

    spec_path = tmp_path / "tiny.yaml"
    archspec.save(archspec.validate({"type": "staged", "stem": [{"type": "conv", "out_channels": 8, "stride": 2}],
                                     "stages": [{"block": {"type": "basic"}, "depth": 1, "out_channels": 8}]}),
                  spec_path)
    main(["bench", str(spec_path), "--runtime", "both", "--threads", "1", "--warmup", "1", "--repeat", "3",
          "--input-size", "32", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert set(data["results"]) == {"ort", "torch"} and data["input_size"] == [32, 32]
    for name, stats in data["results"].items():
        assert stats["runtime"] == name and stats["threads"] == 1 and stats["repeats"] == 3
        assert stats["machine"]["hash"] == runtime.machine_fingerprint()["hash"]
    assert data["ort_over_torch"] == pytest.approx(data["results"]["ort"]["median_ms"] /
                                                   data["results"]["torch"]["median_ms"])


def test_cli_bench_rejects_torch_on_cuda(tmp_path, capsys):
    from archspec.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(ZOO[0]), "--runtime", "torch", "--provider", "cuda"])
    assert exit_info.value.code == 2
    assert "torch on the CPU only" in capsys.readouterr().err
