"""Serving /metrics (prometheus_client's WSGI app) and a small index page, to bounded clients."""

from __future__ import annotations

import gzip
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import gzip_accepted

from glyph_guard.exporter.exposition import Exposition

INDEX = b"""<!doctype html>
<html><head><title>glyph-exporter</title></head>
<body><h1>glyph-exporter</h1>
<p>Prometheus metrics for a Glyph deployment: <a href="/metrics">/metrics</a></p>
</body></html>
"""

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


IO_SECONDS = 5.0  # reading a dispatched request and writing its answer
HEAD_SECONDS = 5.0  # from accept to a whole request head; then the connection is dropped
HEAD_MAX_BYTES = 8192
MAX_WAITING = 256  # connections without a whole request yet; beyond, the oldest is dropped
WORKERS = 4
RECHECK_SECONDS = 0.05  # how soon an incomplete request head is looked at again


class _QuietHandler(WSGIRequestHandler):
    timeout = IO_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _BoundedServer(WSGIServer):
    """wsgiref's server, serving each connection only once its request head has arrived.

    One selector thread accepts and watches connections, so idle or trickling clients cost
    a file descriptor, never a thread, and are dropped after HEAD_SECONDS; a bounded pool
    of workers answers the complete requests (one each: wsgiref closes after answering).
    """

    request_queue_size = 128  # socketserver's 5 leaves connects beyond it to SYN retries

    def server_activate(self) -> None:
        super().server_activate()
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[socket.socket, tuple[float, Any]] = {}  # accepted at, address
        self._parked: dict[socket.socket, float] = {}  # not watched until then
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="metrics-http")
        self._stopping = threading.Event()
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ)

    def serve(self) -> None:
        while not self._stopping.is_set():
            timeout = RECHECK_SECONDS if self._parked else 0.5
            for key, _ in self._selector.select(timeout):
                try:
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj in self._waiting:  # not dropped by an accept this round
                        self._look(key.fileobj)
                except Exception:  # one connection's trouble must not end /metrics for all
                    log.exception("serving a connection failed")
                    if key.fileobj in self._waiting:
                        self._drop(key.fileobj)
            self._expire(time.monotonic())
        for conn in [*self._waiting]:
            self._drop(conn)
        self._selector.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self._stopping.set()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors: let the held ones expire first
                log.warning("cannot accept a connection", exc_info=True)
                return
            if len(self._waiting) >= MAX_WAITING:
                self._drop(min(self._waiting, key=lambda c: self._waiting[c][0]))
            conn.setblocking(False)
            self._waiting[conn] = (time.monotonic(), address)
            self._selector.register(conn, selectors.EVENT_READ)

    def _look(self, conn: socket.socket) -> None:
        try:
            head = conn.recv(HEAD_MAX_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            head = b""
        if not head or (b"\r\n\r\n" not in head and len(head) >= HEAD_MAX_BYTES):
            self._drop(conn)
        elif b"\r\n\r\n" in head:
            address = self._waiting[conn][1]
            self._forget(conn)
            conn.setblocking(True)
            self._pool.submit(self._answer, conn, address)
        else:  # part of a head: look again soon, without spinning on it meanwhile
            self._selector.unregister(conn)
            self._parked[conn] = time.monotonic() + RECHECK_SECONDS

    def _expire(self, now: float) -> None:
        for conn, due in [*self._parked.items()]:
            if due <= now:
                del self._parked[conn]
                self._selector.register(conn, selectors.EVENT_READ)
        for conn, (accepted, _) in [*self._waiting.items()]:
            if now - accepted > HEAD_SECONDS:
                self._drop(conn)

    def _forget(self, conn: socket.socket) -> None:
        self._waiting.pop(conn, None)
        if self._parked.pop(conn, None) is None:
            self._selector.unregister(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._forget(conn)
        conn.close()

    def _answer(self, conn: socket.socket, address: Any) -> None:
        try:
            self.finish_request(conn, address)
        except Exception:
            self.handle_error(conn, address)
        finally:
            self.shutdown_request(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("answering %s failed", client_address, exc_info=True)


class _V6Server(_BoundedServer):
    address_family = socket.AF_INET6


def make_app(registry: CollectorRegistry, exposition: Exposition) -> WSGIApp:
    """/metrics from the exposition (from the registry for what only prometheus_client's own
    app answers: a name[] filter, a method other than GET), / as a link page, 404 elsewhere."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if (
            path == "/metrics"
            and environ["REQUEST_METHOD"] == "GET"
            and not environ.get("QUERY_STRING")
        ):
            text, content_type = exposition.body(environ.get("HTTP_ACCEPT", ""))
            headers = [("Content-Type", content_type)]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                text = gzip.compress(text)
                headers.append(("Content-Encoding", "gzip"))
            start_response("200 OK", headers)
            return [text]
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
    """The bounded HTTP server on its own thread; port 0 picks a free one."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, exposition: Exposition
    ) -> None:
        server_class = _V6Server if ":" in host else _BoundedServer
        self._server: _BoundedServer = make_server(
            host, port, make_app(registry, exposition), server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()
        if self._thread.is_alive():
            self._thread.join(5)
        self._server.server_close()
