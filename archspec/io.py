"""Reading, writing, fingerprinting and the JSON Schema of spec documents.

Documents are YAML or JSON; YAML is read with a strict safe loader
(`archspec.parsing`: no duplicate keys, no alias bombs), files through `archspec.files`. Every failure comes out
as a `SpecError` naming the file and the field path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from archspec.backbones import StagedBackbone
from archspec.detector import Detector
from archspec.scale_permuted import ScalePermutedBackbone
from archspec.errors import Issue, SpecError, format_path

AnySpec = Annotated[Union[StagedBackbone, ScalePermutedBackbone, Detector], Field(discriminator="type")]
"""Every kind of top-level document, chosen by its `type` tag."""

SPEC_TYPES = ("staged", "scale_permuted", "detector")

INCLUDE_FIELDS = {"detector": ("backbone",)}
"""Fields of a document kind that may name another spec file instead of holding it inline."""

_adapter: TypeAdapter | None = None

FINGERPRINT_EXCLUDES = frozenset({"name", "description"})
"""Fields that describe a spec for people and do not change the architecture."""


def _spec_adapter() -> TypeAdapter:
    global _adapter
    if _adapter is None:
        _adapter = TypeAdapter(AnySpec)
    return _adapter


def validate(data: Any, *, source: str | None = None, base_dir: str | Path | None = None,
             includes: bool = True):
    """A validated spec from plain data (a dict as parsed from YAML/JSON). Included files
    (a detector's ``backbone: path.yaml``) are read relative to `base_dir` (default: the
    directory of `source`, else the current directory). With ``includes=False`` (a spec stored
    in an ONNX file or a checkpoint, which is written self-contained) a file reference is an
    error: reading such a spec never opens another path."""
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise SpecError("", f"a spec document must be a mapping with a 'type' field, not {kind}", source=source)
    if not includes:
        _refuse_includes(data, source)
    if base_dir is None:
        base_dir = Path(source).parent if source and Path(source).is_file() else Path.cwd()
    data = _resolve_includes(data, Path(base_dir), source)
    try:
        return _spec_adapter().validate_python(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, source) from None
    except SpecError as exc:  # raised outside pydantic's wrapping (should not happen, kept safe)
        raise (exc.with_source(source) if source else exc) from None
    except RecursionError:
        raise SpecError("", "the document is nested too deeply", source=source) from None


def loads(text: str, *, format: str = "yaml", source: str | None = None, base_dir: str | Path | None = None):
    """Parse and validate a YAML (default) or JSON document."""
    return validate(parse_text(text, format=format, source=source), source=source, base_dir=base_dir)


def _refuse_includes(data: dict, source: str | None) -> None:
    kind = data.get("type")
    for field in INCLUDE_FIELDS.get(kind, ()) if isinstance(kind, str) else ():
        if isinstance(data.get(field), str):
            raise SpecError(field, "a stored spec must hold its parts inline, not name a file", source=source)


def _resolve_includes(data: dict, base_dir: Path, source: str | None) -> dict:
    """Replace file references in include fields by the validated specs they name (as data).
    An included file must be a backbone, which has no include fields itself, so includes are
    one level deep and cannot form a cycle (a detector naming itself is refused as 'not a
    backbone spec')."""
    kind = data.get("type")
    fields = INCLUDE_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
    if not any(isinstance(data.get(field), str) for field in fields):
        return data
    data = dict(data)
    for field in fields:
        reference = data.get(field)
        if not isinstance(reference, str):
            continue
        path = base_dir / reference
        try:
            included = parse_text(_read(path), format=_format_of(path), source=str(path))
            if not isinstance(included, dict) or included.get("type") not in _BACKBONE_TYPES:
                kind = included.get("type") if isinstance(included, dict) else type(included).__name__
                raise SpecError("", f"is a {kind!r} document, not a backbone spec")
            included = validate(included, source=str(path))
        except SpecError as exc:
            issue = exc.issues[0]
            where = f"{reference}: {issue.path}: " if issue.path else f"{reference}: "
            raise SpecError(field, where + issue.message, source=source) from None
        data[field] = to_data(included)
    return data


_BACKBONE_TYPES = ("staged", "scale_permuted")


def load(path: str | Path):
    """A validated spec from a ``.yaml``/``.yml``/``.json`` file."""
    path = Path(path)
    return loads(_read(path), format=_format_of(path), source=str(path))


def _read(path: Path) -> str:
    """The text of a spec file: a regular file of at most a few MiB (`archspec.files`)."""
    from archspec.files import read_text

    return read_text(path, kind="spec")


def parse_text(text: str, *, format: str = "yaml", source: str | None = None) -> Any:
    """YAML or JSON text -> plain data, with syntax errors as `SpecError`."""
    from archspec.parsing import DuplicateKeyError, load_json, load_yaml

    try:
        if format == "json":
            return load_json(text)
        return load_yaml(text)
    except DuplicateKeyError as exc:
        raise SpecError("", f"invalid JSON: {exc}", source=source) from None
    except json.JSONDecodeError as exc:
        raise SpecError("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                        source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError("", f"invalid YAML{where}: {problem}", source=source) from None
    except RecursionError:
        raise SpecError("", "the document is nested too deeply", source=source) from None
    except ValueError as exc:  # e.g. an integer of thousands of digits (Python's int() limit)
        raise SpecError("", f"invalid {format.upper()}: {str(exc).splitlines()[0][:200]}", source=source) from None


def to_data(spec) -> dict:
    """The spec as plain JSON-compatible data, defaults left out (what `save` writes)."""
    return spec.model_dump(mode="json", exclude_defaults=True, exclude_none=True)


def dumps(spec, *, format: str = "yaml") -> str:
    data = to_data(spec)
    if format == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def save(spec, path: str | Path) -> Path:
    """Write a spec as YAML or JSON (chosen by the file extension)."""
    from archspec.files import atomic_write_text

    path = Path(path)
    return atomic_write_text(path, dumps(spec, format=_format_of(path)))


def canonical_json(spec) -> str:
    """Canonical JSON of the architecture: defaults filled in, keys sorted, no whitespace,
    name and description left out. The same for YAML and JSON forms and any field order."""
    data = spec.model_dump(mode="json", exclude=set(FINGERPRINT_EXCLUDES))
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(spec) -> str:
    """SHA-256 (hex, first 16 characters) of `canonical_json`."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def json_schema() -> dict:
    """JSON Schema of every spec document and template (any field may be a choice: see
    `archspec.template`), for editors (YAML language server) and tools."""
    from archspec.template import with_template_annotations

    schema = with_template_annotations(_spec_adapter().json_schema(),
                                       ("StagedBackbone", "ScalePermutedBackbone", "Detector"))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archspec document"
    return schema


def _format_of(path: Path) -> str:
    return "json" if path.suffix.lower() == ".json" else "yaml"


def _tags() -> frozenset[str]:
    """Every `type` tag of every spec model. Pydantic puts the tag of a discriminated-union
    member into error locations; documents do not have that level, so paths drop it."""
    from typing import get_args

    from archspec.blocks import Spec

    tags: set[str] = set()
    pending = [Spec]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        field = model.model_fields.get("type")
        if field is not None:
            tags.update(arg for arg in get_args(field.annotation) if isinstance(arg, str))
    return frozenset(tags)


def _from_validation_error(exc: ValidationError, source: str | None) -> SpecError:
    issues: list[Issue] = []
    tags = _tags()
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if not (isinstance(part, str) and part in tags)]
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            issues += inner.with_prefix(format_path(loc)).issues
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("type")
        issues.append(Issue(format_path(loc), _message(err)))
    return SpecError(issues=issues, source=source)


def _message(err: dict) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "missing 'type' field naming the kind"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; `archspec schema` lists the fields)"
    if kind == "missing":
        return "required field is missing"
    return err["msg"]
