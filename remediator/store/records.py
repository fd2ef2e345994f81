"""Writes to the state database, as operations for a batch (applied on the store's thread)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from glyph_guard.remediator.actions.base import ActionResult, Started
from glyph_guard.remediator.intake import Judgement, key_of
from glyph_guard.remediator.models import Alert
from glyph_guard.remediator.policy import ComponentState, Origin

Write = Callable[[sqlite3.Connection], None]


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


def decision_row(
    got: Judgement, origin: Origin, alert: Alert | None = None, digest: str | None = None
) -> DecisionRow:
    """What is recorded of a judgement (of an alert in a delivery, or an operator's request)."""
    return DecisionRow(
        got.verdict,
        got.reason,
        origin,
        got.component,
        got.action,
        alert.fingerprint if alert else None,
        key_of(alert)[1] if alert else None,
        alert.status if alert else None,
        alert.labels.get("alertname") if alert else None,
        got.detail,
        digest,
        got.action_id,
    )


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


def finish_action(
    action_id: int, finished_at: float, duration: float, result: ActionResult
) -> Write:
    values = (
        finished_at,
        round(duration, 3),
        result.outcome,
        result.reason,
        json.dumps(result.details),
        action_id,
    )
    return lambda db: db.execute(
        "UPDATE actions SET finished_at = ?, duration_seconds = ?, outcome = ?, reason = ?,"
        " details = ? WHERE id = ?",
        values,
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
