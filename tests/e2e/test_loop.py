"""End to end: real Prometheus 2.42 and Alertmanager 0.25, the shipped rules and routes, the
stand-in service; each test breaks it and asserts on what really happened."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from glyph_guard.common.config import LeakSettings
from glyph_guard.common.processes import ProcessTable
from glyph_guard_demo.stack.scenario import run_scenario, wait_healthy
from glyph_guard_demo.testkit.stack_fixtures import (
    component_status,
    deliveries_judged,
    local_stack,
    standin_deployment,
)
from glyph_guard_demo.testkit.support import port_holder, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def api_roots(stack: object) -> tuple[int, ...]:
    config = stack.config  # type: ignore[attr-defined]
    table = ProcessTable()
    table.refresh()
    return table.find(config.components)["api"].roots


def restarts(probe: object, component: str = "api") -> list[dict[str, object]]:
    return [a for a in probe.actions(component) if a["action"] == "restart"]  # type: ignore[attr-defined]


def test_sigkill_restarts_verifies_and_resolves_without_a_second_restart(tmp_path: Path) -> None:
    with local_stack(tmp_path, standin_deployment(tmp_path)) as (stack, probe):
        before = api_roots(stack)
        timeline = run_scenario(stack, "kill")
        assert timeline.outcome == "succeeded", timeline.lines()
        after = api_roots(stack)
        assert after and set(after).isdisjoint(before)
        engine = [
            p for p in psutil.Process(after[0]).children() if "engine" in " ".join(p.cmdline())
        ]
        assert engine, "the restarted api has its engine child"
        # Alertmanager delivers the resolution; repeats and resolutions never restart again.
        wait_for(
            lambda: any(
                d["alert_status"] == "resolved" and d["alertname"] == "GlyphComponentDown"
                for d in probe.decisions("api")
            ),
            60,
        )
        # Alertmanager sends a group's notifications in order, so every copy of the firing
        # alert came before its resolution; and nothing else is still on its way.
        wait_for(lambda: deliveries_judged(probe), 60)
        assert len(restarts(probe)) == 1
        acted = [d for d in probe.decisions("api") if d["verdict"] == "acted"]
        assert [d["alertname"] for d in acted] == ["GlyphComponentDown"], acted
        assert probe.firing("GlyphComponentDown", "api") is None


def test_engine_death_is_restarted(tmp_path: Path) -> None:
    with local_stack(tmp_path, standin_deployment(tmp_path)) as (stack, probe):
        wait_healthy(probe, "api")
        api = stack.config.component("api")
        assert api is not None
        before = api_roots(stack)
        httpx.post(f"{api.base_url()}/admin/fault", json={"fault": "engine_death"}, timeout=5)
        wait_for(lambda: httpx.get(f"{api.base_url()}/health", timeout=2).status_code == 503, 10)
        wait_for(lambda: any(a["outcome"] == "succeeded" for a in restarts(probe)), 90)
        wait_healthy(probe, "api")
        assert set(api_roots(stack)).isdisjoint(before)


def test_hung_engine_is_restarted(tmp_path: Path) -> None:
    with local_stack(tmp_path, standin_deployment(tmp_path)) as (stack, probe):
        timeline = run_scenario(stack, "hang")
        assert timeline.outcome == "succeeded", timeline.lines()
        api = stack.config.component("api")
        assert api is not None
        assert httpx.get(f"{api.base_url()}/health", timeout=2).status_code == 200
        decided = [d for d in probe.decisions("api") if d["verdict"] == "acted"]
        assert decided and decided[-1]["alertname"] == "GlyphComponentHung"


def test_foreign_process_on_the_port_is_reported_and_not_killed(tmp_path: Path) -> None:
    with local_stack(tmp_path, standin_deployment(tmp_path)) as (stack, probe):
        wait_healthy(probe, "api")
        api = stack.config.component("api")
        assert api is not None and api.port is not None
        for pid in api_roots(stack):
            os.kill(pid, signal.SIGKILL)
        with port_holder(api.port) as holder:  # bound before the remediator restarts the api
            wait_for(lambda: probe.firing("GlyphPortConflict", "api"), 60)
            failed = wait_for(
                lambda: [a for a in restarts(probe) if a["outcome"] not in (None, "succeeded")], 60
            )
            assert str(api.port) in str(failed[0]["reason"])
            assert psutil.pid_exists(holder.pid), "the remediator killed a process it does not own"


def test_crash_loop_backs_off_then_gives_up_and_stays_down(tmp_path: Path) -> None:
    config = standin_deployment(
        tmp_path,
        api_args=("--startup-delay", "5", "--fail-start-after", "1"),
        budget={
            "max_failed_restarts": 3,
            "cooldown_seconds": 1,
            "backoff_initial_seconds": 3,
            "backoff_max_seconds": 20,
        },
    )
    with local_stack(tmp_path, config) as (_stack, probe):
        wait_for(lambda: probe.firing("GlyphRemediationGaveUp", "api"), 150)
        attempts = restarts(probe)
        assert len(attempts) == 3
        assert all(a["outcome"] != "succeeded" for a in attempts)
        # Back-off runs from the end of one restart to the start of the next and doubles (3 s,
        # 6 s); what comes on top (the next delivery, the start-up allowance) varies, so only
        # the floor of each wait is asserted.
        spans = sorted((float(a["started_at"]), float(a["finished_at"])) for a in attempts)
        waits = [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(spans)]
        assert [w >= 3 * 2**i - 0.2 for i, w in enumerate(waits)] == [True, True], waits
        # Given up: nothing runs and nothing waits for its turn, so no restart can come
        # without an operator's reset; and every delivery Alertmanager sent is judged.
        wait_for(lambda: deliveries_judged(probe), 60)
        status = wait_for(lambda: (s := component_status(probe, "api"))["gave_up"] and s, 30)
        assert status["busy"] is None and status["waiting"] == [], status
        assert len(restarts(probe)) == 3, "it kept restarting after giving up"


LEAK_120X = {  # the detector's defaults 120 times faster: 2 h windows become 60 s
    "window_seconds": 72,  # 6 windows of 12 s: the least that holds two 1 s bins per block
    "min_window_seconds": LeakSettings().min_window_seconds / 120,
    "bin_seconds": 1,
    "history_seconds": 180,
    "grace_seconds": 30,
    "warmup_seconds": 10,
    "min_history_seconds": 15,
    "min_reach_seconds": 2.5,
    "min_rate_bytes_per_second": LeakSettings().min_rate_bytes_per_second * 120,
    "max_gap_seconds": 15,
}


def test_accelerated_leak_fires_and_a_restart_comes_before_exhaustion(tmp_path: Path) -> None:
    config = standin_deployment(
        tmp_path,
        api_args=("--rss-leak-mb-per-minute", "1200", "--leak-in", "api"),
        api_extra={"memory_limit_bytes": 3_000_000_000},
        exporter_extra={"leak": LEAK_120X},
    )
    with local_stack(tmp_path, config) as (stack, probe):
        leaking = api_roots(stack)
        wait_for(
            lambda: probe.exporter_value("glyph_leak_suspected", "api", resource="rss") == 1,
            120,
        )
        wait_for(lambda: probe.firing("GlyphMemoryExhaustionImminent", "api"), 100)
        done = wait_for(lambda: [a for a in restarts(probe) if a["finished_at"]], 60)
        assert done[0]["outcome"] == "succeeded"
        assert set(api_roots(stack)).isdisjoint(leaking)
        acted = [d for d in probe.decisions("api") if d["verdict"] == "acted"]
        assert acted[-1]["alertname"] == "GlyphMemoryExhaustionImminent"
