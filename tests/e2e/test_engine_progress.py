"""End to end, engine progress: one stack (real Prometheus and Alertmanager, the shipped rules,
the stand-in imitating current vLLM) through sleep, a busy engine with slow prefills, a hang
with a user request in flight and an engine death answered 503."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from glyph_guard_demo.stack.scenario import StackReader, run_scenario, wait_healthy
from glyph_guard_demo.testkit.stack_fixtures import (
    local_stack,
    standin_deployment,
    wait_cooldown_over,
)
from glyph_guard_demo.testkit.standin_fixtures import STANDIN
from glyph_guard_demo.testkit.support import spawned, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HUNG = "GlyphComponentHung"


def restarts(probe: StackReader) -> list[dict[str, object]]:
    return [a for a in probe.actions("api") if a["action"] == "restart"]


def quiet(probe: StackReader, seconds: float) -> None:
    """No restart, and no hang or stuck start-up alert firing, over the last `seconds`."""
    assert restarts(probe) == [], probe.decisions("api")
    for alertname in (HUNG, "GlyphComponentStuckStarting", "GlyphComponentUnhealthy"):
        assert probe.firing_seconds(alertname, "api", seconds) == 0, alertname


def engine_value(probe: StackReader, name: str) -> float:
    return probe.exporter_value(name, "api") or 0.0


def asleep_throughout(probe: StackReader, seconds: float) -> bool:
    """Every scrape of the exporter in the last `seconds` says the api's engine sleeps."""
    query = f'min_over_time(glyph_engine_asleep{{component="api"}}[{round(seconds)}s])'
    url = f"{probe.stack.urls['prometheus']}/api/v1/query"
    result = probe.client.get(url, params={"query": query}).json()["data"]["result"]
    return bool(result) and float(result[0]["value"][1]) == 1


def test_sleep_busy_hang_with_a_request_and_death_503(tmp_path: Path) -> None:
    config = standin_deployment(tmp_path, api_args=("--vllm-generation", "current"))
    with local_stack(tmp_path, config) as (stack, probe):
        api = stack.config.component("api")
        assert api is not None
        url = api.base_url()
        wait_healthy(probe, "api")

        # Asleep on purpose: requests wait (as in vLLM 0.32), the canary is not asked, nothing
        # restarts.
        began = time.time()
        httpx.post(f"{url}/sleep", params={"level": 1}, timeout=5).raise_for_status()
        wait_for(lambda: probe.exporter_value("glyph_engine_asleep", "api") == 1, 10)
        body = {"model": "glyph", "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(httpx.ReadTimeout):  # as in vLLM: it waits for the engine to wake
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=2)
        # Every scrape for longer than a canary interval says asleep: a canary came due.
        window = stack.config.exporter.intervals.canary + 2
        wait_for(lambda: asleep_throughout(probe, window), window + 60, interval=0.5)
        assert probe.healthy("api"), "a sleeping engine is healthy: its canary does not count"
        quiet(probe, time.time() - began)
        httpx.post(f"{url}/wake_up", timeout=5).raise_for_status()
        wait_for(lambda: probe.exporter_value("glyph_engine_asleep", "api") == 0, 10)
        assert probe.exporter_value("glyph_probe_consecutive_failures", "api", probe="canary") == 0

        # Busy: long generations, bursts, and prefill steps of 6 s (under the 10 s stall limit).
        began = time.time()
        steps = probe.exporter_value("glyph_engine_steps_total", "api") or 0.0
        load = [*STANDIN, "load", "--url", url, "--concurrency", "3", "--max-tokens", "300"]
        load += ["--duration", "20", "--burst-every", "6", "--burst-size", "6"]
        with spawned(load, stdout=subprocess.PIPE, text=True) as generator:
            wait_for(lambda: engine_value(probe, "glyph_engine_requests_running") > 0, 30)
            fault = {"fault": "slow_prefill", "seconds": 6}
            httpx.post(f"{url}/admin/fault", json=fault, timeout=5).raise_for_status()
            # A slow step under way (the stall clock runs), then over: it made a step.
            wait_for(lambda: engine_value(probe, "glyph_engine_stalled_seconds") >= 3, 30)
            slow = engine_value(probe, "glyph_engine_steps_total")
            wait_for(lambda: engine_value(probe, "glyph_engine_steps_total") > slow, 30)
            fault = {"fault": "slow_prefill", "seconds": 0}
            httpx.post(f"{url}/admin/fault", json=fault, timeout=5).raise_for_status()
            out, _ = generator.proc.communicate(timeout=120)
        assert generator.proc.returncode == 0, out
        assert (probe.exporter_value("glyph_engine_steps_total", "api") or 0) > steps + 100
        quiet(probe, time.time() - began)

        # A user request sent to a hung engine: the stall clock, not the canary, catches it.
        timeline = run_scenario(stack, "hang-request")
        assert timeline.outcome == "succeeded", timeline.lines()
        acted = [d for d in probe.decisions("api") if d["verdict"] == "acted"]
        assert [d["alertname"] for d in acted] == [HUNG]
        wait_cooldown_over(probe, "api")  # an alert inside the cooldown is stale
        probe.reset("api")

        # Current vLLM: a dead engine answers /health 503 (EngineDeadError) until the API exits.
        wait_healthy(probe, "api")
        done = len([a for a in restarts(probe) if a["outcome"] == "succeeded"])
        httpx.post(f"{url}/admin/fault", json={"fault": "engine_death"}, timeout=5)
        wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 503, 5)
        wait_for(
            lambda: len([a for a in restarts(probe) if a["outcome"] == "succeeded"]) > done, 90
        )
        wait_healthy(probe, "api")
