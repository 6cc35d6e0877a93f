"""One registry type for every extension point (block lowerings, ops, spaces, strategies, evaluators,
executors, heads, exporters, scorers).

A registry maps a name (the spec's ``type`` tag, a CLI choice, a block class) to one object. It is a
plain mapping with three promises the ad-hoc dicts it replaces did not keep:

* registering a name twice is an error, so two plug-ins cannot silently shadow each other;
* looking up a missing name says which registry it was and which names exist;
* every registry is listed in `Registry.all()`, so a test can check that each member of each
  discriminated union has an entry in every registry it needs.

It is torch-free: the registries live where their members are defined (the compiler's in the
compiler, the search's in the search), and this module only supplies the type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, Hashable, TypeVar

T = TypeVar("T")
_MISSING: Any = object()


class RegistryError(KeyError):
    """A lookup of a name the registry does not hold, or a second registration of one it does."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plainly
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object, with checked registration and helpful misses.

    >>> HEADS = Registry("detection head")
    >>> @HEADS.register("fcos")
    ... class FcosHead: ...
    >>> HEADS.get("fcos").__name__
    'FcosHead'
    """

    _every: ClassVar[dict[str, "Registry[Any]"]] = {}

    def __init__(self, name: str) -> None:
        if name in Registry._every:
            raise RegistryError(f"a registry named {name!r} exists already")
        self.name = name
        self._members: dict[Hashable, T] = {}
        Registry._every[name] = self

    # -- registration -------------------------------------------------------------------------
    def register(self, key: Hashable, obj: T | None = None, *, replace: bool = False) -> Any:
        """Register ``obj`` under ``key``; without ``obj``, return a decorator that does.

        ``replace=True`` is for tests that swap a member and put it back; plug-ins never need it.
        """
        if obj is None:
            def decorator(member: T) -> T:
                self.register(key, member, replace=replace)
                return member
            return decorator
        if key in self._members and not replace:
            raise RegistryError(f"{self.name} {_show(key)} is registered already ({self._members[key]!r})")
        self._members[key] = obj
        return obj

    def unregister(self, key: Hashable) -> T:
        """Remove and return a member (tests that add a member from outside the package clean up)."""
        return self._members.pop(key)

    # -- lookup --------------------------------------------------------------------------------
    def get(self, key: Hashable, default: Any = _MISSING) -> T:
        """The member under `key`; a miss raises `RegistryError` unless a `default` is given (the
        mapping protocol's ``get(key, default)``, which ``monkeypatch.setitem`` uses)."""
        try:
            return self._members[key]
        except KeyError:
            if default is not _MISSING:
                return default
            known = ", ".join(sorted(_show(k) for k in self._members)) or "none"
            raise RegistryError(f"unknown {self.name} {_show(key)}; registered: {known}") from None

    def find(self, key: Hashable, default: T | None = None) -> T | None:
        return self._members.get(key, default)

    # mapping-style access, so tests can swap a member with ``monkeypatch.setitem``
    def __getitem__(self, key: Hashable) -> T:
        return self.get(key)

    def __setitem__(self, key: Hashable, obj: T) -> None:
        self.register(key, obj, replace=True)

    def __delitem__(self, key: Hashable) -> None:
        self.unregister(key)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def keys(self) -> list[Hashable]:
        return list(self._members)

    def items(self) -> list[tuple[Hashable, T]]:
        return list(self._members.items())

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} members)"

    @classmethod
    def all(cls) -> dict[str, "Registry[Any]"]:
        """Every registry created so far, by name."""
        return dict(cls._every)


def _show(key: Hashable) -> str:
    return key.__name__ if isinstance(key, type) else repr(key)

