"""Shared fixtures: the zoo and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "examples" / "backbones").glob("*.yaml"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def zoo_ids(paths=ZOO):
    return [p.stem for p in paths]
