"""The whole loop on the real vLLM (CPU build, tiny model): glyph-exporter, glyph-remediator,
Prometheus and Alertmanager with the shipped rules and routes, one stack through every case.

vLLM starts once here and once per restart (20-45 s each on a quiet machine), so one stack
plays the cases in turn: asleep (never restarted), busy with 20 streams (never flagged), a
hang with a request in flight, an idle hang with a user request sent after, the EngineCore
killed (the API exits 0 by itself), the API killed (its orphans stopped before the start),
and, last, the engine killed under VLLM_KEEP_ALIVE_ON_ENGINE_DEATH (the API stays up, 503).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import yaml

from glyph_guard.common.config import Component, parse_config
from glyph_guard_demo.stack.cli import EXAMPLE
from glyph_guard_demo.stack.runner import LocalStack
from glyph_guard_demo.stack.scenario import StackReader, wait_healthy
from glyph_guard_demo.testkit.stack_fixtures import FAST_BUDGET, local_stack
from glyph_guard_demo.testkit.support import free_port, wait_for
from glyph_guard_demo.testkit.vllm_server import START_TIMEOUT, vllm_component

pytestmark = [pytest.mark.vllm, pytest.mark.e2e, pytest.mark.timeout(1200)]
HUNG = "GlyphComponentHung"
RECOVERY = START_TIMEOUT + 120
KEEP_ALIVE = "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH"


@pytest.fixture(scope="module")
def stack(
    vllm_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, StackReader, Component]]:
    work = tmp_path_factory.mktemp("vllm-loop")
    data = yaml.safe_load(EXAMPLE.read_text())
    api = vllm_component(work, free_port())
    api["remediation"]["restart"]["env"]["VLLM_SERVER_DEV_MODE"] = "1"  # /sleep on CPU
    data["components"] = {"api": api}
    data["remediator"]["budget"] = {**FAST_BUDGET, "max_failed_restarts": 10}
    config = parse_config(data, "vllm loop deployment")
    with local_stack(work, config) as (running, probe):
        component = running.config.component("api")
        assert component is not None
        wait_healthy(probe, "api", RECOVERY)
        yield running, probe, component


def restarts(probe: StackReader) -> list[dict[str, Any]]:
    return [a for a in probe.actions("api") if a["action"] == "restart"]


def quiet(probe: StackReader, since: float, count: int) -> None:
    """No new restart, and no hang or unhealthy alert firing, since `since`."""
    assert len(restarts(probe)) == count, probe.decisions("api")
    for alertname in (HUNG, "GlyphComponentUnhealthy", "GlyphComponentDown"):
        assert probe.firing_seconds(alertname, "api", time.time() - since) == 0, alertname


def tree(component: Component) -> tuple[psutil.Process, list[psutil.Process]]:
    """The API process (matched by its port) and its descendants."""
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        if "vllm serve" in line and f"--port {component.port}" in line:
            return proc, proc.children(recursive=True)
    raise AssertionError("no vLLM API process")


def engine_core(component: Component) -> psutil.Process:
    _, children = tree(component)
    found = [c for c in children if "VLLM::EngineCore" in " ".join(c.cmdline())]
    assert len(found) == 1, children
    return found[0]


def running(url: str) -> float:
    """vLLM's own running gauge, read directly (the exporter reads it once a second)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:num_requests_running{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def chat(url: str, timeout: float = 120.0, **extra: object) -> httpx.Response:
    body = {"model": "glyph", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json={**body, **extra}, timeout=timeout)


def in_background(url: str, **extra: object) -> threading.Thread:
    def go() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the restart cuts it off
            chat(url, timeout=RECOVERY, **extra)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def next_restart(probe: StackReader, after: float) -> dict[str, Any]:
    """Wait for the first restart begun after `after` (wall clock) to finish; return it. One
    begun earlier (a late alert about the incarnation before) is not this fault's."""

    def begun() -> dict[str, Any] | None:
        later = [a for a in restarts(probe) if a["started_at"] >= after]
        return min(later, key=lambda a: a["started_at"]) if later else None

    action = wait_for(begun, RECOVERY, interval=0.5)
    wait_for(
        lambda: next(a for a in restarts(probe) if a["id"] == action["id"])["finished_at"],
        RECOVERY,
        interval=0.5,
    )
    return next(a for a in restarts(probe) if a["id"] == action["id"])


def settle(probe: StackReader) -> None:
    wait_healthy(probe, "api", RECOVERY)
    time.sleep(FAST_BUDGET["cooldown_seconds"] + 1)  # an alert inside the cooldown is stale
    probe.reset("api")


def test_asleep_and_busy_are_never_restarted(
    stack: tuple[LocalStack, StackReader, Component],
) -> None:
    _, probe, api = stack
    url, count, began = api.base_url(), len(restarts(probe)), time.time()
    httpx.post(f"{url}/sleep", params={"level": 1}, timeout=60).raise_for_status()
    try:
        waiting = in_background(url)  # a user request waits for the wake-up, no error
        time.sleep(30)  # three canary intervals and more than the stall limit
        quiet(probe, began, count)
    finally:
        httpx.post(f"{url}/wake_up", timeout=60).raise_for_status()
    waiting.join(60)

    began = time.time()
    stop = threading.Event()
    answered: list[int] = []

    def stream() -> None:
        body = {
            "model": "glyph",
            "messages": [{"role": "user", "content": "Tell a story"}],
            "max_tokens": 200,
            "ignore_eos": True,
            "stream": True,
        }
        while not stop.is_set():
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body, timeout=120
            ) as response:
                for _ in response.iter_lines():
                    pass
                answered.append(response.status_code)

    streams = [threading.Thread(target=stream, daemon=True) for _ in range(20)]
    for thread in streams:
        thread.start()
    time.sleep(30)
    stop.set()
    for thread in streams:
        thread.join(180)
    assert answered and set(answered) == {200}
    quiet(probe, began, count)


