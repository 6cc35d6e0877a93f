"""ONNX export of specs and built modules.

    path = export_spec(spec, "resnet50.onnx", input_size=(224, 224))          # direct, random weights
    path = export_spec(spec, "r50.onnx", module=trained)                       # direct, the module's weights
    path = export_spec(spec, "r50.onnx", exporter="dynamo")                    # torch.onnx (the oracle)
    path = export_onnx(module, example, "det.onnx", output_names=["boxes", "scores"])

Two exporters write a spec (`EXPORTER_CHOICES`):

* ``direct`` (the default): the project's own IR-to-ONNX writer (`compiler.onnx_writer`) writes
  the graph from the lowered spec, with the weights of a given module or state dict (same
  names as the built module's state dict) or random ones. It needs neither torch nor a built
  module, and is 10-20x faster than tracing (see benchmarks/export.py).
* ``dynamo``: the torch 2.x dynamo exporter (`torch.onnx.export(..., dynamo=True)`) on the built
  module. When it fails, the legacy TorchScript exporter is tried, with an
  `ExportFallbackWarning` that names the dynamo failure, so a silent change of exporter never
  goes unnoticed. The parity tests keep it as the oracle of the direct writer.

The file records which one wrote it (``archspec.exporter``: direct, dynamo or legacy). Every file is checked with
`onnx.checker.check_model(full_check=True)` (operator schemas and shape inference) and carries
string metadata in `metadata_props`: for specs the spec JSON (``archspec.spec``) and its
fingerprint (``archspec.fingerprint``), so `archspec summary model.onnx` can say what it is.

`EXPORTERS` maps a spec `type` to the function exporting that kind; kinds without an entry
that the compiler can build (backbones) use `export_spec`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archspec.registry import Registry

if TYPE_CHECKING:  # onnx costs a second to import (ml_dtypes): not for a process that never exports
    import onnx

METADATA_SPEC = "archspec.spec"
METADATA_FINGERPRINT = "archspec.fingerprint"
METADATA_TYPE = "archspec.type"
METADATA_NAME = "archspec.name"
METADATA_INPUT_SIZE = "archspec.input_size"
METADATA_EXPORTER = "archspec.exporter"

EXPORTER_CHOICES = ("direct", "dynamo")
DEFAULT_EXPORTER = "direct"

MIN_OPSET = 18
"""Oldest opset the dynamo exporter writes (it converts to older ones only for a few models)."""
LEGACY_OPSET = 17
"""Opset for the legacy exporter when none is asked for (its own default is older)."""


class ExportFallbackWarning(UserWarning):
    """The dynamo exporter failed and the legacy TorchScript exporter was used instead."""


class ExportError(ValueError):
    """Neither exporter could export the module."""


def export_onnx(module, example_input, path: str | Path, *, output_names: Sequence[str],
                input_names: Sequence[str] = ("images",), dynamic_batch: bool = False, opset: int | None = None,
                metadata: dict[str, str] | None = None) -> Path:
    """Export `module` (put in eval mode) called on `example_input` (a tensor or a tuple of
    tensors) to `path`; returns the path.

    Outputs (a tensor, a tuple or a dict; flattened in order) are named `output_names`. With
    `dynamic_batch` the first dimension of every input and output is symbolic (``batch``).
    The file passes `onnx.checker.check_model(full_check=True)`; `metadata` is stored in
    `metadata_props`. It is written atomically: a failed or killed export leaves the file that
    was there before (or none), never a partial one."""
    from archspec.files import atomic_path

    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"opset {opset}: the exporter writes opset {MIN_OPSET} or newer; ask for one of those or "
                          "omit --opset")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        _export_onnx_to(module, example_input, tmp, output_names=output_names, input_names=input_names,
                        dynamic_batch=dynamic_batch, opset=opset, metadata=metadata)
    return path


def _export_onnx_to(module, example_input, path: Path, *, output_names: Sequence[str],
                    input_names: Sequence[str], dynamic_batch: bool, opset: int | None,
                    metadata: dict[str, str] | None) -> Path:
    import onnx
    import torch

    args = example_input if isinstance(example_input, tuple) else (example_input,)
    module = module.eval()
    input_names, output_names = list(input_names), list(output_names)
    if len(input_names) != len(args):
        raise ValueError(f"input_names: {len(input_names)} names for {len(args)} inputs")
    with torch.no_grad():
        try:
            _export_dynamo(module, args, path, input_names, output_names, dynamic_batch, opset)
            exporter = "dynamo"
        except Exception as exc:  # noqa: BLE001 - any exporter failure falls back, loudly
            reason = _first_line(exc)
            warnings.warn(
                f"the dynamo ONNX exporter failed ({type(exc).__name__}: {reason}); falling back to the "
                f"legacy TorchScript exporter (opset {opset or LEGACY_OPSET}). Check parity of the result.",
                ExportFallbackWarning, stacklevel=2)
            try:
                _export_legacy(module, args, path, input_names, output_names, dynamic_batch, opset)
            except Exception as legacy_exc:  # noqa: BLE001
                raise ExportError(f"ONNX export failed with both exporters: dynamo: {reason}; legacy: "
                                  f"{type(legacy_exc).__name__}: {_first_line(legacy_exc)}") from legacy_exc
            exporter = "legacy"
    model = onnx.load(str(path))
    _check_opset(model, opset)
    _rename_outputs(model, output_names)
    props = {METADATA_EXPORTER: exporter, **(metadata or {})}
    set_metadata(model, props)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _check_opset(model: onnx.ModelProto, opset: int | None) -> None:
    """An asked-for opset is the file's opset, or an error (exporters may quietly write another)."""
    if opset is None:
        return
    written = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(f"opset {opset} was asked for, but the exporter can only write opset {written} for this "
                          f"model; omit --opset or ask for {written}")


