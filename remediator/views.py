"""The operator views over the running engine: status reports, explanations and history."""

from __future__ import annotations

import asyncio

import httpx

from glyph_guard.remediator import policy
from glyph_guard.remediator.actions.verify import healthy_now
from glyph_guard.remediator.clock import to_wall
from glyph_guard.remediator.engine import Engine, Worker
from glyph_guard.remediator.explain import explain
from glyph_guard.remediator.history import incidents
from glyph_guard.remediator.models import (
    ActionRecord,
    ComponentReport,
    Explanation,
    Health,
    Incident,
    WaitingAction,
)
from glyph_guard.remediator.report import Turn, Waiting, backoff_seconds, turn, waiting_turns
from glyph_guard.remediator.store import StoreFault

RECORD_ROWS = 1000  # the most decisions (and actions) a view reads


def _wall(engine: Engine, instant: float | None) -> float | None:
    return None if instant is None else to_wall(engine.clock, instant)


def _next_alert_turn(engine: Engine, worker: Worker) -> Turn:
    """What an alert arriving now would get (its failure beginning now), times in wall clock."""
    now = engine.clock.monotonic()
    allowed = worker.component.remediation.actions
    action = "restart" if "restart" in allowed else allowed[0] if allowed else "restart"
    got = turn(
        worker.state,
        engine.budget,
        now,
        action,
        origin="alert",
        dry_run=engine.dry_run,
        failed_at=now,
    )
    return Turn(got.verdict, got.reason, _wall(engine, got.at))


async def report(
    engine: Engine, worker: Worker, client: httpx.AsyncClient | None
) -> ComponentReport:
    """The component's status, what waits and until when; its health when a client is given."""
    now = engine.clock.monotonic()
    state = worker.state
    waiting = {a: Waiting(t.origin, t.failed_at) for a, t in worker.wanted.items()}
    turns = waiting_turns(
        state, engine.budget, now, waiting, busy=worker.busy, dry_run=engine.dry_run
    )
    upcoming = _next_alert_turn(engine, worker)
    last = None
    try:
        rows = await engine.store.actions(worker.name, 1)
        last = ActionRecord.model_validate(rows[0]) if rows else None
    except StoreFault:
        pass  # logged and counted by the store; the rest of the status still answers
    health: Health | None = None
    if client is not None:
        health = "healthy" if await healthy_now(client, worker.component) else "unhealthy"
    return ComponentReport(
        **engine.status(worker).model_dump(),
        paused_until=state.paused_until if state.paused else None,
        pause_reason=state.pause_reason if state.paused else None,
        failed_restarts=policy.current_failures(state, engine.budget, now),
        backoff_seconds=backoff_seconds(state, engine.budget, now),
        next_restart_at=upcoming.at if upcoming.verdict == "wait" else None,
        waiting_for=[
            WaitingAction(
                action=action,
                origin=waiting[action].origin,
                reason="ready" if t.verdict == "act" else str(t.reason),
                until=_wall(engine, t.at),
            )
            for action, t in turns.items()
        ],
        health=health,
        last_action=last,
    )


async def reports(engine: Engine, workers: list[Worker], probe: bool) -> list[ComponentReport]:
    """Reports of the components, probed together when asked."""
    if not probe:
        return [await report(engine, w, None) for w in workers]
    async with httpx.AsyncClient(trust_env=False) as client:
        return list(await asyncio.gather(*(report(engine, w, client) for w in workers)))


async def explanation(engine: Engine, worker: Worker) -> Explanation:
    """Why the component's last alert did or did not act; StoreFault when the record fails."""
    decisions = await engine.store.decisions(worker.name, RECORD_ROWS)
    actions = {a["id"]: a for a in await engine.store.actions(worker.name, RECORD_ROWS)}
    upcoming = _next_alert_turn(engine, worker)
    paused_until = worker.state.paused_until if worker.state.paused else None
    return explain(
        worker.name, decisions, actions, upcoming, paused_until=paused_until, busy=worker.busy
    )


async def history(
    engine: Engine, component: str | None, since_seconds: float | None
) -> list[Incident]:
    """The recent record as incidents, oldest first; StoreFault when the record fails."""
    decisions = await engine.store.decisions(component, RECORD_ROWS)
    actions = {a["id"]: a for a in await engine.store.actions(component, RECORD_ROWS)}
    since = None if since_seconds is None else engine.clock.wall() - since_seconds
    return incidents(decisions, actions, since)
