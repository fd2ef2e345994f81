"""Engine progress: read each component's engine metrics, and time work left without a step."""

from __future__ import annotations

import threading
from dataclasses import replace

import httpx

from glyph_guard.common.config import Component
from glyph_guard.common.enginemetrics import EngineReading
from glyph_guard.common.probes import read_engine, read_server_load
from glyph_guard.exporter.snapshot import EngineProgress

LOAD_RETRY_SECONDS = 60.0  # how long a /load that is not served is left alone


class StallClock:
    """How long the engine has had work (requests waiting or running) without making a step;
    0 while idle, asleep or progressing. Steps are seen at the read cadence, so the figure is
    a lower bound by up to one read interval."""

    def __init__(self) -> None:
        self._steps: float | None = None
        self._since: float | None = None

    def observe(self, reading: EngineReading, now: float) -> float | None:
        """None when the engine publishes no step counter (nothing can be said)."""
        if reading.steps is None:
            self._steps = self._since = None
            return None
        stepped = reading.steps != self._steps  # a restart resets the counter: also a change
        self._steps = reading.steps
        if not reading.has_work or reading.asleep:
            self._since = None
            return 0.0
        if stepped or self._since is None:
            self._since = now
        return now - self._since


class EngineWatch:
    """One component's engine endpoint; an unreadable endpoint is a state, never an error."""

    def __init__(self, component: Component) -> None:
        assert component.engine is not None
        self._component = component
        self.component = component.name
        self._load_unserved_at: float | None = None
        self._clock = StallClock()
        self._errors = 0
        self._observed = float("-inf")
        self._lock = threading.Lock()  # the engine loop and a failed canary both read
        self.latest = EngineProgress(component.name)

    async def read(self, client: httpx.AsyncClient, now: float) -> EngineProgress:
        """Read the engine's metrics (glyph_guard.common.probes.read_engine) and time them."""
        reading = await read_engine(client, self._component)
        if reading is not None:
            reading = replace(reading, held=await self._held(client, now))
        with self._lock:
            if now >= self._observed:  # a read that started earlier but ended later is stale
                self._observed = now
                self.latest = self._observe(reading, now)
            return self.latest

    def _observe(self, reading: EngineReading | None, now: float) -> EngineProgress:
        if reading is None:
            self._errors += 1
            return EngineProgress(self.component, readable=False, read_errors=self._errors)
        return EngineProgress(
            self.component,
            readable=True,
            read_errors=self._errors,
            waiting=reading.waiting,
            running=reading.running,
            steps=reading.steps,
            generation_tokens=reading.generation_tokens,
            stalled_seconds=self._clock.observe(reading, now),
            asleep=reading.asleep,
        )

    async def _held(self, client: httpx.AsyncClient, now: float) -> float | None:
        """Requests the API holds, from /load; None (and not asked again for a while) when
        the server does not serve it."""
        unserved = self._load_unserved_at
        if unserved is not None and now - unserved < LOAD_RETRY_SECONDS:
            return None
        status, held = await read_server_load(client, self._component)
        self._load_unserved_at = now if status in (404, 405) else None
        return held
