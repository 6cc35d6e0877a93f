"""The distribution installs exactly one top-level import name, `archspec`."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_one_top_level_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = tmp_path.glob("archspec_nas-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"archspec"}
    # the design card's folders are inside it, under their import names
    for module in ("archspec/io.py", "archspec/compiler/ops.py", "archspec/compiler/latency/table.py",
                   "archspec/search/run.py", "archspec/detection/train.py", "archspec/cli/__init__.py"):
        assert module in names, module


def test_ci_runs_the_readmes_test_command_and_the_test_extra_has_its_runner():
    import re
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    readme = (ROOT / "README.md").read_text()
    [command] = re.findall(r"^(\.venv/bin/python -m pytest .*)$", readme, re.M)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    if " -n " in command:  # the command's workers come from pytest-xdist, which the test extra installs
        assert any(requirement.startswith("pytest-xdist") for requirement in extra)
