"""Checkpoints: written atomically, read with `torch.load(weights_only=True)` only.

A checkpoint is a plain dict of tensors, numbers and strings: the detector spec (JSON), its
fingerprint, the model/optimizer/scheduler states, the epoch reached and the metric history.
Writing goes to a temporary file in the same folder and is then renamed over the old file
(`archspec.files.atomic_path`), so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import torch

from archspec.files import FileRefused, atomic_path, read_bytes

FORMAT = "archspec.detector-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


FIELDS: dict[str, type | tuple[type, ...]] = {"spec": str, "fingerprint": str, "epoch": int, "model": dict,
                                              "history": list, "best": (dict, type(None))}
"""Fields every checkpoint has, with their types (checked on load, so a malformed file is an
error naming the field, not a KeyError or TypeError deep inside training)."""
TRAINING_FIELDS: dict[str, type | tuple[type, ...]] = {"optimizer": dict, "scheduler": dict, "scaler": dict}
"""Fields of a checkpoint that a run resumes from (last.pt)."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, resumable: bool = False) -> dict:
    """A checkpoint's dict; `CheckpointError` for missing, corrupt, foreign or malformed files
    (``resumable``: it must also hold the optimizer state a resume needs). The file is read
    through `archspec.files` (a regular file under the checkpoint cap) and unpickled with
    `torch.load(weights_only=True)`."""
    path = Path(path)
    try:
        data = read_bytes(path, kind="checkpoint")
    except FileRefused as exc:
        raise CheckpointError(str(exc)) from None
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError, TypeError,
            AttributeError, KeyError, IndexError, RecursionError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an archspec detector checkpoint (format {FORMAT!r} expected)")
    for field, kind in (FIELDS | (TRAINING_FIELDS if resumable else {})).items():
        value = state.get(field, _MISSING)
        if value is _MISSING or not isinstance(value, kind) or isinstance(value, bool):
            found = "missing" if value is _MISSING else type(value).__name__
            raise CheckpointError(f"{path}: {field}: malformed checkpoint field ({found})")
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state["model"].items()):
        raise CheckpointError(f"{path}: model: malformed checkpoint field (not a tensor per name)")
    return state


_MISSING = object()


def spec_of(state: dict, source: str = "checkpoint"):
    """The detector spec stored in a checkpoint (self-contained: reading it opens no file)."""
    from archspec.io import validate
    from archspec.parsing import load_json

    try:
        data = load_json(state["spec"])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{source}:spec: not a valid spec JSON ({type(exc).__name__})") from None
    return validate(data, source=f"{source}:spec", includes=False)


def load_weights(model, path: str | Path) -> dict:
    """Load a checkpoint's model weights into `model` (which must be built from the same spec)."""
    from archspec import fingerprint

    state = load_checkpoint(path)
    if state.get("fingerprint") != fingerprint(model.spec):
        raise CheckpointError(f"{path}: the weights belong to spec {state.get('fingerprint')}, not to "
                              f"{model.spec.name} ({fingerprint(model.spec)})")
    load_state(model, state["model"], path, "model")
    return state


def load_state(target, state: dict, path: str | Path, field: str) -> None:
    """`target.load_state_dict(state)` with a mismatch as a `CheckpointError` naming the field."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: {field}: does not fit ({reason})") from None
