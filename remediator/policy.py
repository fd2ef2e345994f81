"""Crash-loop safety as pure decisions: state, a budget and the time in; a verdict out.

A restart that ends verified healthy and stays healthy for `min_healthy_seconds` is a lasting
recovery: it never counts toward giving up. What counts is consecutive restarts that did not
give a lasting healthy service (failed to stop, to start, unhealthy after start, interrupted,
or a death within `min_healthy_seconds`); after `max_failed_restarts` of those it gives up.
The same count paces restarts: the back-off doubles with each of them (a crash loop) and a
lasting recovery resets it, so a component that recovered is restarted at once when it dies.
The cooldown only holds an alert that began before the last restart finished (it may be about
the incarnation just replaced); a failure that began after it is acted on without delay.
All times are seconds on one timeline (the remediator's monotonic clock).
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
    failures: int = 0  # consecutive restarts without a lasting recovery (give-up, back-off)
    last_restart_at: float | None = None  # when the last restart finished
    healthy_since: float | None = None  # when the last restart was verified healthy
    paused_until: float | None = None  # wall clock: when an operator's pause ends by itself
    pause_reason: str | None = None  # what the operator said when pausing


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


def backoff_delay(budget: Budget, failures: int) -> float:
    """Seconds to wait after the last restart before the next one: none after a lasting
    recovery, then doubling with each restart that did not give one, capped."""
    if failures <= 0:
        return 0.0
    return float(
        min(budget.backoff_initial_seconds * 2 ** (failures - 1), budget.backoff_max_seconds)
    )


def about_replaced(failed_at: float | None, last_restart_at: float) -> bool:
    """Whether a failure may concern the incarnation the last restart replaced: it began before
    that restart finished (or when it began is unknown)."""
    return failed_at is None or failed_at < last_restart_at


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
    """Judge one request to act on a component (failed_at: when its failure began, if known)."""
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
            if (
                origin == "alert"
                and about_replaced(failed_at, last)
                and now - last < budget.cooldown_seconds
            ):
                # Maybe about the incarnation just replaced: the remediator looks at the component
                # again when the cooldown ends. A failure that began after the restart, or a
                # retry of a restart known to have failed, is paced by the back-off alone.
                return Decision("wait", Reason.COOLDOWN, state, last + budget.cooldown_seconds)
            delay = backoff_delay(budget, failures)
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
        last_restart_at=finished,
        healthy_since=healthy_since,
        gave_up=state.gave_up or failures >= budget.max_failed_restarts,
    )


def pause(
    state: ComponentState, until: float | None = None, reason: str | None = None
) -> ComponentState:
    """An operator's pause, for good (until None) or until a wall-clock time."""
    return replace(state, paused=True, paused_until=until, pause_reason=reason)


def resume(state: ComponentState) -> ComponentState:
    return replace(state, paused=False, paused_until=None, pause_reason=None)


def reset(state: ComponentState) -> ComponentState:
    """An operator's reset: forget the give-up and the failures (and with them the back-off)."""
    return replace(state, gave_up=False, failures=0)


def ending_of(outcome: str) -> Ending:
    """How a restart's outcome counts."""
    if outcome == "succeeded":
        return "healthy"
    return "interrupted" if outcome == "interrupted" else "failed"


def retries(ending: Ending, origin: Origin, *, earlier_run: bool) -> bool:
    """Whether a restart that ended so is tried again (within back-off and budget).

    One an earlier run left unfinished is (its turn first checks the component is still
    unhealthy); a failed one is while its alert still fires as far as we know (an operator asks
    again instead); one interrupted by this run's stop is left to the next start.
    """
    return earlier_run or (ending == "failed" and origin != "operator")
