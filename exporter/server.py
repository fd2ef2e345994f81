"""Serving /metrics (prometheus_client's WSGI app) and a small index page."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

INDEX = b"""<!doctype html>
<html><head><title>glyph-exporter</title></head>
<body><h1>glyph-exporter</h1>
<p>Prometheus metrics for a Glyph deployment: <a href="/metrics">/metrics</a></p>
</body></html>
"""

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _V6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


def make_app(registry: CollectorRegistry) -> WSGIApp:
    """/metrics from the registry, / as a link page, 404 elsewhere."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body: Iterable[bytes] = metrics(environ, start_response)
            return body
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [INDEX]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found; metrics are at /metrics\n"]

    return app


class MetricsServer:
    """A threaded HTTP server on its own thread; port 0 picks a free one."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        server_class = _V6Server if ":" in host else ThreadingWSGIServer
        self._server: WSGIServer = make_server(
            host, port, make_app(registry), server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
