"""Templates: spec documents with choices written in place of values (PyGlove's idea of marking
any field of a symbolic object as a choice, Peng et al., "PyGlove: Symbolic Programming for
Automated Machine Learning", NeurIPS 2020, section 3).

Any value of a staged, scale-permuted or detector document -- a scalar, a list, a sub-document
-- may be written as an annotation instead:

* ``{choice: [64, 96, 128]}``: one of the listed values (sub-documents too:
  ``{choice: [{type: bottleneck}, {type: basic}]}``; an option may hold further choices, which
  count only when that option is taken);
* ``{int: [1, 6]}`` or ``{int: [16, 64], step: 16}``: an integer of the inclusive range;
* either with ``name: c4_width``: every annotation with that name is one decision (the same
  value everywhere), and with ``default: 96``: the value the template's starting point takes
  (default: the first option).

A document with at least one annotation is a *template*. A top-level ``constraints:`` list adds
rules over the whole decoded document, written as data::

    constraints:
      - {sum: ["stages[*].depth"], equals: 16}     # also: min, max

The template's decisions, in document order (a named decision where it first appears), are the
*genotype*: one option index per decision. Decisions inside an option that is not taken are
inactive; they are kept at their default, so equal architectures have equal genotypes.
Decoding fills every decision in and validates the result with the spec validator, so an invalid
combination (channels that do not divide into groups, say) is refused with the validator's own
reason and field path. Torch-free; the search layer's ``annotated`` space is built on it.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archspec.errors import Issue, SpecError, format_path, join_path

ANNOTATION_KEYS = {"choice": ("choice", "name", "default"), "int": ("int", "step", "name", "default")}
"""Annotation kind -> the keys it may have. A mapping with a ``choice`` or ``int`` key is an annotation."""
CONSTRAINT_BOUNDS = ("equals", "min", "max")
MAX_OPTIONS = 100_000
"""Most options of one ``int`` range (a larger one is surely a typo)."""


class ConstraintError(SpecError):
    """A decoded document that breaks one of the template's ``constraints``."""


# -- the tree -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fixed:
    """A value written as it is (no annotation inside)."""

    value: Any


@dataclass(frozen=True)
class Mapping:
    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Sequence:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Choice:
    """One occurrence of a decision; `options` are trees (an option may hold further choices)."""

    decision: int
    options: tuple[Any, ...]


@dataclass(frozen=True)
class Decision:
    """One gene of the genotype."""

    path: str
    """Where it is written first, in the template (e.g. ``stages[1].out_channels``)."""
    concrete_path: str
    """Where its value lands in a decoded document (no ``choice[i]`` steps)."""
    kind: str
    """``choice`` or ``int``."""
    values: tuple[Any, ...]
    """The options as written (plain data; annotations inside them as written)."""
    default: int
    """Index of the starting option."""
    name: str | None = None
    conditions: tuple[tuple[int, int], ...] = ()
    """(decision, option) pairs that make its first occurrence count (empty: always)."""

    def label(self, index: int) -> str:
        """An option for people: a value, or a sub-document as ``kind(field=value, ...)`` with
        ``?`` for the fields chosen inside it."""
        value = self.values[index]
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            fields = [f"{k}={'?' if is_template(v) else _short(v)}" for k, v in value.items() if k != "type"]
            return value["type"] + (f"({', '.join(fields)})" if fields else "")
        return _short(value)


