"""Component state and triggers between the process's monotonic clock and the store's wall clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from glyph_guard.remediator.clock import Clock, from_wall, to_wall
from glyph_guard.remediator.lane import Lane, Trigger
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.store.records import DecisionRow, Write, put_intent, save_state


def _restamp(state: ComponentState, convert: Callable[[float], float]) -> ComponentState:
    return replace(
        state,
        last_restart_at=None if state.last_restart_at is None else convert(state.last_restart_at),
        healthy_since=None if state.healthy_since is None else convert(state.healthy_since),
    )


def state_from_wall(clock: Clock, state: ComponentState) -> ComponentState:
    return _restamp(state, lambda t: from_wall(clock, t))


def trigger_from_wall(clock: Clock, data: dict[str, Any]) -> Trigger:
    return Trigger(
        data["origin"],
        DecisionRow(**data["row"]),
        from_wall(clock, float(data["failed_at"])),
        data.get("retry_of"),
        bool(data.get("recheck")),
        None if data.get("idle_until") is None else _deadline(clock, float(data["idle_until"])),
        bool(data.get("about_health")),
    )


def _deadline(clock: Clock, stamp: float) -> float:
    """A persisted deadline as a monotonic instant: unlike a past event, it may lie ahead."""
    return clock.monotonic() + (stamp - clock.wall())


def saved_state(clock: Clock, lane: Lane) -> Write:
    """The write that remembers a lane's state and what it started."""
    state = _restamp(lane.state, lambda t: to_wall(clock, t))
    return save_state(lane.name, state, lane.started, clock.wall())


def saved_intent(clock: Clock, lane: Lane, action: str, trigger: Trigger) -> Write:
    """The write that remembers an action is wanted, so a restart of the remediator takes it up."""
    data = dataclasses.asdict(trigger)
    data["failed_at"] = to_wall(clock, trigger.failed_at)
    if trigger.idle_until is not None:
        data["idle_until"] = to_wall(clock, trigger.idle_until)
    return put_intent(lane.name, action, data, clock.wall())