def test_hang_with_a_request_in_flight_is_restarted(
    stack: tuple[LocalStack, StackReader, Component],
) -> None:
    _, probe, api = stack
    began = time.time()
    url = api.base_url()
    body = {
        "model": "glyph",
        "messages": [{"role": "user", "content": "Tell a story"}],
        "max_tokens": 480,
        "ignore_eos": True,
        "stream": True,
    }
    generating = threading.Event()

    def go() -> None:
        with (
            contextlib.suppress(httpx.HTTPError),  # the restart cuts it off
            httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=RECOVERY) as r,
        ):
            for _ in r.iter_lines():
                generating.set()  # tokens flow: the request is in the engine

    flight = threading.Thread(target=go, daemon=True)
    flight.start()
    assert generating.wait(60), "the request never started generating"
    engine_core(api).suspend()
    action = next_restart(probe, began)
    assert action["outcome"] == "succeeded", action
    flight.join(RECOVERY)  # cut off by the restart
    settle(probe)


def test_idle_hang_and_a_user_request_sent_after_is_restarted(
    stack: tuple[LocalStack, StackReader, Component],
) -> None:
    _, probe, api = stack
    began = time.time()
    engine_core(api).suspend()
    time.sleep(1.0)
    sent = time.time()
    in_background(api.base_url())
    action = next_restart(probe, began)
    print(f"idle hang: restart began {action['started_at'] - sent:.2f} s after the request")
    assert action["outcome"] == "succeeded", action
    settle(probe)


def test_enginecore_killed_the_api_exits_and_is_restarted(
    stack: tuple[LocalStack, StackReader, Component],
) -> None:
    _, probe, api = stack
    began = time.time()
    main, _ = tree(api)
    engine_core(api).kill()
    wait_for(lambda: not main.is_running() or main.status() == psutil.STATUS_ZOMBIE, 30)
    action = next_restart(probe, began)
    assert action["outcome"] == "succeeded", action
    settle(probe)


def test_api_killed_its_orphans_are_stopped_before_the_new_start(
    stack: tuple[LocalStack, StackReader, Component],
) -> None:
    _, probe, api = stack
    began = time.time()
    main, children = tree(api)
    orphans = [c for c in children if "VLLM::" in " ".join(c.cmdline())]
    assert len(orphans) == 2, children  # EngineCore and Worker
    os.kill(main.pid, signal.SIGKILL)
    wait_for(
        lambda: (probe.exporter_value("glyph_component_leftover_processes", "api") or 0) >= 2, 30
    )
    assert (
        probe.exporter_value("glyph_component_leftover_resident_memory_bytes", "api") or 0
    ) > 100e6
    action = next_restart(probe, began)
    assert action["outcome"] == "succeeded", action
    stopped = set(action["details"]["stopped_pids"])
    assert {p.pid for p in orphans} <= stopped, action["details"]
    for proc in orphans:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    wait_healthy(probe, "api", RECOVERY)
    wait_for(lambda: probe.exporter_value("glyph_component_leftover_processes", "api") == 0, 30)


def test_engine_death_with_keep_alive_the_api_answering_503_is_restarted(
    stack: tuple[LocalStack, StackReader, Component],
) -> None:
    """VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1: the API outlives its dead engine, answering 503 to
    /health and 500 to a chat, indefinitely; only the health model can see it."""
    running_stack, probe, api = stack
    assert running_stack.files is not None
    deployment = running_stack.files.deployment
    data = yaml.safe_load(deployment.read_text())
    data["components"]["api"]["remediation"]["restart"]["env"][KEEP_ALIVE] = "1"
    deployment.write_text(yaml.safe_dump(data))
    remediator = running_stack.services["remediator"]
    assert remediator.pid is not None
    os.kill(remediator.pid, signal.SIGHUP)  # the next start takes the new environment
    wait_for(lambda: "reload: config applied" in remediator.log.read_text(errors="replace"), 30)
    began = time.time()
    answer = httpx.post(
        f"{running_stack.urls['remediator']}/components/api/restart",
        headers={"Authorization": f"Bearer {running_stack.token()}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    assert next_restart(probe, began)["outcome"] == "succeeded"
    settle(probe)
    main, _ = tree(api)
    assert main.environ().get(KEEP_ALIVE) == "1"

    began = time.time()
    engine_core(api).kill()
    url = api.base_url()
    wait_for(lambda: httpx.get(f"{url}/health", timeout=5).status_code == 503, 30)
    assert chat(url, timeout=30).status_code == 500
    action = next_restart(probe, began)
    assert action["outcome"] == "succeeded", action
    assert main.pid in action["details"]["stopped_pids"], action["details"]  # not gone by itself
    settle(probe)
