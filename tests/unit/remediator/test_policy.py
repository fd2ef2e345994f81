"""The restart policy as a table: state, time and request in; verdict and next state out."""

from __future__ import annotations

import itertools
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

B = Budget()  # cooldown 30 s, back-off 1 s doubling to 60 s, a recovery lasts after 10 s
# healthy, 5 failed restarts in a row give up
T = 1_000_000.0
FRESH = ComponentState()
JUST_RESTARTED = ComponentState(last_restart_at=T - 1, healthy_since=T - 1)
SPENT = ComponentState(failures=5, last_restart_at=T - 3000)
FOUR_SHORT = ComponentState(failures=4, last_restart_at=T - 100, healthy_since=T - 100)
FAILED_ONCE = ComponentState(failures=1, last_restart_at=T - 0.5)  # its start failed
BEFORE = T - 5  # an alert that began before JUST_RESTARTED's restart finished

CASES = [
    # name, state, now, action, origin, dry_run, failed_at, verdict, reason, not_before
    ("first restart acts", FRESH, T, "restart", "alert", False, T, "act", "acted", None),
    ("paused skips", pause(FRESH), T, "restart", "alert", False, T, "skip", "paused", None),
    (
        "paused beats operator",
        pause(FRESH),
        T,
        "restart",
        "operator",
        False,
        None,
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
        T,
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
        T,
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
        None,
        "act",
        "acted",
        None,
    ),
    ("budget spent gives up", SPENT, T, "restart", "alert", False, T, "skip", "gave_up", None),
    (
        "spent stays spent a day later",
        SPENT,
        T + 86400,
        "restart",
        "alert",
        False,
        T + 86400,
        "skip",
        "gave_up",
        None,
    ),
    (
        "a lasting recovery clears four failures and the back-off",
        FOUR_SHORT,
        T,
        "restart",
        "alert",
        False,
        T,
        "act",
        "acted",
        None,
    ),
    (
        "an alert that began before the restart finished waits out the cooldown",
        JUST_RESTARTED,
        T,
        "restart",
        "alert",
        False,
        BEFORE,
        "wait",
        "cooldown",
        T + 29,
    ),
    (
        "an alert whose start is unknown is held the same way",
        JUST_RESTARTED,
        T,
        "restart",
        "alert",
        False,
        None,
        "wait",
        "cooldown",
        T + 29,
    ),
    (
        "clock stepped back an hour: cooldown from now, not from the future",
        replace(JUST_RESTARTED, last_restart_at=T + 3600),
        T,
        "restart",
        "alert",
        False,
        BEFORE,
        "wait",
        "cooldown",
        T + 30,
    ),
    (
        "a new failure after a lasting recovery acts at once, inside the cooldown",
        ComponentState(last_restart_at=T - 12, healthy_since=T - 12),
        T,
        "restart",
        "alert",
        False,
        T - 0.5,
        "act",
        "acted",
        None,
    ),
    (
        "a death soon after a healthy restart waits for the back-off, not the cooldown",
        ComponentState(failures=2, last_restart_at=T - 1, healthy_since=T - 1),
        T,
        "restart",
        "alert",
        False,
        T - 0.5,
        "wait",
        "backoff",
        T + 3,
    ),
    (
        "a stale alert acts once the cooldown ended (its back-off elapsed)",
        replace(JUST_RESTARTED, failures=4, healthy_since=None),
        T + 30,
        "restart",
        "alert",
        False,
        BEFORE,
        "act",
        "acted",
        None,
    ),
    (
        "retry of a failed restart waits for the back-off",
        FAILED_ONCE,
        T,
        "restart",
        "retry",
        False,
        T - 0.5,
        "wait",
        "backoff",
        T + 0.5,
    ),
    (
        "retry once its back-off elapsed acts",
        FAILED_ONCE,
        T + 0.5,
        "restart",
        "retry",
        False,
        T - 0.5,
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
        None,
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
        BEFORE,
        "act",
        "acted",
        None,
    ),
    ("dry run records", FRESH, T, "restart", "alert", True, T, "skip", "dry_run", None),
    ("dry run operator", FRESH, T, "restart", "operator", True, None, "skip", "dry_run", None),
    (
        "dry run still honours pause",
        pause(FRESH),
        T,
        "restart",
        "alert",
        True,
        T,
        "skip",
        "paused",
        None,
    ),
]


