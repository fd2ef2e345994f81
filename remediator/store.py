"""The remediator's record and memory in SQLite: payloads, decisions, actions, component state."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remediator.policy import ComponentState

_SCHEMA = """
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
"""


class StoreError(Exception):
    """The state database cannot be opened or used."""


@dataclass(frozen=True)
class Started:
    """A process the remediator started; its session is the component's to sweep next time."""

    pid: int
    token: str  # put in the started process's environment; its descendants inherit it


@dataclass(frozen=True)
class DecisionRow:
    """The fields of one decision to record."""

    verdict: str
    reason: str
    origin: str = "alert"
    component: str | None = None
    action: str | None = None
    fingerprint: str | None = None
    starts_at: str | None = None
    alert_status: str | None = None
    alertname: str | None = None
    detail: str | None = None
    payload_id: int | None = None
    action_id: int | None = None


_FIELDS = {f.name for f in dataclasses.fields(ComponentState)}


def _state_from_json(text: str) -> ComponentState:
    data = {k: v for k, v in json.loads(text).items() if k in _FIELDS}
    if "restarts" in data:
        data["restarts"] = tuple(data["restarts"])
    return ComponentState(**data)


class Store:
    """One SQLite connection in WAL mode, used from the event loop's thread only."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> Store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # the app builds the store in one thread and serves from the loop's; never both at once
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"remediator.state_db: cannot open {path}: {exc}") from None
        db.row_factory = sqlite3.Row
        return cls(db)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit (a delivery's records land together, or not at all)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record_payload(self, body: bytes, now: float) -> int:
        """Keep a delivery's body once; repeats only count."""
        digest = hashlib.sha256(body).hexdigest()
        row = self._db.execute(
            "INSERT INTO payloads (sha256, body, first_seen, last_seen, deliveries)"
            " VALUES (?, ?, ?, ?, 1) ON CONFLICT (sha256) DO UPDATE"
            " SET last_seen = excluded.last_seen, deliveries = deliveries + 1 RETURNING id",
            (digest, body.decode("utf-8", "replace"), now, now),
        ).fetchone()
        return int(row[0])

    def seen(self, fingerprint: str, starts_at: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM seen_alerts WHERE fingerprint = ? AND starts_at = ?",
            (fingerprint, starts_at),
        ).fetchone()
        return row is not None

    def mark_seen(self, fingerprint: str, starts_at: str, now: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO seen_alerts VALUES (?, ?, ?)", (fingerprint, starts_at, now)
        )

    def record_decision(self, row: DecisionRow, now: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO decisions (at, payload_id, origin, fingerprint, starts_at, alert_status,"
            " alertname, component, action, verdict, reason, detail, action_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now,
                row.payload_id,
                row.origin,
                row.fingerprint,
                row.starts_at,
                row.alert_status,
                row.alertname,
                row.component,
                row.action,
                row.verdict,
                row.reason,
                row.detail,
                row.action_id,
            ),
        )
        return int(cursor.lastrowid or 0)

    def begin_action(self, component: str, action: str, origin: str, now: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO actions (component, action, origin, started_at) VALUES (?, ?, ?, ?)",
            (component, action, origin, now),
        )
        return int(cursor.lastrowid or 0)

    def finish_action(
        self,
        action_id: int,
        finished_at: float,
        outcome: str,
        reason: str,
        details: Mapping[str, Any],
    ) -> None:
        self._db.execute(
            "UPDATE actions SET finished_at = ?, duration_seconds = ? - started_at,"
            " outcome = ?, reason = ?, details = ? WHERE id = ?",
            (finished_at, finished_at, outcome, reason, json.dumps(details), action_id),
        )

    def interrupt_unfinished(self, now: float) -> int:
        """Mark actions a previous run left unfinished (it stopped while acting)."""
        cursor = self._db.execute(
            "UPDATE actions SET finished_at = ?, duration_seconds = ? - started_at,"
            " outcome = 'interrupted', reason = 'the remediator stopped while acting'"
            " WHERE outcome IS NULL",
            (now, now),
        )
        return cursor.rowcount

    def last_actions(self) -> dict[str, float]:
        """When each component's last finished action finished."""
        rows = self._db.execute(
            "SELECT component, MAX(finished_at) FROM actions"
            " WHERE finished_at IS NOT NULL GROUP BY component"
        )
        return {row[0]: float(row[1]) for row in rows}

    def load_states(self) -> dict[str, tuple[ComponentState, Started | None]]:
        result: dict[str, tuple[ComponentState, Started | None]] = {}
        for row in self._db.execute("SELECT name, state, started FROM component_state"):
            started = Started(**json.loads(row["started"])) if row["started"] else None
            result[row["name"]] = (_state_from_json(row["state"]), started)
        return result

    def save_state(
        self, name: str, state: ComponentState, started: Started | None, now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO component_state (name, state, started, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET state = excluded.state,"
            " started = excluded.started, updated_at = excluded.updated_at",
            (
                name,
                json.dumps(dataclasses.asdict(state)),
                json.dumps(dataclasses.asdict(started)) if started else None,
                now,
            ),
        )

    def actions(self, component: str | None, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM actions WHERE ?1 IS NULL OR component = ?1 ORDER BY id DESC LIMIT ?2",
            (component, limit),
        ).fetchall()
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

    def decisions(self, component: str | None, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, at, origin, fingerprint, starts_at, alert_status, alertname, component,"
            " action, verdict, reason, detail, action_id FROM decisions"
            " WHERE ?1 IS NULL OR component = ?1 ORDER BY id DESC LIMIT ?2",
            (component, limit),
        ).fetchall()
        return [dict(row) for row in rows]
