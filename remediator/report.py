"""A component's state as operators read it: what waits and until when, back-off, the next turn."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from glyph_guard.common.config import Budget
from glyph_guard.remediator import policy
from glyph_guard.remediator.policy import ComponentState, Origin
from glyph_guard.remediator.reasons import Reason


@dataclass(frozen=True)
class Turn:
    """What a request to act would get now: act, wait (until when) or be skipped (why)."""

    verdict: policy.DecisionKind
    reason: Reason
    at: float | None  # monotonic; for "wait": when it may act


@dataclass(frozen=True)
class Waiting:
    """Why a waiting action has not started yet."""

    origin: str
    failed_at: float  # monotonic
    idle_until: float | None = None  # planned: waits for an idle engine until then (monotonic)


def turn(
    state: ComponentState,
    budget: Budget,
    now: float,
    action: str,
    *,
    origin: Origin,
    dry_run: bool,
    failed_at: float | None = None,
) -> Turn:
    """The policy's verdict on a request to act now, without changing anything."""
    decision = policy.decide(
        state, budget, now, action, origin=origin, dry_run=dry_run, failed_at=failed_at
    )
    return Turn(decision.verdict, decision.reason, decision.not_before)


def waiting_turns(
    state: ComponentState,
    budget: Budget,
    now: float,
    waiting: Mapping[str, Waiting],
    *,
    busy: str | None,
    dry_run: bool,
) -> dict[str, Turn]:
    """For each waiting action, what holds it and until when (a running action holds them all)."""
    turns = {}
    for action, why in waiting.items():
        if busy is not None:
            turns[action] = Turn("wait", Reason.BUSY, None)
            continue
        origin: Origin = "retry" if why.origin == "retry" else "alert"
        turns[action] = turn(
            state, budget, now, action, origin=origin, dry_run=dry_run, failed_at=why.failed_at
        )
        if turns[action].verdict == "act" and why.idle_until is not None:
            turns[action] = Turn("wait", Reason.WAITING_FOR_IDLE, why.idle_until)
    return turns


def backoff_seconds(state: ComponentState, budget: Budget, now: float) -> float:
    """What the next restart waits after the last one finished."""
    return policy.backoff_delay(budget, policy.current_failures(state, budget, now))


def stamp(at: float) -> str:
    """A wall-clock time as the record's texts give it (local, with its offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at))
