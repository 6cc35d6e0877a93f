"""The `archspec` command line. One test runs it as users run it (a subprocess: `python -m
archspec.cli`); the rest call its entry point in this process (tests.conftest.cli_in_process), the
same code from argument parsing to the exit status, without an interpreter and torch start-up each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_in_process

R50 = str(ROOT / "examples" / "backbones" / "resnet50.yaml")


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    result = cli_in_process(*args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_summary_json_reports_resnet50():
    process = subprocess.run([sys.executable, "-m", "archspec.cli", "summary", R50, "--json"], capture_output=True,
                             text=True, cwd=ROOT)
    assert process.returncode == 0, process.stderr
    info = json.loads(process.stdout)
    assert info["params"] == 23508032
    assert info["macs"] == 4087136256 and info["flops"] == 2 * info["macs"]
    assert info["name"] == "resnet50" and len(info["fingerprint"]) == 16
    assert info["outputs"]["C5"] == {"channels": 2048, "stride": 32, "shape": [2048, 7, 7], "receptive_field": 427}
    assert info["receptive_field"]["C2"] == 35


def test_summary_input_size_and_table_output():
    info = json.loads(run("summary", R50, "--json", "--input-size", "480x640", check=True).stdout)
    assert info["outputs"]["C3"]["shape"] == [512, 60, 80]
    text = run("summary", R50, str(ROOT / "examples/backbones/resnet18.yaml"), check=True).stdout
    assert "resnet50" in text and "resnet18" in text and "23,508,032" in text


def test_validate_ok_and_invalid(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: staged\nstem: [{type: conv, out_channels: 8, stride: 2}]\n"
                   "stages: [{block: {type: basic}, depth: 2, out_channels: 8, dilations: [1]}]\n")
    ok = run("validate", R50)
    assert ok.returncode == 0 and "ok:" in ok.stdout
    result = run("validate", R50, str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}: stages[0].dilations: 1 values for depth 2"


@pytest.mark.parametrize("content, words", [
    ("[1, 2, 3]", "a spec document must be a mapping"),
    ("type: staged\nstages: {", "invalid YAML"),
    ("type: staged\nstem: [{type: max_pool}]\nstages: [{block: {type: nope}, depth: 1, out_channels: 8}]\n",
     "stages[0].block.type: unknown kind 'nope'"),
])
def test_bad_input_is_one_line_exit_2_without_traceback(tmp_path, content, words):
    path = tmp_path / "doc.yaml"
    path.write_text(content)
    for command in (["summary", str(path)], ["graph", str(path)], ["validate", str(path)]):
        result = run(*command)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert words in result.stderr and str(path) in result.stderr


def test_missing_file_and_bad_input_size():
    missing = run("summary", "nope.yaml")
    assert missing.returncode == 2 and "nope.yaml: no such file" in missing.stderr
    bad_size = run("summary", R50, "--input-size", "0x3")
    assert bad_size.returncode == 2 and "input size" in bad_size.stderr and "Traceback" not in bad_size.stderr


def test_schema_command_prints_the_schema():
    schema = json.loads(run("schema", check=True).stdout)
    assert schema["title"] == "archspec document"
    assert "StagedBackbone" in schema["$defs"]


def test_graph_formats(tmp_path):
    dot = run("graph", R50, check=True).stdout
    assert dot.startswith('digraph "resnet50"') and "rank=same" in dot and "n_stage3_block2" in dot
    mermaid = run("graph", R50, "--format", "mermaid", check=True).stdout
    assert mermaid.startswith("flowchart LR") and 'subgraph L5["L5 (stride 32)"]' in mermaid
    png = tmp_path / "g.png"
    run("graph", R50, "--format", "png", "-o", str(png), check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run("graph", R50, "--format", "png").returncode == 2


def test_every_command_has_help():
    from archspec.cli import COMMANDS

    assert run("--help", check=True).stdout.count("\n") > 3
    for name in COMMANDS:
        result = run(name, "--help", check=True)
        assert "Usage:" in result.stdout, name