@pytest.mark.parametrize(
    ("state", "now", "action", "origin", "dry_run", "failed_at", "verdict", "reason", "not_before"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    state: ComponentState,
    now: float,
    action: str,
    origin: str,
    dry_run: bool,
    failed_at: float | None,
    verdict: str,
    reason: str,
    not_before: float | None,
) -> None:
    decision = decide(
        state,
        B,
        now,
        action,
        origin=origin,  # type: ignore[arg-type]
        dry_run=dry_run,
        failed_at=failed_at,
    )
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
    # the same death 12 s after the healthy start: a lasting recovery, restarted at once
    lasting = decide(state, B, T + 20, "restart", origin="alert", dry_run=False, failed_at=T + 7)
    assert (lasting.verdict, lasting.reason) == ("act", "acted")
    assert lasting.state.failures == 4  # settled when the restart ends


def test_a_failure_said_to_begin_before_the_last_restart_counts_from_now() -> None:
    state = replace(FRESH, healthy_since=T, last_restart_at=T)
    stale = T - 100  # an alert from before the restart: judged at now
    assert settled_failures(state, B, stale, T + 5) == 1
    assert settled_failures(state, B, stale, T + 15) == 0


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 0), (1, 1), (2, 2), (3, 4), (5, 16), (7, 60), (40, 60)]
)
def test_backoff_doubles_with_failures_up_to_the_cap(failures: int, delay: float) -> None:
    assert backoff_delay(B, failures) == delay


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
        assert state.failures == attempt
        assert budget_remaining(state, B, now + 1) == 5 - attempt
        now += 400
    assert state.gave_up


def test_lasting_recoveries_are_never_delayed_and_never_spend_the_budget() -> None:
    state, now = FRESH, T
    for _ in range(50):  # fifty kills, each 20 s after the service was healthy again
        state = _ended(state, now, "healthy")
        now += 21
        decision = decide(state, B, now, "restart", origin="alert", dry_run=False, failed_at=now)
        assert (decision.verdict, decision.reason) == ("act", "acted")
        assert budget_remaining(state, B, now) == 5
    assert (state.failures, state.gave_up) == (0, False)


def test_a_crash_loop_backs_off_doubling_then_gives_up() -> None:
    # healthy after each start, dead again 0.5 s later; every alert is a new failure
    state, now, died, began = FRESH, T, T, []
    while True:
        decision = decide(state, B, now, "restart", origin="alert", dry_run=False, failed_at=died)
        if decision.verdict == "skip":
            break
        if decision.verdict == "wait":  # back-off: the death stays when it was
            assert decision.reason == "backoff" and decision.not_before is not None
            now = decision.not_before
            continue
        began.append(now)
        state = _ended(decision.state, now, "healthy", failed_at=died)
        now = died = now + 1 + 0.5
    assert (decision.reason, len(began)) == ("gave_up", 5)
    # each restart this long after the one before it finished (it takes 1 s)
    assert [b - a - 1 for a, b in itertools.pairwise(began)] == [1, 2, 4, 8]


def test_a_lasting_recovery_resets_the_backoff() -> None:
    looping = replace(FRESH, failures=3)
    state = _ended(looping, T, "healthy")  # healthy from T + 1
    assert state.failures == 3  # pending until it lasts
    now = T + 20  # died at T + 15: it lasted
    decision = decide(state, B, now, "restart", origin="alert", dry_run=False, failed_at=T + 15)
    assert (decision.verdict, decision.reason) == ("act", "acted")
    assert _ended(state, now, "healthy", failed_at=T + 15).failures == 0


def test_operator_restarts_do_not_spend_the_budget() -> None:
    state = _ended(SPENT, T, "failed", origin="operator")
    assert state.failures == SPENT.failures
    assert state.last_restart_at == T + 1
    assert not state.gave_up


def test_switches() -> None:
    gave_up = replace(SPENT, gave_up=True, paused=True)
    assert resume(gave_up).paused is False
    cleared = reset(gave_up)
    assert (cleared.gave_up, cleared.failures, cleared.paused) == (False, 0, True)
    assert backoff_delay(B, cleared.failures) == 0


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
