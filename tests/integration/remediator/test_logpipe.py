"""What a restart's output costs on disk: capped and rotated, never a reason a start fails."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from glyph_guard.common.config import Deployment, dump_config
from glyph_guard.common.stopping import alive
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
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for

MiB = 1024 * 1024
# prints MiB lines (argv[1] of them, and the marker line argv[2]), then becomes the service
PRINT_THEN_SERVE = """
import os, sys
line = b"x" * (1024 * 1024 - 1) + b"\\n"
for _ in range(int(sys.argv[1])):
    os.write(1, line)
os.write(1, sys.argv[2].encode() + b"\\n")
os.execv(sys.argv[3], sys.argv[3:])
"""


def printing_component(port: int, mark: str, mebibytes: int, **restart: Any) -> dict[str, Any]:
    start = [sys.executable, "-c", PRINT_THEN_SERVE, str(mebibytes), f"printed-{mark}"]
    component = command_component(
        port, mark, start=[*start, *service_argv(port, mark)], startup_timeout_seconds=120
    )
    component["remediation"]["restart"].update(restart)
    return component


def logs(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name))


@contextlib.contextmanager
def remediator(config: Deployment) -> Iterator[Remediator]:
    """The remediator, served in this process; what it started is ended by process group."""
    with Remediator(config) as rem:
        try:
            yield rem
        finally:
            for action in rem.actions():
                if action["details"].get("started_pid"):
                    kill_group(action["details"]["started_pid"])


def restart_once(rem: Remediator, count: int = 1) -> dict[str, Any]:
    """An operator's restart (an alert about the healthy incarnation it started last would
    find it recovered)."""
    assert rem.restart().status_code == 202
    done = rem.finished_actions(count, timeout=180)
    return dict(done[-1])


def test_a_start_that_prints_200_mb_leaves_at_most_the_cap(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    log = tmp_path / "out" / "api.log"
    component = printing_component(
        port, mark, 200, log_file=str(log), log_max_bytes=MiB, log_backups=2
    )
    with remediator(make_config(tmp_path, {"api": component})) as rem:
        action = restart_once(rem)
        assert action["outcome"] == "succeeded", action
        wait_for(lambda: f"printed-{mark}".encode() in log.read_bytes(), 30)
        files = logs(log)
        assert [p.name for p in files] == ["api.log", "api.log.1", "api.log.2"]
        assert all(p.stat().st_size <= MiB for p in files)
        assert sum(p.stat().st_size for p in files) <= 3 * MiB
        assert alive(psutil.Process(action["details"]["log_pipe_pid"]))


def test_the_log_pipe_ends_with_the_component_tree(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    component = command_component(port, mark, start=service_argv(port, mark, "--child"))
    with remediator(make_config(tmp_path, {"api": component})) as rem:
        first = restart_once(rem)
        assert first["outcome"] == "succeeded", first
        pipe = psutil.Process(first["details"]["log_pipe_pid"])
        assert alive(pipe)
        second = restart_once(rem, 2)  # stops the first tree (service and child)
        assert second["outcome"] == "succeeded", second
        wait_for(lambda: not alive(pipe), 10)
        again = psutil.Process(second["details"]["log_pipe_pid"])
        assert alive(again)
        kill_group(second["details"]["started_pid"])
        wait_for(lambda: not alive(again), 10)


@contextlib.contextmanager
def tiny_disk(path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at path (root only), unmounted afterwards."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()


@pytest.mark.parametrize("where", ["full before the start", "fills while it prints"])
def test_a_full_log_disk_never_stops_a_start(tmp_path: Path, where: str) -> None:
    port, mark = free_port(), marker()
    with tiny_disk(tmp_path / "disk") as disk:
        log = disk / "api.log"
        if where == "full before the start":
            fill(disk)
        component = printing_component(port, mark, 8, log_file=str(log))  # 8 MiB onto 1 MiB
        with remediator(make_config(tmp_path, {"api": component})) as rem:
            action = restart_once(rem)
            assert action["outcome"] == "succeeded", action
            assert healthy(port)
            details = action["details"]
            if where == "full before the start":
                assert details["output"] == "discarded"
                assert "No space left on device" in details["log_error"]
                assert not log.exists() or log.stat().st_size == 0
            else:  # the pipe kept draining: the component printed everything, then served
                assert alive(psutil.Process(details["log_pipe_pid"]))
                assert log.stat().st_size <= MiB  # the disk


def test_a_log_directory_that_cannot_be_made_never_stops_a_start(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be\n")
    component = command_component(port, mark)
    component["remediation"]["restart"]["log_file"] = str(blocker / "api.log")
    with remediator(make_config(tmp_path, {"api": component})) as rem:
        action = restart_once(rem)
    assert action["outcome"] == "succeeded", action
    assert action["details"]["output"] == "discarded"
    assert str(blocker / "api.log") in action["details"]["log_error"]


def test_under_systemd_the_output_goes_to_the_journal_stream(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    config = make_config(tmp_path, {"api": printing_component(port, mark, 0)})
    (tmp_path / "remediator.yaml").write_text(dump_config(config))
    journal = tmp_path / "journal"  # stands for the stream systemd connects stdout/stderr to
    argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", "remediator.yaml"]
    with journal.open("wb") as stream:
        stat = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        with spawned(argv, cwd=tmp_path, env=env, stdout=stream, stderr=stream) as daemon:
            url = "http://{}:{}".format(*config.remediator.address)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=url, headers=headers, timeout=10) as http:

                def up() -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        return http.get("/healthz").status_code == 200
                    return False

                wait_for(up, 20)
                http.post("/alerts", json=payload(alert())).raise_for_status()

                def finished() -> list[dict[str, Any]]:
                    return [a for a in http.get("/actions").json() if a["finished_at"]]

                [action] = wait_for(finished, 60)
            try:
                assert action["outcome"] == "succeeded", action
                assert action["details"]["output"] == "journal"
                wait_for(lambda: f"printed-{mark}".encode() in journal.read_bytes(), 10)
                assert not (tmp_path / "logs" / "api.log").exists()
            finally:
                kill_group(action["details"]["started_pid"])
                daemon.stop()


def test_a_start_that_fails_with_its_output_discarded_still_fails_to_start(
    tmp_path: Path,
) -> None:
    port, mark = free_port(), marker()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be\n")
    failing = [sys.executable, "-c", "raise SystemExit(3)", mark]
    component = command_component(port, mark, start=failing)
    component["remediation"]["restart"]["log_file"] = str(blocker / "api.log")
    with Remediator(
        make_config(
            tmp_path,
            {"api": component},
            budget={"backoff_initial_seconds": 60, "backoff_max_seconds": 60},
        )
    ) as rem:
        action = restart_once(rem)
    assert action["outcome"] == "failed_to_start", action
    assert "exited with code 3" in action["reason"]
    assert action["details"]["output"] == "discarded"
    assert "log_tail" not in action["details"]
