"""Which errors are the user's (exit 2, one line) and how they read.

The readers validate their input at the source and raise `ValueError`s (`SpecError`,
`FileRefused`, `StoreError`, `CheckpointError`, ...) that name the file and the field; this
table is the boundary's safety net for the failure classes of the libraries underneath
(SQLite, protobuf, ONNX, ONNX Runtime, Pillow) that a bad file can still provoke. Classes are
matched by module and name, so the boundary imports none of those libraries.
"""

from __future__ import annotations

import sqlite3

LIBRARY_ERRORS: dict[tuple[str, str], str] = {
    ("google.protobuf.message", "DecodeError"): "not a valid ONNX/protobuf file",
    ("onnx.checker", "ValidationError"): "the ONNX model is invalid",
    ("onnx.onnx_cpp2py_export.checker", "ValidationError"): "the ONNX model is invalid",
    ("onnx.onnx_cpp2py_export.shape_inference", "InferenceError"): "the ONNX model is invalid",
    ("PIL.Image", "DecompressionBombError"): "the image has too many pixels",
}
"""(module, class name) of a library error -> what it means for the user's input."""

ORT_MODULE = "onnxruntime.capi.onnxruntime_pybind11_state"
"""ONNX Runtime's errors (Fail, InvalidArgument, InvalidGraph, NoSuchFile, ...): a model it
cannot load or run is the model's problem."""


def describe_expected(exc: BaseException) -> str | None:
    """One line for an expected failure; None for an internal error (a bug)."""
    kind = type(exc)
    for klass in kind.__mro__:
        meaning = LIBRARY_ERRORS.get((klass.__module__, klass.__name__))
        if meaning is not None:
            return f"{meaning}: {first_line(exc)}"
    if kind.__module__ == ORT_MODULE:
        return f"ONNX Runtime cannot use the model: {first_line(exc)}"
    if isinstance(exc, sqlite3.Error):
        return f"not a usable SQLite database ({first_line(exc)})"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply"
    if isinstance(exc, MemoryError):
        return "out of memory (see --max-memory where a command has it)"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or first_line(exc)}"
    if isinstance(exc, (ValueError, FloatingPointError)):
        return first_line(exc)
    return None


def first_line(exc: BaseException) -> str:
    """The message on one line (pydantic and others write several)."""
    text = " ".join(str(exc).split()) if "\n" in str(exc) else str(exc).strip()
    return text[:1000] if text else type(exc).__name__
