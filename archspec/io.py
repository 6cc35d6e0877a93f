"""Reading, writing, fingerprinting and the JSON Schema of spec documents.

Documents are YAML or JSON; YAML is read with a strict safe loader
(`archspec.parsing`: no duplicate keys, no alias bombs), files through `archspec.files`. Every failure comes out
as a `SpecError` naming the file and the field path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from archspec.backbones import StagedBackbone
from archspec.detector import Detector
from archspec.scale_permuted import ScalePermutedBackbone
from archspec.errors import Issue, SpecError, format_path, join_path
from archspec.registry import Registry

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
    if data.get("type") == "search":
        raise SpecError("type", "a search config, not a spec: load it with `archspec.load_document` or "
                                "`archspec.search_config.load_search_config`", source=source)
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


def loads(text: str, *, format: str = "yaml", source: str | None = None, base_dir: str | Path | None = None,
          overrides: Sequence[str] = ()):
    """Parse and validate a YAML (default) or JSON document (`overrides`: ``key.path=value``
    strings applied before validation, see `archspec.overrides`)."""
    data = _overridden(parse_text(text, format=format, source=source), overrides, source)
    return validate(data, source=source, base_dir=base_dir)


def _overridden(data: Any, overrides: Sequence[str], source: str | None) -> Any:
    if not overrides:
        return data
    from archspec.overrides import apply_overrides

    try:
        return apply_overrides(data, overrides)
    except SpecError as exc:
        raise (exc.with_source(source) if source else exc) from None


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
            raise SpecError(issues=[Issue(field, f"{reference}: {issue}") for issue in exc.issues],
                            source=source) from None
        data[field] = to_data(included)
    return data


_BACKBONE_TYPES = ("staged", "scale_permuted")


def load(path: str | Path, *, overrides: Sequence[str] = ()):
    """A validated spec from a ``.yaml``/``.yml``/``.json`` file (`overrides`: ``key.path=value``
    strings applied before validation)."""
    path = Path(path)
    return loads(_read(path), format=_format_of(path), source=str(path), overrides=overrides)


# -- document kinds ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocumentKind:
    """One kind of top-level document: its model, how it is validated, which fields may name files."""

    model: type
    """The pydantic model (its ``type`` field is the kind's tag)."""
    validate: Callable[[dict, str | None, Path | None], Any]
    """(data, source, base directory) -> the validated document; raises `SpecError`."""
    includes: dict[str, str]
    """Field -> what a string there names (a file read relative to the document); the JSON Schema
    offers a string beside the field's own schema."""


DOCUMENT_KINDS: Registry[DocumentKind] = Registry("document kind")
"""``type`` tag -> document kind: what `load_document`, `archspec validate`, `summary` and the JSON
Schema accept. A new kind of file registers here and is first-class everywhere."""


def _validate_spec(data: dict, source: str | None, base_dir: Path | None):
    return validate(data, source=source, base_dir=base_dir)


def _validate_search(data: dict, source: str | None, base_dir: Path | None):
    from archspec.search_config import search_config_from_data

    return search_config_from_data(data, source=source, base_dir=base_dir)[0]


def _register_document_kinds() -> None:
    from archspec.search_config import SearchConfig

    DOCUMENT_KINDS.register("staged", DocumentKind(StagedBackbone, _validate_spec, {}))
    DOCUMENT_KINDS.register("scale_permuted", DocumentKind(ScalePermutedBackbone, _validate_spec, {}))
    DOCUMENT_KINDS.register("detector", DocumentKind(
        Detector, _validate_spec, {"backbone": "a backbone spec file, relative to this file"}))
    DOCUMENT_KINDS.register("search", DocumentKind(
        SearchConfig, _validate_search, {"base": "the base spec file, relative to this file"}))


def validate_document(data: Any, *, source: str | None = None, base_dir: str | Path | None = None):
    """Any registered document (a spec, a search config...) validated from plain data."""
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise SpecError("", f"a spec document must be a mapping with a 'type' field, not {kind}", source=source)
    tag = data.get("type")
    if tag is None:
        raise SpecError("type", "missing 'type' field naming the kind", source=source)
    if not isinstance(tag, str) or tag not in DOCUMENT_KINDS:
        kinds = [str(name) for name in DOCUMENT_KINDS]
        expected = ", ".join(repr(name) for name in kinds)
        raise SpecError("type", f"unknown kind {tag!r}{_kind_hint(tag, kinds)}; expected one of {expected}",
                        source=source)
    if base_dir is None:
        base_dir = Path(source).parent if source and Path(source).exists() else Path.cwd()
    return DOCUMENT_KINDS.get(tag).validate(data, source, Path(base_dir))


def load_document(path: str | Path, *, overrides: Sequence[str] = ()):
    """Any registered document from a file: a spec (as `load`) or a search config (its base
    checked too), with ``key.path=value`` `overrides` applied before validation."""
    path = Path(path)
    data = parse_text(_read(path), format=_format_of(path), source=str(path))
    return validate_document(_overridden(data, overrides, str(path)), source=str(path))


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
    """Canonical JSON of the architecture: the resolved spec (defaults filled in, `outputs`
    written out), keys sorted, no whitespace, names and descriptions left out (of included
    specs too). The same for YAML and JSON forms, any field order, and defaults written or not."""
    return json.dumps(_canonical_data(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _canonical_data(spec) -> dict:
    data = spec.model_dump(mode="json", exclude=set(FINGERPRINT_EXCLUDES))
    if "outputs" in data:  # written or defaulted, the outputs the network has
        data["outputs"] = spec.output_names()
    for field in INCLUDE_FIELDS.get(spec.type, ()):
        data[field] = _canonical_data(getattr(spec, field))
    if spec.type == "staged":
        for stage in data["stages"]:
            if stage.get("name") is None:  # unnamed stages hash as before stage names existed
                stage.pop("name", None)
    return data


def fingerprint(spec) -> str:
    """SHA-256 (hex, first 16 characters) of `canonical_json`."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def json_schema() -> dict:
    """JSON Schema (Draft 2020-12) of every registered document kind, for editors (YAML language
    server) and tools: the discriminated union of the kinds' models, with a string (a file
    name) allowed wherever the loader reads an included file, and a choice allowed wherever a
    template may hold one (see `archspec.template`)."""
    from archspec.template import with_template_annotations

    kinds = [DOCUMENT_KINDS.get(tag) for tag in DOCUMENT_KINDS]
    union = Annotated[Union[tuple(kind.model for kind in kinds)], Field(discriminator="type")]
    schema = TypeAdapter(union).json_schema(ref_template="#/$defs/{model}")
    definitions = schema.get("$defs", {})
    for kind in kinds:
        properties = definitions[kind.model.__name__]["properties"]
        for field, meaning in kind.includes.items():
            properties[field] = _with_file_reference(properties[field], meaning, definitions)
    schema = with_template_annotations(schema, ("StagedBackbone", "ScalePermutedBackbone", "Detector"))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archspec document"
    return schema


def _with_file_reference(field_schema: dict, meaning: str, definitions: dict) -> dict:
    """A field's schema widened to accept a file name. A field typed as any mapping (a search
    config's ``base``) is narrowed to what the loader accepts there: a backbone spec."""
    description = field_schema.get("description", "")
    given = field_schema.get("anyOf", [field_schema])
    alternatives = [alternative for alternative in given
                    if alternative.get("type") not in ("string", "object", "null") or "$ref" in alternative
                    or "oneOf" in alternative]
    if not alternatives:  # `str | dict`: the loader takes a backbone spec
        alternatives = [{"oneOf": [{"$ref": f"#/$defs/{StagedBackbone.__name__}"},
                                   {"$ref": f"#/$defs/{ScalePermutedBackbone.__name__}"}],
                         "discriminator": {"propertyName": "type"}}]
    alternatives += [alternative for alternative in given if alternative.get("type") == "null"]  # optional
    inline = [{key: value for key, value in alternative.items() if key not in ("description", "title")}
              for alternative in alternatives]
    return {"anyOf": [{"type": "string", "description": meaning}, *inline], "description": description}


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
    """Every problem pydantic found, as document paths and plain sentences: union tags and
    union-member labels dropped from paths, the failed members of a union merged into one
    line, and an unknown field next to a missing one reported as a misspelling."""
    tags = _tags()
    found: list[_Found] = []
    for err in exc.errors(include_url=False):
        loc, member = _document_loc(err["loc"], tags)
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            found += [_Found(issue.path, "nested", issue.message) for issue in inner.with_prefix(format_path(loc)).issues]
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("type")
        found.append(_Found(format_path(loc), err["type"], _message(err), member))
    return SpecError(issues=_suggest_spellings(_merge_union_members(found)), source=source)


@dataclass
class _Found:
    """One pydantic error on its way to becoming an `Issue`."""

    path: str
    kind: str
    message: str
    member: str | None = None
    """The union member (pydantic's label, e.g. ``list[int]``) the error came from, if any."""


_MEMBER_NOUNS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                 "none": "null", "list": "a list", "tuple": "a list", "dict": "a mapping", "set": "a list"}
"""pydantic's union-member labels (their part before ``[``) -> what a YAML author writes."""


def _is_member_label(part) -> bool:
    """Union-member labels that pydantic puts in error locations (``constrained-int``,
    ``list[constrained-int]``, ``function-after[...]``); document keys never look like that."""
    return isinstance(part, str) and ("[" in part or "-" in part or part in _MEMBER_NOUNS)


def _document_loc(loc, tags: frozenset[str]) -> tuple[list, str | None]:
    parts, member = [], None
    for part in loc:
        if isinstance(part, str) and part in tags:
            continue
        if _is_member_label(part):
            member = part
            continue
        parts.append(part)
    return parts, member


def _member_noun(label: str) -> str | None:
    base = label.split("[", 1)[0].removeprefix("constrained-")
    return _MEMBER_NOUNS.get(base)


def _merge_union_members(found: list[_Found]) -> list[_Found]:
    """A value that fits no member of a union yields one error per member; users need one line:
    the member whose type matched but whose constraint failed, else what the value may be."""
    by_path: dict[str, list[_Found]] = {}
    for item in found:
        if item.member is not None:
            by_path.setdefault(item.path, []).append(item)
    merged: list[_Found] = []
    done: set[str] = set()
    for item in found:
        group = by_path.get(item.path) if item.member is not None else None
        if not group or len(group) == 1:
            merged.append(item)
            continue
        if item.path in done:
            continue
        done.add(item.path)
        specific = [g for g in group if not g.kind.endswith(("_type", "_parsing"))]
        if specific:
            merged.extend(specific)
            continue
        nouns = list(dict.fromkeys(n for n in (_member_noun(g.member) for g in group) if n))
        message = f"should be {' or '.join(nouns)}" if nouns else group[0].message
        merged.append(_Found(item.path, "union", message))
    return merged


def _parent_and_field(path: str) -> tuple[str, str]:
    parent, _, field = path.rpartition(".")
    return parent, field


def _suggest_spellings(found: list[_Found]) -> list[Issue]:
    """An unknown field beside a missing required one is almost always a typo of it (``deph:``
    for ``depth:``): report the typo with the fix instead of two unrelated-looking problems.
    Other unknown fields get the closest field name any spec kind has, if one is close."""
    missing: dict[str, list[str]] = {}
    for item in found:
        if item.kind == "missing":
            parent, field = _parent_and_field(item.path)
            missing.setdefault(parent, []).append(field)
    explained: set[str] = set()
    issues: list[Issue] = []
    for item in found:
        if item.kind != "extra_forbidden":
            continue
        parent, field = _parent_and_field(item.path)
        match = difflib.get_close_matches(field, missing.get(parent, []), n=1, cutoff=0.5)
        if match:
            explained.add(join_path(parent, match[0]))
            item.message = f"unknown field; did you mean {match[0]!r} (a required field that is missing)?"
        else:
            known = [name for name in _field_names() if name != field]
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.75)
            if close and field not in _field_names():
                item.message = f"unknown field; did you mean {close[0]!r}?"
    for item in found:
        if item.kind == "missing" and item.path in explained:
            continue
        issues.append(Issue(item.path, item.message))
    return issues


def _kind_hint(tag, kinds: list[str]) -> str:
    """`` (did you mean 'basic'?)`` for a misspelt kind tag, else nothing."""
    close = difflib.get_close_matches(str(tag), kinds, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _field_names() -> list[str]:
    """Every field name of every spec model (the vocabulary for spelling suggestions)."""
    from archspec.blocks import Spec

    names: set[str] = set()
    pending = [Spec]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        names.update(model.model_fields)
    return sorted(names)


def _message(err: dict) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "union_tag_invalid":
        tag, expected = ctx.get("tag"), ctx.get("expected_tags")
        kinds = re.findall(r"'([^']*)'", str(expected))
        return f"unknown kind {tag!r}{_kind_hint(tag, kinds)}; expected one of {expected}"
    if kind == "union_tag_not_found":
        return "missing 'type' field naming the kind"
    if kind == "extra_forbidden":
        return "unknown field (`archspec schema` lists the fields of every document kind)"
    if kind == "missing":
        return "required field is missing"
    return err["msg"]


_register_document_kinds()