@dataclass(frozen=True)
class Constraint:
    """``sum`` of the fields the patterns match, compared with ``equals``/``min``/``max``."""

    patterns: tuple[str, ...]
    bound: str
    value: float
    path: str

    def problem(self, data: Any) -> str | None:
        total = 0
        for pattern in self.patterns:
            values = list(_resolve(data, _pattern_parts(pattern)))
            total += sum(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
        ok = {"equals": total == self.value, "min": total >= self.value, "max": total <= self.value}[self.bound]
        if ok:
            return None
        what = {"equals": "must equal", "min": "must be at least", "max": "must be at most"}[self.bound]
        return f"sum of {', '.join(self.patterns)} is {_short(total)}; it {what} {_short(self.value)}"

    def to_data(self) -> dict:
        return {"sum": list(self.patterns), self.bound: self.value}


@dataclass
class Template:
    """A parsed template: the document tree, its decisions and constraints."""

    tree: Any
    decisions: list[Decision]
    constraints: list[Constraint]
    source: str | None = None
    base_dir: Path | None = None
    _named: dict[str, int] = field(default_factory=dict, repr=False)

    # -- genotypes --------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The document kind (`type` tag) every decoded spec has."""
        return dict(self.tree.items)["type"].value

    @property
    def default(self) -> tuple[int, ...]:
        return self.canonical(tuple(d.default for d in self.decisions))

    def active(self, genotype: tuple[int, ...]) -> list[bool]:
        """Which decisions count for this genotype (the others sit in options not taken)."""
        seen = [False] * len(self.decisions)

        def walk(node: Any) -> None:
            if isinstance(node, Choice):
                seen[node.decision] = True
                walk(node.options[genotype[node.decision]])
            elif isinstance(node, (Mapping, Sequence)):
                for item in node.items:
                    walk(item[1] if isinstance(node, Mapping) else item)
        walk(self.tree)
        return seen

    def canonical(self, genotype: tuple[int, ...]) -> tuple[int, ...]:
        """The genotype with inactive decisions at their default (one genotype per architecture)."""
        active = self.active(genotype)
        return tuple(g if on else d.default for g, on, d in zip(genotype, active, self.decisions))

    def check(self, genotype: tuple[int, ...]) -> str | None:
        """Why a genotype is not one of this template's (None when it is)."""
        if len(genotype) != len(self.decisions):
            return f"genotype of length {len(genotype)} for {len(self.decisions)} decisions"
        for gene, decision in zip(genotype, self.decisions):
            if not (isinstance(gene, int) and 0 <= gene < len(decision.values)):
                return f"{decision.path}: option {gene!r} outside 0..{len(decision.values) - 1}"
        return None

    def data(self, genotype: tuple[int, ...]) -> Any:
        """The plain document of a genotype (not validated)."""
        return _materialize(self.tree, genotype)

    def decode(self, genotype: tuple[int, ...]):
        """The validated spec of a genotype. `SpecError` (the validator's reason and path) for an
        invalid combination, `ConstraintError` for a broken constraint."""
        from archspec.io import validate

        problem = self.check(genotype)
        if problem:
            raise SpecError("", problem, source=self.source)
        data = self.data(genotype)
        self._check_constraints(data, written=True)  # cheap: before validation, on the fields as written
        spec = validate(data, base_dir=self.base_dir or Path.cwd())
        self._check_constraints(spec.model_dump(mode="json"), written=False)  # fields left to defaults
        return spec

    def _check_constraints(self, data: Any, written: bool) -> None:
        """`ConstraintError` for the first broken constraint; with `written`, only constraints
        whose every pattern names fields written in the document (the rest wait for defaults)."""
        for index, constraint in enumerate(self.constraints):
            present = all(list(_resolve(data, _pattern_parts(p))) for p in constraint.patterns)
            if written and not present:
                continue
            problem = constraint.problem(data)
            if problem:
                raise ConstraintError(f"constraints[{index}]", problem)

    # -- random moves ----------------------------------------------------------------------
    def random(self, rng: random.Random) -> tuple[int, ...]:
        """Every decision drawn uniformly (then inactive ones reset)."""
        return self.canonical(tuple(rng.randrange(len(d.values)) for d in self.decisions))

    def mutate(self, genotype: tuple[int, ...], rng: random.Random, times: int = 1) -> tuple[int, ...]:
        """`times` active decisions (distinct where there are enough) each moved to another option."""
        genes = list(genotype)
        for _ in range(times):
            movable = [i for i, on in enumerate(self.active(tuple(genes))) if on and len(self.decisions[i].values) > 1]
            if not movable:
                break
            i = rng.choice(movable)
            other = rng.randrange(len(self.decisions[i].values) - 1)
            genes[i] = other + (other >= genes[i])
        return self.canonical(tuple(genes))

    def redraw(self, genotype: tuple[int, ...], rng: random.Random, prob: float) -> tuple[int, ...]:
        """Every decision redrawn (uniformly, possibly to the same option) with probability `prob`."""
        return self.canonical(tuple(rng.randrange(len(d.values)) if rng.random() < prob else g
                                    for g, d in zip(genotype, self.decisions)))

    def crossover(self, a: tuple[int, ...], b: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
        """Uniform crossover: each decision from either parent."""
        return self.canonical(tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b)))

    def enumerate(self, limit: int | None = None) -> Iterator[tuple[int, ...]]:
        """Every canonical genotype once, in lexical order (constraints not applied). Raises
        `ValueError` when there are more than `limit`."""
        size = self.size()
        if limit is not None and size > limit:
            raise ValueError(f"the space has {size:,} architectures, more than the enumeration limit {limit:,}")
        return self._walk(0, [d.default for d in self.decisions])

    def _walk(self, index: int, genes: list[int]) -> Iterator[tuple[int, ...]]:
        if index == len(self.decisions):
            if self.canonical(tuple(genes)) == tuple(genes):  # a named decision no option uses: once
                yield tuple(genes)
            return
        # An unnamed decision sits in one place, inside the options of decisions numbered before
        # it, so the genes so far decide whether it counts; a named one may be used again later.
        if self.decisions[index].name is None and not self.active(tuple(genes))[index]:
            yield from self._walk(index + 1, genes)
            return
        for option in range(len(self.decisions[index].values)):
            genes[index] = option
            yield from self._walk(index + 1, genes)
        genes[index] = self.decisions[index].default

    def size(self) -> int:
        """Distinct architectures the decisions describe (before constraints), exactly: the sum
        over the named decisions' values of the trees that use them, where a named decision
        that no taken option uses counts only at its default (so each is counted once)."""
        named = [i for i, d in enumerate(self.decisions) if d.name is not None]
        total = 0
        for values in itertools.product(*(range(len(self.decisions[i].values)) for i in named)):
            fixed = dict(zip(named, values))
            moved = frozenset(i for i in named if fixed[i] != self.decisions[i].default)
            total += sum(n for used, n in _count(self.tree, fixed).items() if moved <= used)
        return total

    # -- matching a concrete spec ----------------------------------------------------------
    def match(self, spec) -> tuple[int, ...] | None:
        """The genotype that decodes to `spec` (same fingerprint), or None if the template
        does not contain it (membership test)."""
        from archspec.io import FINGERPRINT_EXCLUDES, fingerprint

        target = fingerprint(spec)
        data = spec.model_dump(mode="json")
        written = self.data(self.default)
        for key in FINGERPRINT_EXCLUDES:  # names and descriptions are for people: not matched
            if key in written:
                data[key] = written[key]
        for assignment in _match(self.tree, data, {}):
            genotype = self.canonical(tuple(assignment.get(i, d.default) for i, d in enumerate(self.decisions)))
            try:
                if fingerprint(self.decode(genotype)) == target:
                    return genotype
            except SpecError:
                continue
        return None

    # -- round trip --------------------------------------------------------------------------
    def to_data(self) -> dict:
        """The template as plain data (what `load_template` reads back to an equal template)."""
        written: set[int] = set()
        data = _unparse(self.tree, self.decisions, written)
        if self.constraints:
            data["constraints"] = [c.to_data() for c in self.constraints]
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and (self.tree, self.decisions, self.constraints) == \
            (other.tree, other.decisions, other.constraints)


