"""``--set key.path=value`` overrides, applied to a document's data before it is validated.

    --set stages[2].depth=8 --set budgets.max_flops=3.76e10 --set outputs=[C3,C4,C5]

Paths use the error messages' syntax (``stages[2].depth``; ``stages.2.depth`` is accepted too).
Values are YAML scalars or flow collections, typed as a YAML file would type them (``8`` is an
integer, ``true`` a boolean, ``null`` removes an optional field's value), except that numbers in
exponent form without a dot (``3e9``) are numbers, as in JSON, not strings as in YAML 1.1.
Missing mappings on the path are created; a list index must exist. Whatever the override makes is
then validated like the file itself, so a bad value is reported at its path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import yaml

from archspec.errors import SpecError, format_path
from archspec.parsing import load_yaml

_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``"stages[1].depth=4"`` -> (``["stages", 1, "depth"]``, 4)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError("", f"--set {text!r}: expected KEY.PATH=VALUE, e.g. stages[1].depth=4")
    return parse_key_path(key), parse_value(raw, key)


def parse_key_path(key: str) -> list[str | int]:
    """``stages[1].depth`` (or ``stages.1.depth``) -> ``["stages", 1, "depth"]``."""
    parts: list[str | int] = []
    for segment in key.split("."):
        if segment.isdigit():  # ``stages.1.depth``
            parts.append(int(segment))
            continue
        cursor = 0
        while cursor < len(segment) or cursor == 0:
            match = _TOKEN.match(segment, cursor)
            if match is None or not match.group(0) or (cursor > 0 and match.group(1) is not None):
                raise SpecError("", f"--set {key}: cannot read the key path at {segment[cursor:]!r} "
                                    "(expected field names and [index], e.g. stages[1].depth)")
            parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
            cursor = match.end()
    if not isinstance(parts[0], str):
        raise SpecError("", f"--set {key}: a key path starts with a field name")
    return parts


def parse_value(raw: str, key: str = "") -> Any:
    raw = raw.strip()
    if _NUMBER.match(raw):
        number = float(raw)
        return int(raw) if re.fullmatch(r"[+-]?\d+", raw) else number
    try:
        return load_yaml(raw) if raw else ""  # strict: no alias bombs, no deep nesting, no duplicate keys
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not a YAML value"
        raise SpecError(key, f"--set value {raw!r} is not valid YAML ({problem})") from None


def apply_overrides(data: Any, overrides: Iterable[str]) -> Any:
    """A copy of `data` with every override applied in order (the input is left untouched)."""
    overrides = list(overrides)
    if not overrides:
        return data
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        _set(data, path, value)
    return data


def _set(data: Any, path: list[str | int], value: Any) -> None:
    node = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = format_path(path[:depth]) or "the document"
        if isinstance(part, int):
            if not isinstance(node, list):
                raise SpecError(format_path(path), f"--set: {where} is not a list, so [{part}] does not apply")
            if part >= len(node):
                raise SpecError(format_path(path), f"--set: {where} has {len(node)} item"
                                                   f"{'s' if len(node) != 1 else ''}, so there is no [{part}]")
        elif not isinstance(node, dict):
            kind = "a file reference" if isinstance(node, str) else f"a {type(node).__name__}"
            raise SpecError(format_path(path), f"--set: {where} is {kind}, not a mapping with fields")
        if last:
            node[part] = value
            return
        if isinstance(part, str) and not isinstance(node.get(part), (dict, list)):
            if node.get(part) is None:
                node[part] = {}
        node = node[part]
