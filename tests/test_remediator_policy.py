"""The crash-loop policy as a table: state, time and request in; verdict and next state out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from glyph_common.config import Budget
from remediator.policy import (
    ComponentState,
    after_restart,
    backoff_delay,
    budget_remaining,
    decide,
    pause,
    reset,
    resume,
)

B = Budget()  # cooldown 30 s, back-off 10 s doubling to 300 s, reset after 600 s, 5 per hour
T = 1_000_000.0
FRESH = ComponentState()
JUST_RESTARTED = ComponentState(restarts=(T - 5,), streak=1, last_restart_at=T - 1)
SPENT = ComponentState(restarts=tuple(T - 3000 + i for i in range(5)), streak=5)

CASES = [
    # name, state, now, action, origin, dry_run, verdict, reason, not_before
    ("first restart acts", FRESH, T, "restart", "alert", False, "act", "acted", None),
    ("paused skips", pause(FRESH), T, "restart", "alert", False, "skip", "paused", None),
    (
        "paused beats operator",
        pause(FRESH),
        T,
        "restart",
        "operator",
        False,
        "skip",
        "paused",
        None,
    ),
    (
        "gave up skips",
        replace(FRESH, gave_up=True),
        T,
        "restart",
        "alert",
        False,
        "skip",
        "gave_up",
        None,
    ),
    (
        "gave up stops cleaning too",
        replace(FRESH, gave_up=True),
        T,
        "clean_cache",
        "alert",
        False,
        "skip",
        "gave_up",
        None,
    ),
    (
        "operator bypasses give-up",
        replace(SPENT, gave_up=True),
        T,
        "restart",
        "operator",
        False,
        "act",
        "acted",
        None,
    ),
    ("budget spent gives up", SPENT, T, "restart", "alert", False, "skip", "gave_up", None),
    (
        "budget frees up after window",
        SPENT,
        T + 700,
        "restart",
        "alert",
        False,
        "act",
        "acted",
        None,
    ),
    (
        "alert in cooldown waits",
        JUST_RESTARTED,
        T,
        "restart",
        "alert",
        False,
        "wait",
        "cooldown",
        T + 29,
    ),
    (
        "retry in cooldown waits",
        JUST_RESTARTED,
        T,
        "restart",
        "retry",
        False,
        "wait",
        "cooldown",
        T + 29,
    ),
    (
        "operator ignores cooldown",
        JUST_RESTARTED,
        T,
        "restart",
        "operator",
        False,
        "act",
        "acted",
        None,
    ),
    (
        "cleaning ignores cooldown",
        JUST_RESTARTED,
        T,
        "clean_cache",
        "alert",
        False,
        "act",
        "acted",
        None,
    ),
    (
        "back-off after cooldown waits",
        replace(JUST_RESTARTED, streak=3),
        T + 35,
        "restart",
        "alert",
        False,
        "wait",
        "backoff",
        T - 1 + 40,
    ),
    (
        "back-off elapsed acts",
        replace(JUST_RESTARTED, streak=3),
        T + 40,
        "restart",
        "alert",
        False,
        "act",
        "acted",
        None,
    ),
    (
        "long healthy forgets the streak",
        replace(JUST_RESTARTED, streak=6, healthy_since=T - 1, last_restart_at=T - 1),
        T + 600,
        "restart",
        "alert",
        False,
        "act",
        "acted",
        None,
    ),
    ("dry run records", FRESH, T, "restart", "alert", True, "skip", "dry_run", None),
    ("dry run operator", FRESH, T, "restart", "operator", True, "skip", "dry_run", None),
    (
        "dry run still honours pause",
        pause(FRESH),
        T,
        "restart",
        "alert",
        True,
        "skip",
        "paused",
        None,
    ),
]


@pytest.mark.parametrize(
    ("state", "now", "action", "origin", "dry_run", "verdict", "reason", "not_before"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    state: ComponentState,
    now: float,
    action: str,
    origin: str,
    dry_run: bool,
    verdict: str,
    reason: str,
    not_before: float | None,
) -> None:
    decision = decide(state, B, now, action, origin=origin, dry_run=dry_run)  # type: ignore[arg-type]
    assert (decision.verdict, decision.reason, decision.not_before) == (verdict, reason, not_before)


def test_spending_the_budget_is_remembered_as_giving_up() -> None:
    decision = decide(SPENT, B, T, "restart", origin="alert", dry_run=False)
    assert decision.state.gave_up is True
    assert decide(decision.state, B, T + 7200, "restart", origin="alert", dry_run=False).reason == (
        "gave_up"
    )


@pytest.mark.parametrize(
    ("streak", "delay"), [(0, 0), (1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (40, 300)]
)
def test_backoff_doubles_up_to_the_cap(streak: int, delay: float) -> None:
    assert backoff_delay(B, streak) == delay


def test_failures_use_the_budget_then_give_up() -> None:
    state, now = FRESH, T
    for attempt in range(1, 6):
        assert not state.gave_up
        state = after_restart(
            state, B, started=now, finished=now + 1, healthy=False, origin="alert"
        )
        assert state.streak == attempt
        assert budget_remaining(state, B, now + 1) == 5 - attempt
        now += 400
    assert state.gave_up


def test_success_then_a_healthy_period_resets_the_streak() -> None:
    state = replace(FRESH, streak=4)
    state = after_restart(state, B, started=T, finished=T + 2, healthy=True, origin="alert")
    assert (state.streak, state.healthy_since) == (5, T + 2)
    later = after_restart(state, B, started=T + 700, finished=T + 701, healthy=True, origin="alert")
    assert later.streak == 1


def test_operator_restarts_do_not_spend_the_budget() -> None:
    state = after_restart(SPENT, B, started=T, finished=T + 1, healthy=False, origin="operator")
    assert state.restarts == SPENT.restarts
    assert state.last_restart_at == T + 1
    assert not state.gave_up


def test_restarts_outside_the_window_are_forgotten() -> None:
    state = after_restart(SPENT, B, started=T + 700, finished=T + 701, healthy=True, origin="alert")
    assert state.restarts == (T + 700,)


def test_switches() -> None:
    gave_up = replace(SPENT, gave_up=True, paused=True)
    assert resume(gave_up).paused is False
    cleared = reset(gave_up)
    assert (cleared.gave_up, cleared.restarts, cleared.streak, cleared.paused) == (
        False,
        (),
        0,
        True,
    )