# -- parsing --------------------------------------------------------------------------------------
def is_template(data: Any) -> bool:
    """Whether a document holds any annotation (or constraints)."""
    if isinstance(data, dict):
        if any(key in data for key in ANNOTATION_KEYS) or "constraints" in data:
            return True
        return any(is_template(v) for v in data.values())
    if isinstance(data, list):
        return any(is_template(v) for v in data)
    return False


def load_template(path: str | Path) -> Template:
    """A validated template from a YAML/JSON file (errors name the file and field path)."""
    from archspec.io import _format_of, _read, parse_text

    path = Path(path)
    data = parse_text(_read(path), format=_format_of(path), source=str(path))
    return parse_template(data, source=str(path), base_dir=path.parent)


def parse_template(data: Any, *, source: str | None = None, base_dir: str | Path | None = None,
                   check_branches: bool = True) -> Template:
    """Parse and validate a template: the annotations' own syntax, then every branch where it
    can be checked alone (see `check_template`). `SpecError` lists every problem with its path."""
    if not isinstance(data, dict):
        raise SpecError("", "a template must be a mapping with a 'type' field", source=source)
    parser = _Parser()
    body = {k: v for k, v in data.items() if k != "constraints"}
    tree = parser.parse(body, [], [], ())
    kind = body.get("type")
    if not isinstance(kind, str):
        parser.issues.append(Issue("type", "the document kind must be written as a plain value, not a choice"))
    constraints = _parse_constraints(data.get("constraints"), parser.issues)
    if parser.issues:
        raise SpecError(issues=parser.issues, source=source)
    template = Template(tree, parser.decisions, constraints, source, Path(base_dir) if base_dir else None,
                        dict(parser.named))
    if check_branches:
        issues = check_template(template)
        if issues:
            raise SpecError(issues=issues, source=source)
    return template