def _export_dynamo(module, args, path: Path, input_names, output_names, dynamic_batch, opset) -> None:
    import torch

    dynamic_shapes = None
    if dynamic_batch:
        # A batch of 1 would be specialised to a constant by torch.export (0/1 specialisation).
        args = tuple(torch.cat([a, a]) if a.shape[0] == 1 else a for a in args)
        dynamic_shapes = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in args)
    # The exporter narrates every step through logging and prints; keep the console quiet.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pytree deprecation chatter inside torch.export
            program = torch.onnx.export(module, args, dynamo=True, input_names=input_names,
                                        output_names=output_names, opset_version=opset,
                                        dynamic_shapes=dynamic_shapes, verbose=False, external_data=False)
    finally:
        quiet.setLevel(level)
    program.save(str(path))


def _export_legacy(module, args, path: Path, input_names, output_names, dynamic_batch, opset) -> None:
    import torch

    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                          opset_version=opset or LEGACY_OPSET, dynamic_axes=dynamic_axes, do_constant_folding=True)


def _rename_outputs(model: onnx.ModelProto, output_names: list[str]) -> None:
    """Make the graph outputs carry `output_names` (exporters may not honour them for dicts)."""
    outputs = list(model.graph.output)
    if len(outputs) != len(output_names):
        raise ExportError(f"the module returns {len(outputs)} outputs but {len(output_names)} output names "
                          f"were given: {output_names}")
    renames = {out.name: new for out, new in zip(outputs, output_names) if out.name != new}
    if not renames:
        return
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for out in model.graph.output:
        out.name = renames.get(out.name, out.name)
    for info in model.graph.value_info:
        info.name = renames.get(info.name, info.name)


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Set (replace) string entries of `metadata_props`."""
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata {key!r}: values must be strings, not {type(value).__name__}")
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def load_onnx_model(path: str | Path) -> onnx.ModelProto:
    """An ONNX file's model proto, read through `archspec.files` (a regular file under the cap;
    external data is never loaded); `ValueError` naming the file when it is not ONNX."""
    import onnx
    from google.protobuf.message import DecodeError

    from archspec.files import read_bytes

    data = read_bytes(path, kind="ONNX file")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RecursionError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a valid ONNX file ({type(exc).__name__})") from None
    if not model.HasField("graph"):
        raise ValueError(f"{path}: not a valid ONNX file (no graph)")
    return model


def read_metadata(path: str | Path) -> dict[str, str]:
    """`metadata_props` of an ONNX file as a dict (the weights are not read: `onnx_header`)."""
    from archspec.compiler.onnx_header import load_header

    model = load_header(path)
    return {p.key: p.value for p in model.metadata_props}


def spec_from_onnx(path: str | Path):
    """The spec an ONNX file was exported from (its ``archspec.spec`` metadata), validated. The
    stored spec is self-contained: reading it never opens another file."""
    from archspec.io import validate
    from archspec.parsing import load_json

    metadata = read_metadata(path)
    if METADATA_SPEC not in metadata:
        raise ValueError(f"{path}: no {METADATA_SPEC!r} metadata; the file was not exported by archspec")
    source = f"{path}:{METADATA_SPEC}"
    try:
        data = load_json(metadata[METADATA_SPEC])
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{source}: not a valid spec JSON ({type(exc).__name__})") from None
    return validate(data, source=source, includes=False)


def io_shapes(path: str | Path) -> dict[str, dict[str, list[int | str]]]:
    """``{"inputs": {name: shape}, "outputs": {name: shape}}``; symbolic dims are strings (the
    weights are not read: `onnx_header`)."""
    from archspec.compiler.onnx_header import load_header

    model = load_header(path)

    def shape(value) -> list[int | str]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]

    initializers = {t.name for t in model.graph.initializer}
    return {"inputs": {v.name: shape(v) for v in model.graph.input if v.name not in initializers},
            "outputs": {v.name: shape(v) for v in model.graph.output}}


def spec_metadata(spec, input_size: tuple[int, int]) -> dict[str, str]:
    """The metadata every spec export carries."""
    from archspec.io import fingerprint, to_data

    return {METADATA_SPEC: json.dumps(to_data(spec), sort_keys=True), METADATA_FINGERPRINT: fingerprint(spec),
            METADATA_TYPE: spec.type, METADATA_NAME: spec.name,
            METADATA_INPUT_SIZE: f"{input_size[0]}x{input_size[1]}"}


def export_spec(spec, path: str | Path, *, input_size=(224, 224), dynamic_batch: bool = False,
                opset: int | None = None, module=None, weights=None, exporter: str = DEFAULT_EXPORTER,
                seed: int = 0) -> Path:
    """Export a backbone spec on a ``1 x C x H x W`` input named ``images`` (``batch`` x ... with
    `dynamic_batch`), outputs named as the spec's outputs, spec JSON and fingerprint in the
    metadata. Weights: `module`'s (a built module, e.g. trained), or `weights` (a state dict), or
    random ones drawn from `seed` (direct) / the module's initialisation (dynamo)."""
    from archspec.compiler import parse_input_size

    size = parse_input_size(input_size)
    _check_exporter(exporter)
    if exporter == "dynamo":
        return _export_spec_dynamo(spec, path, size, dynamic_batch, opset, module, weights)
    from archspec.compiler.lowering import lower
    from archspec.compiler.onnx_writer import graph_to_onnx

    state = module.state_dict() if module is not None else weights
    model = graph_to_onnx(lower(spec), size, batch=None if dynamic_batch else 1, weights=state, seed=seed,
                          opset=_direct_opset(opset))
    return save_direct(model, path, spec_metadata(spec, size))


