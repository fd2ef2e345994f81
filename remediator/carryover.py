"""What an earlier run left becomes in this one, decided purely: states, intents, interruptions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from glyph_guard.common.config import Budget, Component
from glyph_guard.remediator import policy
from glyph_guard.remediator.actions.base import ActionResult, Started
from glyph_guard.remediator.clock import Clock, from_wall
from glyph_guard.remediator.codec import state_from_wall, trigger_from_wall
from glyph_guard.remediator.intake import Key
from glyph_guard.remediator.lane import Trigger
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.store.queries import Snapshot, Unfinished
from glyph_guard.remediator.store.records import Write, drop_intent, finish_action


def interrupted() -> ActionResult:
    """How an action ends when the remediator stops while it runs."""
    return ActionResult("interrupted", "the remediator stopped while acting")


@dataclass(frozen=True)
class Carried:
    """One component as an earlier run left it, on this run's clock."""

    state: ComponentState
    started: Started | None
    last_action_at: float | None  # wall clock
    wanted: dict[str, Trigger]


@dataclass(frozen=True)
class Carryover:
    """Everything this run takes up, and the records that close what the earlier one left."""

    lanes: dict[str, Carried]
    writes: list[Write]
    reopened: set[Key]  # alerts whose action an earlier run never finished
    retries: list[Unfinished]  # restarts it left unfinished, tried again
    interrupted: list[Unfinished]
    next_action_id: int


def carry_over(
    snap: Snapshot, components: Sequence[Component], budget: Budget, clock: Clock
) -> Carryover:
    """Restore each component; drop intents no longer allowed; close interrupted actions."""
    now, wall = clock.monotonic(), clock.wall()
    allowed = {c.name: c.remediation.actions for c in components}
    states = {
        name: state_from_wall(clock, snap.states.get(name, (ComponentState(), None))[0])
        for name in allowed
    }
    wanted: dict[str, dict[str, Trigger]] = {name: {} for name in allowed}
    writes: list[Write] = []
    reopened: set[Key] = set()
    for name, intents in snap.intents.items():
        for action, data in intents.items():
            if action not in allowed.get(name, ()):
                writes.append(drop_intent(name, action))
                continue
            trigger = replace(trigger_from_wall(clock, data), recheck=action == "restart")
            wanted[name][action] = trigger
            reopened.add(trigger.key)
    retries: list[Unfinished] = []
    for left in snap.unfinished:
        writes.append(finish_action(left.id, wall, wall - left.started_at, interrupted()))
        if left.component not in states or left.action != "restart":
            continue
        began = from_wall(clock, left.started_at)
        states[left.component] = policy.after_restart(
            states[left.component],
            budget,
            failed_at=began,
            started=began,
            finished=now,
            ending="interrupted",
            origin=left.origin,
        )
        if policy.retries("interrupted", left.origin, earlier_run=True):
            retries.append(left)
    lanes = {
        name: Carried(
            states[name],
            snap.states[name][1] if name in snap.states else None,
            snap.last_actions.get(name),
            wanted[name],
        )
        for name in allowed
    }
    return Carryover(lanes, writes, reopened, retries, snap.unfinished, snap.next_action_id)
