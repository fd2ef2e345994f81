"""The operator views over the running orchestrator: status reports, explanations and history."""

from __future__ import annotations

import asyncio

import httpx

from glyph_guard.remediator import policy
from glyph_guard.remediator.actions.verify import healthy_now
from glyph_guard.remediator.clock import to_wall
from glyph_guard.remediator.explain import explain
from glyph_guard.remediator.history import incidents
from glyph_guard.remediator.lane import Lane
from glyph_guard.remediator.models import (
    ActionRecord,
    ComponentReport,
    Explanation,
    Health,
    Incident,
    WaitingAction,
)
from glyph_guard.remediator.orchestrator import Orchestrator
from glyph_guard.remediator.report import Turn, Waiting, backoff_seconds, turn, waiting_turns
from glyph_guard.remediator.store import queries
from glyph_guard.remediator.store.database import StoreFault

RECORD_ROWS = 1000  # the most decisions (and actions) a view reads


def _wall(orchestrator: Orchestrator, instant: float | None) -> float | None:
    return None if instant is None else to_wall(orchestrator.clock, instant)


def _next_alert_turn(orchestrator: Orchestrator, lane: Lane) -> Turn:
    """What an alert arriving now would get (its failure beginning now), times in wall clock."""
    now = orchestrator.clock.monotonic()
    allowed = lane.component.remediation.actions
    action = "restart" if "restart" in allowed else allowed[0] if allowed else "restart"
    got = turn(
        lane.state,
        orchestrator.budget,
        now,
        action,
        origin="alert",
        dry_run=orchestrator.dry_run,
        failed_at=now,
    )
    return Turn(got.verdict, got.reason, _wall(orchestrator, got.at))


async def report(
    orchestrator: Orchestrator, lane: Lane, client: httpx.AsyncClient | None
) -> ComponentReport:
    """The component's status, what waits and until when; its health when a client is given."""
    now = orchestrator.clock.monotonic()
    state = lane.state
    waiting = {a: Waiting(t.origin, t.failed_at, t.idle_until) for a, t in lane.wanted.items()}
    turns = waiting_turns(
        state, orchestrator.budget, now, waiting, busy=lane.busy, dry_run=orchestrator.dry_run
    )
    upcoming = _next_alert_turn(orchestrator, lane)
    last = None
    try:
        rows = await orchestrator.store.read(queries.actions(lane.name, 1))
        last = ActionRecord.model_validate(rows[0]) if rows else None
    except StoreFault:
        pass  # logged and counted by the store; the rest of the status still answers
    health: Health | None = None
    if client is not None:
        health = "healthy" if await healthy_now(client, lane.component) else "unhealthy"
    return ComponentReport(
        **orchestrator.status(lane).model_dump(),
        paused_until=state.paused_until if state.paused else None,
        pause_reason=state.pause_reason if state.paused else None,
        failed_restarts=policy.current_failures(state, orchestrator.budget, now),
        backoff_seconds=backoff_seconds(state, orchestrator.budget, now),
        next_restart_at=upcoming.at if upcoming.verdict == "wait" else None,
        waiting_for=[
            WaitingAction(
                action=action,
                origin=waiting[action].origin,
                reason="ready" if t.verdict == "act" else str(t.reason),
                until=_wall(orchestrator, t.at),
            )
            for action, t in turns.items()
        ],
        health=health,
        last_action=last,
    )


async def reports(
    orchestrator: Orchestrator, lanes: list[Lane], probe: bool
) -> list[ComponentReport]:
    """Reports of the components, probed together when asked."""
    if not probe:
        return [await report(orchestrator, w, None) for w in lanes]
    async with httpx.AsyncClient(trust_env=False) as client:
        return list(await asyncio.gather(*(report(orchestrator, w, client) for w in lanes)))


async def explanation(orchestrator: Orchestrator, lane: Lane) -> Explanation:
    """Why the component's last alert did or did not act; StoreFault when the record fails."""
    decisions = await orchestrator.store.read(queries.decisions(lane.name, RECORD_ROWS))
    actions = {
        a["id"]: a for a in await orchestrator.store.read(queries.actions(lane.name, RECORD_ROWS))
    }
    upcoming = _next_alert_turn(orchestrator, lane)
    paused_until = lane.state.paused_until if lane.state.paused else None
    return explain(
        lane.name, decisions, actions, upcoming, paused_until=paused_until, busy=lane.busy
    )


async def history(
    orchestrator: Orchestrator, component: str | None, since_seconds: float | None
) -> list[Incident]:
    """The recent record as incidents, oldest first; StoreFault when the record fails."""
    decisions = await orchestrator.store.read(queries.decisions(component, RECORD_ROWS))
    actions = {
        a["id"]: a for a in await orchestrator.store.read(queries.actions(component, RECORD_ROWS))
    }
    since = None if since_seconds is None else orchestrator.clock.wall() - since_seconds
    return incidents(decisions, actions, since)
