"""Planned restarts from outside: a real stand-in engine (vLLM-shaped /metrics and /load), a
request in flight over loopback, the remediator served over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from glyph_guard.remediator.incarnation import STARTS_AT_LAG_SECONDS
from glyph_guard_demo.testkit.doubles.harness import Remediator, alert, make_config, payload
from glyph_guard_demo.testkit.standin_fixtures import chat, metric, standin_api_argv
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for

pytestmark = pytest.mark.timeout(180)
STEP = 0.05  # seconds per token: a request of N tokens runs N * STEP seconds


def api_component(port: int, pages_dir: Path) -> dict[str, Any]:
    return {
        "match": {"cmdline": rf"-m\s+glyph_guard_demo\.standin\s+api\s+--port\s+{port}(\s|$)"},
        "port": port,
        "probes": [{"name": "health", "path": "/health", "timeout_seconds": 2}],
        "engine": {"path": "/metrics"},
        "remediation": {
            "actions": ["restart"],
            "restart": {"start": standin_api_argv(port, STEP, pages_dir)},
            "stop_grace_seconds": 5,
            "startup_timeout_seconds": 60,
        },
    }


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def begun_now() -> str:
    """A startsAt for a failure of the running incarnation (one started later is a new one)."""
    return datetime.now(UTC).isoformat()


def leak_alert(lower_bound: str, **labels: str) -> dict[str, Any]:
    item = alert(
        fingerprint="1eak0001", alertname="GlyphMemoryLeak", starts_at=begun_now(), **labels
    )
    item["annotations"]["exhaustion_lower_bound_seconds"] = lower_bound
    return item


class Request(threading.Thread):
    """One long generation in flight; when it ended and how."""

    def __init__(self, url: str, tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.tokens = url, tokens
        self.status: int | None = None
        self.error: str | None = None
        self.ended_at: float | None = None  # wall clock

    def run(self) -> None:
        try:
            answer = chat(self.url, timeout=120, max_tokens=self.tokens, ignore_eos=True)
            self.status = answer.status_code
        except httpx.HTTPError as exc:
            self.error = repr(exc)
        self.ended_at = time.time()


@contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[str, Remediator]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    planned = {"max_wait_seconds": 3600, "poll_seconds": 0.2}
    pages = tmp_path / "pages"
    config = make_config(tmp_path, {"api": api_component(port, pages)}, planned_restarts=planned)
    with spawned(standin_api_argv(port, STEP, pages)), Remediator(config) as rem:
        wait_for(lambda: healthy(url), 60)
        # an alert begun this soon after the start would be about a new incarnation
        time.sleep(STARTS_AT_LAG_SECONDS + 0.5)
        yield url, rem


def running(url: str) -> bool:
    return metric(url, "vllm:num_requests_running") >= 1


def acted(rem: Remediator) -> dict[str, Any]:
    [row] = [d for d in rem.decisions() if d["verdict"] == "acted"]
    return row


def test_a_planned_restart_waits_for_the_request_in_flight_then_restarts_at_idle(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (url, rem):
        request = Request(url, tokens=160)  # some 8 s
        request.start()
        wait_for(lambda: running(url), 30)
        answer = rem.post(payload(leak_alert("3600", urgency="planned")))
        assert answer.json()["alerts"][0]["reason"] == "waiting_for_idle"
        status = rem.status()
        assert status["waiting"] == ["restart"]
        [waits] = status["waiting_for"]
        assert waits["reason"] == "waiting_for_idle"
        assert 1700 < waits["until"] - time.time() <= 1800  # half the forecast's lower bound
        time.sleep(2)  # ten polls see the engine busy
        assert rem.actions() == [], "nothing acts while a request runs"
        [action] = rem.finished_actions(1, timeout=90)
        request.join(30)
        assert (request.status, request.error) == (200, None), "the request was not cut"
        assert action["outcome"] == "succeeded", action
        assert request.ended_at is not None and request.ended_at <= action["started_at"]
        assert acted(rem)["detail"].startswith("planned restart: acted at idle"), acted(rem)
        assert healthy(url)


def test_a_planned_restart_acts_at_its_deadline_while_the_engine_stays_busy(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (url, rem):
        request = Request(url, tokens=1200)  # some 60 s: longer than the deadline
        request.start()
        wait_for(lambda: running(url), 30)
        posted = time.time()
        answer = rem.post(payload(leak_alert("8", urgency="planned")))  # waits 4 s at most
        assert answer.json()["alerts"][0]["reason"] == "waiting_for_idle"
        [action] = rem.finished_actions(1, timeout=90)
        assert action["outcome"] == "succeeded", action
        assert action["started_at"] - posted >= 3.5, "held until its deadline"
        assert request.ended_at is None or request.ended_at >= action["started_at"]
        assert acted(rem)["detail"].startswith("planned restart: acted at its deadline")
        request.join(30)


def test_an_urgent_alert_does_not_wait_behind_a_planned_one(tmp_path: Path) -> None:
    with serving(tmp_path) as (url, rem):
        request = Request(url, tokens=1200)
        request.start()
        wait_for(lambda: running(url), 30)
        rem.post(payload(leak_alert("3600", urgency="planned")))
        imminent = alert(
            fingerprint="1eak0002", alertname="GlyphMemoryExhaustionImminent", starts_at=begun_now()
        )
        answer = rem.post(payload(imminent))
        assert answer.json()["alerts"][0]["verdict"] == "acted"
        [action] = rem.finished_actions(1, timeout=90)
        assert action["outcome"] == "succeeded", action
        reasons = rem.reasons()
        assert reasons[:2] == ["deferred:waiting_for_idle", "skipped:coalesced"], reasons
        request.join(30)
