"""The stand-in API's faults, observed from outside: HTTP, exit codes, process tree, RSS."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from glyph_guard_demo.standin.gpu import backend_installed
from glyph_guard_demo.testkit.standin_fixtures import (
    STANDIN,
    admin,
    answers,
    api,
    chat,
    gone,
    kill_pid,
    listening,
    metric,
    run_to_end,
    start,
    wait_until_ready,
)
from glyph_guard_demo.testkit.support import free_port, wait_for

MB = 1024 * 1024


def _health(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=2).status_code


def test_engine_death_health_500_then_exit_unless_kept_alive(tmp_path: Path) -> None:
    """vLLM 0.10 (Glyph's pin): /health 500, and the API exits with 1 about 5 s later."""
    keep_env = {"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"}
    old = ("--vllm-generation", "0.10")
    with (
        api(tmp_path / "flag", *old, "--keep-alive-on-engine-death") as flag,
        api(tmp_path / "env", *old, env=keep_env) as env,
        api(tmp_path / "plain", *old, "--engine-death-after", "3") as plain,  # after its 200
    ):
        wait_for(lambda: _health(plain.url) == 500, 10)
        died = time.monotonic()
        assert chat(plain.url).json()["error"]["code"] == 500
        flag.engine().kill()  # an engine killed from outside
        assert admin(env.url, fault="engine_death").status_code == 202
        for kept in (flag, env):
            wait_for(lambda k=kept: _health(k.url) == 500, 10)  # type: ignore[misc]
        assert chat(env.url).status_code == 500

        code = plain.proc.proc.wait(15)
        waited = time.monotonic() - died
        assert code == 1
        # the chat above met the dead engine, which ends the API at once (vLLM 0.32: 0.6 s);
        # an idle one goes with the watchdog, ~5 s (tests/vllm/test_contract.py times both)
        assert waited <= 8.0, waited
        assert "EngineCore" in plain.output()

        time.sleep(0.5)
        for kept in (flag, env):
            assert kept.exited() is None
            assert _health(kept.url) == 500
        assert admin(flag.url, fault="hang").status_code == 409


def _held(url: str) -> int:
    return int(httpx.get(f"{url}/load", timeout=2).json()["server_load"])


def test_hang_keeps_health_200_while_requests_wait(tmp_path: Path) -> None:
    with api(tmp_path, "--hang", "--enable-server-load-tracking") as running:
        with pytest.raises(httpx.ReadTimeout):
            chat(running.url, timeout=1.0)
        assert _health(running.url) == 200
        # as in vLLM: a request sent to a hung engine is in no gauge; the API holds it (/load)
        assert _held(running.url) >= 1
        assert metric(running.url, "vllm:num_requests_waiting") == 0
        assert metric(running.url, "vllm:num_requests_running") == 0
        generated = metric(running.url, "vllm:generation_tokens_total")

        assert admin(running.url, fault="hang", enabled=False).status_code == 202
        wait_for(lambda: metric(running.url, "vllm:num_requests_waiting") == 0, 5)
        assert chat(running.url).status_code == 200
        assert metric(running.url, "vllm:generation_tokens_total") > generated

        state = admin(running.url, fault="hang").json()  # and on again, at run time
        assert state["engine"]["hang"] is True
        with pytest.raises(httpx.ReadTimeout):
            chat(running.url, timeout=0.5)
        assert _health(running.url) == 200
        assert _held(running.url) >= 1


def test_crash_exits_non_zero_and_the_engine_follows(tmp_path: Path) -> None:
    with api(tmp_path, "--no-orphan-engine-on-crash") as running:
        engine = running.engine()
        assert admin(running.url, fault="crash").status_code == 202
        assert running.proc.proc.wait(10) == 70
        wait_for(lambda: gone(engine.pid), 5)


def test_crash_with_orphan_flag_leaves_the_engine_behind(tmp_path: Path) -> None:
    with api(tmp_path, "--vllm-generation", "0.10", "--orphan-engine-on-crash") as running:
        engine = running.engine()
        try:
            assert admin(running.url, fault="crash").status_code == 202
            assert running.proc.proc.wait(10) == 70
            time.sleep(2.0)
            assert not gone(engine.pid), "the orphaned engine should stay behind"
            assert engine.ppid() != running.pid
        finally:
            kill_pid(engine.pid)


def test_crash_after_start_flag(tmp_path: Path) -> None:
    with api(tmp_path, "--crash-after", "2") as running:  # seen healthy first
        assert running.proc.proc.wait(10) == 70


def test_sigkill_of_the_api_takes_the_engine_down(tmp_path: Path) -> None:
    """vLLM 0.10's engine followed its API; current vLLM's stays (tests/vllm's contract)."""
    with api(tmp_path, "--vllm-generation", "0.10") as running:
        engine = running.engine()
        running.proc.proc.send_signal(signal.SIGKILL)
        running.proc.proc.wait(5)
        started = time.monotonic()
        wait_for(lambda: gone(engine.pid), 5)
        assert time.monotonic() - started < 3.0


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        engine = running.engine()
        running.proc.proc.send_signal(signal.SIGTERM)
        assert running.proc.proc.wait(10) == 0
        wait_for(lambda: gone(engine.pid), 5)
        assert not listening(running.port)


def test_slow_responses_at_start_and_at_run_time(tmp_path: Path) -> None:
    with api(tmp_path, "--slow-seconds", "0.6") as running:
        started = time.monotonic()
        assert chat(running.url).status_code == 200
        assert time.monotonic() - started >= 0.6
        assert admin(running.url, fault="slow", seconds=0).status_code == 202
        started = time.monotonic()
        assert chat(running.url).status_code == 200
        assert time.monotonic() - started < 0.6
        assert admin(running.url, fault="slow", seconds=0.4).status_code == 202
        started = time.monotonic()
        assert chat(running.url).status_code == 200
        assert time.monotonic() - started >= 0.4


def test_rss_leak_per_request_in_the_engine(tmp_path: Path) -> None:
    with api(tmp_path, "--rss-leak-mb-per-request", "40") as running:
        engine = running.engine()
        before = engine.memory_info().rss
        for _ in range(3):
            assert chat(running.url).status_code == 200
        assert engine.memory_info().rss - before >= 100 * MB
        state = httpx.get(f"{running.url}/admin/faults").json()
        assert state["engine"]["rss_leak"]["held_mb"] == 120


def test_rss_leak_per_minute_in_the_api_process(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        process = psutil.Process(running.pid)
        before = process.memory_info().rss
        reply = admin(running.url, fault="rss_leak", where="api", mb_per_minute=1800)
        assert reply.status_code == 202
        wait_for(lambda: process.memory_info().rss - before >= 30 * MB, 10)
        admin(running.url, fault="clear")
        held = process.memory_info().rss
        time.sleep(1.0)
        assert process.memory_info().rss - held < 20 * MB  # growth stopped; memory still held
        assert process.memory_info().rss - before >= 30 * MB


def test_slow_start_opens_the_port_late(tmp_path: Path) -> None:
    started = time.monotonic()
    with start("api", tmp_path, "--startup-delay", "1.5") as running:
        wait_for(running.find_engine, 10)
        assert not listening(running.port)
        wait_until_ready(running, "/health")
        assert time.monotonic() - started >= 1.5
        assert answers(f"{running.url}/v1/models")


def test_a_start_that_fails_exits_non_zero(tmp_path: Path) -> None:
    with start("api", tmp_path, "--fail-start-after", "0.5", "--startup-delay", "30") as running:
        engine = wait_for(running.find_engine, 10)
        assert engine is not None
        assert running.proc.proc.wait(15) == 1
        assert "failed to start" in running.output()
        wait_for(lambda: gone(engine.pid), 5)


def test_gpu_options_without_a_gpu_exit_2_without_traceback() -> None:
    if backend_installed():
        pytest.skip("torch or cupy is installed here")
    result = run_to_end([*STANDIN, "api", "--port", str(free_port()), "--gpu-memory-mb", "64"])
    if result.returncode == 0:
        pytest.fail("a GPU option without a GPU must not start")
    assert result.returncode == 2
    assert "torch or cupy" in result.stderr
    assert "Traceback" not in result.stderr
