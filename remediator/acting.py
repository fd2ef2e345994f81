"""Actions run in the background: the backends' toolkit, the tasks, and an end for every action."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from glyph_guard.common.health import check
from glyph_guard.common.lineage import LineageBook
from glyph_guard.remediator.actions.base import ActionResult, Started, Toolkit
from glyph_guard.remediator.actions.dispatch import perform
from glyph_guard.remediator.actions.gpu import GpuHolders
from glyph_guard.remediator.actions.reset_gpu import GpuResetter
from glyph_guard.remediator.actions.verify import healthy_now, processes_now
from glyph_guard.remediator.carryover import interrupted
from glyph_guard.remediator.idleness import engine_idle
from glyph_guard.remediator.incarnation import GLANCE_SECONDS, HealthLook
from glyph_guard.remediator.lane import Lane, Running, Trigger

log = logging.getLogger("glyph_remediator")
HealthFor = Callable[[float | None], HealthLook]
Ended = Callable[[Lane, Running, ActionResult, "Started | None"], Awaitable[None]]


class Runner:
    """Runs each launched action once its records are written; reports how every one ended."""

    def __init__(
        self,
        log_dir: Path,
        gpu: GpuHolders,
        record_start: Callable[[str, Started], Awaitable[None]],
        ended: Ended,
        gpu_reset: GpuResetter | None = None,
    ) -> None:
        client = httpx.AsyncClient(trust_env=False)
        self._kit = Toolkit(client, log_dir, gpu, record_start=record_start, gpu_reset=gpu_reset)
        self._ended = ended
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def lineages(self) -> LineageBook:
        """The sessions and groups the components' processes lead (swept by restarts)."""
        return self._kit.lineages

    def spawn(self, lane: Lane, running: Running, persisted: asyncio.Future[bool]) -> None:
        task = asyncio.create_task(self._run(lane, running, persisted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, lane: Lane, running: Running, persisted: asyncio.Future[bool]) -> None:
        try:
            await asyncio.shield(persisted)  # intent and record first (or logged as failing)
            try:
                result, started = await perform(
                    lane.component, running.action, lane.started, self._kit
                )
            except asyncio.CancelledError:
                await self._ended(lane, running, interrupted(), lane.started)
                raise
            except Exception as exc:  # a backend bug must still end in a record
                log.exception(
                    "action %d (%s %s) failed unexpectedly",
                    *(running.action_id, running.action, lane.name),
                )
                result, started = ActionResult("failed", f"internal error: {exc!r}"), lane.started
            await self._ended(lane, running, result, started)
        finally:
            lane.finish(running)  # whatever was raised, the slot is freed

    async def recovered(self, lane: Lane, turn: tuple[str, Trigger], now: float) -> bool:
        """Whether the component is healthy now, holding its slot: alerts meanwhile coalesce."""
        checking = lane.launch(*turn, None, now)
        try:
            return await healthy_now(self._kit.client, lane.component)
        finally:
            lane.finish(checking)

    async def engine_idle(self, lane: Lane) -> bool | None:
        """Whether the component's engine is idle now (None: its metrics cannot be read)."""
        return await engine_idle(self._kit.client, lane.component)

    async def observe(
        self, lane: Lane, turn: tuple[str, Trigger], now: float, health_for: HealthFor
    ) -> tuple[float | None, bool]:
        """When the component's running processes started (wall clock; None: none runs) and,
        as health_for says for that time, whether it is healthy now; holding its slot."""
        checking = lane.launch(*turn, None, now)
        try:
            started = (await processes_now(lane.component)).start_time
            how = health_for(started)
            if how == "none":
                return started, False
            glance = GLANCE_SECONDS if how == "glance" else None
            health, _ = await check(self._kit.client, lane.component, glance=glance)
            return started, health.healthy
        finally:
            lane.finish(checking)

    async def stop(self) -> None:
        """Interrupt what runs (each still ends in a record), then close the client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._kit.client.aclose()
