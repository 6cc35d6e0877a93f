"""The latency table: measured kernel latencies and end-to-end calibration runs, in SQLite.

Rows are keyed by the context they were measured in: machine fingerprint hash, runtime
(``ort``/``torch``), provider and thread count; numbers from another machine or setting are
never used. Every insert is committed at once, so a killed `build-table` loses at most the
kernel in flight and a rerun resumes where it stopped.

Default location: ``~/.cache/archspec/latency.sqlite``; the environment variable
``ARCHSPEC_LATENCY_TABLE`` or an explicit path overrides it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (hash TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kernels (
    machine TEXT NOT NULL, runtime TEXT NOT NULL, provider TEXT NOT NULL, threads INTEGER NOT NULL,
    key TEXT NOT NULL, median_ms REAL NOT NULL, p10_ms REAL, p90_ms REAL, min_ms REAL, std_ms REAL,
    repeats INTEGER, measured_at REAL, features TEXT, conditions TEXT,
    PRIMARY KEY (machine, runtime, provider, threads, key));
CREATE TABLE IF NOT EXISTS calibration (
    machine TEXT NOT NULL, runtime TEXT NOT NULL, provider TEXT NOT NULL, threads INTEGER NOT NULL,
    fingerprint TEXT NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL, name TEXT,
    measured_ms REAL NOT NULL, features TEXT NOT NULL, measured_at REAL,
    PRIMARY KEY (machine, runtime, provider, threads, fingerprint, height, width));
"""


