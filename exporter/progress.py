"""Engine progress: read each component's engine metrics, and time work left without a step."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import httpx

from glyph_guard.common.config import Component
from glyph_guard.common.enginemetrics import EngineReading, parse_engine_metrics, parse_server_load
from glyph_guard.exporter.snapshot import EngineProgress

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024  # a vLLM exposition is some 100 KiB; more is not metrics
LOAD_PATH = "/load"  # vLLM with --enable-server-load-tracking: requests the API holds
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
        self.component = component.name
        self._url = component.base_url() + component.engine.path
        self._load_url = component.base_url() + LOAD_PATH
        self._load_unserved_at: float | None = None
        self._timeout = component.engine.timeout_seconds
        self._clock = StallClock()
        self._errors = 0
        self._lock = threading.Lock()  # the engine loop and a failed canary both read
        self.latest = EngineProgress(component.name)

    def read(self, client: httpx.Client, now: float) -> EngineProgress:
        with self._lock:
            return self._read(client, now)

    def _read(self, client: httpx.Client, now: float) -> EngineProgress:
        reading = self._fetch(client)
        if reading is not None:
            reading = replace(reading, held=self._held(client, now))
        if reading is None:
            self._errors += 1
            self.latest = EngineProgress(self.component, readable=False, read_errors=self._errors)
        else:
            self.latest = EngineProgress(
                self.component,
                readable=True,
                read_errors=self._errors,
                waiting=reading.waiting,
                running=reading.running,
                steps=reading.steps,
                stalled_seconds=self._clock.observe(reading, now),
                asleep=reading.asleep,
            )
        return self.latest

    def _held(self, client: httpx.Client, now: float) -> float | None:
        """Requests the API holds, from /load; None (and not asked again for a while) when
        the server does not serve it."""
        unserved = self._load_unserved_at
        if unserved is not None and now - unserved < LOAD_RETRY_SECONDS:
            return None
        try:
            response = client.get(self._load_url, timeout=self._timeout)
        except httpx.HTTPError:
            return None
        held = parse_server_load(response.content) if response.status_code == 200 else None
        self._load_unserved_at = now if response.status_code in (404, 405) else None
        return held

    def _fetch(self, client: httpx.Client) -> EngineReading | None:
        deadline = time.monotonic() + self._timeout
        try:
            with client.stream("GET", self._url, timeout=self._timeout) as response:
                if response.status_code != 200:
                    log.debug(
                        "%s: engine metrics answered %d", self.component, response.status_code
                    )
                    return None
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES or time.monotonic() > deadline:
                        return None
            return parse_engine_metrics(body.decode("utf-8", "replace"))
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("%s: engine metrics unreadable: %s", self.component, exc)
            return None
