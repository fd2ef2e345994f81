"""The stand-in follows current vLLM: engine steps, engine labels, sleep mode, the generation
flag (/health 500 or 503), keep-alive on engine death, slow prefill, hang in flight, load."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

from glyph_guard_demo.testkit.standin_fixtures import STANDIN, admin, api, chat, metric, run_to_end
from glyph_guard_demo.testkit.support import wait_for

STEPS = "vllm:iteration_tokens_total_count"


def _long(url: str, tokens: int, result: dict[str, int]) -> threading.Thread:
    def go() -> None:
        answer = chat(url, "a long one", timeout=60, max_tokens=tokens, ignore_eos=True)
        result["status"] = answer.status_code
        result["tokens"] = answer.json()["usage"]["completion_tokens"]

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_steps_advance_per_token_and_stand_still_while_hung_in_flight(tmp_path: Path) -> None:
    with api(tmp_path, "--step-seconds", "0.02") as running:
        url = running.url
        before = metric(url, STEPS)
        assert chat(url, "five", max_tokens=5).json()["usage"]["completion_tokens"] == 5
        assert metric(url, STEPS) == before + 6  # one prefill step, then one step a token
        assert metric(url, "vllm:engine_sleep_state", sleep_state="awake") == 1

        result: dict[str, int] = {}
        thread = _long(url, 400, result)  # ~8 s of decoding
        wait_for(lambda: metric(url, "vllm:num_requests_running") == 1, 10)
        assert admin(url, fault="hang").status_code == 202
        time.sleep(0.3)
        frozen = metric(url, STEPS)
        time.sleep(1.0)
        assert metric(url, STEPS) == frozen, "a hung engine makes no steps"
        assert metric(url, "vllm:num_requests_running") == 1, "the request stays in flight"
        assert httpx.get(f"{url}/health", timeout=2).status_code == 200
        assert admin(url, fault="clear").status_code == 202
        thread.join(30)
        assert result == {"status": 200, "tokens": 400}


def test_slow_prefill_pauses_steps_then_they_go_on(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        url = running.url
        assert admin(url, fault="slow_prefill", seconds=1.5).status_code == 202
        result: dict[str, int] = {}
        before = metric(url, STEPS)
        started = time.monotonic()
        thread = _long(url, 10, result)
        time.sleep(1.0)
        assert metric(url, STEPS) == before, "no step while the prefill runs"
        thread.join(30)
        assert time.monotonic() - started >= 1.5
        assert result["status"] == 200 and metric(url, STEPS) == before + 11


def test_sleep_refuses_requests_keeps_health_and_wakes_up(tmp_path: Path) -> None:
    """0.10 refused requests while asleep; current vLLM holds them (tests/vllm's contract)."""
    with api(tmp_path, "--vllm-generation", "0.10") as running:
        url = running.url
        assert httpx.post(f"{url}/sleep", params={"level": 2}, timeout=5).status_code == 200
        assert httpx.get(f"{url}/is_sleeping", timeout=5).json() == {"is_sleeping": True}
        assert metric(url, "vllm:engine_sleep_state", sleep_state="awake") == 0
        assert metric(url, "vllm:engine_sleep_state", sleep_state="discard_all") == 1
        assert chat(url).status_code == 503
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert httpx.post(f"{url}/sleep", params={"level": 3}, timeout=5).status_code == 400
        assert httpx.post(f"{url}/wake_up", timeout=5).status_code == 200
        assert metric(url, "vllm:engine_sleep_state", sleep_state="awake") == 1
        assert chat(url).status_code == 200


def test_current_generation_answers_503_and_keep_alive_stays_up(tmp_path: Path) -> None:
    """Current vLLM: /health 503, a chat 500; the API exits with 0 unless kept alive."""
    with (
        api(tmp_path / "plain", "--vllm-generation", "current") as plain,
        api(
            tmp_path / "kept",
            "--vllm-generation",
            "current",
            env={"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"},
        ) as kept,
    ):
        for running in (plain, kept):
            assert admin(running.url, fault="engine_death").status_code == 202
        for running in (plain, kept):
            wait_for(
                lambda r=running: httpx.get(f"{r.url}/health", timeout=2).status_code == 503, 10
            )
            assert chat(running.url).status_code == 500
        assert plain.proc.proc.wait(15) == 0  # the watchdog ends the API process, cleanly
        assert kept.exited() is None
        assert httpx.get(f"{kept.url}/health", timeout=2).status_code == 503
        assert "0.32" in httpx.get(f"{kept.url}/version", timeout=2).json()["version"]


def test_load_generator_streams_long_generations_and_bursts(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        load = [*STANDIN, "load", "--url", running.url, "--concurrency", "2"]
        done = run_to_end(
            [
                *load,
                "--max-tokens",
                "30",
                "--duration",
                "2",
                "--burst-every",
                "0.5",
                "--burst-size",
                "3",
            ]
        )
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["failed"] == 0 and summary["ok"] >= 4
        assert summary["tokens"] >= 2 * 30
    failed = run_to_end([*STANDIN, "load", "--url", running.url, "--duration", "1"])
    assert failed.returncode == 1 and '"failed"' in failed.stdout
