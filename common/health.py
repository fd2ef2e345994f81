"""What "healthy" means, once: every enabled probe of the kinds that count passes its own
expect_status within its timeout; a canary does not count while the engine sleeps on purpose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from glyph_guard.common.config import Component, Probe
from glyph_guard.common.enginemetrics import parse_engine_metrics
from glyph_guard.common.probes import AnswerRefused, ProbeResult, read_capped, run_probe

MODELS_PATH = "/v1/models"


@dataclass(frozen=True)
class Health:
    """A verdict on one component, with the probes that failed (in config order)."""

    healthy: bool
    failing: tuple[str, ...] = ()
    asleep: bool = False


def counted_probes(component: Component, *, asleep: bool = False) -> tuple[Probe, ...]:
    """The probes whose outcome decides health: enabled ones; a canary only while awake
    (a sleeping vLLM engine fails requests by design)."""
    return tuple(p for p in component.probes if p.enabled and not (asleep and p.kind == "canary"))


def judge(component: Component, passed: Mapping[str, bool], *, asleep: bool = False) -> Health:
    """Healthy when every counted probe passed; a probe without a result has not passed."""
    failing = tuple(
        p.name for p in counted_probes(component, asleep=asleep) if not passed.get(p.name)
    )
    return Health(not failing, failing, asleep)


def served_model(body: bytes) -> str | None:
    """The first model id of an OpenAI /v1/models answer; None when there is none."""
    try:
        data = json.loads(body).get("data")
        model = data[0]["id"] if isinstance(data, list) and data else None
    except (ValueError, AttributeError, LookupError, TypeError):
        return None
    return model if isinstance(model, str) and model else None


def engine_asleep(body: bytes) -> bool:
    """Whether the engine's metrics say it sleeps; an unreadable exposition says it does not."""
    try:
        return parse_engine_metrics(body.decode("utf-8", "replace")).asleep
    except ValueError:
        return False


def with_model(probe: Probe, model: str | None) -> Probe:
    """The canary asking for the served model when the config names none."""
    if probe.kind != "canary" or probe.model is not None or model is None:
        return probe
    return probe.model_copy(update={"model": model})


async def _get(client: httpx.AsyncClient, url: str, timeout: float) -> bytes | None:
    """A 200 answer's body, read as a probe reads one (capped, one deadline); None otherwise."""

    async def fetch() -> bytes | None:
        headers = {"Accept-Encoding": "identity"}
        async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
            return await read_capped(response) if response.status_code == 200 else None

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError, AnswerRefused):
        return None


def _timeout(component: Component) -> float:
    return component.engine.timeout_seconds if component.engine else 2.0


def _needs_model(component: Component) -> bool:
    return any(p.kind == "canary" and p.model is None for p in counted_probes(component))


async def discover_model(client: httpx.AsyncClient, component: Component) -> str | None:
    """The model the component serves, from its /v1/models (None when it does not say)."""
    body = await _get(client, component.base_url() + MODELS_PATH, _timeout(component))
    return served_model(body) if body is not None else None


async def _asleep(client: httpx.AsyncClient, component: Component) -> bool:
    if component.engine is None:
        return False
    body = await _get(client, component.base_url() + component.engine.path, _timeout(component))
    return body is not None and engine_asleep(body)


async def check(
    client: httpx.AsyncClient, component: Component
) -> tuple[Health, list[ProbeResult]]:
    """Probe the component now (async) and judge it."""
    asleep = await _asleep(client, component)
    model = await discover_model(client, component) if _needs_model(component) else None
    probes = [with_model(p, model) for p in counted_probes(component, asleep=asleep)]
    results = list(await asyncio.gather(*(run_probe(client, component, p) for p in probes)))
    return judge(component, {r.probe: r.success for r in results}, asleep=asleep), results


def check_blocking(component: Component) -> tuple[Health, list[ProbeResult]]:
    """Probe the component now and judge it, from code that does not run an event loop."""

    async def once() -> tuple[Health, list[ProbeResult]]:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await check(client, component)

    return asyncio.run(once())