class _Parser:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.named: dict[str, int] = {}
        self.issues: list[Issue] = []

    def parse(self, value: Any, path: list, concrete: list, conditions: tuple) -> Any:
        if isinstance(value, dict) and any(key in value for key in ANNOTATION_KEYS):
            return self.annotation(value, path, concrete, conditions)
        if isinstance(value, dict):
            items = tuple((k, self.parse(v, [*path, k], [*concrete, k], conditions)) for k, v in value.items())
            if all(isinstance(v, Fixed) for _, v in items):
                return Fixed(value)
            return Mapping(items)
        if isinstance(value, list):
            items = tuple(self.parse(v, [*path, i], [*concrete, i], conditions) for i, v in enumerate(value))
            if all(isinstance(v, Fixed) for v in items):
                return Fixed(value)
            return Sequence(items)
        return Fixed(value)

    def annotation(self, value: dict, path: list, concrete: list, conditions: tuple) -> Any:
        kind = "choice" if "choice" in value else "int"
        where = format_path(path)
        if "choice" in value and "int" in value:
            self.issues.append(Issue(where, "an annotation is either a choice or an int range, not both"))
            return Fixed(None)
        unknown = [k for k in value if k not in ANNOTATION_KEYS[kind]]
        if unknown:
            self.issues.append(Issue(join_path(where, str(unknown[0])), f"unknown key of a {kind} annotation "
                                                                         f"(allowed: {', '.join(ANNOTATION_KEYS[kind])})"))
            return Fixed(None)
        values = self.options(kind, value, where)
        if values is None:
            return Fixed(None)
        name = value.get("name")
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", name)):
            self.issues.append(Issue(join_path(where, "name"), "a decision name is a word (letters, digits, _ . -)"))
            return Fixed(None)
        default = 0
        if "default" in value:
            matches = [i for i, v in enumerate(values) if _same(v, value["default"])]
            if not matches:
                self.issues.append(Issue(join_path(where, "default"), f"{_short(value['default'])} is not one of "
                                                                      f"the options"))
                return Fixed(None)
            default = matches[0]
        if name is not None and name in self.named:
            index = self.named[name]
            first = self.decisions[index]
            if (first.kind, first.values) != (kind, values) or ("default" in value and first.default != default):
                self.issues.append(Issue(where, f"the decision {name!r} is written differently at {first.path}; "
                                                f"every use of a name lists the same options"))
                return Fixed(None)
        else:
            index = len(self.decisions)
            self.decisions.append(Decision(where, format_path(concrete), kind, values, default, name, conditions))
            if name is not None:
                self.named[name] = index
        step = "choice" if kind == "choice" else "int"
        options = tuple(self.parse(v, [*path, step, i], concrete, conditions + ((index, i),)) if kind == "choice"
                        else Fixed(v) for i, v in enumerate(values))
        return Choice(index, options)

    def options(self, kind: str, value: dict, where: str) -> tuple | None:
        if kind == "choice":
            options = value["choice"]
            if not isinstance(options, list) or not options:
                self.issues.append(Issue(join_path(where, "choice"), "a choice lists at least one option"))
                return None
            for i, option in enumerate(options):
                if any(_same(option, other) for other in options[:i]):
                    self.issues.append(Issue(join_path(where, f"choice[{i}]"), f"{_short(option)} is listed twice"))
                    return None
            return tuple(options)
        bounds, step = value["int"], value.get("step", 1)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_int(b) for b in bounds)):
            self.issues.append(Issue(join_path(where, "int"), "an int range is written [lowest, highest]"))
            return None
        if not _is_int(step) or step < 1:
            self.issues.append(Issue(join_path(where, "step"), "the step is a positive integer"))
            return None
        low, high = bounds
        if low > high:
            self.issues.append(Issue(join_path(where, "int"), f"the range [{low}, {high}] is empty"))
            return None
        if (high - low) // step + 1 > MAX_OPTIONS:
            self.issues.append(Issue(join_path(where, "int"), f"more than {MAX_OPTIONS:,} options"))
            return None
        return tuple(range(low, high + 1, step))


