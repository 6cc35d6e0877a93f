"""An ONNX file's model proto without its weights, read from a few kilobytes of the file.

`archspec summary model.onnx`, the line `archspec export` prints and `latency` on an ONNX file
need the metadata, the opsets and the graph's inputs and outputs; a full parse reads every
weight (ResNet-50: 100 MB, 0.1 s). ONNX is protobuf: every field is a tag and, for messages and
bytes, a length. `load_header` walks the tags of the model and of its graph with `os.pread`,
copies every field except the weight data of the graph's initializers (the tensors keep their
names, types and dims), and parses that much smaller message with onnx itself.

Anything the walk does not understand (a truncated or hand-made file, more fields than a real
model has) falls back to the full parse, which gives the authoritative error.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

MODEL_GRAPH = 7
"""`ModelProto.graph`."""
GRAPH_INITIALIZER = 5
"""`GraphProto.initializer` (repeated `TensorProto`)."""
TENSOR_DATA = frozenset({4, 5, 6, 7, 9, 10, 11})
"""`TensorProto` fields holding the values: float_data, int32_data, string_data, int64_data,
raw_data, double_data, uint64_data."""
MAX_FIELDS = 1 << 20
"""Fields walked at most before the full parse takes over (a real model has thousands)."""
BLOCK = 1 << 16
LENGTH_DELIMITED = 2


class NotUnderstood(ValueError):
    """The walk met something it does not handle; the full parse decides."""


class _Reader:
    """Random access to an open file by `os.pread`, a block at a time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.start, self.block = 0, b""
        self.walked = 0

    def byte(self, pos: int) -> int:
        if not self.start <= pos < self.start + len(self.block):
            self.start, self.block = pos, os.pread(self.fd, BLOCK, pos)
            if not self.block:
                raise NotUnderstood("truncated")
        return self.block[pos - self.start]

    def read(self, start: int, end: int) -> bytes:
        data = os.pread(self.fd, end - start, start)
        if len(data) != end - start:
            raise NotUnderstood("truncated")
        return data

    def varint(self, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = self.byte(pos)
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise NotUnderstood("varint longer than 10 bytes")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """``(field number, start of its tag, start of its value, end)`` of each field of the
        message in ``[start, end)``."""
        pos = start
        while pos < end:
            self.walked += 1
            if self.walked > MAX_FIELDS:
                raise NotUnderstood("too many fields")
            tag = pos
            key, pos = self.varint(pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, value_end = self.varint(pos)
                value = pos
            elif wire == 1:
                value, value_end = pos, pos + 8
            elif wire == LENGTH_DELIMITED:
                length, value = self.varint(pos)
                value_end = value + length
            elif wire == 5:
                value, value_end = pos, pos + 4
            else:
                raise NotUnderstood(f"wire type {wire}")
            if number == 0 or value_end > end:
                raise NotUnderstood("field past the end of its message")
            pos = value_end
            yield number, tag, value, value_end


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _message_field(number: int, payload: bytes) -> bytes:
    return _varint_bytes(number << 3 | LENGTH_DELIMITED) + _varint_bytes(len(payload)) + payload


def _tensor_header(reader: _Reader, start: int, end: int) -> bytes:
    return b"".join(reader.read(tag, stop) for number, tag, _, stop in reader.fields(start, end)
                    if number not in TENSOR_DATA)


def _graph_header(reader: _Reader, start: int, end: int) -> bytes:
    parts = []
    for number, tag, value, stop in reader.fields(start, end):
        if number == GRAPH_INITIALIZER:
            parts.append(_message_field(GRAPH_INITIALIZER, _tensor_header(reader, value, stop)))
        else:
            parts.append(reader.read(tag, stop))
    return b"".join(parts)


def header_bytes(fd: int, size: int) -> bytes:
    """The serialized model of the open file `fd` without its initializers' values."""
    reader = _Reader(fd)
    parts = []
    for number, tag, value, stop in reader.fields(0, size):
        if number == MODEL_GRAPH:
            parts.append(_message_field(MODEL_GRAPH, _graph_header(reader, value, stop)))
        else:
            parts.append(reader.read(tag, stop))
    return b"".join(parts)


RECENT_HEADERS = 8
"""Header bytes kept of the files read last: `archspec summary x.onnx` reads the metadata, the
spec and the input/output shapes of one file, each through `load_header`, and walks it once."""
_recent: OrderedDict[tuple, bytes | None] = OrderedDict()


def _identity(info: os.stat_result) -> tuple:
    """What tells a file's content apart without reading it: the file (device, inode) and its
    size and change times. An atomic rewrite is another inode; an edit in place moves the times."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _remember(identity: tuple, data: bytes | None) -> None:
    _recent[identity] = data
    if len(_recent) > RECENT_HEADERS:
        _recent.popitem(last=False)


def load_header(path: str | Path) -> "onnx.ModelProto":
    """The model proto of an ONNX file with its initializers' values left out (names, types and
    dims kept), read through `archspec.files` (a regular file under the cap); `ValueError` naming
    the file when it is not ONNX (`export.load_onnx_model`'s errors)."""
    import onnx
    from google.protobuf.message import DecodeError

    from archspec.compiler.export import load_onnx_model
    from archspec.files import FileRefused, open_checked

    with open_checked(path, kind="ONNX file") as (fd, info):
        identity = _identity(info)
        if identity in _recent:
            data = _recent[identity]
        else:
            try:
                data = header_bytes(fd, info.st_size)
            except NotUnderstood:
                data = None
            except OSError as exc:
                raise FileRefused(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
            _remember(identity, data)
    if data is None:
        return load_onnx_model(path)
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RecursionError, ValueError, RuntimeError):
        return load_onnx_model(path)
    # The header holds the file's graph field whenever the file has one: without it, the full
    # parse gives the error.
    return model if model.HasField("graph") else load_onnx_model(path)
