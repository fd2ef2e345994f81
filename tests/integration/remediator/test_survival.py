"""The remediator as a real process: repeated kills, crash loops, its own stops, store faults."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from glyph_guard.common.config import Deployment, dump_config
from glyph_guard.remediator.incarnation import STARTS_AT_LAG_SECONDS
from glyph_guard_demo.testkit.doubles.harness import (
    TOKEN,
    Remediator,
    alert,
    command_component,
    healthy,
    kill_group,
    make_config,
    marker,
    payload,
    service_argv,
)
from glyph_guard_demo.testkit.support import Spawned, free_port, spawned, wait_for


def now_alert(**labels: Any) -> dict[str, Any]:
    """A new incident: its own fingerprint, starting now."""
    stamp = datetime.now(UTC)
    return alert(fingerprint=f"{time.time_ns():016x}"[-16:], starts_at=stamp.isoformat(), **labels)


class Process:
    """glyph-remediator started by its CLI, with real signals."""

    def __init__(self, config: Deployment, tmp_path: Path, env: dict[str, str] | None = None):
        self.config = config
        self.file = tmp_path / "remediator.yaml"
        self.file.write_text(dump_config(config))
        self.url = "http://{}:{}".format(*config.remediator.address)
        self.log = tmp_path / "remediator.log"
        self.env = env
        self.proc: Spawned | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def start(self) -> Process:
        argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", str(self.file)]
        env = {**os.environ, **(self.env or {})}
        with self.log.open("ab") as out:
            self.proc = Spawned(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(self._up, 20)
        except BaseException:  # not up: not left running for a later test to trip over
            self.proc.stop()
            raise
        return self

    def _up(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.proc.send_signal(sig)
        return self.proc.proc.wait(30)

    def post(self, *alerts: dict[str, Any]) -> list[str]:
        answer = self.http.post("/alerts", json=payload(*alerts))
        answer.raise_for_status()
        return [a["reason"] for a in answer.json()["alerts"]]

    def actions(self) -> list[dict[str, Any]]:
        response = self.http.get("/actions", params={"limit": 1000})
        response.raise_for_status()
        return list(reversed(response.json()))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for action in self.actions():
                if action["details"].get("started_pid"):
                    kill_group(action["details"]["started_pid"])
        if self.proc is not None:
            self.proc.stop()
        self.http.close()


@contextlib.contextmanager
def remediator_process(config: Deployment, tmp_path: Path) -> Iterator[Process]:
    process = Process(config, tmp_path).start()
    try:
        yield process
    finally:
        process.close()


def restarts(rem: Remediator | Process) -> list[dict[str, Any]]:
    return [a for a in rem.actions() if a["action"] == "restart"]


def test_ten_kills_of_a_service_that_recovers_are_all_recovered(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    budget = {
        "min_healthy_seconds": 1,
        "backoff_initial_seconds": 0.5,
        "backoff_max_seconds": 2,
        "max_failed_restarts": 3,
    }
    config = make_config(tmp_path, {"api": command_component(port, mark)}, budget=budget)
    with spawned(service_argv(port, mark)) as first, Remediator(config) as rem:
        wait_for(lambda: healthy(port), 10)
        victim = first.pid
        for kill in range(10):
            time.sleep(1.3)  # healthy for longer than min_healthy_seconds
            kill_group(victim)
            wait_for(lambda: not healthy(port), 5)
            assert rem.post(payload(now_alert())).status_code == 202
            done = rem.finished_actions(kill + 1, timeout=20)
            assert done[-1]["outcome"] == "succeeded", done[-1]
            wait_for(lambda: healthy(port), 5)
            victim = done[-1]["details"]["started_pid"]
        rem.idle()
        assert [a["outcome"] for a in restarts(rem)] == ["succeeded"] * 10
        assert rem.status()["gave_up"] is False
        assert rem.status()["budget_remaining"] == 3
        # each death came after a lasting recovery: neither back-off nor cooldown delayed one
        assert [r for r in rem.reasons() if r.startswith("deferred:")] == []
        metrics = rem.http.get("/metrics").text
        assert 'glyph_remediator_restarts_total{component="api",outcome="succeeded"} 10.0' in (
            metrics
        )  # what GlyphComponentRestartingOften counts (promtool-tested)


@pytest.mark.parametrize("dies_after", [None, 0.5])
def test_a_crash_loop_gives_up_within_the_count_and_stays(
    tmp_path: Path, dies_after: float | None
) -> None:
    port, mark = free_port(), marker()
    if dies_after is None:  # a start command that always fails
        start = [sys.executable, "-c", "raise SystemExit(3)", mark]
    else:  # healthy after each start, dead again shortly after
        start = service_argv(port, mark, "--die-after", str(dies_after))
    config = make_config(
        tmp_path,
        {"api": command_component(port, mark, start=start)},
        budget={"max_failed_restarts": 3, "min_healthy_seconds": 3},
    )
    with Remediator(config) as rem:
        rem.post(payload(now_alert()))
        deadline = time.monotonic() + 40
        while not rem.status()["gave_up"]:
            assert time.monotonic() < deadline, rem.reasons()
            if dies_after is not None and rem.status()["busy"] is None and not healthy(port):
                rem.post(payload(now_alert()))  # what Alertmanager sends when it dies again
            time.sleep(0.1)
        rem.idle()
        assert len(restarts(rem)) == 3
        rem.post(payload(now_alert()))
        time.sleep(0.5)
        assert len(restarts(rem)) == 3
        assert rem.reasons()[-1] == "skipped:gave_up"
        assert 'glyph_remediator_gave_up{component="api"} 1.0' in rem.http.get("/metrics").text


def _slow_to_stop(tmp_path: Path, **budget: Any) -> tuple[int, Deployment]:
    port, mark = free_port(), marker()
    component = command_component(port, mark, start=service_argv(port, mark, "--term-delay", "2"))
    component["remediation"]["stop_grace_seconds"] = 5
    config = make_config(tmp_path, {"api": component}, budget=budget)
    return port, config


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopped_mid_restart_it_restarts_exactly_once_more(
    tmp_path: Path, sig: signal.Signals
) -> None:
    port, config = _slow_to_stop(tmp_path)
    mark = config.components[0].match.cmdline or ""
    termed = tmp_path / "old-service-termed"
    term = ["--term-delay", "2", "--term-report", str(termed)]
    old = service_argv(port, mark.replace("\\", ""), *term)
    with spawned(old):
        wait_for(lambda: healthy(port), 10)
        time.sleep(STARTS_AT_LAG_SECONDS)  # it ran when the rule looked: the one the alert is about
        process = Process(config, tmp_path).start()
        try:
            assert process.post(now_alert()) == ["acted"]  # e.g. hung: restart
            wait_for(termed.exists, 10)  # it is waiting for the old service to exit
            process.signal(sig)
            wait_for(lambda: not healthy(port), 10)  # the old one exits; nothing new started

            process.start()
            wait_for(lambda: healthy(port), 20)
            wait_for(lambda: [a["outcome"] for a in process.actions()][-1:] == ["succeeded"], 20)
            time.sleep(1)
            outcomes = [a["outcome"] for a in process.actions()]
            assert outcomes == ["interrupted", "succeeded"]
            status = process.http.get("/components/api").json()
            assert status["busy"] is None and status["waiting"] == []
        finally:
            process.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopped_mid_cooldown_it_takes_the_waiting_restart_up(
    tmp_path: Path, sig: signal.Signals
) -> None:
    port, mark = free_port(), marker()
    config = make_config(
        tmp_path, {"api": command_component(port, mark)}, budget={"cooldown_seconds": 3}
    )
    process = Process(config, tmp_path).start()
    try:
        late = now_alert()  # began before the restart below finished: held by the cooldown
        assert process.post(now_alert()) == ["acted"]
        wait_for(lambda: [a["outcome"] for a in process.actions()] == ["succeeded"], 15)
        kill_group(process.actions()[0]["details"]["started_pid"])  # dead again in the cooldown
        wait_for(lambda: not healthy(port), 5)
        assert process.post(late) == ["cooldown"]
        process.signal(sig)

        process.start()
        assert process.post(late) == ["coalesced"]  # Alertmanager's re-send: not a duplicate
        wait_for(lambda: len(process.actions()) == 2 and healthy(port), 20)
        wait_for(lambda: process.actions()[-1]["outcome"] == "succeeded", 15)
        time.sleep(1)
        assert [a["outcome"] for a in process.actions()] == ["succeeded", "succeeded"]
    finally:
        process.close()


def test_a_write_lock_held_elsewhere_never_wedges_or_blocks(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    component = command_component(port, mark, start=service_argv(port, mark, "--delay", "1"))
    config = make_config(tmp_path, {"api": component}, store_timeout_seconds=0.3)
    with Remediator(config) as rem:
        db = sqlite3.connect(config.remediator.state_db, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        try:
            began = time.monotonic()
            assert rem.post(payload(now_alert())).json()["alerts"][0]["reason"] == "acted"
            assert time.monotonic() - began < 3
            wait_for(lambda: healthy(port), 15)
            wait_for(lambda: rem.status()["busy"] is None, 10)
            slowest = 0.0
            for _ in range(5):
                began = time.monotonic()
                assert rem.http.get("/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - began)
            assert slowest < 0.5
            assert rem.http.get("/actions").status_code == 200  # WAL: readers never wait
            metrics = rem.http.get("/metrics").text
            assert 'glyph_remediator_store_errors_total{operation="write"} 0.0' not in metrics
            assert "glyph_remediator_store_pending_writes 0.0" not in metrics
            manual = rem.http.post("/components/api/restart")
            assert manual.status_code == 202, manual.text  # not wedged busy
            db.execute("ROLLBACK")
            # the kept record is written once the lock is gone
            done = rem.finished_actions(2, timeout=30)
            assert [a["outcome"] for a in done] == ["succeeded", "succeeded"]
            pending = "glyph_remediator_store_pending_writes 0.0"
            wait_for(lambda: pending in rem.http.get("/metrics").text, 20)
        finally:
            db.close()
            for pid in _listeners(port):  # also when the record never caught up
                kill_group(pid)


def test_a_read_only_database_still_acts_and_says_so(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    db = config.remediator.state_db
    with Remediator(config):
        pass  # creates the database
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False).returncode:
        pytest.skip("this file system cannot make a file immutable (chattr +i)")
    try:
        before = db.read_bytes()
        with Remediator(config) as rem:
            incident = now_alert()
            assert rem.post(payload(incident)).json()["alerts"][0]["reason"] == "acted"
            wait_for(lambda: healthy(port), 15)
            wait_for(lambda: rem.status()["busy"] is None, 10)
            metrics = rem.http.get("/metrics").text
            assert "glyph_remediator_store_pending_writes 0.0" not in metrics
            assert 'glyph_remediator_store_errors_total{operation="write"} 0.0' not in metrics
            # dedup holds in memory
            assert rem.post(payload(incident)).json()["alerts"][0]["reason"] == "duplicate"
        assert db.read_bytes() == before
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=False)
        with contextlib.suppress(Exception):
            for pid in _listeners(port):
                kill_group(pid)


def _listeners(port: int) -> list[int]:
    return [
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == "LISTEN" and c.pid
    ]


def test_a_corrupt_database_stops_it_naming_the_file_and_is_left_alone(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"api": command_component(free_port(), marker())})
    db = config.remediator.state_db
    db.parent.mkdir(parents=True)
    garbage = b"SQLite format 3\x00" + bytes(range(256)) * 20
    db.write_bytes(garbage)
    file = tmp_path / "remediator.yaml"
    file.write_text(dump_config(config))
    done = subprocess.run(
        [sys.executable, "-m", "glyph_guard.remediator", "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert str(db) in done.stderr and "not a usable SQLite database" in done.stderr
    assert "Traceback" not in done.stderr
    assert db.read_bytes() == garbage


def _datagrams(sock: socket.socket, until: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while until not in got:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


@pytest.mark.parametrize("service", ["remediator", "exporter"])
def test_readiness_and_watchdog_reach_systemd(tmp_path: Path, service: str) -> None:
    config = make_config(tmp_path, {"api": command_component(free_port(), marker())})
    file = tmp_path / "glyph.yaml"
    file.write_text(dump_config(config))
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        env = {"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "400000"}
        argv = [sys.executable, "-m", f"glyph_guard.{service}", "--config", str(file)]
        if service == "exporter":
            argv += ["--no-nvml", "--listen", f"127.0.0.1:{free_port()}"]
        with spawned(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL) as proc:
            ready = _datagrams(sock, "READY=1", 20)
            assert "READY=1" in ready
            beats = _datagrams(sock, "never", 1.0)
            assert beats.count("WATCHDOG=1") >= 2
            proc.proc.terminate()
            assert "STOPPING=1" in _datagrams(sock, "STOPPING=1", 10)
            proc.proc.wait(10)


def test_stopped_while_verifying_it_keeps_the_started_service_and_records_recovered(
    tmp_path: Path,
) -> None:
    port, mark = free_port(), marker()
    slow = service_argv(port, mark, "--delay", "2")  # started, healthy only 2 s later
    config = make_config(tmp_path, {"api": command_component(port, mark, start=slow)})
    process = Process(config, tmp_path).start()
    try:
        assert process.post(now_alert()) == ["acted"]
        wait_for(lambda: _running_with(mark), 10)  # the start has begun
        process.signal(signal.SIGTERM)
        wait_for(lambda: healthy(port), 10)  # what it started runs on

        process.start()
        wait_for(
            lambda: any(d["reason"] == "recovered" for d in process.http.get("/decisions").json()),
            15,
        )
        assert [a["outcome"] for a in process.actions()] == ["interrupted"]
        with contextlib.closing(sqlite3.connect(config.remediator.state_db)) as db:
            row = db.execute("SELECT started FROM component_state WHERE name = 'api'").fetchone()
        assert row[0] is not None  # the process it started is known
    finally:
        for pid in _listeners(port):
            kill_group(pid)
        process.close()


def _running_with(mark: str) -> bool:
    return any(mark in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))
