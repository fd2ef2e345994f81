"""Whether a component's engine is idle now: nothing running or waiting in vLLM's own gauges
and no request held by its API (GET /load), read with the probes' engine reader."""

from __future__ import annotations

from dataclasses import replace

import httpx

from glyph_guard.common.config import Component
from glyph_guard.common.probes import read_engine, read_server_load


async def engine_idle(client: httpx.AsyncClient, component: Component) -> bool | None:
    """True when idle, False when busy, None when the engine's metrics cannot be read."""
    reading = await read_engine(client, component)
    if reading is None:
        return None
    _, held = await read_server_load(client, component)
    return not replace(reading, held=held).has_work
