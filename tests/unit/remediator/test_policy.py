"""The restart policy as a table: state, time and request in; verdict and next state out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from glyph_guard.common.config import Budget
from glyph_guard.remediator.policy import (
    ComponentState,
    Origin,
    after_restart,
    backoff_delay,
    budget_remaining,
    decide,
    ending_of,
    pause,
    reset,
    resume,
    retries,
    settled_failures,
)

B = Budget()  # cooldown 30 s, back-off 10 s doubling to 300 s (reset after 600 s healthy),
# a recovery lasts after 10 s healthy, 5 failed restarts in a row give up
T = 1_000_000.0
FRESH = ComponentState()
JUST_RESTARTED = ComponentState(streak=1, last_restart_at=T - 1, healthy_since=T - 1)
SPENT = ComponentState(failures=5, streak=5, last_restart_at=T - 3000)
FOUR_SHORT = ComponentState(failures=4, streak=4, last_restart_at=T - 100, healthy_since=T - 100)

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
        "spent stays spent a day later",
        SPENT,
        T + 86400,
        "restart",
        "alert",
        False,
        "skip",
        "gave_up",
        None,
    ),
    (
        "a lasting recovery clears four failures",
        FOUR_SHORT,
        T,
        "restart",
        "alert",
        False,
        "act",
        "acted",
        None,
    ),
    (
        "clock stepped back an hour: cooldown from now, not from the future",
        replace(JUST_RESTARTED, last_restart_at=T + 3600),
        T,
        "restart",
        "alert",
        False,
        "wait",
        "cooldown",
        T + 30,
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
        "retry of a failed restart waits for back-off, not the cooldown",
        replace(JUST_RESTARTED, healthy_since=None),
        T,
        "restart",
        "retry",
        False,
        "wait",
        "backoff",
        T + 9,
    ),
    (
        "retry once its back-off elapsed acts, inside the cooldown",
        replace(JUST_RESTARTED, healthy_since=None),
        T + 9,
        "restart",
        "retry",
        False,
        "act",
        "acted",
        None,
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


def test_a_death_within_the_minimum_healthy_time_is_the_last_failure() -> None:
    # four short-lived recoveries, then one more death 5 s after the last healthy start
    state = replace(FOUR_SHORT, healthy_since=T - 5, last_restart_at=T - 5)
    decision = decide(state, B, T + 20, "restart", origin="alert", dry_run=False, failed_at=T)
    assert (decision.verdict, decision.reason) == ("skip", "gave_up")
    assert decision.state.failures == 5
    # the same death 12 s after the healthy start: a lasting recovery, restarted again
    lasting = decide(state, B, T + 20, "restart", origin="alert", dry_run=False, failed_at=T + 7)
    assert (lasting.verdict, lasting.reason) == ("wait", "cooldown")  # but not given up
    assert lasting.state.failures == 4


def test_a_failure_said_to_begin_before_the_last_restart_counts_from_now() -> None:
    state = replace(FRESH, healthy_since=T, last_restart_at=T, streak=1)
    stale = T - 100  # an alert from before the restart: judged at now
    assert settled_failures(state, B, stale, T + 5) == 1
    assert settled_failures(state, B, stale, T + 15) == 0


@pytest.mark.parametrize(
    ("streak", "delay"), [(0, 0), (1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (40, 300)]
)
def test_backoff_doubles_up_to_the_cap(streak: int, delay: float) -> None:
    assert backoff_delay(B, streak) == delay


def _ended(
    state: ComponentState,
    at: float,
    ending: str,
    origin: str = "alert",
    failed_at: float | None = None,
) -> ComponentState:
    return after_restart(
        state,
        B,
        failed_at=at if failed_at is None else failed_at,
        started=at,
        finished=at + 1,
        ending=ending,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("ending", ["failed", "interrupted"])
def test_failures_use_the_budget_then_give_up(ending: str) -> None:
    state, now = FRESH, T
    for attempt in range(1, 6):
        assert not state.gave_up
        state = _ended(state, now, ending)
        assert (state.streak, state.failures) == (attempt, attempt)
        assert budget_remaining(state, B, now + 1) == 5 - attempt
        now += 400
    assert state.gave_up


def test_lasting_recoveries_never_spend_the_budget() -> None:
    state, now = FRESH, T
    for _ in range(50):  # fifty kills, each 12 s after the service was healthy again
        state = _ended(state, now, "healthy")
        now += 13
        assert decide(state, B, now, "restart", origin="alert", dry_run=False).verdict != "skip"
        assert budget_remaining(state, B, now) == 5
    assert (state.failures, state.gave_up) == (0, False)


def test_short_lived_recoveries_give_up_after_the_count() -> None:
    state, now, died, restarts = FRESH, T, T, 0
    while True:
        decision = decide(state, B, now, "restart", origin="alert", dry_run=False, failed_at=died)
        if decision.verdict == "skip":
            break
        if decision.verdict == "wait":  # cooldown and back-off: the death stays when it was
            assert decision.not_before is not None
            now = decision.not_before
            continue
        state = _ended(decision.state, now, "healthy", failed_at=died)
        restarts += 1
        now = died = now + 1 + 5  # healthy, then dead again 5 s later
    assert (decision.reason, restarts) == ("gave_up", 5)


def test_success_then_a_healthy_period_resets_the_streak() -> None:
    state = replace(FRESH, streak=4)
    state = _ended(state, T, "healthy")
    assert (state.streak, state.healthy_since) == (5, T + 1)
    later = _ended(state, T + 700, "healthy")
    assert later.streak == 1


def test_operator_restarts_do_not_spend_the_budget() -> None:
    state = _ended(SPENT, T, "failed", origin="operator")
    assert (state.failures, state.streak) == (SPENT.failures, SPENT.streak)
    assert state.last_restart_at == T + 1
    assert not state.gave_up


def test_switches() -> None:
    gave_up = replace(SPENT, gave_up=True, paused=True)
    assert resume(gave_up).paused is False
    cleared = reset(gave_up)
    assert (cleared.gave_up, cleared.failures, cleared.streak, cleared.paused) == (
        False,
        0,
        0,
        True,
    )


@pytest.mark.parametrize(
    ("outcome", "origin", "earlier_run", "expected"),
    [
        ("failed_to_start", "alert", False, True),
        ("unhealthy_after_start", "retry", False, True),
        ("failed_to_stop", "operator", False, False),  # an operator asks again instead
        ("succeeded", "alert", False, False),
        ("interrupted", "alert", False, False),  # this run's stop: the next start takes it up
        ("interrupted", "alert", True, True),  # an earlier run's: tried again (rechecked first)
        ("interrupted", "operator", True, True),
    ],
)
def test_the_retry_rule(outcome: str, origin: Origin, earlier_run: bool, expected: bool) -> None:
    assert retries(ending_of(outcome), origin, earlier_run=earlier_run) is expected
