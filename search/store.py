"""The trial store: every trial of a run in one SQLite file.

Trials are written in batches: a batch is committed when it is `flush_seconds` old or
`flush_size` long, when the run asks (after an expensive trial), and when the store closes, so
a trial costs microseconds of bookkeeping instead of a commit. A kill loses at most the last
`flush_seconds` of trials; `--resume` replays the committed ones and evaluates the lost ones
again, which gives the same results (evaluation is a deterministic function of the genotype).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from archspec.files import fault_point
from archspec.sqlite_store import StoreError, open_sqlite

SCHEMA_VERSION = 1
"""`PRAGMA user_version` of the stores this code writes; a store from a newer version is refused."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    genotype TEXT,
    fingerprint TEXT,
    status TEXT NOT NULL,        -- feasible | infeasible | rejected | duplicate
    reason TEXT,                 -- why not feasible (budget broken, rule of the space, error text)
    metrics TEXT NOT NULL,       -- JSON: params, macs, flops, latency_ms, score
    score REAL,
    seconds REAL NOT NULL
);
"""

COLUMNS = ("id", "genotype", "fingerprint", "status", "reason", "metrics", "score", "seconds")
"""The trial columns, always named in queries (never ``SELECT *`` or positional inserts)."""
TABLES = {"meta": ("key", "value"), "trials": COLUMNS}

class Trial(NamedTuple):
    """One trial as stored. A named tuple, not a dataclass: a paper-scale run makes 100,000 of
    them in its loop, and a tuple is built in a third of the time."""

    id: int
    genotype: tuple[int, ...] | None
    fingerprint: str | None
    status: str
    reason: str | None
    metrics: dict
    score: float | None
    seconds: float


class TrialStore:
    def __init__(self, path: str | Path, *, flush_seconds: float = 0.25, flush_size: int = 1024):
        self.path = Path(path)
        self.flush_seconds, self.flush_size = flush_seconds, flush_size
        self._pending: list[Trial] = []
        self._oldest = 0.0
        self.db, read_only = open_sqlite(self.path, kind="trial store", version=SCHEMA_VERSION, schema=SCHEMA,
                                         tables=TABLES)
        if read_only:
            self.db.close()
            raise StoreError(f"{self.path}: the trial store is not writable")
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path}: not a usable trial store: {exc}") from None

    def close(self) -> None:
        self.flush()
        self.db.close()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            fault_point("commit")

    def add(self, trial: Trial, *, flush: bool = False) -> None:
        """Queue a trial; commit the queue when it is old or long enough, or when `flush`.
        Trials are serialised at commit time, all in one loop: cheaper than one at a time
        between evaluations, whose work leaves the CPU caches cold for this code."""
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append(trial)
        if flush or len(self._pending) >= self.flush_size or time.monotonic() - self._oldest >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        dumps = json.dumps
        rows = [(t.id, str(list(t.genotype)) if t.genotype else None,  # str() of a list of ints is its JSON
                 t.fingerprint, t.status, t.reason, dumps(t.metrics), t.score, t.seconds) for t in self._pending]
        with self.db:
            self.db.executemany(_INSERT, rows)
            fault_point("commit")
        self._pending = []

    def trials(self) -> list[Trial]:
        """Every stored trial in id order; a row that does not decode is a `StoreError`."""
        self.flush()
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM trials ORDER BY id").fetchall()
        try:
            trials = [Trial(r[0], tuple(json.loads(r[1])) if r[1] else None, r[2], r[3], r[4], json.loads(r[5]), r[6],
                            r[7]) for r in rows]
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{self.path}: a trial row does not decode ({exc}); the store is damaged") from None
        for expected, trial in enumerate(trials):
            if trial.id != expected or not isinstance(trial.metrics, dict):
                raise StoreError(f"{self.path}: trial {trial.id} is out of sequence or malformed; the store is damaged")
        return trials


_INSERT = f"INSERT INTO trials ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
