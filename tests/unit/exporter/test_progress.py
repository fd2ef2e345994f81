"""Engine progress: the stall clock (an injected clock), the vLLM metrics reader against the
stand-in's real /metrics, an unreadable endpoint as a state, and promtool on the new series."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from glyph_guard.common.config import ConfigError, parse_config
from glyph_guard.common.enginemetrics import EngineReading, parse_engine_metrics
from glyph_guard.common.health import CANARY_STRIKES
from glyph_guard.exporter.progress import EngineWatch, StallClock
from glyph_guard.exporter.snapshot import EngineProgress
from glyph_guard_demo.testkit.exporter_fixtures import (
    assert_promtool_accepts,
    deployment,
    running_exporter,
)
from glyph_guard_demo.testkit.standin_fixtures import admin, api, chat
from glyph_guard_demo.testkit.support import free_port, parse_metrics, sample, wait_for

IDLE = EngineReading(0, 0, 10)


def read(watch: EngineWatch, now: float) -> EngineProgress:
    """One read of the engine's metrics, on a client of its own."""

    async def once() -> EngineProgress:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await watch.read(client, now)

    return asyncio.run(once())


@pytest.mark.parametrize(
    ("readings", "stalled"),
    [
        # (seconds, waiting, running, steps) -> stalled seconds after each read
        ([(0, 0, 0, 10), (1, 0, 0, 10), (2, 0, 0, 10)], [0, 0, 0]),  # idle: no steps, no stall
        ([(0, 0, 1, 10), (1, 0, 1, 11), (2, 0, 1, 12)], [0, 0, 0]),  # a long generation
        ([(0, 0, 0, 10), (1, 1, 0, 10), (2, 1, 0, 10), (5, 1, 0, 10)], [0, 0, 1, 4]),  # hung
        ([(0, 0, 1, 10), (1, 0, 1, 10), (7, 0, 1, 10), (8, 0, 1, 11)], [0, 1, 7, 0]),  # prefill
        ([(0, 3, 1, 10), (4, 3, 1, 10), (5, 3, 1, 0), (6, 3, 1, 0)], [0, 4, 0, 1]),  # restarted
        ([(0, 2, 0, 10), (3, 2, 0, 10), (4, 0, 0, 10), (5, 1, 0, 10)], [0, 3, 0, 0]),  # drained
    ],
)
def test_stall_clock(readings: list[tuple[float, int, int, int]], stalled: list[float]) -> None:
    clock = StallClock()
    got = [clock.observe(EngineReading(w, r, s), t) for t, w, r, s in readings]
    assert got == stalled


def test_stall_clock_says_nothing_without_a_step_counter_or_while_asleep() -> None:
    clock = StallClock()
    assert clock.observe(EngineReading(3, 0, None), 0) is None
    assert clock.observe(EngineReading(3, 0, 5, asleep=True), 1) == 0
    assert clock.observe(EngineReading(3, 0, 5, asleep=True), 9) == 0


def test_parse_only_the_needed_families_and_fold_engines() -> None:
    text = "\n".join(
        [
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{engine="0",model_name="m"} 2',
            'vllm:num_requests_running{engine="1",model_name="m"} 3',
            "# TYPE vllm:num_requests_waiting gauge",
            'vllm:num_requests_waiting{engine="0",model_name="m"} 1',
            "# TYPE vllm:iteration_tokens_total histogram",
            'vllm:iteration_tokens_total_bucket{engine="0",le="+Inf",model_name="m"} 4',
            'vllm:iteration_tokens_total_count{engine="0",model_name="m"} 4',
            'vllm:iteration_tokens_total_count{engine="1",model_name="m"} 6',
            "# TYPE vllm:generation_tokens_total counter",
            'vllm:generation_tokens_total{engine="0",model_name="m"} 7',
            'vllm:generation_tokens_total{engine="1",model_name="m"} 5',
            "# TYPE something_else gauge",
            "something_else{ this is not parsed",
        ]
    )
    assert parse_engine_metrics(text) == EngineReading(1, 5, 10, asleep=False, generation_tokens=12)
    with pytest.raises(ValueError):
        parse_engine_metrics("vllm:num_requests_running{oops 1\n")


