"""The httpx adapter: a component's HTTP probes, canary completions and engine metrics, every
answer read through one capped, decompression-guarded reader."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

from glyph_guard.common.config import Component, Probe
from glyph_guard.common.enginemetrics import EngineReading, parse_engine_metrics, parse_server_load

CANARY_PROMPT = "ping"
log = logging.getLogger(__name__)

if importlib.util.find_spec("sniffio") is None:
    # httpcore looks for sniffio on every lock it creates, so each probe (a fresh connection)
    # paid for a failed import many times over; None in sys.modules makes that import fail at
    # once, the documented way, and httpcore assumes asyncio, as it did anyway.
    sys.modules["sniffio"] = None  # type: ignore[assignment]


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


MAX_BODY_BYTES = 1024 * 1024  # a probe judges at most this much of an answer, on the wire and
# decompressed alike; a larger answer fails the probe
LOAD_PATH = "/load"  # vLLM with --enable-server-load-tracking: requests the API holds
ENGINE_METRICS_MAX_BYTES = 8 * 1024 * 1024  # a vLLM exposition is some 100 KiB; more is not
# metrics (the exporter's progress and the remediator's sleep check read it alike)


class AnswerRefused(Exception):
    """An answer the probe will not read: too large, or compressed in a way it does not take."""

    status: int | None = None


def _check_answer(probe: Probe, status: int, body: bytes) -> tuple[bool, str | None]:
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


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for the answer's Content-Encoding, or None for an identity body."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise AnswerRefused(f"the answer is compressed with {encoding!r}, which a probe does not read")


async def read_capped(response: httpx.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, decompressed here (httpx would inflate it unbounded), capped both ways."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise AnswerRefused(f"the answer is larger than {limit} bytes ({length})")
    decoder = _decoder(response.headers.get("content-encoding", ""))
    wire = 0
    body = bytearray()
    async for chunk in response.aiter_raw():
        wire += len(chunk)
        if wire > limit:
            raise AnswerRefused(f"the answer is larger than {limit} bytes")
        if decoder is None:
            body += chunk
            continue
        try:
            body += decoder.decompress(chunk, limit + 1 - len(body))
        except zlib.error as exc:
            raise AnswerRefused(f"the answer's compressed body is broken: {exc}") from None
        if len(body) > limit or decoder.unconsumed_tail:
            raise AnswerRefused(f"the answer inflates to more than {limit} bytes")
    return bytes(body)


async def fetch_capped(
    client: httpx.AsyncClient, url: str, timeout: float, limit: int = MAX_BODY_BYTES
) -> bytes:
    """A 200 answer's body, read capped within one deadline (connect, headers and body);
    AnswerRefused for any other status, an httpx error or TimeoutError when it fails."""

    async def exchange() -> bytes:
        headers = {"Accept-Encoding": "identity"}
        async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                refused = AnswerRefused(f"answered HTTP {response.status_code}")
                refused.status = response.status_code
                raise refused
            return await read_capped(response, limit)

    return await asyncio.wait_for(exchange(), timeout)


async def read_engine(client: httpx.AsyncClient, component: Component) -> EngineReading | None:
    """One read of the component's engine metrics; None when it has no engine endpoint or
    the endpoint cannot be read (refused, timed out, not 200, too large, malformed)."""
    if component.engine is None:
        return None
    url = component.base_url() + component.engine.path
    try:
        body = await fetch_capped(
            client, url, component.engine.timeout_seconds, ENGINE_METRICS_MAX_BYTES
        )
        return parse_engine_metrics(body.decode("utf-8", "replace"))
    except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError, AnswerRefused, ValueError) as exc:
        log.debug("%s: engine metrics unreadable: %s", component.name, exc or type(exc).__name__)
        return None


async def read_server_load(
    client: httpx.AsyncClient, component: Component
) -> tuple[int | None, float | None]:
    """Requests the API holds (vLLM's GET /load, with --enable-server-load-tracking): the
    answer's status and the count; the count is None when the answer is not one."""
    if component.engine is None:
        return None, None
    url = component.base_url() + LOAD_PATH
    try:
        answer = await fetch_capped(client, url, component.engine.timeout_seconds)
        return 200, parse_server_load(answer)
    except AnswerRefused as exc:
        return exc.status, None
    except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError) as exc:
        log.debug("%s: %s unreadable: %s", component.name, LOAD_PATH, exc or type(exc).__name__)
        return None, None


async def _exchange(
    client: httpx.AsyncClient, component: Component, probe: Probe
) -> tuple[int, bytes]:
    body = canary_body(probe) if probe.kind == "canary" else None
    async with client.stream(
        probe.method,
        component.base_url() + probe.path,
        json=body,
        headers={"Accept-Encoding": "identity"},
        timeout=probe.timeout_seconds,
    ) as response:
        try:
            return response.status_code, await read_capped(response)
        except AnswerRefused as exc:
            exc.status = response.status_code
            raise


async def run_probe(client: httpx.AsyncClient, component: Component, probe: Probe) -> ProbeResult:
    """Run one probe; its timeout bounds the whole exchange (connect, headers and body)."""
    started = time.perf_counter()
    status: int | None = None
    try:
        code, content = await asyncio.wait_for(
            _exchange(client, component, probe), probe.timeout_seconds
        )
        status = code
        success, error = _check_answer(probe, code, content)
    except AnswerRefused as exc:
        status, success, error = exc.status, False, str(exc)
    except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError) as exc:
        success, error = False, _failure(probe, exc)
    return ProbeResult(
        component.name, probe.name, success, time.perf_counter() - started, status, error
    )
