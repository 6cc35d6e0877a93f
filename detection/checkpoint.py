"""Checkpoints: written atomically, read with `torch.load(weights_only=True)` only.

A checkpoint is a plain dict of tensors, numbers and strings: the detector spec (JSON), its
fingerprint, the model/optimizer/scheduler states, the epoch reached and the metric history.
Writing goes to a temporary file in the same folder and is then renamed over the old file, so a
kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

FORMAT = "archspec.detector-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's dict; `CheckpointError` for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an archspec detector checkpoint (format {FORMAT!r} expected)")
    return state


def spec_of(state: dict, source: str = "checkpoint"):
    """The detector spec stored in a checkpoint."""
    from archspec.io import validate

    return validate(json.loads(state["spec"]), source=f"{source}:spec")


def load_weights(model, path: str | Path) -> dict:
    """Load a checkpoint's model weights into `model` (which must be built from the same spec)."""
    from archspec import fingerprint

    state = load_checkpoint(path)
    if state.get("fingerprint") != fingerprint(model.spec):
        raise CheckpointError(f"{path}: the weights belong to spec {state.get('fingerprint')}, not to "
                              f"{model.spec.name} ({fingerprint(model.spec)})")
    model.load_state_dict(state["model"])
    return state
