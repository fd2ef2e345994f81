"""Waiting after a start until the component is healthy (glyph_guard.common.health)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from glyph_guard.common.config import Component
from glyph_guard.common.health import check
from glyph_guard.common.processes import ProcessTable, ProcessTree

POLL_SECONDS = 0.25
SETTLE_SECONDS = 1.0  # without probes: how long the started process must stay up


@dataclass(frozen=True)
class Verification:
    """Whether the component became healthy, how long it took, and why not."""

    healthy: bool
    seconds: float
    detail: str
    exit_code: int | None = None  # set when the started process failed before being healthy


def _no_exit() -> int | None:
    return None


async def verify(
    client: httpx.AsyncClient,
    component: Component,
    timeout: float,
    exit_code: Callable[[], int | None] = _no_exit,
) -> Verification:
    """Probe until healthy, the started process exits non-zero, or timeout seconds pass."""
    started = time.monotonic()
    if not any(p.enabled for p in component.probes):
        return await _settle(min(SETTLE_SECONDS, timeout), exit_code, component)
    while True:
        health, results = await check(client, component)
        elapsed = time.monotonic() - started
        failing = [r for r in results if not r.success]
        if health.healthy:
            asleep = " (the engine sleeps: its canary is not counted)" if health.asleep else ""
            return Verification(True, elapsed, f"all probes passed{asleep}")
        code = exit_code()
        if code is not None and await asyncio.to_thread(_ended, code, component):
            return Verification(False, elapsed, f"the start command exited with code {code}", code)
        if elapsed >= timeout:
            first = failing[0]
            return Verification(
                False,
                elapsed,
                f"probe {first.probe} still failing after {timeout:g} s: {first.error}",
            )
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, timeout - elapsed)))


def _ended(code: int, component: Component) -> bool:
    """A start that failed, or exited cleanly leaving no process of the component (vLLM exits
    with code 0 when its engine dies); a start script that daemonised leaves one running."""
    if code != 0:
        return True
    table = ProcessTable()
    table.refresh()
    return not table.find([component])[component.name].processes


async def _settle(
    seconds: float, exit_code: Callable[[], int | None], component: Component
) -> Verification:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        code = exit_code()
        if code is not None and await asyncio.to_thread(_ended, code, component):
            elapsed = time.monotonic() - started
            return Verification(False, elapsed, f"the start command exited with code {code}", code)
        await asyncio.sleep(POLL_SECONDS / 5)
    return Verification(
        True, seconds, f"no probes; the start command did not fail in {seconds:g} s"
    )


async def processes_now(component: Component) -> ProcessTree:
    """The component's processes, right now."""
    table = ProcessTable()
    await asyncio.to_thread(table.refresh)
    return (await asyncio.to_thread(table.find, [component]))[component.name]


async def healthy_now(client: httpx.AsyncClient, component: Component) -> bool:
    """The component has a process and is healthy, right now."""
    if not (await processes_now(component)).processes:
        return False
    health, _ = await check(client, component)
    return health.healthy
