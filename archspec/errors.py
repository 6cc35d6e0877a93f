"""The one error type users see for bad specs.

Every problem with a document (syntax, unknown fields, cross-field rules) becomes a
`SpecError` whose `path` points at the offending field, e.g. ``stages[2].dilations[3]``.
It subclasses `ValueError` so that pydantic validators may raise it and so that callers
who only know about `ValueError` still catch it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_SHOWN_ISSUES = 20
"""Problems listed in a `SpecError`'s text; the rest are counted (all stay in `issues`). Twenty
is a screenful: enough to fix a file in one pass, few enough that a wrong `type` which
invalidates every field below it does not bury the first line."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a document."""

    path: str
    """Field path in the document, e.g. ``stages[1].blocks[3].groups``; empty for the root."""
    message: str
    """What is wrong, in one line."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """An invalid spec. `path` names the offending field; `issues` lists every problem found."""

    def __init__(self, path: str | Sequence[str | int] = "", message: str = "", *,
                 issues: Iterable[Issue] | None = None, source: str | None = None):
        if issues is None:
            issues = [Issue(format_path(path), message)]
        self.issues: tuple[Issue, ...] = tuple(issues)
        self.source = source
        super().__init__(self._render())

    @property
    def path(self) -> str:
        return self.issues[0].path if self.issues else ""

    @property
    def message(self) -> str:
        return self.issues[0].message if self.issues else ""

    def lines(self) -> list[str]:
        """One line per problem (up to `MAX_SHOWN_ISSUES`, then a count of the rest), each
        naming the file and the field path, so that every line stands alone in a log or grep."""
        shown = [str(issue) for issue in self.issues[:MAX_SHOWN_ISSUES]] or ["invalid spec"]
        if self.source:
            shown = [f"{self.source}: {line}" for line in shown]
        hidden = len(self.issues) - MAX_SHOWN_ISSUES
        if hidden > 0:
            shown.append(f"... and {hidden} more problem{'s' if hidden > 1 else ''}")
        return shown

    def _render(self) -> str:
        return "\n".join(self.lines())

    def with_prefix(self, prefix: str | Sequence[str | int]) -> "SpecError":
        """The same error, its paths rooted at `prefix` (for specs nested in other specs)."""
        prefix = format_path(prefix)
        if not prefix:
            return self
        moved = [Issue(join_path(prefix, issue.path), issue.message) for issue in self.issues]
        return SpecError(issues=moved, source=self.source)

    def with_source(self, source: str) -> "SpecError":
        """The same error, naming the file it came from."""
        return SpecError(issues=self.issues, source=source)


def format_path(parts: str | Sequence[str | int]) -> str:
    """``('stages', 2, 'dilations', 3)`` -> ``stages[2].dilations[3]``."""
    if isinstance(parts, str):
        return parts
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def join_path(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"