def _parse_constraints(raw: Any, issues: list[Issue]) -> list[Constraint]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        issues.append(Issue("constraints", "constraints are a list of {sum: [FIELDS], equals|min|max: N}"))
        return []
    found = []
    for i, item in enumerate(raw):
        where = f"constraints[{i}]"
        if not isinstance(item, dict):
            issues.append(Issue(where, "a constraint is a mapping {sum: [FIELDS], equals|min|max: N}"))
            continue
        bounds = [k for k in item if k in CONSTRAINT_BOUNDS]
        unknown = [k for k in item if k not in CONSTRAINT_BOUNDS and k != "sum"]
        patterns = item.get("sum")
        if unknown:
            issues.append(Issue(f"{where}.{unknown[0]}", "unknown key (a constraint has sum and one of equals, min, max)"))
        elif not (isinstance(patterns, list) and patterns and all(isinstance(p, str) for p in patterns)):
            issues.append(Issue(f"{where}.sum", "a list of field paths, e.g. ['stages[*].depth']"))
        elif len(bounds) != 1 or not isinstance(item[bounds[0]], (int, float)) or isinstance(item[bounds[0]], bool):
            issues.append(Issue(where, "exactly one numeric bound: equals, min or max"))
        else:
            bad = [p for p in patterns if _pattern_parts(p) is None]
            if bad:
                issues.append(Issue(f"{where}.sum", f"{bad[0]!r} is not a field path (e.g. stages[*].depth)"))
                continue
            found.append(Constraint(tuple(patterns), bounds[0], item[bounds[0]], where))
    return found


# -- checking every branch -----------------------------------------------------------------------
def check_template(template: Template) -> list[Issue]:
    """Problems a template has whatever the other decisions are. For every option of every
    decision, the document with that option (every other decision at its default, the options
    that make it count taken) is validated; a problem at or under the decision's own field is
    reported at the option (``stages[1].block.choice[2].kernel``) unless changing one other
    decision makes it go away -- then it is a combination (a width that a chosen expansion does
    not divide), which decoding refuses with the validator's reason, not a template error.
    Problems at fixed fields that no single option avoids are reported too."""
    issues: list[Issue] = []
    persistent: set[tuple[str, str]] | None = None
    own = [d.concrete_path for d in template.decisions]
    for index, decision in enumerate(template.decisions):
        for option in range(len(decision.values)):
            genes = _with(template, list(template.default), index, option)
            found = _problems(template, genes)
            local = [i for i in found if _under(i.path, decision.concrete_path)]
            if local and _fixable(template, genes, index, {i.path for i in local}):
                local = []
            for issue in local:
                rest = issue.path[len(decision.concrete_path):].lstrip(".")
                at = join_path(f"{decision.path}.{decision.kind}[{option}]", rest) if decision.kind == "choice" \
                    else f"{decision.path}.int"
                message = issue.message if decision.kind == "choice" else f"{decision.values[option]}: {issue.message}"
                if Issue(at, message) not in issues:
                    issues.append(Issue(at, message))
            outside = {(i.path, i.message) for i in found if not any(_under(i.path, p) for p in own)}
            persistent = outside if persistent is None else persistent & outside
    if not template.decisions:
        persistent = {(i.path, i.message) for i in _problems(template, ())}
    for path, message in sorted(persistent or ()):
        issues.append(Issue(path, message))
    for constraint in template.constraints:
        data = _full_data(template, template.default)
        for pattern in constraint.patterns:
            if data is not None and not list(_resolve(data, _pattern_parts(pattern))):
                issues.append(Issue(f"{constraint.path}.sum", f"{pattern!r} names no field of the document"))
    return issues


def _with(template: Template, genes: list[int], index: int, option: int) -> tuple[int, ...]:
    """`genes` with decision `index` at `option`, the options that make it count taken."""
    genes = list(genes)
    for outer, taken in template.decisions[index].conditions:
        genes[outer] = taken
    genes[index] = option
    return template.canonical(tuple(genes))


def _fixable(template: Template, genes: tuple[int, ...], index: int, paths: set[str]) -> bool:
    """Whether changing one other decision clears every problem at `paths`."""
    for other, decision in enumerate(template.decisions):
        if other == index:
            continue
        for option in range(len(decision.values)):
            variant = _with(template, list(genes), other, option)
            if variant[index] != genes[index] or variant == genes:
                continue
            if not {i.path for i in _problems(template, variant)} & paths:
                return True
    return False


