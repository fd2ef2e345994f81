"""The remediator's record and memory in SQLite, on a thread of its own with bounded waits.

Writes are batches applied in one transaction. A batch that cannot be written (the database is
locked, read-only, or the disk is full) is kept in memory and retried before the next one; the
engine goes on acting meanwhile (see README: "When the store fails").
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from glyph_guard.common.config import Retention
from glyph_guard.remediator.actions.base import Started
from glyph_guard.remediator.policy import ComponentState

log = logging.getLogger("glyph_remediator")
T = TypeVar("T")
Write = Callable[[sqlite3.Connection], None]
OUTBOX_BATCHES = 10_000

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
CREATE TABLE IF NOT EXISTS intents (
    component TEXT NOT NULL,
    action TEXT NOT NULL,
    trigger TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (component, action)
);
"""


class StoreError(Exception):
    """The state database cannot be opened (the message names the file)."""


class StoreFault(Exception):
    """One operation on the store failed or took too long; it has been logged and counted."""


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
    payload_sha256: str | None = None
    action_id: int | None = None


@dataclass
class Snapshot:
    """What an earlier run left, read once at start (persisted times are wall clock)."""

    states: dict[str, tuple[ComponentState, Started | None]] = field(default_factory=dict)
    intents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    interrupted: list[dict[str, Any]] = field(default_factory=list)  # unfinished actions
    last_actions: dict[str, float] = field(default_factory=dict)
    next_action_id: int = 1


_FIELDS = {f.name for f in dataclasses.fields(ComponentState)}


def _state_from_json(text: str) -> ComponentState:
    return ComponentState(**{k: v for k, v in json.loads(text).items() if k in _FIELDS})


def _connect(path: Path, read_only: bool, timeout: float) -> sqlite3.Connection:
    target = f"file:{path}?mode=ro" if read_only else str(path)
    db = sqlite3.connect(
        target, uri=read_only, isolation_level=None, check_same_thread=False, timeout=timeout
    )
    db.row_factory = sqlite3.Row
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
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


