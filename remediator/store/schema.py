"""The state database's tables, and opening a connection to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreError(Exception):
    """The state database cannot be opened (the message names the file)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    deliveries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_alerts (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    component TEXT NOT NULL,
    action TEXT NOT NULL,
    origin TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    duration_seconds REAL,
    outcome TEXT,
    reason TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS actions_by_component ON actions (component, id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    payload_id INTEGER REFERENCES payloads (id),
    origin TEXT NOT NULL,
    fingerprint TEXT,
    starts_at TEXT,
    alert_status TEXT,
    alertname TEXT,
    component TEXT,
    action TEXT,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT,
    action_id INTEGER REFERENCES actions (id)
);
CREATE INDEX IF NOT EXISTS decisions_by_component ON decisions (component, id);
CREATE TABLE IF NOT EXISTS component_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    started TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    component TEXT NOT NULL,
    action TEXT NOT NULL,
    trigger TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (component, action)
);
"""


def connect(path: Path, read_only: bool, timeout: float) -> sqlite3.Connection:
    target = f"file:{path}?mode=ro" if read_only else str(path)
    db = sqlite3.connect(
        target, uri=read_only, isolation_level=None, check_same_thread=False, timeout=timeout
    )
    db.row_factory = sqlite3.Row
    return db


def check(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not an intact SQLite database, before writing anything to it."""
    try:
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        db.close()
        raise StoreError(
            f"remediator.state_db: {path} is not a usable SQLite database ({verdict}); it was"
            " left as it is: move it aside (or restore a backup) and start again"
        )
