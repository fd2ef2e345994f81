"""What an earlier run left, taken up purely: a snapshot and an injected clock in, a plan out."""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

from glyph_guard.common.config import Budget, parse_config
from glyph_guard.remediator.carryover import carry_over
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.store.queries import Snapshot, Unfinished
from glyph_guard.remediator.store.schema import SCHEMA

B = Budget()
WALL, MONO = 1_800_000_000.0, 1_000.0


class Clock:
    def wall(self) -> float:
        return WALL

    def monotonic(self) -> float:
        return MONO


def components() -> Any:
    config = parse_config(
        {
            "components": {
                "api": {
                    "match": {"cmdline": "never-matches-anything-x9"},
                    "remediation": {
                        "actions": ["restart"],
                        "restart": {"start": [sys.executable, "-c", "pass"]},
                    },
                }
            }
        }
    )
    return config.components


def intent(origin: str, failed_at: float) -> dict[str, Any]:
    row = {"verdict": "deferred", "reason": "cooldown", "fingerprint": "f", "starts_at": "t"}
    return {"origin": origin, "row": row, "failed_at": failed_at, "retry_of": None}


def test_an_earlier_run_is_restored_on_this_clock_and_its_loose_ends_closed() -> None:
    snap = Snapshot(
        states={"api": (ComponentState(last_restart_at=WALL - 60), None)},
        intents={
            "api": {"restart": intent("alert", WALL - 5), "clean_cache": intent("alert", WALL)},
            "gone": {"restart": intent("alert", WALL)},
        },
        unfinished=[
            Unfinished(7, "api", "restart", "alert", WALL - 20),
            Unfinished(8, "gone", "restart", "operator", WALL - 10),
        ],
        last_actions={"api": WALL - 100},
        next_action_id=9,
    )
    plan = carry_over(snap, components(), B, Clock())
    api = plan.lanes["api"]
    assert list(plan.lanes) == ["api"]
    assert api.last_action_at == WALL - 100
    assert api.wanted["restart"].failed_at == MONO - 5  # wall clock to this run's monotonic
    assert api.wanted["restart"].recheck  # it may have recovered meanwhile
    assert plan.reopened == {("f", "t")}
    # the interrupted restart counts as a failed one, began when it was started
    assert (api.state.failures, api.state.last_restart_at) == (1, MONO)
    assert [a.id for a in plan.retries] == [7]
    assert [a.id for a in plan.interrupted] == [7, 8]
    assert plan.next_action_id == 9

    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    for when in (WALL - 20, WALL - 10):
        db.execute(
            "INSERT INTO actions (component, action, origin, started_at) VALUES (?, ?, ?, ?)",
            ("api", "restart", "alert", when),
        )
    db.execute("UPDATE actions SET id = id + 6")
    for action in ("restart", "clean_cache"):
        db.execute("INSERT INTO intents VALUES (?, ?, '{}', 0)", ("api", action))
    db.execute("INSERT INTO intents VALUES ('gone', 'restart', '{}', 0)")
    for write in plan.writes:
        write(db)
    ended = db.execute("SELECT id, outcome, duration_seconds FROM actions ORDER BY id").fetchall()
    assert ended == [(7, "interrupted", 20.0), (8, "interrupted", 10.0)]
    kept = db.execute("SELECT component, action FROM intents").fetchall()
    assert kept == [("api", "restart")]  # no longer allowed, or no such component: dropped