class Store:
    """One SQLite connection in WAL mode, used only from the store's own thread."""

    def __init__(self, db: sqlite3.Connection, path: Path, timeout: float, writable: bool):
        self._db = db
        self.path = path
        self.timeout = timeout
        self.writable = writable  # False: opened read-only; every write is kept and retried
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="glyph-store")
        self._outbox: collections.deque[list[Write]] = collections.deque()
        self.on_error: Callable[[str], None] = lambda operation: None

    @classmethod
    def open(cls, path: Path, timeout: float = 2.0) -> Store:
        """Open (or create) the database; a corrupt file is refused and left untouched."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = _connect(path, read_only=False, timeout=timeout)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"remediator.state_db: cannot open {path}: {exc}") from None
        _check(db, path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise StoreError(f"remediator.state_db: cannot use {path}: {exc}") from None
            db.close()
            log.error(
                "state store %s is read-only (%s): acting with an in-memory record;"
                " nothing will be remembered until it is writable",
                path,
                exc,
            )
            try:
                db = _connect(path, read_only=True, timeout=timeout)
                db.execute("SELECT 1 FROM component_state LIMIT 1").fetchall()
            except sqlite3.Error as again:
                raise StoreError(f"remediator.state_db: cannot read {path}: {again}") from None
            return cls(db, path, timeout, writable=False)
        return cls(db, path, timeout, writable=True)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._db.close()

    @property
    def pending_batches(self) -> int:
        return len(self._outbox)

    # -- running on the store's thread ---------------------------------------------------------

    async def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        future = self._thread.submit(fn, self._db)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), 2 * self.timeout + 1)
        except (sqlite3.Error, TimeoutError, asyncio.TimeoutError) as exc:
            self.on_error(operation)
            log.error("state store %s: %s failed: %s", self.path, operation, exc or "timed out")
            raise StoreFault(f"state store {operation} failed: {exc or 'timed out'}") from None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a query on the store's thread; StoreFault when it fails or takes too long."""
        return await self._run("read", fn)

    async def write(self, ops: Sequence[Write]) -> bool:
        """Apply one batch (after any kept earlier) in a transaction; False: kept for later."""
        if ops:
            if len(self._outbox) >= OUTBOX_BATCHES:
                self._outbox.popleft()
                log.error("state store %s: dropped the oldest unwritten batch", self.path)
            self._outbox.append(list(ops))
        if not self._outbox:
            return True
        try:
            return await self._run("write", self._drain)
        except StoreFault:
            return False

    def _drain(self, db: sqlite3.Connection) -> bool:
        """Write every kept batch in one transaction (group commit), or one by one on a bad one."""
        batches = list(self._outbox)
        if not batches:
            return True
        db.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                for op in batch:
                    op(db)
        except sqlite3.OperationalError:
            db.execute("ROLLBACK")
            raise  # locked, read-only, disk full: keep them for the next try
        except sqlite3.Error:
            db.execute("ROLLBACK")
            return self._drain_one_by_one(db, len(batches))
        db.execute("COMMIT")
        for _ in batches:
            self._outbox.popleft()
        return True

    def _drain_one_by_one(self, db: sqlite3.Connection, count: int) -> bool:
        for _ in range(count):
            batch = self._outbox[0]
            db.execute("BEGIN IMMEDIATE")
            try:
                for op in batch:
                    op(db)
            except sqlite3.OperationalError:
                db.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                log.error("state store %s: dropped a batch it cannot take: %s", self.path, exc)
            else:
                db.execute("COMMIT")
            self._outbox.popleft()
        return True

    # -- at start, before serving ---------------------------------------------------------------

    def load(self, now: float) -> Snapshot:
        """Read what earlier runs left; mark their unfinished actions interrupted."""
        db, snap = self._db, Snapshot()
        for row in db.execute("SELECT name, state, started FROM component_state"):
            started = Started(**json.loads(row["started"])) if row["started"] else None
            snap.states[row["name"]] = (_state_from_json(row["state"]), started)
        for row in db.execute("SELECT component, action, trigger FROM intents"):
            snap.intents.setdefault(row["component"], {})[row["action"]] = json.loads(
                row["trigger"]
            )
        snap.interrupted = [
            dict(row)
            for row in db.execute(
                "SELECT id, component, action, origin, started_at FROM actions"
                " WHERE outcome IS NULL ORDER BY id"
            )
        ]
        snap.last_actions = {
            row[0]: float(row[1])
            for row in db.execute(
                "SELECT component, MAX(finished_at) FROM actions"
                " WHERE finished_at IS NOT NULL GROUP BY component"
            )
        }
        snap.next_action_id = (
            int(db.execute("SELECT COALESCE(MAX(id), 0) FROM actions").fetchone()[0]) + 1
        )
        for action in snap.interrupted:
            self._outbox.append(
                [
                    finish_action(
                        action["id"],
                        now,
                        now - action["started_at"],
                        "interrupted",
                        "the remediator stopped while acting",
                        {},
                    )
                ]
            )
        return snap

    # -- queries ----------------------------------------------------------------------------------

    async def seen_among(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = list(keys)
        if not wanted:
            return set()

        def query(db: sqlite3.Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for fingerprint, starts_at in wanted:
                row = db.execute(
                    "SELECT 1 FROM seen_alerts WHERE fingerprint = ? AND starts_at = ?",
                    (fingerprint, starts_at),
                ).fetchone()
                if row is not None:
                    found.add((fingerprint, starts_at))
            return found

        return await self.read(query)

    async def actions(self, component: str | None, limit: int) -> list[dict[str, Any]]:
        def query(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT * FROM actions WHERE ?1 IS NULL OR component = ?1"
                " ORDER BY id DESC LIMIT ?2",
                (component, limit),
            ).fetchall()
            return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

        return await self.read(query)

    async def decisions(self, component: str | None, limit: int) -> list[dict[str, Any]]:
        def query(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT id, at, origin, fingerprint, starts_at, alert_status, alertname,"
                " component, action, verdict, reason, detail, action_id FROM decisions"
                " WHERE ?1 IS NULL OR component = ?1 ORDER BY id DESC LIMIT ?2",
                (component, limit),
            ).fetchall()
            return [dict(row) for row in rows]

        return await self.read(query)


# -- writes, as operations for a batch --------------------------------------------------------


def payload_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def record_payload(body: bytes, digest: str, now: float) -> Write:
    """Keep a delivery's body once; repeats only count."""

    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO payloads (sha256, body, first_seen, last_seen, deliveries)"
            " VALUES (?, ?, ?, ?, 1) ON CONFLICT (sha256) DO UPDATE"
            " SET last_seen = excluded.last_seen, deliveries = deliveries + 1",
            (digest, body.decode("utf-8", "replace"), now, now),
        )

    return op


def mark_seen(key: tuple[str, str], now: float) -> Write:
    return lambda db: db.execute(
        "INSERT OR IGNORE INTO seen_alerts VALUES (?, ?, ?)", (*key, now)
    ).close()


def record_decision(row: DecisionRow, now: float) -> Write:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO decisions (at, payload_id, origin, fingerprint, starts_at, alert_status,"
            " alertname, component, action, verdict, reason, detail, action_id)"
            " VALUES (?, (SELECT id FROM payloads WHERE sha256 = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?)",
            (
                now,
                row.payload_sha256,
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

    return op


def begin_action(action_id: int, component: str, action: str, origin: str, now: float) -> Write:
    return lambda db: db.execute(
        "INSERT OR IGNORE INTO actions (id, component, action, origin, started_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (action_id, component, action, origin, now),
    ).close()


def finish_action(  # noqa: PLR0917 (one column each)
    action_id: int,
    finished_at: float,
    duration: float,
    outcome: str,
    reason: str,
    details: Mapping[str, Any],
) -> Write:
    return lambda db: db.execute(
        "UPDATE actions SET finished_at = ?, duration_seconds = ?, outcome = ?, reason = ?,"
        " details = ? WHERE id = ?",
        (finished_at, round(duration, 3), outcome, reason, json.dumps(details), action_id),
    ).close()


def save_state(name: str, state: ComponentState, started: Started | None, now: float) -> Write:
    values = (
        name,
        json.dumps(dataclasses.asdict(state)),
        json.dumps(dataclasses.asdict(started)) if started else None,
        now,
    )
    return lambda db: db.execute(
        "INSERT INTO component_state (name, state, started, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET state = excluded.state,"
        " started = excluded.started, updated_at = excluded.updated_at",
        values,
    ).close()


def put_intent(component: str, action: str, trigger: Mapping[str, Any], now: float) -> Write:
    values = (component, action, json.dumps(trigger), now)
    return lambda db: db.execute(
        "INSERT INTO intents VALUES (?, ?, ?, ?) ON CONFLICT (component, action)"
        " DO UPDATE SET trigger = excluded.trigger, updated_at = excluded.updated_at",
        values,
    ).close()


def drop_intent(component: str, action: str) -> Write:
    return lambda db: db.execute(
        "DELETE FROM intents WHERE component = ? AND action = ?", (component, action)
    ).close()


def prune(retention: Retention, now: float) -> Write:
    """Forget payloads, decisions and seen alerts older than the age, or beyond the count."""
    cutoff, keep = now - retention.max_age_seconds, retention.max_rows

    def op(db: sqlite3.Connection) -> None:
        for table, stamp in (("decisions", "at"), ("payloads", "last_seen")):
            db.execute(f"DELETE FROM {table} WHERE {stamp} < ?", (cutoff,))  # noqa: S608
            db.execute(
                f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table}"  # noqa: S608
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (keep,),
            )
        db.execute("DELETE FROM seen_alerts WHERE first_seen < ?", (cutoff,))
        db.execute(
            "DELETE FROM seen_alerts WHERE rowid IN (SELECT rowid FROM seen_alerts"
            " ORDER BY first_seen DESC LIMIT -1 OFFSET ?)",
            (keep,),
        )

    return op


def read_started(path: Path) -> list[Started]:
    """The processes the remediator recorded starting (read-only; for glyph-stack's stop)."""
    if not path.exists():
        return []
    db = _connect(path, read_only=True, timeout=5.0)
    try:
        rows = db.execute("SELECT started FROM component_state WHERE started IS NOT NULL")
        return [Started(**json.loads(row[0])) for row in rows]
    except sqlite3.Error:
        return []
    finally:
        db.close()
