"""Opening archspec's SQLite stores (the search's trial store, the latency table) safely.

A store path may name anything: a garbage file, a truncated database, another program's
database, a store written by a newer archspec, a file the process may not write. Each is
refused with a `StoreError` naming the file, before any query can fail deep inside a run:
the file is checked as a regular file (`archspec.files`), its header as SQLite's, its
``PRAGMA user_version`` as a schema this code reads, and its tables as having the named
columns this code queries.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(ValueError):
    """A store file that cannot be used: not SQLite, corrupt, foreign, from a newer version, or
    not writable. The message names the file."""


def open_sqlite(path: Path, *, kind: str, version: int, schema: str, tables: dict[str, tuple[str, ...]],
                read_only: bool = False, timeout: float = 30.0) -> tuple[sqlite3.Connection, bool]:
    """A connection to an archspec SQLite store at `path`, checked before use: a regular file
    (`archspec.files`), SQLite's header, the schema version (`PRAGMA user_version`) and the
    tables with their columns. A new (or empty) file gets the schema and the version. Returns
    the connection and whether it is read-only (a store the process may not write is opened
    read-only when `read_only` or when its file or folder is not writable)."""
    from archspec.files import check_readable

    exists = os.path.lexists(path)
    if exists:
        check_readable(path, kind=kind)
        with open(path, "rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise StoreError(f"{path}: not an SQLite database, so not a {kind}")
    writable = os.access(path if exists else path.parent, os.W_OK) and (
        not exists or os.access(path.parent, os.W_OK))
    read_only = read_only or not writable
    if read_only and not exists:
        raise StoreError(f"{path}: no such {kind}")
    try:
        if read_only:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        else:
            db = sqlite3.connect(path, timeout=timeout)
        _check_schema(db, path, kind, version, schema, tables, read_only)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a usable {kind} (corrupt or truncated?): {exc}") from None
    return db, read_only


def _check_schema(db: sqlite3.Connection, path: Path, kind: str, version: int, schema: str,
                  tables: dict[str, tuple[str, ...]], read_only: bool) -> None:
    found = db.execute("PRAGMA user_version").fetchone()[0]
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if found > version:
        raise StoreError(f"{path}: a {kind} of schema version {found}, written by a newer archspec (this one "
                         f"reads up to version {version}); upgrade archspec")
    if found == 0 and names:
        raise StoreError(f"{path}: an SQLite database that is not a {kind} (tables {', '.join(sorted(names))})")
    if found == 0:
        if read_only:
            raise StoreError(f"{path}: an empty database, not a {kind}")
        with db:
            db.executescript(schema)
            db.execute(f"PRAGMA user_version = {int(version)}")
        return
    for table, columns in tables.items():
        present = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
        if not set(columns) <= set(present):
            raise StoreError(f"{path}: the {table!r} table lacks columns {sorted(set(columns) - set(present))}; "
                             f"not a {kind} of schema version {found}")
