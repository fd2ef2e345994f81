"""Crash-loop safety as pure decisions: state, a budget and the time in; a verdict out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from glyph_common.config import Budget

Origin = Literal["alert", "retry", "operator"]
Verdict = Literal["act", "wait", "skip"]


@dataclass(frozen=True)
class ComponentState:
    """What the remediator remembers about one component between decisions (and restarts)."""

    paused: bool = False
    gave_up: bool = False
    restarts: tuple[float, ...] = ()  # start times of alert-driven restarts, oldest first
    streak: int = 0  # consecutive restarts without a healthy period in between
    last_restart_at: float | None = None  # when the last restart finished
    healthy_since: float | None = None  # when the last restart was verified healthy


@dataclass(frozen=True)
class Decision:
    """What to do with a request to act, and the state that follows from deciding."""

    verdict: Verdict
    reason: str
    state: ComponentState
    not_before: float | None = None  # for "wait": when to decide again


def restarts_in_window(state: ComponentState, budget: Budget, now: float) -> int:
    """Alert-driven restarts that started within the budget window ending now."""
    return sum(1 for started in state.restarts if now - started < budget.window_seconds)


def budget_remaining(state: ComponentState, budget: Budget, now: float) -> int:
    """Restarts still allowed in the current window."""
    return max(0, budget.max_restarts - restarts_in_window(state, budget, now))


def effective_streak(state: ComponentState, budget: Budget, now: float) -> int:
    """The streak, forgotten once the component has stayed healthy for the reset period."""
    if (
        state.healthy_since is not None
        and now - state.healthy_since >= budget.backoff_reset_seconds
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
) -> Decision:
    """Judge one request to act on a component."""
    if state.paused:
        return Decision("skip", "paused", state)
    if origin == "operator":
        return Decision("skip", "dry_run", state) if dry_run else Decision("act", "acted", state)
    if state.gave_up:
        return Decision("skip", "gave_up", state)
    if action == "restart":
        if budget_remaining(state, budget, now) == 0:
            return Decision("skip", "gave_up", replace(state, gave_up=True))
        if state.last_restart_at is not None:
            since = now - state.last_restart_at
            if since < budget.cooldown_seconds:
                # Maybe about the incarnation just replaced, maybe a new failure: the engine
                # looks at the component again when the cooldown ends.
                return Decision(
                    "wait", "cooldown", state, state.last_restart_at + budget.cooldown_seconds
                )
            delay = backoff_delay(budget, effective_streak(state, budget, now))
            if since < delay:
                return Decision("wait", "backoff", state, state.last_restart_at + delay)
    if dry_run:
        return Decision("skip", "dry_run", state)
    return Decision("act", "acted", state)


def after_restart(
    state: ComponentState,
    budget: Budget,
    *,
    started: float,
    finished: float,
    healthy: bool,
    origin: Origin,
) -> ComponentState:
    """The state once a restart has finished; a failure with no budget left gives up."""
    if origin == "operator":
        return replace(state, last_restart_at=finished, healthy_since=finished if healthy else None)
    kept = tuple(t for t in state.restarts if finished - t < budget.window_seconds)
    new = replace(
        state,
        restarts=(*kept, started),
        streak=effective_streak(state, budget, started) + 1,
        last_restart_at=finished,
        healthy_since=finished if healthy else None,
    )
    if not healthy and budget_remaining(new, budget, finished) == 0:
        return replace(new, gave_up=True)
    return new


def pause(state: ComponentState) -> ComponentState:
    return replace(state, paused=True)


def resume(state: ComponentState) -> ComponentState:
    return replace(state, paused=False)


def reset(state: ComponentState) -> ComponentState:
    """An operator's reset: forget the give-up, the spent budget and the back-off."""
    return replace(state, gave_up=False, restarts=(), streak=0)
