"""The remediator against web pages and neighbours: Host, cross-site requests, secrets, floods."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import yaml

from glyph_guard_demo.testkit.doubles.harness import (
    TOKEN,
    Remediator,
    make_config,
    payload,
    tripwire,
)
from glyph_guard_demo.testkit.support import REPO, spawned, wait_for


def test_cross_site_requests_are_refused(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    with Remediator(make_config(tmp_path, {"api": component}, dry_run=True)) as rem:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            answer = httpx.post(f"{rem.url}/alerts", json=payload(), headers={**auth, **headers})
            assert answer.status_code == 403, headers
            assert answer.json()["detail"] == "cross-site request refused"
        same = {"Origin": rem.url, "Sec-Fetch-Site": "same-origin", **auth}
        assert httpx.post(f"{rem.url}/components/api/pause", headers=same).status_code == 200


def test_a_rebound_host_name_is_refused(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": component}, allowed_hosts=["glyph-box.lan"])
    with Remediator(config) as rem:
        port = config.remediator.address[1]
        for host, status in (
            ("attacker.example", 400),
            (f"attacker.example:{port}", 400),
            (f"localhost:{port}", 200),
            (f"127.0.0.1:{port}", 200),
            (f"GLYPH-box.lan:{port}", 200),
        ):
            answer = rem.http.get("/components", headers={"Host": host})
            assert answer.status_code == status, host
        assert (
            "remediator.allowed_hosts"
            in rem.http.get("/healthz", headers={"Host": "attacker.example"}).json()["detail"]
        )


def test_a_token_file_other_users_can_read_is_refused(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": component})
    assert config.remediator.token_file is not None
    config.remediator.token_file.chmod(0o644)
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    done = subprocess.run(
        [sys.executable, "-m", "glyph_guard.remediator", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    token = config.remediator.token_file
    assert done.returncode == 2
    assert f"remediator.token_file: {token} is open to other users (mode 0644)" in done.stderr
    assert f"chmod 600 {token}" in done.stderr
    assert "Traceback" not in done.stderr


def _hold(port: int, count: int, stack: ExitStack, trickle: bool = False) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            continue
        if trickle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        held.append(sock)
    return held


@contextmanager
def served(
    tmp_path: Path, fd_limit: int | None = None, **settings: object
) -> Iterator[tuple[int, Path]]:
    """glyph-remediator as its CLI runs, optionally under a low open-files limit."""
    _, component = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": component}, dry_run=True, **settings)
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    port = config.remediator.address[1]
    log = tmp_path / "remediator.log"

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", str(path)]
    with log.open("wb") as out, spawned(argv, stderr=out, preexec_fn=limit, cwd=REPO):
        wait_for(lambda: _healthy(port, 1.0), 30, interval=0.1)
        yield port, log


def _healthy(port: int, timeout: float) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def test_without_credentials_only_the_webhook_is_served(tmp_path: Path) -> None:
    """Once a web page the operator visited could pause remediation with a bodiless POST."""
    with served(tmp_path, token_file=None) as (port, _), ExitStack() as stack:
        plain = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5))
        for switch in ("pause", "reset", "resume", "restart"):
            answer = plain.post(f"/components/api/{switch}")
            assert answer.status_code == 403, switch
            assert "needs credentials: set remediator.token_file" in answer.json()["detail"]
        for read in ("/actions", "/decisions", "/components", "/components/api"):
            assert plain.get(read).status_code == 403, read
        assert plain.post("/alerts", json=payload()).status_code == 202
        assert plain.get("/metrics").status_code == 200


def test_a_real_request_is_answered_while_connections_are_held(tmp_path: Path) -> None:
    with served(tmp_path) as (port, _), ExitStack() as stack:
        _hold(port, 100, stack)
        _hold(port, 20, stack, trickle=True)
        started = time.monotonic()
        assert _healthy(port, 1.0)
        assert time.monotonic() - started < 1.0


def test_idle_connections_are_dropped_and_an_fd_flood_is_logged_sparingly(
    tmp_path: Path,
) -> None:
    """Under a 64-file limit, held connections once logged ~40,000 accept errors a second."""
    with served(tmp_path, fd_limit=64) as (port, log), ExitStack() as stack:
        held = _hold(port, 5, stack, trickle=True) + _hold(port, 60, stack)
        lines = log.read_bytes().count(b"\n")
        time.sleep(3)
        assert log.read_bytes().count(b"\n") - lines < 200
        wait_for(lambda: _healthy(port, 1.0), 20, interval=0.5)  # the idle ones were dropped
        for sock in (held[0], held[5]):  # a trickled request head, an idle connection
            sock.settimeout(1)
            assert sock.recv(1) == b""