def default_table_path() -> Path:
    """``$ARCHSPEC_LATENCY_TABLE`` or ``~/.cache/archspec/latency.sqlite``."""
    env = os.environ.get("ARCHSPEC_LATENCY_TABLE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "archspec" / "latency.sqlite"


@dataclass(frozen=True)
class Context:
    """Where numbers were measured: they are only comparable within one context."""

    machine: str
    runtime: str
    provider: str
    threads: int
    clock: str = "wall"
    """``wall`` or ``cpu`` (thread CPU time, single-threaded; see `compiler.runtime`)."""

    def as_tuple(self) -> tuple[str, str, str, int]:
        """The row key; CPU-time rows are kept apart under runtime ``<runtime>:cpu``."""
        runtime = self.runtime if self.clock == "wall" else f"{self.runtime}:{self.clock}"
        return (self.machine, runtime, self.provider, self.threads)


@dataclass(frozen=True)
class CalibrationRun:
    """One model measured end to end, with the features the predictor uses for it."""

    fingerprint: str
    height: int
    width: int
    name: str
    measured_ms: float
    features: dict


SCHEMA_VERSION = 2
"""`PRAGMA user_version` of the tables this code writes. Version 2 added the kernels' measuring
`conditions`; a version-1 table is migrated in place when opened writable (its rows keep
``conditions`` NULL: measured before conditions were recorded) and refused when read-only."""
TABLES = {"machines": ("hash", "info"),
          "kernels": ("machine", "runtime", "provider", "threads", "key", "median_ms", "p10_ms", "p90_ms", "min_ms",
                      "std_ms", "repeats", "measured_at", "features", "conditions"),
          "calibration": ("machine", "runtime", "provider", "threads", "fingerprint", "height", "width", "name",
                          "measured_ms", "features", "measured_at")}
"""Tables and the columns this code names in its queries."""


def _insert(table: str) -> str:
    return f"INSERT OR REPLACE INTO {table} ({', '.join(TABLES[table])}) VALUES ({', '.join('?' * len(TABLES[table]))})"


class LatencyTable:
    """Persistent store of kernel latencies and calibration runs (one SQLite file).

    A table the process may not write (a shared, read-only file) is opened read-only and serves
    predictions; measuring into it is an error. Several processes may measure into one table:
    measuring a kernel holds an OS lock on ``<table>.lock`` and first re-reads the table, so a
    kernel another process has just measured is taken, not measured again (and two measurements
    never disturb each other's timings)."""

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False):
        from archspec.sqlite_store import open_sqlite

        self.path = Path(path).expanduser() if path is not None else default_table_path()
        if str(self.path) == ":memory:":
            self._db = sqlite3.connect(":memory:")
            self._db.executescript(SCHEMA)
            self.read_only = False
            return
        if read_only and not os.path.lexists(self.path):  # nothing measured yet: empty, and nothing created
            self._db = sqlite3.connect(":memory:")
            self._db.executescript(SCHEMA)
            self.read_only = True
            return
        if not read_only and not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        _migrate(self.path, read_only)
        self._db, self.read_only = open_sqlite(self.path, kind="latency table", version=SCHEMA_VERSION,
                                               schema=SCHEMA, tables=TABLES, read_only=read_only)
        if not self.read_only:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.commit()

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """Exclusive across processes while one kernel is measured and stored."""
        from archspec.sqlite_store import StoreError

        if self.read_only:
            raise StoreError(f"{self.path}: the latency table is read-only; it serves predictions but cannot "
                             "take new measurements (give a writable --table)")
        if str(self.path) == ":memory:":
            yield
            return
        from archspec.files import file_lock

        with file_lock(self.path.with_name(self.path.name + ".lock")):
            yield

    def kernel(self, context: Context, key: str) -> tuple[float, dict] | None:
        """(median ms, features) of one kernel as stored now (another process may have added it)."""
        row = self._db.execute("SELECT median_ms, features FROM kernels WHERE machine=? AND runtime=? AND "
                               "provider=? AND threads=? AND key=?", (*context.as_tuple(), key)).fetchone()
        return (row[0], json.loads(row[1] or "{}")) if row else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LatencyTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- machines --------------------------------------------------------------------------------
    def add_machine(self, info: dict) -> None:
        """Record this machine's description (skipped for a read-only table: it is only shown)."""
        if self.read_only:
            return
        self._db.execute(_insert("machines"), (info["hash"], json.dumps(info)))
        self._db.commit()

    def machine(self, digest: str) -> dict | None:
        row = self._db.execute("SELECT info FROM machines WHERE hash = ?", (digest,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- kernels ---------------------------------------------------------------------------------
    def kernels(self, context: Context) -> dict[str, float]:
        """Every kernel key -> median ms measured in `context`."""
        rows = self._db.execute(
            "SELECT key, median_ms FROM kernels WHERE machine=? AND runtime=? AND provider=? AND threads=?",
            context.as_tuple())
        return dict(rows.fetchall())

    def kernel_features(self, context: Context) -> dict[str, dict]:
        """Every kernel key -> its static features (params, MACs, activation sizes)."""
        rows = self._db.execute(
            "SELECT key, features FROM kernels WHERE machine=? AND runtime=? AND provider=? AND threads=?",
            context.as_tuple())
        return {key: json.loads(features or "{}") for key, features in rows.fetchall()}

    def put_kernel(self, context: Context, key: str, stats, features: dict | None = None,
                   conditions: dict | None = None) -> None:
        """Store one kernel's statistics (a `LatencyStats`), static features and the conditions it
        was measured in (clock, repeats, attempts, spread, CPU/wall ratio, load average), and commit."""
        self._db.execute(_insert("kernels"),
                         (*context.as_tuple(), key, stats.median_ms, stats.p10_ms, stats.p90_ms, stats.min_ms,
                          stats.std_ms, stats.repeats, time.time(), json.dumps(features or {}, sort_keys=True),
                          json.dumps(conditions, sort_keys=True) if conditions is not None else None))
        self._db.commit()

    def conditions(self, context: Context, key: str) -> dict | None:
        """The conditions one kernel was measured in (None: not stored, or measured before version 2)."""
        row = self._db.execute("SELECT conditions FROM kernels WHERE machine=? AND runtime=? AND provider=? AND "
                               "threads=? AND key=?", (*context.as_tuple(), key)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def count(self, context: Context | None = None) -> int:
        if context is None:
            return self._db.execute("SELECT COUNT(*) FROM kernels").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM kernels WHERE machine=? AND runtime=? AND provider=? AND "
                                "threads=?", context.as_tuple()).fetchone()[0]

    # -- calibration -----------------------------------------------------------------------------
    def put_calibration(self, context: Context, run: CalibrationRun) -> None:
        self._db.execute(_insert("calibration"),
                         (*context.as_tuple(), run.fingerprint, run.height, run.width, run.name, run.measured_ms,
                          json.dumps(run.features, sort_keys=True), time.time()))
        self._db.commit()

    def calibration(self, context: Context) -> list[CalibrationRun]:
        rows = self._db.execute(
            "SELECT fingerprint, height, width, name, measured_ms, features FROM calibration "
            "WHERE machine=? AND runtime=? AND provider=? AND threads=? ORDER BY measured_at", context.as_tuple())
        return [CalibrationRun(f, h, w, n, ms, json.loads(feat)) for f, h, w, n, ms, feat in rows.fetchall()]

    def calibration_ms(self, context: Context, fingerprint: str, size: tuple[int, int]) -> float | None:
        """The stored end-to-end latency of one calibration model, if any."""
        row = self._db.execute("SELECT measured_ms FROM calibration WHERE machine=? AND runtime=? AND provider=? "
                               "AND threads=? AND fingerprint=? AND height=? AND width=?",
                               (*context.as_tuple(), fingerprint, *size)).fetchone()
        return row[0] if row else None


def _migrate(path: Path, read_only: bool) -> None:
    """Bring a version-1 table to version 2 (one added column), or refuse it read-only."""
    from archspec.files import check_readable
    from archspec.sqlite_store import SQLITE_HEADER, StoreError

    if not os.path.lexists(path):
        return
    check_readable(path, kind="latency table")  # a FIFO or device is refused before it is opened
    try:
        with open(path, "rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return  # not SQLite: open_sqlite refuses it by name
    except OSError:
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = {row[1] for row in db.execute("PRAGMA table_info(kernels)")}
    except sqlite3.DatabaseError:
        return
    finally:
        db.close()
    version_1_columns = set(TABLES["kernels"]) - {"conditions"}
    if version != 1 or "conditions" in columns or not version_1_columns <= columns:
        return  # not a complete version-1 table: open_sqlite judges (and refuses) it untouched
    if read_only or not os.access(path, os.W_OK):
        raise StoreError(f"{path}: a latency table of schema version 1 (before measuring conditions were recorded); "
                         f"open it writable once (e.g. `archspec latency build-table --table {path} ...`) to migrate "
                         "it to version 2")
    db = sqlite3.connect(path, timeout=30.0)
    try:
        with db:
            db.execute("ALTER TABLE kernels ADD COLUMN conditions TEXT")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        db.close()
