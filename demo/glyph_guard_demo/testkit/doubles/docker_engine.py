"""A Docker Engine double for what a real engine never answers (tests/test_docker_backend.py has
the real one): the API subset the remediator uses, on a unix socket, recording calls."""

from __future__ import annotations

import json
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

ROUTE = re.compile(r"^/containers/(?P<name>[^/]+)/(?P<verb>restart|json)$")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    engine: FakeDockerEngine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self, code: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        engine = self.server.engine
        path, _, query = self.path.partition("?")
        engine.calls.append((method, path, query))
        match = ROUTE.match(path)
        if match is None:
            self._answer(404, {"message": "page not found"})
            return
        state = engine.containers.get(match["name"])
        if state is None:
            self._answer(404, {"message": f"No such container: {match['name']}"})
        elif method == "POST" and match["verb"] == "restart":
            self._answer(204)
        elif method == "GET" and match["verb"] == "json" and isinstance(state, bytes):
            self._raw(200, state)
        elif method == "GET" and match["verb"] == "json":
            self._answer(200, {"Name": "/" + match["name"], "State": state})
        else:
            self._answer(405, {"message": "method not allowed"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._route("POST")

    def do_GET(self) -> None:
        self._route("GET")

    def log_message(self, format: str, *args: object) -> None:
        pass


class FakeDockerEngine:
    """Containers by name with the State that inspect returns; every call is kept in `calls`."""

    def __init__(self, socket_path: Path, containers: dict[str, dict[str, Any] | bytes]) -> None:
        self.socket_path = socket_path
        self.containers = containers
        self.calls: list[tuple[str, str, str]] = []
        self._server = _Server(str(socket_path), _Handler)
        self._server.engine = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDockerEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
