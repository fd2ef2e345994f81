"""One contract for the engine's observable behaviour, held by the stand-in and the real vLLM.

The product leans on these facts (DESIGN.md section 1a); both engines must show them, so the
stand-in cannot drift from vLLM again. One server per engine serves the read-only cases, the
sleep and the hang, and ends with the API's SIGKILL; a second one plays the engine's death.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from glyph_guard_demo.testkit.support import wait_for
from tests.vllm.conftest import ENGINES, Served, serve

pytestmark = pytest.mark.timeout(1200)
LABELS = {"engine": "0", "model_name": "glyph"}
STEPS = "vllm:iteration_tokens_total"
SLEEP = "vllm:engine_sleep_state"


@pytest.fixture(scope="module", params=ENGINES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind = str(request.param)
    if kind == "vllm":
        request.getfixturevalue("vllm_installed")
    flags = ("--enable-server-load-tracking",)
    with serve(kind, tmp_path_factory.mktemp(kind), *flags, env={"VLLM_SERVER_DEV_MODE": "1"}) as s:
        yield s


def chat(url: str, timeout: float = 60.0, **extra: object) -> httpx.Response:
    body = {"model": "glyph", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json={**body, **extra}, timeout=timeout)


def samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def value(url: str, name: str, **extra: str) -> float:
    wanted = {**LABELS, **extra}
    found = [v for labels, v in samples(url).get(name, []) if labels == wanted]
    assert len(found) == 1, f"{name}{wanted}: {found}"
    return found[0]


def status(url: str, path: str) -> int:
    return httpx.get(f"{url}{path}", timeout=10).status_code


def load(url: str) -> int:
    return int(httpx.get(f"{url}/load", timeout=10).json()["server_load"])


def test_api_engine_and_worker_share_one_group_and_session(served: Served) -> None:
    engine, worker = served.engine(), served.worker()
    assert engine.ppid() == served.pid
    for proc in (engine, worker):
        assert os.getpgid(proc.pid) == served.pid
        assert os.getsid(proc.pid) == served.pid


def test_health_models_and_chat_answer(served: Served) -> None:
    assert status(served.url, "/health") == 200
    models = httpx.get(f"{served.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["glyph"]
    answer = chat(served.url)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["choices"][0]["message"]["content"], str)
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json={
            "model": "glyph",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "max_tokens": 3,
        },
        timeout=60,
    ) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) >= 2


def test_metrics_names_labels_and_created_families(served: Served) -> None:
    found = samples(served.url)
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        f"{STEPS}_count",
    ):
        assert any(labels == LABELS for labels, _ in found.get(name, [])), name
    for counter in ("vllm:generation_tokens", "vllm:prompt_tokens"):
        assert f"{counter}_created" in found, counter
    before = value(served.url, f"{STEPS}_count")
    assert chat(served.url, max_tokens=3, ignore_eos=True).status_code == 200
    wait_for(lambda: value(served.url, f"{STEPS}_count") >= before + 3, 10)
    assert value(served.url, "vllm:num_requests_running") == 0
    assert load(served.url) == 0


def _in_background(url: str, result: dict[str, int], timeout: float = 120.0) -> threading.Thread:
    def go() -> None:
        result["status"] = chat(url, timeout=timeout).status_code

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_a_request_to_a_sleeping_engine_waits_until_wake_up(served: Served) -> None:
    url = served.url
    assert httpx.post(f"{url}/sleep", params={"level": 1}, timeout=60).status_code == 200
    try:
        assert httpx.get(f"{url}/is_sleeping", timeout=10).json() == {"is_sleeping": True}
        result: dict[str, int] = {}
        thread = _in_background(url, result)
        wait_for(lambda: load(url) == 1, 10)
        time.sleep(1.0)
        assert result == {}, "a request to a sleeping engine waits, without an error"
        assert status(url, "/health") == 200
        assert value(url, "vllm:num_requests_waiting") == 0
        # what tells the exporter that the request held is not a hang
        assert value(url, SLEEP, sleep_state="awake") == 0
        assert value(url, SLEEP, sleep_state="weights_offloaded") == 1
    finally:
        assert httpx.post(f"{url}/wake_up", timeout=60).status_code == 200
    thread.join(60)
    assert result == {"status": 200}
    assert httpx.get(f"{url}/is_sleeping", timeout=10).json() == {"is_sleeping": False}
    assert value(url, SLEEP, sleep_state="awake") == 1


def test_a_hung_engine_keeps_health_and_holds_requests(served: Served) -> None:
    url, engine = served.url, served.engine()
    engine.suspend()  # SIGSTOP: no step, no answer, nothing the API can see
    try:
        result: dict[str, int] = {}
        thread = _in_background(url, result)
        wait_for(lambda: load(url) == 1, 10)
        time.sleep(2.0)
        assert result == {}
        assert status(url, "/health") == 200
        assert status(url, "/v1/models") == 200
    finally:
        engine.resume()
    thread.join(60)
    assert result == {"status": 200}


def test_api_sigkill_orphans_the_engine_and_worker_in_its_group(served: Served) -> None:
    engine, worker = served.engine(), served.worker()
    served.popen.send_signal(signal.SIGKILL)
    served.popen.wait(10)
    try:
        time.sleep(2.0)
        for proc in (engine, worker):
            assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE, proc
            assert os.getpgid(proc.pid) == served.pid and os.getsid(proc.pid) == served.pid
        assert engine.ppid() != served.pid, "the engine is re-parented (to init or a subreaper)"
        assert worker.ppid() == engine.pid
    finally:  # the orphans, by their group, before any other engine starts
        with contextlib.suppress(ProcessLookupError):
            os.killpg(served.pid, signal.SIGKILL)


@pytest.mark.parametrize("kind", ENGINES)
def test_engine_death_503_then_500_then_the_api_exits_with_code_0(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "vllm":
        request.getfixturevalue("vllm_installed")
    with serve(kind, tmp_path) as served:
        engine = served.engine()
        engine.kill()
        died = time.monotonic()
        wait_for(lambda: status(served.url, "/health") == 503, 5)
        answer = chat(served.url)
        assert answer.status_code == 500, answer.text
        code = served.popen.wait(15)
        exited = time.monotonic() - died
        assert code == 0, served.output()[-3000:]
        assert exited < 10.0, f"the API exited {exited:.1f} s after the engine died"