def test_reads_the_standin_engine_and_sees_steps_sleep_and_a_hang(tmp_path: Path) -> None:
    with api(tmp_path, "--enable-server-load-tracking") as running:
        component = parse_config(
            {
                "components": {
                    "api": {
                        "match": {"program": "glyph-test-nothing"},
                        "port": running.port,
                        "engine": {},
                    }
                }
            }
        ).components[0]
        watch = EngineWatch(component)
        before = read(watch, 0.0)
        assert before.readable and before.steps is not None and before.stalled_seconds == 0
        assert chat(running.url, "count my steps", max_tokens=5).status_code == 200
        after = read(watch, 1.0)
        assert after.steps is not None and after.steps >= before.steps + 6  # prefill + 5 tokens
        assert admin(running.url, fault="hang").status_code == 202
        with httpx.Client(trust_env=False) as user, pytest.raises(httpx.TimeoutException):
            user.post(
                f"{running.url}/v1/chat/completions",
                json={"model": "glyph", "messages": [{"role": "user", "content": "x"}]},
                timeout=0.5,
            )
        hung = [read(watch, t) for t in (2.0, 5.0)]
        # as in vLLM: a request sent to a hung engine is in no gauge; /load counts it
        assert hung[-1].waiting == 0 and hung[-1].stalled_seconds == 3.0
        assert httpx.post(f"{running.url}/sleep", timeout=5).status_code == 200
        assert read(watch, 6.0).asleep is True
        assert admin(running.url, fault="clear").status_code == 202


def test_an_unreadable_endpoint_is_a_state_with_an_error_count() -> None:
    component = parse_config(
        {
            "components": {
                "api": {
                    "match": {"program": "glyph-test-nothing"},
                    "port": free_port(),
                    "engine": {},
                }
            }
        }
    ).components[0]
    watch = EngineWatch(component)
    readings = [read(watch, float(t)) for t in range(3)]
    assert [r.readable for r in readings] == [False] * 3
    assert [r.read_errors for r in readings] == [1, 2, 3]
    assert readings[-1].stalled_seconds is None and readings[-1].waiting is None


def test_engine_series_pass_promtool_and_name_the_canary_by_kind(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        probes = [
            {"name": "health", "path": "/health"},
            {"name": "smoke", "kind": "canary", "path": "/v1/chat/completions"},
        ]
        component = {"match": {"cmdline": "-m standin api"}, "port": running.port}
        config = deployment({"api": {**component, "probes": probes, "engine": {}}}, engine=0.2)

        def scrape() -> str:
            port = exporter.server.port
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

        with running_exporter(config) as exporter:
            wait_for(
                lambda: (
                    sample(
                        parse_metrics(scrape()),
                        "glyph_probe_success",
                        component="api",
                        probe="smoke",
                    )
                    == 1
                ),
                10,
            )
            wait_for(
                lambda: (
                    (
                        sample(parse_metrics(scrape()), "glyph_engine_steps_total", component="api")
                        or 0
                    )
                    >= 2
                ),  # the canary's prefill and token
                10,
            )
            text = scrape()
    samples = parse_metrics(text)
    assert sample(samples, "glyph_probe_info", component="api", probe="smoke", kind="canary") == 1
    assert sample(samples, "glyph_probe_info", component="api", probe="health", kind="http") == 1
    assert sample(samples, "glyph_engine_metrics_readable", component="api") == 1
    assert sample(samples, "glyph_engine_stalled_seconds", component="api") == 0
    assert sample(samples, "glyph_engine_asleep", component="api") == 0
    assert sample(samples, "glyph_engine_stall_limit_seconds", component="api") == 10
    assert sample(samples, "glyph_component_startup_allowance_seconds", component="api") == 600
    assert sample(samples, "glyph_canary_strike_limit", component="api") == CANARY_STRIKES
    assert (sample(samples, "glyph_engine_generation_tokens_total", component="api") or 0) >= 1
    assert all("model_name" not in dict(labels) for _, labels in samples)
    assert_promtool_accepts(text)


@pytest.mark.parametrize(
    ("engine", "port", "message"),
    [
        ({}, None, "components.api: Value error, 'engine' needs a 'port'"),
        ({"stall_seconds": 0}, 5002, "components.api.engine.stall_seconds: Input should be"),
        ({"path": "metrics"}, 5002, "components.api.engine.path: String should match"),
    ],
)
def test_engine_config_errors_name_the_field(
    engine: dict[str, object], port: int | None, message: str
) -> None:
    body: dict[str, object] = {"match": {"program": "glyph-test-nothing"}, "engine": engine}
    if port is not None:
        body["port"] = port
    with pytest.raises(ConfigError) as raised:
        parse_config({"components": {"api": body}})
    assert message.replace("Value error, ", "") in str(raised.value)
