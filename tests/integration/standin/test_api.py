"""The stand-in API's vLLM / OpenAI surface, observed over real HTTP against a real process."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from glyph_guard_demo.standin.gpu import backend_installed
from glyph_guard_demo.standin.render import PageStyle, paginate, render_pages
from glyph_guard_demo.testkit.standin_fixtures import Running, admin, api, chat, metric

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with api(tmp_path_factory.mktemp("api")) as running:
        yield running


def test_the_engine_is_a_child_process_of_the_api(server: Running) -> None:
    api_cmdline = " ".join(psutil.Process(server.pid).cmdline())
    assert f"standin api --port {server.port}" in api_cmdline
    engine = server.engine()
    assert engine.ppid() == server.pid
    assert "glyph-standin-engine" in " ".join(engine.cmdline())


def test_health_models_and_version_say_stand_in(server: Running) -> None:
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200
    for path in ("/health", "/v1/models"):  # probes may use HEAD
        assert httpx.head(f"{server.url}{path}").status_code == 200
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["glyph"]
    assert models["data"][0]["object"] == "model"
    assert "stand-in" in models["data"][0]["root"]
    assert "glyph-standin" in httpx.get(f"{server.url}/version").json()["version"]


def test_a_completion_is_well_formed_and_renders_pages(server: Running) -> None:
    text = "word " * 3000  # several pages
    response = chat(server.url, text)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "glyph"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    pages = [Path(p) for p in body["glyph_standin"]["pages"]]
    assert len(pages) > 1
    assert f"{len(pages)} pages" in choice["message"]["content"]
    for page in pages:
        with Image.open(page) as image:
            assert image.format == "PNG"
            assert image.size == (PageStyle().width, PageStyle().height)
    usage = body["usage"]
    assert usage["prompt_tokens"] == 3000
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_one_gives_one_token_and_length(server: Running) -> None:
    body = chat(server.url, "canary", max_tokens=1).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 1
    assert len(body["choices"][0]["message"]["content"].split()) == 1


def test_streaming_sends_json_chunks_then_done(server: Running) -> None:
    body = {
        "model": "glyph",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in with_choices)
    assert "rendered 1 page" in text
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == len(with_choices) - 2


def test_streaming_honours_max_tokens(server: Running) -> None:
    body = {"model": "glyph", "messages": MESSAGES, "stream": True, "max_tokens": 2}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line[len("data: ") :]) for line in lines]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(contents) == 2
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'{"model": "glyph"}', 400),
        (b'{"model": "glyph", "messages": []}', 400),
        (b'{"model": "glyph", "messages": [{"role": "wizard", "content": "x"}]}', 400),
        (
            b'{"model": "glyph", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            400,
        ),
        (b'{"model": "glyph", "messages": [{"role": "user", "content": "x"}], "stream": "?"}', 400),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}', 404),
        (b"\xff\xfe", 400),
    ],
)
def test_malformed_requests_get_openai_errors(server: Running, body: bytes, status: int) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert "Traceback" not in response.text


def test_unknown_paths_and_methods_get_openai_errors(server: Running) -> None:
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFoundError"
    wrong = httpx.get(f"{server.url}/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == 405


def test_metrics_have_vllm_names_and_count_tokens(server: Running) -> None:
    before = metric(server.url, "vllm:generation_tokens_total")
    chat(server.url, max_tokens=3)
    assert metric(server.url, "vllm:generation_tokens_total") == before + 3
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert metric(server.url, name) == 0
    assert 0 <= metric(server.url, "vllm:kv_cache_usage_perc") <= 1
    text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["vllm:generation_tokens"].type == "counter"
    assert families["vllm:num_requests_waiting"].type == "gauge"


def test_admin_reports_faults_and_rejects_unknown_ones(server: Running) -> None:
    state = httpx.get(f"{server.url}/admin/faults").json()
    assert state["stand_in"] is True
    assert state["api"]["pid"] == server.pid
    assert state["engine"]["pid"] == server.engine().pid
    assert state["engine"]["hang"] is False
    bad = admin(server.url, fault="meteor")
    assert bad.status_code == 400
    assert "error" in bad.json()
    assert admin(server.url, fault="slow", seconds=-1).status_code == 400
    assert httpx.post(f"{server.url}/admin/fault", content=b"nope").status_code == 400


def test_gpu_leak_without_a_gpu_is_a_clear_409(server: Running) -> None:
    if backend_installed():
        pytest.skip("torch or cupy is installed; the GPU path is tested where a GPU exists")
    response = admin(server.url, fault="gpu_leak", mb_per_request=1)
    assert response.status_code == 409
    assert "torch or cupy" in response.json()["error"]["message"]


def test_pages_are_fixed_size_and_word_wrapped(tmp_path: Path) -> None:
    style = PageStyle(width=200, height=120, margin=10, font_size=12)
    pages = paginate("alpha beta gamma " * 40 + "\n" + "x" * 300, style)
    assert len(pages) > 1
    assert all(len(page) <= style.lines_per_page for page in pages)
    paths = render_pages("short", tmp_path / "one", style)
    assert [p.name for p in paths] == ["page_001.png"]
    with Image.open(paths[0]) as image:
        assert image.size == (200, 120)


def _non_loopback_ipv4() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def test_admin_refuses_clients_that_are_not_on_loopback(tmp_path: Path) -> None:
    address = _non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with api(tmp_path, "--host", "0.0.0.0") as running:
        remote = f"http://{address}:{running.port}"
        assert httpx.get(f"{remote}/health").status_code == 200
        assert httpx.get(f"{remote}/admin/faults").status_code == 403
        refused = admin(remote, fault="crash")
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "PermissionDeniedError"
        assert httpx.get(f"{running.url}/admin/faults").status_code == 200
        assert running.exited() is None
