"""The operator views' pure parts: durations, pause ends, waiting turns, explanations, history."""

from __future__ import annotations

from typing import Any

import pytest

from glyph_guard.common.config import Budget
from glyph_guard.remediator.explain import explain
from glyph_guard.remediator.history import incidents
from glyph_guard.remediator.pauses import ended, next_end
from glyph_guard.remediator.policy import ComponentState, pause, resume
from glyph_guard.remediator.reasons import Reason
from glyph_guard.remediator.render import parse_duration
from glyph_guard.remediator.report import Turn, Waiting, waiting_turns

B = Budget()  # cooldown 30 s, back-off 1 s doubling to 60 s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400),
     ("0.5s", 0.5), (" 5m ", 300)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "0s", "-5m", "5x", "m5", "1h 30m", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_pause_ends() -> None:
    states = {
        "forever": pause(ComponentState()),
        "soon": pause(ComponentState(), until=100.0, reason="r"),
        "later": pause(ComponentState(), until=200.0),
        "resumed": resume(pause(ComponentState(), until=50.0)),
    }
    assert states["resumed"] == ComponentState()
    assert ended(states, 99.0) == []
    assert ended(states, 100.0) == ["soon"]
    assert ended(states, 500.0) == ["soon", "later"]
    assert next_end(states) == 100.0
    assert next_end({"forever": states["forever"]}) is None


@pytest.mark.parametrize(
    ("state", "busy", "origin", "began", "expected"),
    [
        (ComponentState(), None, "alert", 1000.0, Turn("act", Reason.ACTED, None)),
        (ComponentState(), "restart", "alert", 1000.0, Turn("wait", Reason.BUSY, None)),
        # an alert that began before the last restart: maybe about the replaced incarnation
        (ComponentState(last_restart_at=990.0), None, "alert", 980.0,
         Turn("wait", Reason.COOLDOWN, 1020.0)),
        # a failure after it is acted on at once
        (ComponentState(last_restart_at=990.0), None, "alert", 1000.0,
         Turn("act", Reason.ACTED, None)),
        (ComponentState(last_restart_at=995.0, failures=4), None, "retry", 1000.0,
         Turn("wait", Reason.BACKOFF, 1003.0)),
        (ComponentState(paused=True), None, "alert", 1000.0, Turn("skip", Reason.PAUSED, None)),
        (ComponentState(gave_up=True), None, "retry", 1000.0, Turn("skip", Reason.GAVE_UP, None)),
    ],
)  # fmt: skip
def test_waiting_turns(
    state: ComponentState, busy: str | None, origin: str, began: float, expected: Turn
) -> None:
    waiting = {"restart": Waiting(origin, began)}
    turns = waiting_turns(state, B, 1000.0, waiting, busy=busy, dry_run=False)
    assert turns == {"restart": expected}


def decision(id_: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": id_, "at": 1000.0 + id_, "origin": "alert", "fingerprint": "f1",
        "starts_at": "s1", "alert_status": "firing", "alertname": "GlyphComponentDown",
        "component": "api", "action": "restart", "verdict": "acted", "reason": "acted",
        "detail": None, "action_id": None,
    }  # fmt: skip
    row.update(fields)
    return row


def action(id_: int, outcome: str | None = "succeeded") -> dict[str, Any]:
    return {
        "id": id_, "component": "api", "action": "restart", "origin": "alert",
        "started_at": 1000.0, "finished_at": None if outcome is None else 1005.0,
        "duration_seconds": None if outcome is None else 5.0, "outcome": outcome,
        "reason": "all probes passed", "details": {},
    }  # fmt: skip


NOW = Turn("act", Reason.ACTED, None)


@pytest.mark.parametrize(
    ("decisions", "actions", "turn", "paused_until", "thread", "why", "next_"),
    [
        ([], {}, NOW, None, [], "no alert about this component is on record", "now: "),
        (
            [decision(2, action_id=7), decision(1, verdict="deferred", reason="cooldown")],
            {7: action(7)},
            Turn("wait", Reason.COOLDOWN, 2000.0),
            None,
            [1, 2],
            "the last alert (GlyphComponentDown): it acted: restart (action 7);"
            " action 7 ended succeeded: all probes passed",
            "at ",
        ),
        (
            [decision(3, origin="operator", fingerprint=None, action="pause", reason="operator"),
             decision(1, verdict="skipped", reason="paused", fingerprint="f0")],
            {},
            Turn("skip", Reason.PAUSED, None),
            5000.0,
            [1],
            "the last alert (GlyphComponentDown) did not act: remediation of the component was"
            " paused by an operator",
            "at ",
        ),
        (
            [decision(1, verdict="skipped", reason="gave_up")],
            {},
            Turn("skip", Reason.GAVE_UP, None),
            None,
            [1],
            "the last alert (GlyphComponentDown) did not act: the remediator had given up",
            "never until an operator resets it",
        ),
    ],
)  # fmt: skip
def test_explain(
    decisions: list[dict[str, Any]],
    actions: dict[int, dict[str, Any]],
    turn: Turn,
    paused_until: float | None,
    thread: list[int],
    why: str,
    next_: str,
) -> None:
    found = explain("api", decisions, actions, turn, paused_until=paused_until, busy=None)
    assert found.why.startswith(why), found.why
    assert found.next.startswith(next_), found.next
    assert [d.id for d in found.last_alert] == thread


def test_explain_while_busy() -> None:
    found = explain("api", [], {}, NOW, paused_until=None, busy="restart")
    assert found.next == "after the running restart ends (an alert now joins or waits for it)"
    assert found.next_at is None


def test_history_groups_by_alert_and_by_operator_request() -> None:
    rows = [
        decision(1, verdict="deferred", reason="cooldown"),
        decision(2, origin="operator", fingerprint=None, starts_at=None, action_id=8),
        decision(3, verdict="skipped", reason="coalesced", detail="joins an operator's restart"),
        decision(4, origin="retry", action_id=9),
        decision(5, origin="operator", fingerprint=None, starts_at=None, action="pause"),
        decision(6, fingerprint=None, component=None, verdict="skipped", reason="truncated"),
    ]
    blocks = incidents(list(reversed(rows)), {8: action(8), 9: action(9, None)})
    assert [[d.id for d in b.decisions] for b in blocks] == [[1, 3, 4], [2], [5], [6]]
    assert [[a.id for a in b.actions] for b in blocks] == [[9], [8], [], []]
    assert blocks[0].first_at == 1001.0 and blocks[0].last_at == 1004.0
    recent = incidents(rows, {}, since=1004.5)
    assert [[d.id for d in b.decisions] for b in recent] == [[5], [6]]
