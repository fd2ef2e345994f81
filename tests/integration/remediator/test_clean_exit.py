"""A clean exit (code 0) is down when nothing of the component is left running (vLLM exits 0
when its engine dies), and only a start script that daemonised leaves something behind."""

from __future__ import annotations

import asyncio
import sys

import httpx

from glyph_guard.common.config import Component, parse_config
from glyph_guard.remediator.actions.verify import Verification, verify
from glyph_guard_demo.testkit.doubles.harness import marker
from glyph_guard_demo.testkit.support import free_port, spawned


def component(mark: str) -> Component:
    body = {
        "match": {"cmdline": mark},
        "port": free_port(),  # nothing listens: the probe keeps failing
        "probes": [{"name": "health", "path": "/health", "timeout_seconds": 0.5}],
    }
    return parse_config({"components": {"api": body}}).components[0]


def verified(config: Component, timeout: float) -> Verification:
    async def run() -> Verification:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await verify(client, config, timeout, lambda: 0)

    return asyncio.run(run())


def test_a_clean_exit_with_nothing_left_fails_at_once() -> None:
    check = verified(component(marker()), 3600.0)  # not the startup timeout: the exit ends it
    assert not check.healthy and check.exit_code == 0
    assert "exited with code 0" in check.detail


def test_a_clean_exit_that_left_the_component_running_is_probed_on() -> None:
    mark = marker()
    with spawned([sys.executable, "-c", "import time; time.sleep(60)", mark]):
        check = verified(component(mark), 2.0)
    assert not check.healthy and check.exit_code is None
    assert "still failing" in check.detail
