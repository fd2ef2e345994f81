"""What an earlier run left becomes in this one, decided purely: states, intents, interruptions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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


@dataclass
class Carried:
    """One component as an earlier run left it, on this run's clock."""

    state: ComponentState = field(default_factory=ComponentState)
    started: Started | None = None
    last_action_at: float | None = None  # wall clock
    wanted: dict[str, Trigger] = field(default_factory=dict)


@dataclass
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
    lanes: dict[str, Carried] = {}
    for name in allowed:
        state, started = snap.states.get(name, (ComponentState(), None))
        lanes[name] = Carried(state_from_wall(clock, state), started, snap.last_actions.get(name))
    writes: list[Write] = []
    reopened: set[Key] = set()
    for name, intents in snap.intents.items():
        for action, data in intents.items():
            if action not in allowed.get(name, ()):
                writes.append(drop_intent(name, action))
                continue
            trigger = replace(trigger_from_wall(clock, data), recheck=action == "restart")
            lanes[name].wanted[action] = trigger
            reopened.add(trigger.key)
    retries: list[Unfinished] = []
    for left in snap.unfinished:
        writes.append(finish_action(left.id, wall, wall - left.started_at, interrupted()))
        carried = lanes.get(left.component)
        if carried is None or left.action != "restart":
            continue
        began = from_wall(clock, left.started_at)
        carried.state = policy.after_restart(
            carried.state,
            budget,
            failed_at=began,
            started=began,
            finished=now,
            ending="interrupted",
            origin=left.origin,
        )
        if policy.retries("interrupted", left.origin, earlier_run=True):
            retries.append(left)
    return Carryover(lanes, writes, reopened, retries, snap.unfinished, snap.next_action_id)
