"""Strict parsing of YAML and JSON documents, before any validation or serialisation.

- Duplicate keys are errors (YAML and JSON both silently keep the last value otherwise).
- YAML aliases may not expand past `NODE_BUDGET` nodes: PyYAML shares an aliased node's object,
  so a 1 KB "billion laughs" document parses instantly, and then anything that walks it
  (validation, ``json.dumps`` for a run's identity) runs out of memory. The expanded size is
  computed on the node graph (each shared node once) and refused before construction.
- Collections may not nest deeper than `MAX_DEPTH`.
- Scalars resolve as in YAML 1.2 for numbers: no sexagesimal ``1:04`` (= 64 in YAML 1.1),
  and ``1e9`` / ``37.6e9`` are floats (YAML 1.1 reads them as strings).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

NODE_BUDGET = 200_000
"""Most nodes a document may hold with every alias expanded (the largest real spec has a few
thousand)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


MAX_DEPTH = 100
"""Deepest nesting of collections a YAML document may have (a real spec or search config has
about ten levels). PyYAML's scanner is quadratic in the nesting of flow collections: a 10 KB
line of ``[`` took seconds to reach Python's recursion limit; refused at this depth, it takes
milliseconds."""


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without duplicate keys, alias bombs, deep nesting or YAML 1.1
    sexagesimal numbers."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # the composer pulls tokens lazily: stopping here stops the scanner at this depth too
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"the document is nested more than {MAX_DEPTH} levels deep",
                                self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        size = expanded_size(node)
        if size > NODE_BUDGET:
            raise ConstructorError(None, None, f"the document expands to more than {NODE_BUDGET:,} nodes "
                                               "(aliases repeated too often)", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key; SafeConstructor reports it
                    continue
                if duplicate:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def expanded_size(root: Node) -> int:
    """Nodes in the document with every alias expanded (each shared node counted at every use),
    computed once per distinct node; a node that contains itself counts as unbounded."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = min(1 + sum(sizes[id(child)] for child in _children(node)), NODE_BUDGET + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:  # a recursive alias: the document is infinite once expanded
            return NODE_BUDGET + 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _without_numbers(resolvers: dict) -> dict:
    return {first: [(tag, regexp) for tag, regexp in entries if tag not in (
        "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")] for first, entries in resolvers.items()}


StrictLoader.yaml_implicit_resolvers = _without_numbers(yaml.SafeLoader.yaml_implicit_resolvers)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Plain data from YAML text (`StrictLoader`); raises `yaml.YAMLError`."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


class DuplicateKeyError(ValueError):
    """A JSON object with the same key twice."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_json(text: str) -> Any:
    """Plain data from JSON text, duplicate keys refused; raises `json.JSONDecodeError` or
    `DuplicateKeyError`."""
    return json.loads(text, object_pairs_hook=_refuse_duplicates)