def _problems(template: Template, genotype: tuple[int, ...]) -> list[Issue]:
    from archspec.io import validate

    try:
        validate(template.data(genotype), base_dir=template.base_dir or Path.cwd())
    except SpecError as exc:
        return list(exc.issues)
    return []


def _full_data(template: Template, genotype: tuple[int, ...]) -> Any:
    from archspec.io import validate

    try:
        return validate(template.data(genotype), base_dir=template.base_dir or Path.cwd()).model_dump(mode="json")
    except SpecError:
        return None


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


# -- helpers ------------------------------------------------------------------------------------
def _materialize(node: Any, genotype: tuple[int, ...]) -> Any:
    if isinstance(node, Fixed):
        return _copy(node.value)
    if isinstance(node, Choice):
        return _materialize(node.options[genotype[node.decision]], genotype)
    if isinstance(node, Mapping):
        return {k: _materialize(v, genotype) for k, v in node.items}
    return [_materialize(v, genotype) for v in node.items]


def _count(node: Any, fixed: dict[int, int]) -> dict[frozenset, int]:
    """Trees `node` can produce with the named decisions `fixed`, by the set of named decisions
    they use."""
    if isinstance(node, Fixed):
        return {frozenset(): 1}
    if isinstance(node, Choice):
        if node.decision in fixed:
            inner = _count(node.options[fixed[node.decision]], fixed)
            return {used | {node.decision}: n for used, n in inner.items()}
        merged: dict[frozenset, int] = {}
        for option in node.options:
            for used, n in _count(option, fixed).items():
                merged[used] = merged.get(used, 0) + n
        return merged
    result: dict[frozenset, int] = {frozenset(): 1}
    for item in node.items:
        part = _count(item[1] if isinstance(node, Mapping) else item, fixed)
        combined: dict[frozenset, int] = {}
        for used_a, a in result.items():
            for used_b, b in part.items():
                combined[used_a | used_b] = combined.get(used_a | used_b, 0) + a * b
        result = combined
    return result


def _match(node: Any, data: Any, assignment: dict[int, int]) -> Iterator[dict[int, int]]:
    """Every assignment of decisions under which `node` could produce `data` (template keys
    must match; fields the template leaves out are checked by the caller's fingerprint)."""
    if isinstance(node, Fixed):
        if _covers(node.value, data):
            yield assignment
    elif isinstance(node, Choice):
        options = [assignment[node.decision]] if node.decision in assignment else range(len(node.options))
        for option in options:
            yield from _match(node.options[option], data, {**assignment, node.decision: option})
    elif isinstance(node, Mapping):
        keyed = {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}
        if isinstance(data, dict) and all(str(k) in keyed for k, _ in node.items):
            yield from _match_all([v for _, v in node.items], [keyed[str(k)] for k, _ in node.items], assignment)
    elif isinstance(data, list) and len(data) == len(node.items):
        yield from _match_all(list(node.items), data, assignment)


def _match_all(nodes: list, values: list, assignment: dict[int, int]) -> Iterator[dict[int, int]]:
    if not nodes:
        yield assignment
        return
    for found in _match(nodes[0], values[0], assignment):
        yield from _match_all(nodes[1:], values[1:], found)


def _covers(written: Any, data: Any) -> bool:
    """Whether a value as written in the template agrees with the full (defaults filled) data."""
    if isinstance(written, dict):
        if not isinstance(data, dict):
            return False
        keyed = {str(k): v for k, v in data.items()}  # JSON data has string keys (level_filters: {1: 32})
        return all(str(k) in keyed and _covers(v, keyed[str(k)]) for k, v in written.items())
    if isinstance(written, list):
        return isinstance(data, list) and len(data) == len(written) and all(map(_covers, written, data))
    return _same(written, data)


def _unparse(node: Any, decisions: list[Decision], written: set[int]) -> Any:
    if isinstance(node, Fixed):
        return _copy(node.value)
    if isinstance(node, Mapping):
        return {k: _unparse(v, decisions, written) for k, v in node.items}
    if isinstance(node, Sequence):
        return [_unparse(v, decisions, written) for v in node.items]
    decision = decisions[node.decision]
    if decision.kind == "int":
        values = decision.values
        out: dict[str, Any] = {"int": [values[0], values[-1]]}
        if len(values) > 1 and values[1] - values[0] != 1:
            out["step"] = values[1] - values[0]
    else:
        out = {"choice": [_unparse(option, decisions, written) for option in node.options]}
    if decision.name is not None:
        out["name"] = decision.name
    if decision.default:
        out["default"] = _copy(decision.values[decision.default])
    return out


