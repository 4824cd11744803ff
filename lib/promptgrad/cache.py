"""A persistent response cache: rerunning a notebook with the same parameters makes no
model call.

Entries are keyed by engine, model, messages, generation parameters and sample index,
and live in one SQLite file. A corrupt or truncated file is never used silently: it is
moved aside (``*.corrupt``), a warning names it, and a fresh cache is started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def cache_key(**parts) -> str:
    """A stable hash of JSON-serialisable parts (dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Key -> JSON value store in SQLite. ``path=None`` keeps nothing (caching off)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._db = self._open() if self.path else None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
        except sqlite3.DatabaseError as err:
            corrupt = self.path.with_suffix(self.path.suffix + ".corrupt")
            self.path.replace(corrupt)
            log.warning("Response cache %s is corrupt (%s); moved it to %s and started a new one.",
                        self.path, err, corrupt)
            db = self._connect()
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            status = db.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise sqlite3.DatabaseError(status)
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get(self, key: str):
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_many(self, items: dict[str, object]) -> None:
        if self._db is None or not items:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()],
            )
            self._db.commit()

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
