"""Planned restarts as tables: the wait an alert may take, and each turn, with an injected clock."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Any

import pytest

from glyph_guard.common.config import Budget, ConfigError, PlannedRestarts, parse_config
from glyph_guard.remediator.codec import saved_intent, trigger_from_wall
from glyph_guard.remediator.intake import ComponentView, Context, judge_alert
from glyph_guard.remediator.lane import Lane, Trigger
from glyph_guard.remediator.models import Alert
from glyph_guard.remediator.planning import Turn, planned_turn, planned_wait
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.reasons import DEFERRED, Reason
from glyph_guard.remediator.report import Turn as Turn_
from glyph_guard.remediator.report import Waiting, waiting_turns
from glyph_guard.remediator.store.records import DecisionRow
from glyph_guard_demo.testkit.doubles.harness import alert

S = PlannedRestarts(max_wait_seconds=3600, poll_seconds=2)
NOW = 10_000.0
LOWER = "exhaustion_lower_bound_seconds"


@pytest.mark.parametrize(
    ("labels", "annotations", "wait"),
    [
        ({}, {}, None),  # no urgency label: urgent, as every alert before
        ({"urgency": "immediate"}, {LOWER: "100000"}, None),
        ({"urgency": "Planned"}, {}, None),  # a closed enum: exactly "planned"
        ({"urgency": "planned"}, {}, 3600.0),  # no forecast: the configured maximum
        ({"urgency": "planned"}, {LOWER: "4000"}, 2000.0),  # half the lower bound
        ({"urgency": "planned"}, {LOWER: " 4000.0 "}, 2000.0),
        ({"urgency": "planned"}, {LOWER: "1e9"}, 3600.0),  # capped by the maximum
        ({"urgency": "planned"}, {LOWER: "60"}, 30.0),
        ({"urgency": "planned"}, {LOWER: ""}, 3600.0),  # the template found no series
        ({"urgency": "planned"}, {LOWER: "NaN"}, 3600.0),
        ({"urgency": "planned"}, {LOWER: "+Inf"}, 3600.0),
        ({"urgency": "planned"}, {LOWER: "-5"}, 3600.0),
        ({"urgency": "planned"}, {LOWER: "0"}, 3600.0),
        ({"urgency": "planned"}, {LOWER: "../../etc/passwd"}, 3600.0),
    ],
)
def test_the_wait_comes_from_a_closed_label_and_a_validated_number(
    labels: dict[str, str], annotations: dict[str, str], wait: float | None
) -> None:
    assert planned_wait(labels, annotations, S) == wait


UNTIL = NOW + 100


@pytest.mark.parametrize(
    ("now", "idle", "turn", "again"),
    [
        (NOW, True, "idle", NOW),
        (NOW, False, "wait", NOW + 2),
        (NOW, None, "wait", NOW + 2),  # unreadable metrics are not idleness
        (UNTIL - 1, False, "wait", UNTIL),  # never polls past the deadline
        (UNTIL, False, "deadline", UNTIL),
        (UNTIL + 50, None, "deadline", UNTIL + 50),
        (UNTIL + 50, True, "idle", UNTIL + 50),  # idle at the deadline: the better record
    ],
)
def test_a_planned_turn_acts_at_idle_or_at_its_deadline(
    now: float, idle: bool | None, turn: Turn, again: float
) -> None:
    assert planned_turn(now, UNTIL, idle, S.poll_seconds) == (turn, again)


def engine_component(engine: bool = True) -> Any:
    api: dict[str, Any] = {
        "match": {"cmdline": "never-matches-anything-x9"},
        "port": 59999,
        "remediation": {"actions": ["restart"], "restart": {"start": [sys.executable]}},
    }
    if engine:
        api["engine"] = {"path": "/metrics"}
    return parse_config({"components": {"api": api}}).components[0]


def ctx(dry_run: bool = False) -> Context:
    return Context(Budget(), dry_run, None, NOW, None, S)


def leak(urgency: str | None = "planned", lower: str = "7200", fp: str = "aa") -> Alert:
    labels = {"urgency": urgency} if urgency else {}
    item = alert(fingerprint=fp, **labels)
    item["annotations"][LOWER] = lower
    return Alert.model_validate(item)


WITH_ENGINE = ComponentView(engine_component(), ComponentState())
PLANNED_WAITING = replace(
    WITH_ENGINE, waiting={"restart": ("aa", "x")}, planned=frozenset({"restart"})
)
URGENT_WAITING = replace(WITH_ENGINE, waiting={"restart": ("aa", "x")})
COOLING = replace(WITH_ENGINE, state=ComponentState(last_restart_at=NOW - 1, healthy_since=NOW - 1))


@pytest.mark.parametrize(
    ("name", "got_view", "alert_", "dry", "verdict", "reason", "idle_until"),
    [
        (
            "planned, free: waits",
            WITH_ENGINE,
            leak(),
            False,
            "deferred",
            "waiting_for_idle",
            NOW + 3600,
        ),
        ("urgent: acts now", WITH_ENGINE, leak(None), False, "acted", "acted", None),
        (
            "no engine: acts now",
            ComponentView(engine_component(False), ComponentState()),
            leak(),
            False,
            "acted",
            "acted",
            None,
        ),
        (
            "urgent over a planned wait: acts now",
            PLANNED_WAITING,
            leak(None, fp="bb"),
            False,
            "acted",
            "acted",
            None,
        ),
        (
            "planned over a planned wait: joins",
            PLANNED_WAITING,
            leak(fp="bb"),
            False,
            "skipped",
            "coalesced",
            None,
        ),
        (
            "planned over an urgent wait: joins",
            URGENT_WAITING,
            leak(fp="bb"),
            False,
            "skipped",
            "coalesced",
            None,
        ),
        (
            "planned in a cooldown: keeps the reason",
            COOLING,
            leak(),
            False,
            "deferred",
            "cooldown",
            NOW + 3600,
        ),
        ("planned, dry run: skipped", WITH_ENGINE, leak(), True, "skipped", "dry_run", None),
    ],
)
def test_judging_planned_and_urgent_alerts(
    name: str,
    got_view: ComponentView,
    alert_: Alert,
    dry: bool,
    verdict: str,
    reason: str,
    idle_until: float | None,
) -> None:
    got = judge_alert(alert_, got_view, ctx(dry), seen=False, failed_at=NOW - 60)
    assert (got.verdict, str(got.reason), got.idle_until) == (verdict, reason, idle_until), name
    assert got.enqueue == (verdict == "deferred")
    assert not got.launch or idle_until is None


def test_waiting_for_idle_is_a_deferral() -> None:
    assert Reason.WAITING_FOR_IDLE in DEFERRED


def test_an_urgent_request_takes_the_place_of_a_planned_one_waiting() -> None:
    lane = Lane(engine_component())
    planned = Trigger("alert", DecisionRow("deferred", "waiting_for_idle"), NOW, idle_until=NOW + 9)
    urgent = Trigger("alert", DecisionRow("deferred", "busy"), NOW)
    assert lane.wait("restart", planned)
    assert not lane.wait("restart", replace(planned, failed_at=NOW + 1))  # the first stays
    assert lane.wait("restart", urgent)
    assert lane.wanted["restart"] is urgent
    assert not lane.wait("restart", planned)  # a planned one never displaces an urgent one
    assert lane.view().planned == frozenset()


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_wait_seconds", 0), ("max_wait_seconds", "soon"), ("poll_seconds", -1)],
)
def test_a_bad_setting_is_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"planned_restarts.{field}"):
        parse_config({"remediator": {"planned_restarts": {field: value}}}, "test")


@pytest.mark.parametrize(
    ("state", "busy", "expected"),
    [
        (ComponentState(), None, Turn_("wait", Reason.WAITING_FOR_IDLE, NOW + 50)),
        (ComponentState(), "restart", Turn_("wait", Reason.BUSY, None)),
        (
            ComponentState(last_restart_at=NOW - 5),  # the cooldown holds it first
            None,
            Turn_("wait", Reason.COOLDOWN, NOW + 25),
        ),
        (ComponentState(paused=True), None, Turn_("skip", Reason.PAUSED, None)),
    ],
)
def test_the_status_says_waiting_for_idle_until_the_deadline(
    state: ComponentState, busy: str | None, expected: Turn_
) -> None:
    waiting = {"restart": Waiting("alert", NOW - 10, NOW + 50)}
    turns = waiting_turns(state, Budget(), NOW, waiting, busy=busy, dry_run=False)
    assert turns == {"restart": expected}


class _Stepped:
    def __init__(self, wall: float, mono: float) -> None:
        self.at = (wall, mono)

    def wall(self) -> float:
        return self.at[0]

    def monotonic(self) -> float:
        return self.at[1]


class _Db:
    """Takes the one statement a Write runs."""

    values: tuple[Any, ...] = ()

    def execute(self, sql: str, values: tuple[Any, ...]) -> _Db:
        self.values = values
        return self

    def close(self) -> None:
        pass


@pytest.mark.parametrize("deadline", [NOW + 900, None])
def test_a_waiting_planned_restart_keeps_its_deadline_across_a_restart_of_the_remediator(
    deadline: float | None,
) -> None:
    before = _Stepped(1_800_000_000.0, NOW)
    lane = Lane(engine_component())
    trigger = Trigger(
        "alert", DecisionRow("deferred", "waiting_for_idle"), NOW, idle_until=deadline
    )
    db = _Db()
    saved_intent(before, lane, "restart", trigger)(db)
    after = _Stepped(1_800_000_000.0 + 100, 50.0)  # 100 s later, a new process's clock
    carried = trigger_from_wall(after, json.loads(db.values[2]))
    assert carried.idle_until == (None if deadline is None else 50.0 + 800)
