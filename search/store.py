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
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.flush()
        self.db.close()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

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
            self.db.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._pending = []

    def trials(self) -> list[Trial]:
        self.flush()
        rows = self.db.execute("SELECT * FROM trials ORDER BY id").fetchall()
        return [Trial(r[0], tuple(json.loads(r[1])) if r[1] else None, r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
                for r in rows]
