"""The remediator's HTTP surface: the webhook, the record, metrics and operator switches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from glyph_guard.remediator import __version__
from glyph_guard.remediator.auth import Credentials, RequireAuth
from glyph_guard.remediator.bodylimit import BodyLimit
from glyph_guard.remediator.guard import RequestGuard
from glyph_guard.remediator.intake import Pause
from glyph_guard.remediator.lane import Conflict, Lane
from glyph_guard.remediator.models import (
    Accepted,
    ActionRecord,
    ComponentReport,
    DecisionRecord,
    Explanation,
    Incident,
    OperatorRestart,
    WebhookPayload,
)
from glyph_guard.remediator.orchestrator import Orchestrator
from glyph_guard.remediator.pauses import PauseCollector, PauseTimer
from glyph_guard.remediator.report import stamp
from glyph_guard.remediator.store import queries
from glyph_guard.remediator.store.database import StoreFault
from glyph_guard.remediator.views import explanation, history, reports

T = TypeVar("T")
OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/redoc"})
Limit = Annotated[int, Query(ge=1, le=1000, description="how many, newest first")]
Probe = Annotated[bool, Query(description="also probe each component's health now")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such component"}}
RECORD: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    503: {"description": "the state database cannot be read now (the remediator still acts)"},
}


def create_app(orchestrator: Orchestrator, credentials: Credentials) -> FastAPI:
    """Build the app; nothing runs until the server starts its lifespan."""

    pauses = PauseTimer(orchestrator)
    orchestrator.metrics.registry.register(
        PauseCollector(lambda: {name: w.state for name, w in orchestrator.lanes.items()})
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await orchestrator.start()
        pauses.start()
        try:
            yield
        finally:
            await pauses.stop()
            await orchestrator.stop()

    app = FastAPI(title="glyph-remediator", version=__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=orchestrator.config.remediator.max_body_bytes)
    app.add_middleware(RequireAuth, credentials=credentials, open_paths=OPEN_PATHS)
    settings = orchestrator.config.remediator
    app.add_middleware(
        RequestGuard,
        host_names=(settings.address[0], *settings.allowed_hosts),
        credentials_required=credentials.required,
        open_paths=OPEN_PATHS,
    )

    def lane_named(name: str) -> Lane:
        lane = orchestrator.lanes.get(name)
        if lane is None:
            raise HTTPException(404, f"no component named {name!r} in the config")
        return lane

    def component_filter(name: str | None) -> str | None:
        return None if name is None else lane_named(name).component.name

    async def from_store(query: Awaitable[T]) -> T:
        try:
            return await query
        except StoreFault as exc:
            raise HTTPException(503, f"{exc}; the remediator still acts") from None

    async def report_of(lane: Lane) -> ComponentReport:
        [found] = await reports(orchestrator, [lane], probe=False)
        return found

    @app.post("/alerts", status_code=202, response_model=Accepted)
    async def alerts(payload: WebhookPayload, request: Request) -> Accepted:
        """An Alertmanager webhook delivery: recorded and judged now, acted on in the background."""
        return Accepted(alerts=await orchestrator.receive(payload, await request.body()))

    @app.get("/actions", response_model=list[ActionRecord], responses=RECORD)
    async def actions(component: str | None = None, limit: Limit = 50) -> list[dict[str, Any]]:
        """Recent actions with timings and outcomes."""
        return await from_store(
            orchestrator.store.read(queries.actions(component_filter(component), limit))
        )

    @app.get("/decisions", response_model=list[DecisionRecord], responses=RECORD)
    async def decisions(component: str | None = None, limit: Limit = 50) -> list[dict[str, Any]]:
        """Recent judgements of alerts and operator requests, with the reason."""
        return await from_store(
            orchestrator.store.read(queries.decisions(component_filter(component), limit))
        )

    @app.get("/components", response_model=list[ComponentReport])
    async def components(probe: Probe = False) -> list[ComponentReport]:
        """Each component's remediation state, what waits and until when, its last action."""
        return await reports(orchestrator, list(orchestrator.lanes.values()), probe)

    @app.get("/components/{name}", response_model=ComponentReport, responses=NOT_FOUND)
    async def component(name: str, probe: Probe = False) -> ComponentReport:
        [found] = await reports(orchestrator, [lane_named(name)], probe)
        return found

    @app.get("/components/{name}/explain", response_model=Explanation, responses=RECORD)
    async def explain(name: str) -> Explanation:
        """Why the last alert on the component did or did not act, and when one would act next."""
        return await from_store(explanation(orchestrator, lane_named(name)))

    @app.get("/history", response_model=list[Incident], responses=RECORD)
    async def incidents(
        component: str | None = None,
        since_seconds: Annotated[float | None, Query(gt=0, description="this far back")] = None,
    ) -> list[Incident]:
        """The record as incidents (alert, decisions, actions and their outcome), oldest first."""
        return await from_store(history(orchestrator, component_filter(component), since_seconds))

    @app.post(
        "/components/{name}/restart",
        status_code=202,
        response_model=OperatorRestart,
        responses={**NOT_FOUND, 409: {"description": "busy, paused or not allowed"}},
    )
    async def restart(name: str) -> OperatorRestart:
        """A manual restart: recorded and single-flight; it does not wait for back-off."""
        lane = lane_named(name)
        try:
            verdict, reason, action_id = await orchestrator.operate(lane, "restart")
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from None
        return OperatorRestart(
            component=lane.component.name, verdict=verdict, reason=reason, action_id=action_id
        )

    @app.post("/components/{name}/pause", response_model=ComponentReport, responses=NOT_FOUND)
    async def pause_component(
        name: str,
        seconds: Annotated[
            float | None, Query(gt=0, le=366 * 86400, description="resume by itself after")
        ] = None,
        reason: Annotated[str | None, Query(max_length=200, description="shown to others")] = None,
    ) -> ComponentReport:
        """Pause remediation (maintenance), for good or for a while; it survives restarts."""
        lane = lane_named(name)
        until = None if seconds is None else orchestrator.clock.wall() + seconds
        ending = None if until is None else f"until {stamp(until)}"
        note = "; ".join(part for part in (reason, ending) if part) or None
        await orchestrator.operate(lane, "pause", pause=Pause(until, reason), note=note)
        pauses.changed()
        return await report_of(lane)

    @app.post("/components/{name}/{switch}", response_model=ComponentReport, responses=NOT_FOUND)
    async def switch(name: str, switch: Literal["resume", "reset"]) -> ComponentReport:
        """Resume remediation, or reset a give-up and the spent budget."""
        lane = lane_named(name)
        await orchestrator.operate(lane, switch)
        pauses.changed()
        return await report_of(lane)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(
            generate_latest(orchestrator.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return app
