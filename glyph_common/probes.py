"""Running a component's HTTP probes and canary completions (the httpx adapter)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from glyph_common.config import Component, Probe

CANARY_PROMPT = "ping"


@dataclass(frozen=True)
class ProbeResult:
    """One probe attempt."""

    component: str
    probe: str
    success: bool
    duration_seconds: float
    status: int | None  # None when no HTTP response came back
    error: str | None = None


def canary_body(probe: Probe) -> dict[str, Any]:
    """The smallest real request: one token, so a hung engine cannot hide behind /health."""
    return {
        "model": probe.model,
        "messages": [{"role": "user", "content": CANARY_PROMPT}],
        "max_tokens": 1,
        "temperature": 0,
        "stream": False,
    }


def _canary_answered(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("choices"))


async def run_probe(client: httpx.AsyncClient, component: Component, probe: Probe) -> ProbeResult:
    """Run one probe; its timeout bounds the whole exchange, not just each read."""
    url = component.base_url() + probe.path
    body = canary_body(probe) if probe.kind == "canary" else None
    started = time.perf_counter()
    status: int | None = None
    try:
        response = await asyncio.wait_for(
            client.request(probe.method, url, json=body, timeout=probe.timeout_seconds),
            probe.timeout_seconds,
        )
        status = response.status_code
        success = status in probe.expect_status and (
            probe.kind != "canary" or _canary_answered(response)
        )
        error = None if success else f"unexpected answer (HTTP {status})"
    except (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException):
        success, error = False, f"timed out after {probe.timeout_seconds:g} s"
    except httpx.HTTPError as exc:
        success, error = False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ProbeResult(
        component.name, probe.name, success, time.perf_counter() - started, status, error
    )


async def all_healthy(client: httpx.AsyncClient, component: Component) -> bool:
    """True when every enabled probe of the component succeeds now."""
    probes = [p for p in component.probes if p.enabled]
    results = await asyncio.gather(*(run_probe(client, component, p) for p in probes))
    return all(r.success for r in results)
