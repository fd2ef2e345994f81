"""Reads of the state database, as queries to run on the store's thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from glyph_guard.remediator.actions.base import Started
from glyph_guard.remediator.policy import ComponentState, Origin

_STATE_FIELDS = {f.name for f in fields(ComponentState)}


@dataclass(frozen=True)
class Unfinished:
    """An action an earlier run began and never recorded the end of."""

    id: int
    component: str
    action: str
    origin: Origin
    started_at: float  # wall clock


@dataclass(frozen=True)
class Snapshot:
    """What earlier runs left, read once at start (persisted times are wall clock)."""

    states: dict[str, tuple[ComponentState, Started | None]] = field(default_factory=dict)
    intents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    unfinished: list[Unfinished] = field(default_factory=list)
    last_actions: dict[str, float] = field(default_factory=dict)
    next_action_id: int = 1


def _state_from_json(text: str) -> ComponentState:
    return ComponentState(**{k: v for k, v in json.loads(text).items() if k in _STATE_FIELDS})


def snapshot(db: sqlite3.Connection) -> Snapshot:
    """Everything earlier runs left that this one takes up."""
    states: dict[str, tuple[ComponentState, Started | None]] = {}
    for row in db.execute("SELECT name, state, started FROM component_state"):
        started = Started(**json.loads(row["started"])) if row["started"] else None
        states[row["name"]] = (_state_from_json(row["state"]), started)
    intents: dict[str, dict[str, dict[str, Any]]] = {}
    for row in db.execute("SELECT component, action, trigger FROM intents"):
        intents.setdefault(row["component"], {})[row["action"]] = json.loads(row["trigger"])
    unfinished = [
        Unfinished(**dict(row))
        for row in db.execute(
            "SELECT id, component, action, origin, started_at FROM actions"
            " WHERE outcome IS NULL ORDER BY id"
        )
    ]
    last_actions = {
        row[0]: float(row[1])
        for row in db.execute(
            "SELECT component, MAX(finished_at) FROM actions"
            " WHERE finished_at IS NOT NULL GROUP BY component"
        )
    }
    last_id = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM actions").fetchone()[0])
    return Snapshot(states, intents, unfinished, last_actions, last_id + 1)


def seen_among(
    keys: Iterable[tuple[str, str]],
) -> Callable[[sqlite3.Connection], set[tuple[str, str]]]:
    """Which of these alerts (fingerprint, startsAt) were judged before."""
    wanted = list(keys)

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

    return query


def actions(
    component: str | None, limit: int
) -> Callable[[sqlite3.Connection], list[dict[str, Any]]]:
    """The newest actions, of one component or all."""

    def query(db: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT * FROM actions WHERE ?1 IS NULL OR component = ?1 ORDER BY id DESC LIMIT ?2",
            (component, limit),
        ).fetchall()
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

    return query


def decisions(
    component: str | None, limit: int
) -> Callable[[sqlite3.Connection], list[dict[str, Any]]]:
    """The newest decisions, of one component or all."""

    def query(db: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT id, at, origin, fingerprint, starts_at, alert_status, alertname,"
            " component, action, verdict, reason, detail, action_id FROM decisions"
            " WHERE ?1 IS NULL OR component = ?1 ORDER BY id DESC LIMIT ?2",
            (component, limit),
        ).fetchall()
        return [dict(row) for row in rows]

    return query
