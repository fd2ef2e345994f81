"""The exporter's HTTP server against clients that connect and never (or slowly) ask."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from contextlib import ExitStack

from glyph_guard_demo.testkit.exporter_fixtures import deployment, running_exporter, timed_scrape


def test_held_connections_cost_no_threads_and_a_scrape_still_answers() -> None:
    """300 idle connections once held 306 exporter threads."""
    config = deployment({"svc": {"match": {"program": "no-such-program-xyz"}}})
    with running_exporter(config) as exporter, ExitStack() as stack:
        port = exporter.server.port
        threads = threading.active_count()
        held = []
        for index in range(320):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            if index % 16 == 0:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # a head never finished
            held.append(sock)
        time.sleep(0.5)
        seconds, text = timed_scrape(exporter)
        assert seconds < 1.0
        assert "glyph_component_up" in text
        assert threading.active_count() - threads < 10
        for sock in (held[-16], held[-1]):  # trickled, idle: both dropped after a few seconds
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):  # closed with unread data: dropped
                assert sock.recv(1) == b""


def test_trickling_clients_beyond_the_waiting_limit_leave_the_server_answering() -> None:
    """The oldest waiting connection, dropped for a newcomer, was then read again: the
    selector thread died of it and /metrics stopped answering (a CI run caught it)."""
    config = deployment({"svc": {"match": {"program": "no-such-program-xyz"}}})
    with running_exporter(config) as exporter, ExitStack() as stack:
        port = exporter.server.port
        for _ in range(600):  # each one readable, watched again every RECHECK_SECONDS
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(0.3)
        seconds, text = timed_scrape(exporter)
        assert "glyph_component_up" in text
        assert seconds < 1.0
