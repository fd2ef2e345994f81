"""Operator pauses that end by themselves, and each pause's reason and end as metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from glyph_guard.remediator.metrics import PREFIX
from glyph_guard.remediator.orchestrator import Orchestrator
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.report import stamp

LONGEST_SLEEP = 60.0  # look again at least this often: the wall clock may be stepped meanwhile


def ended(states: Mapping[str, ComponentState], now: float) -> list[str]:
    """Components whose pause has an end that has come (now: wall clock)."""
    return [
        name
        for name, s in states.items()
        if s.paused and s.paused_until is not None and s.paused_until <= now
    ]


def next_end(states: Mapping[str, ComponentState]) -> float | None:
    """The earliest end of a pause still running (wall clock), or None."""
    ends = [s.paused_until for s in states.values() if s.paused and s.paused_until is not None]
    return min(ends) if ends else None


class PauseTimer:
    """Resumes each component whose pause has ended; woken when a pause is set."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _states(self) -> dict[str, ComponentState]:
        return {name: lane.state for name, lane in self.orchestrator.lanes.items()}

    def changed(self) -> None:
        """A pause was set or lifted: look at the ends again."""
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pause-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            for lane in self.orchestrator.lanes.values():
                until = lane.state.paused_until  # read again: an operator may act meanwhile
                if ended({lane.name: lane.state}, self.orchestrator.clock.wall()) and until:
                    note = f"the pause until {stamp(until)} ended"
                    await self.orchestrator.operate(lane, "resume", note=note)
            end = next_end(self._states())
            timeout = (
                LONGEST_SLEEP
                if end is None
                else min(LONGEST_SLEEP, max(0.0, end - self.orchestrator.clock.wall()))
            )
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)


class PauseCollector(Collector):
    """glyph_remediator_pause_info{component,reason} and the pause's end, while paused."""

    def __init__(self, states: Callable[[], Mapping[str, ComponentState]]) -> None:
        self._states = states

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily(
            PREFIX + "pause",
            "Present (1) while an operator pauses remediation of the component, with the reason.",
            labels=["component"],
        )
        until = GaugeMetricFamily(
            PREFIX + "paused_until_timestamp_seconds",
            "When the pause of the component ends by itself (0: not paused, or until resumed).",
            labels=["component"],
        )
        for name, state in self._states().items():
            if state.paused:
                info.add_metric([name], {"reason": state.pause_reason or ""})
            ends = state.paused_until if state.paused else None
            until.add_metric([name], ends or 0.0)
        yield info
        yield until
