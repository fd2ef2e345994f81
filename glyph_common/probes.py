"""Running a component's HTTP probes and canary completions (the httpx adapter)."""

from __future__ import annotations

import asyncio
import json
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


MAX_BODY_BYTES = 1024 * 1024  # a probe judges at most this much of an answer


def _judge(probe: Probe, status: int, body: bytes) -> tuple[bool, str | None]:
    if status not in probe.expect_status:
        return False, f"unexpected answer (HTTP {status})"
    if probe.kind == "canary":
        try:
            answer = json.loads(body)
        except ValueError:
            return False, "the canary's answer is not JSON"
        if not (isinstance(answer, dict) and answer.get("choices")):
            return False, "the canary's answer has no choices"
    return True, None


def _failure(probe: Probe, exc: Exception) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException)):
        return f"timed out after {probe.timeout_seconds:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def probe_once(client: httpx.Client, component: Component, probe: Probe) -> ProbeResult:
    """Run one probe (blocking); its timeout bounds the whole exchange, not just each read."""
    started = time.perf_counter()
    deadline = started + probe.timeout_seconds
    body = canary_body(probe) if probe.kind == "canary" else None
    status: int | None = None
    try:
        with client.stream(
            probe.method,
            component.base_url() + probe.path,
            json=body,
            timeout=probe.timeout_seconds,
        ) as response:
            content = bytearray()
            for chunk in response.iter_bytes():
                if time.perf_counter() > deadline:
                    raise TimeoutError  # an answer trickling in forever
                content += chunk
                if len(content) >= MAX_BODY_BYTES:
                    break
            status = response.status_code
        success, error = _judge(probe, status, bytes(content))
    except (TimeoutError, httpx.HTTPError) as exc:
        success, error = False, _failure(probe, exc)
    return ProbeResult(
        component.name, probe.name, success, time.perf_counter() - started, status, error
    )


async def run_probe(client: httpx.AsyncClient, component: Component, probe: Probe) -> ProbeResult:
    """Run one probe (async); its timeout bounds the whole exchange, not just each read."""
    started = time.perf_counter()
    body = canary_body(probe) if probe.kind == "canary" else None
    status: int | None = None
    try:
        response = await asyncio.wait_for(
            client.request(
                probe.method,
                component.base_url() + probe.path,
                json=body,
                timeout=probe.timeout_seconds,
            ),
            probe.timeout_seconds,
        )
        status = response.status_code
        success, error = _judge(probe, status, response.content)
    except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError) as exc:
        success, error = False, _failure(probe, exc)
    return ProbeResult(
        component.name, probe.name, success, time.perf_counter() - started, status, error
    )
