"""What the remediator looks at when a waiting action's turn comes, before it acts: health again
after a cooldown, an idle engine for a planned restart, the incarnation for an alert's restart."""

from __future__ import annotations

from dataclasses import dataclass

from glyph_guard.remediator import incarnation, planning
from glyph_guard.remediator.acting import Runner
from glyph_guard.remediator.clock import Clock, from_wall
from glyph_guard.remediator.incarnation import Standing
from glyph_guard.remediator.lane import Lane, Trigger


@dataclass(frozen=True)
class Look:
    """What was found: act (with a note for the record), look again later, or nothing to do."""

    note: str | None = None  # what the record says (acted, or recovered)
    again: float | None = None  # not yet: look again then (monotonic)
    starting: str | None = None  # with again: a new incarnation is starting (recorded once)
    recovered: bool = False  # nothing to do: healthy again, or a new incarnation is


def guarded(action: str, trigger: Trigger) -> bool:
    """An alert's restart is judged against what is true now before it acts (a cooldown's
    recheck, about the incarnation the remediator just replaced, asks only for health)."""
    return action == "restart" and trigger.origin == "alert" and not trigger.recheck


async def look(
    runner: Runner, clock: Clock, lane: Lane, turn: tuple[str, Trigger], poll: float
) -> Look:
    """Look at the component before acting on its turn (poll: how often a planned restart reads
    whether the engine is idle)."""
    action, trigger = turn
    if trigger.recheck and await runner.recovered(lane, turn, clock.monotonic()):
        return Look(recovered=True)
    note = None
    if trigger.idle_until is not None:  # planned: idle, or its deadline
        idle = await runner.engine_idle(lane)
        when, again = planning.planned_turn(clock.monotonic(), trigger.idle_until, idle, poll)
        if when == "wait":
            return Look(again=again)
        note = planning.acted_note(when)
    if guarded(action, trigger):
        standing = await _standing(runner, clock, lane, turn)
        if standing.verdict == "wait":
            return Look(again=standing.not_before, starting=standing.detail)
        if standing.verdict == "recovered":
            return Look(standing.detail, recovered=True)
        note = "; ".join(n for n in (note, standing.detail) if n) or None
    return Look(note=note)


async def _standing(
    runner: Runner, clock: Clock, lane: Lane, turn: tuple[str, Trigger]
) -> Standing:
    """An alert's restart judged against the component as it is now (incarnation)."""
    trigger = turn[1]

    def started(wall: float | None) -> float | None:
        return None if wall is None else from_wall(clock, wall)

    def health_for(wall: float | None) -> incarnation.HealthLook:
        return incarnation.health_look(
            about_health=trigger.about_health,
            started_at=started(wall),
            failed_at=trigger.failed_at,
        )

    wall, healthy = await runner.observe(lane, turn, clock.monotonic(), health_for)
    return incarnation.judge_now(
        about_health=trigger.about_health,
        failed_at=trigger.failed_at,
        started_at=started(wall),
        healthy=healthy,
        allowance=lane.component.remediation.startup_timeout_seconds,
        now=clock.monotonic(),
    )