def _export_spec_dynamo(spec, path, size, dynamic_batch, opset, module, weights) -> Path:
    import torch

    from archspec.compiler import build

    if module is None:
        module = build(spec)
        if weights is not None:
            module.load_state_dict(weights)
    example = torch.randn(1, spec.in_channels, *size, generator=torch.Generator().manual_seed(0))
    return export_onnx(module, example, path, output_names=spec.output_names(), dynamic_batch=dynamic_batch,
                       opset=opset, metadata=spec_metadata(spec, size))


def _check_exporter(exporter: str) -> None:
    if exporter not in EXPORTER_CHOICES:
        raise ValueError(f"exporter {exporter!r}: choose one of {', '.join(EXPORTER_CHOICES)}")


def _direct_opset(opset: int | None) -> int:
    from archspec.compiler.onnx_writer import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET as WRITER_MIN

    if opset is None:
        return DEFAULT_OPSET
    if not WRITER_MIN <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset}: the direct writer emits opsets {WRITER_MIN}..{MAX_OPSET}; ask for one of "
                          "those or omit --opset")
    return opset


def save_direct(model: onnx.ModelProto, path: str | Path, metadata: dict[str, str]) -> Path:
    """Stamp a model written by the direct writer (``archspec.exporter: direct`` and `metadata`),
    check it with the full checker, and write it atomically (a failed or killed export leaves the
    file that was there before, or none)."""
    import onnx

    from archspec.files import atomic_path

    set_metadata(model, {METADATA_EXPORTER: "direct", **metadata})
    data = model.SerializeToString()  # once: the checker and the file share it (100 MB for ResNet-50)
    onnx.checker.check_model(data, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


Exporter = Callable[..., Path]
"""``fn(spec, path, *, input_size, dynamic_batch, opset, module, weights, exporter) -> Path``."""

EXPORTERS: Registry[Exporter] = Registry("ONNX exporter")
"""Spec kind -> exporter. Packages above the compiler register their own kinds when imported
(`archspec.detection` registers ``detector``). Kinds missing here fall back to `export_spec` when
the compiler can lower them (every backbone kind)."""
EXPORTERS.register("staged", export_spec)

PROVIDED_BY = {"detector": "archspec.detection"}
"""Which package registers the exporter of a kind the compiler cannot export itself (for the error)."""


def export(spec, path: str | Path, **options: Any) -> Path:
    """Export any spec with the exporter registered for its kind."""
    from archspec.compiler.lowering import LOWER_SPEC

    exporter = EXPORTERS.find(spec.type)
    if exporter is None:
        if spec.type not in LOWER_SPEC:
            hint = f" (import {PROVIDED_BY[spec.type]} to register it)" if spec.type in PROVIDED_BY else ""
            raise ValueError(f"no ONNX exporter for spec kind {spec.type!r}{hint}")
        exporter = export_spec
    return exporter(spec, path, **options)


def optimize_onnx(path: str | Path, output: str | Path | None = None) -> Path:
    """Apply ONNX Runtime's basic graph optimizations (constant folding, Conv+BN/Add/Mul fusion,
    redundant node elimination) offline and save the result (over `path` by default).

    Only the *basic* level is saved: it keeps standard ONNX operators, so the file stays portable
    and passes the checker. The extended/layout levels produce hardware-specific contrib
    operators; ONNX Runtime applies them when a session is created anyway."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    output = Path(output) if output is not None else path
    from archspec.files import atomic_path

    metadata = read_metadata(path)
    with atomic_path(output) as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(tmp))
        set_metadata(model, {**metadata, "archspec.optimized": "ort-basic"})
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return output


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"
