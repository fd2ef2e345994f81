"""Crash-loop safety as pure decisions: state, a budget and the time in; a verdict out.

A restart that ends verified healthy and stays healthy for `min_healthy_seconds` is a lasting
recovery: it never counts toward giving up. What counts is consecutive restarts that did not
give a lasting healthy service (failed to stop, to start, unhealthy after start, interrupted,
or a death within `min_healthy_seconds`); after `max_failed_restarts` of those it gives up.
Back-off doubles between consecutive restarts and resets after `backoff_reset_seconds` healthy.
All times are seconds on one timeline (the engine's monotonic clock).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from glyph_guard.common.config import Budget
from glyph_guard.remediator.reasons import Reason

Origin = Literal["alert", "retry", "operator"]
DecisionKind = Literal["act", "wait", "skip"]
Ending = Literal["healthy", "failed", "interrupted"]


@dataclass(frozen=True)
class ComponentState:
    """What the remediator remembers about one component between decisions (and restarts)."""

    paused: bool = False
    gave_up: bool = False
    failures: int = 0  # consecutive restarts without a lasting recovery (toward giving up)
    streak: int = 0  # consecutive restarts without a healthy reset period between (back-off)
    last_restart_at: float | None = None  # when the last restart finished
    healthy_since: float | None = None  # when the last restart was verified healthy


@dataclass(frozen=True)
class Decision:
    """What to do with a request to act, and the state that follows from deciding."""

    verdict: DecisionKind
    reason: Reason
    state: ComponentState
    not_before: float | None = None  # for "wait": when to decide again


def _past(instant: float, now: float) -> float:
    """An instant after now (the clock went back between two runs) counts as now."""
    return min(instant, now)


def settled_failures(state: ComponentState, budget: Budget, failed_at: float, now: float) -> int:
    """The failure count once the component failed at failed_at (a death ends the last restart).

    A failure said to begin before the last healthy restart (a late or stale alert) is taken as
    happening now.
    """
    if state.healthy_since is None:
        return state.failures
    since = _past(state.healthy_since, now)
    died = failed_at if since <= failed_at <= now else now
    return 0 if died - since >= budget.min_healthy_seconds else state.failures + 1


def current_failures(state: ComponentState, budget: Budget, now: float) -> int:
    """Failures that count now (a healthy restart not yet lasting keeps the count pending)."""
    if (
        state.healthy_since is not None
        and now - _past(state.healthy_since, now) >= budget.min_healthy_seconds
    ):
        return 0
    return state.failures


def budget_remaining(state: ComponentState, budget: Budget, now: float) -> int:
    """Failed restarts still allowed before giving up."""
    return max(0, budget.max_failed_restarts - current_failures(state, budget, now))


def effective_streak(state: ComponentState, budget: Budget, now: float) -> int:
    """The streak, forgotten once the component has stayed healthy for the reset period."""
    if (
        state.healthy_since is not None
        and now - _past(state.healthy_since, now) >= budget.backoff_reset_seconds
    ):
        return 0
    return state.streak


def backoff_delay(budget: Budget, streak: int) -> float:
    """Seconds to wait after the last restart before the next one: doubling, capped."""
    if streak <= 0:
        return 0.0
    return float(
        min(budget.backoff_initial_seconds * 2 ** (streak - 1), budget.backoff_max_seconds)
    )


def decide(
    state: ComponentState,
    budget: Budget,
    now: float,
    action: str,
    *,
    origin: Origin,
    dry_run: bool,
    failed_at: float | None = None,
) -> Decision:
    """Judge one request to act on a component (failed_at: when its failure began)."""
    if state.paused:
        return Decision("skip", Reason.PAUSED, state)
    if origin == "operator":
        if dry_run:
            return Decision("skip", Reason.DRY_RUN, state)
        return Decision("act", Reason.ACTED, state)
    if state.gave_up:
        return Decision("skip", Reason.GAVE_UP, state)
    if action == "restart":
        failures = settled_failures(state, budget, now if failed_at is None else failed_at, now)
        if failures >= budget.max_failed_restarts:
            return Decision("skip", Reason.GAVE_UP, replace(state, gave_up=True, failures=failures))
        if state.last_restart_at is not None:
            last = _past(state.last_restart_at, now)
            if origin == "alert" and now - last < budget.cooldown_seconds:
                # Maybe about the incarnation just replaced, maybe a new failure: the engine
                # looks at the component again when the cooldown ends. A retry needs no such
                # look: the restart it repeats is known to have failed; back-off alone paces it.
                return Decision("wait", Reason.COOLDOWN, state, last + budget.cooldown_seconds)
            delay = backoff_delay(budget, effective_streak(state, budget, now))
            if now - last < delay:
                return Decision("wait", Reason.BACKOFF, state, last + delay)
    if dry_run:
        return Decision("skip", Reason.DRY_RUN, state)
    return Decision("act", Reason.ACTED, state)


def after_restart(
    state: ComponentState,
    budget: Budget,
    *,
    failed_at: float,
    started: float,
    finished: float,
    ending: Ending,
    origin: Origin,
) -> ComponentState:
    """The state once a restart has ended; the last failure allowed gives up."""
    healthy_since = finished if ending == "healthy" else None
    if origin == "operator":
        return replace(state, last_restart_at=finished, healthy_since=healthy_since)
    failures = settled_failures(state, budget, failed_at, started)
    if ending != "healthy":
        failures += 1
    return replace(
        state,
        failures=failures,
        streak=effective_streak(state, budget, started) + 1,
        last_restart_at=finished,
        healthy_since=healthy_since,
        gave_up=state.gave_up or failures >= budget.max_failed_restarts,
    )


def pause(state: ComponentState) -> ComponentState:
    return replace(state, paused=True)


def resume(state: ComponentState) -> ComponentState:
    return replace(state, paused=False)


def reset(state: ComponentState) -> ComponentState:
    """An operator's reset: forget the give-up, the failures and the back-off."""
    return replace(state, gave_up=False, failures=0, streak=0)
