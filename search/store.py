"""The trial store: every trial of a run in one SQLite file, committed as it finishes, so a
killed run loses nothing it finished."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Trial:
    id: int
    genotype: tuple[int, ...] | None
    fingerprint: str | None
    status: str
    reason: str | None
    metrics: dict
    score: float | None
    seconds: float


class TrialStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add(self, trial: Trial) -> None:
        with self.db:
            self.db.execute("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (trial.id, json.dumps(trial.genotype) if trial.genotype else None, trial.fingerprint,
                             trial.status, trial.reason, json.dumps(trial.metrics), trial.score, trial.seconds))

    def trials(self) -> list[Trial]:
        rows = self.db.execute("SELECT * FROM trials ORDER BY id").fetchall()
        return [Trial(r[0], tuple(json.loads(r[1])) if r[1] else None, r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
                for r in rows]
