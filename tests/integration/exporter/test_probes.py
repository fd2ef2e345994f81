"""Probes against real loopback servers: success, 500, refused, hung, and canaries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from glyph_guard_demo.testkit.exporter_fixtures import (
    deployment,
    running_exporter,
    scrape,
    timed_scrape,
)
from glyph_guard_demo.testkit.support import free_port, raw_server, sample, wait_for


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ok":
            self._answer(200, b'{"ok": true}')
        else:
            self._answer(500, b'{"error": "engine dead"}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        self.server.canary_requests.append(request)  # type: ignore[attr-defined]
        if self.path == "/v1/chat/completions":
            choice = {"index": 0, "message": {"role": "assistant", "content": "p"}}
            self._answer(200, json.dumps({"choices": [choice]}).encode())
        else:
            self._answer(200, b'{"choices": []}')


@contextmanager
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.canary_requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def hung_server() -> AbstractContextManager[int]:
    """Accepts connections and never answers."""
    return raw_server(lambda conn: None)


def probe_value(exporter: object, name: str, probe: str) -> float | None:
    return sample(scrape(exporter), name, component="svc", probe=probe)  # type: ignore[arg-type]


def svc(port: int, probes: list[dict[str, object]]) -> dict[str, object]:
    return {"svc": {"match": {"cmdline": "no-such-process-xyz"}, "port": port, "probes": probes}}


def test_success_500_and_refused() -> None:
    with http_server() as server:
        port = server.server_address[1]
        config = deployment(
            svc(port, [{"name": "good", "path": "/ok"}, {"name": "bad", "path": "/health"}])
        )
        with running_exporter(config) as exporter:
            wait_for(lambda: probe_value(exporter, "glyph_probe_duration_seconds_count", "bad"), 5)
            wait_for(
                lambda: (
                    (probe_value(exporter, "glyph_probe_consecutive_failures", "bad") or 0) >= 2
                ),
                5,
            )
            samples = scrape(exporter)
    good = {"component": "svc", "probe": "good"}
    bad = {"component": "svc", "probe": "bad"}
    assert sample(samples, "glyph_probe_success", **good) == 1
    assert sample(samples, "glyph_probe_http_status", **good) == 200
    assert sample(samples, "glyph_probe_consecutive_failures", **good) == 0
    assert sample(samples, "glyph_probe_last_success_timestamp_seconds", **good) > time.time() - 60
    assert sample(samples, "glyph_probe_success", **bad) == 0
    assert sample(samples, "glyph_probe_http_status", **bad) == 500
    assert sample(samples, "glyph_probe_last_success_timestamp_seconds", **bad) is None
    count = sample(samples, "glyph_probe_duration_seconds_count", **good)
    assert sample(samples, "glyph_probe_duration_seconds_bucket", le="+Inf", **good) == count

    config = deployment(svc(free_port(), [{"name": "refused", "path": "/ok"}]))
    with running_exporter(config) as exporter:
        wait_for(
            lambda: (
                (probe_value(exporter, "glyph_probe_consecutive_failures", "refused") or 0) >= 2
            ),
            5,
        )
        assert probe_value(exporter, "glyph_probe_success", "refused") == 0
        assert probe_value(exporter, "glyph_probe_http_status", "refused") == 0


def test_hung_endpoint_fails_by_timeout_while_scrapes_stay_fast() -> None:
    with hung_server() as port:
        config = deployment(svc(port, [{"name": "hung", "path": "/ok", "timeout_seconds": 1}]))
        with running_exporter(config) as exporter:
            slowest = 0.0
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:  # scrapes during the hung attempts
                took, _ = timed_scrape(exporter)
                slowest = max(slowest, took)
                time.sleep(0.02)
            wait_for(lambda: probe_value(exporter, "glyph_probe_duration_seconds_count", "hung"), 5)
            assert probe_value(exporter, "glyph_probe_success", "hung") == 0
            assert probe_value(exporter, "glyph_probe_http_status", "hung") == 0
            total = probe_value(exporter, "glyph_probe_duration_seconds_sum", "hung")
            count = probe_value(exporter, "glyph_probe_duration_seconds_count", "hung")
            assert total is not None and count
            assert 0.95 <= total / count < 2.0  # each attempt ended by its own timeout
    # A scrape that waited on an attempt would take up to its whole second; scheduling on a
    # busy machine (sampler, server and test share one process) takes a fraction of that.
    assert slowest < 0.5, f"a scrape waited on the hung probe: {slowest:.3f} s"


@pytest.mark.parametrize(("path", "expected"), [("/v1/chat/completions", 1.0), ("/v1/empty", 0.0)])
def test_canary_posts_one_token_and_needs_choices(path: str, expected: float) -> None:
    with http_server() as server:
        probe = {"name": "canary", "kind": "canary", "path": path, "model": "glyph"}
        config = deployment(svc(server.server_address[1], [probe]), canary=1)
        with running_exporter(config) as exporter:
            wait_for(lambda: probe_value(exporter, "glyph_probe_success", "canary") is not None, 5)
            assert probe_value(exporter, "glyph_probe_success", "canary") == expected
        request = server.canary_requests[0]  # type: ignore[attr-defined]
    assert request["max_tokens"] == 1
    assert request["model"] == "glyph"
    assert request["messages"][0]["role"] == "user"
