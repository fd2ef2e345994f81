"""What "healthy" means, once: every enabled probe of the kinds that count passes its own
expect_status within its timeout; a canary is struck out only after CANARY_STRIKES failures in
a row, and does not count while the engine sleeps on purpose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from glyph_guard.common.config import Component, Probe
from glyph_guard.common.probes import (
    AnswerRefused,
    ProbeResult,
    fetch_capped,
    read_engine,
    run_probe,
)

MODELS_PATH = "/v1/models"
# A canary that fails is asked again at once, up to this many times in all: one slow answer (a
# busy host, a GC pause) never restarts anything, and a hang is still reported one canary
# timeout later rather than one canary interval later. The exporter publishes it
# (glyph_canary_strikes) and the hang rule compares against that gauge.
CANARY_STRIKES = 2


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


def health_of(component: Component, passed: Mapping[str, bool], *, asleep: bool = False) -> Health:
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


def with_model(probe: Probe, model: str | None) -> Probe:
    """The canary asking for the served model when the config names none."""
    if probe.kind != "canary" or probe.model is not None or model is None:
        return probe
    return probe.model_copy(update={"model": model})


async def discover_model(client: httpx.AsyncClient, component: Component) -> str | None:
    """The model the component serves, from its /v1/models (None when it does not say)."""
    timeout = component.engine.timeout_seconds if component.engine else 2.0
    try:
        body = await fetch_capped(client, component.base_url() + MODELS_PATH, timeout)
    except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError, AnswerRefused):
        return None
    return served_model(body)


async def engine_asleep(client: httpx.AsyncClient, component: Component) -> bool:
    """Whether the component's engine sleeps on purpose; an unreadable engine does not."""
    reading = await read_engine(client, component)
    return reading is not None and reading.asleep


class ServedModels:
    """The model each component served to its last successful canary, so that a canary does
    not ask /v1/models every time; forgotten on a failure (a restart may serve another)."""

    def __init__(self) -> None:
        self._models: dict[str, str] = {}

    async def canary_for(
        self, client: httpx.AsyncClient, component: Component, probe: Probe
    ) -> Probe:
        """The canary, asking for the configured, remembered or discovered model."""
        model = probe.model or self._models.get(component.name)
        if model is None:
            model = await discover_model(client, component)
        return with_model(probe, model)

    def remember(self, result: ProbeResult, probe: Probe) -> None:
        if result.success and probe.model is not None:
            self._models[result.component] = probe.model
        else:
            self._models.pop(result.component, None)


Asleep = Callable[[], Awaitable[bool]]


async def canary_strikes(
    client: httpx.AsyncClient,
    component: Component,
    probe: Probe,
    models: ServedModels,
    asleep: Asleep,
    *,
    strikes: int = CANARY_STRIKES,
) -> AsyncIterator[ProbeResult]:
    """Each attempt of one canary round: up to `strikes`, stopping at the first success.
    A failure while the engine sleeps (asleep() is asked after it) is no observation: the
    round ends without it."""
    for _ in range(strikes):
        asked = await models.canary_for(client, component, probe)
        result = await run_probe(client, component, asked)
        models.remember(result, asked)
        if not result.success and await asleep():
            return
        yield result
        if result.success:
            return


async def _last_strike(
    client: httpx.AsyncClient,
    component: Component,
    probe: Probe,
    models: ServedModels,
    strikes: int,
) -> ProbeResult | None:
    async def asleep() -> bool:
        return await engine_asleep(client, component)

    last = None
    async for result in canary_strikes(client, component, probe, models, asleep, strikes=strikes):
        last = result
    return last


async def check(
    client: httpx.AsyncClient,
    component: Component,
    models: ServedModels | None = None,
    *,
    glance: float | None = None,
) -> tuple[Health, list[ProbeResult]]:
    """Probe the component now (async) and judge it; a canary gets its strikes.

    glance: one attempt per probe, each within that many seconds at most (what the remediator
    looks at before acting on an alert: answering that fast is healthy again; a slower answer
    leaves the alert standing, as it stood without the look).
    """
    models = models or ServedModels()
    asleep = await engine_asleep(client, component)
    probes = counted_probes(component, asleep=asleep)
    strikes = CANARY_STRIKES
    if glance is not None:
        strikes = 1
        probes = tuple(
            p.model_copy(update={"timeout_seconds": min(p.timeout_seconds, glance)}) for p in probes
        )
    asked = await asyncio.gather(
        *(
            _last_strike(client, component, p, models, strikes)
            if p.kind == "canary"
            else run_probe(client, component, p)
            for p in probes
        )
    )
    results = [r for r in asked if r is not None]
    # A canary round that ended without a result: the engine was put to sleep meanwhile.
    asleep = asleep or any(r is None for r in asked)
    return health_of(component, {r.probe: r.success for r in results}, asleep=asleep), results


def check_blocking(component: Component) -> tuple[Health, list[ProbeResult]]:
    """Probe the component now and judge it, from code that does not run an event loop."""

    async def once() -> tuple[Health, list[ProbeResult]]:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await check(client, component)

    return asyncio.run(once())