def _pattern_parts(pattern: str) -> list | None:
    """``stages[*].depth`` -> ['stages', '*', 'depth']; None when it is not a field path."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\[(\d+|\*)\]|\.[A-Za-z_]\w*)*", pattern):
        return None
    return [int(p) if p.isdigit() else p for p in re.findall(r"[A-Za-z_]\w*|\d+|\*", pattern)]


def _resolve(data: Any, parts: list) -> Iterator[Any]:
    if not parts:
        yield data
        return
    head, rest = parts[0], parts[1:]
    if head == "*" and isinstance(data, list):
        for item in data:
            yield from _resolve(item, rest)
    elif isinstance(head, int) and isinstance(data, list) and head < len(data):
        yield from _resolve(data[head], rest)
    elif isinstance(head, str) and isinstance(data, dict) and head in data:
        yield from _resolve(data[head], rest)


def _same(a: Any, b: Any) -> bool:
    """Equal as data (True is not 1 here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, separators=(", ", ": ")) if isinstance(value, (dict, list)) else str(value)
    text = re.sub(r'"(\w+)"', r"\1", text)
    return text if len(text) <= 60 else text[:57] + "..."


# -- JSON Schema ---------------------------------------------------------------------------------
_META = ("title", "description", "default", "examples")

CHOICE_SCHEMA = {
    "type": "object",
    "title": "Choice",
    "description": "A template decision: one of the listed options (values or sub-documents).",
    "properties": {
        "choice": {"type": "array", "minItems": 1, "description": "The options."},
        "name": {"type": "string", "description": "Annotations with the same name are one decision."},
        "default": {"description": "The option the template's starting point takes (default: the first)."},
    },
    "required": ["choice"],
    "additionalProperties": False,
}
INT_RANGE_SCHEMA = {
    "type": "object",
    "title": "IntRange",
    "description": "A template decision: an integer of the inclusive range [lowest, highest], by step.",
    "properties": {
        "int": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                "description": "[lowest, highest], both included."},
        "step": {"type": "integer", "minimum": 1, "description": "Distance between options (default 1)."},
        "name": {"type": "string", "description": "Annotations with the same name are one decision."},
        "default": {"type": "integer", "description": "The starting option (default: the lowest)."},
    },
    "required": ["int"],
    "additionalProperties": False,
}
CONSTRAINTS_SCHEMA = {
    "type": "array",
    "description": "Template rules over the whole decoded document, e.g. {sum: ['stages[*].depth'], equals: 16}.",
    "items": {
        "type": "object",
        "properties": {"sum": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                       "equals": {"type": "number"}, "min": {"type": "number"}, "max": {"type": "number"}},
        "required": ["sum"],
        "minProperties": 2,
        "maxProperties": 2,
        "additionalProperties": False,
    },
}


def with_template_annotations(schema: dict, documents: tuple[str, ...]) -> dict:
    """The document schema extended to templates: every field (and list item) of every model may
    also be a `Choice` or an `IntRange`, and the top-level `documents` may hold `constraints`."""
    defs = schema.setdefault("$defs", {})
    for model in defs.values():
        for name, prop in list(model.get("properties", {}).items()):
            if name != "type":  # the kind tags stay plain: they pick the model
                model["properties"][name] = _annotatable(prop)
    for name in documents:
        if name in defs:
            defs[name].setdefault("properties", {})["constraints"] = CONSTRAINTS_SCHEMA
    defs["Choice"] = CHOICE_SCHEMA
    defs["IntRange"] = INT_RANGE_SCHEMA
    return schema


def _annotatable(prop: dict) -> dict:
    meta = {k: v for k, v in prop.items() if k in _META}
    rest = {k: v for k, v in prop.items() if k not in _META}
    if "items" in rest and isinstance(rest["items"], dict):
        rest["items"] = _annotatable(rest["items"])
    for key in ("anyOf", "oneOf"):
        if key in rest:
            rest[key] = [_annotatable(option) if "items" in option else option for option in rest[key]]
    return {**meta, "anyOf": [rest, {"$ref": "#/$defs/Choice"}, {"$ref": "#/$defs/IntRange"}]}
