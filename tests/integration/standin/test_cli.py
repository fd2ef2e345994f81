"""The glyph-standin command line: the `all` launcher, hold-port, flags, and the example config."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from glyph_guard.common.config import load_config
from glyph_guard.common.processes import argv_matches
from glyph_guard_demo.stack.cli import EXAMPLE
from glyph_guard_demo.testkit.standin_fixtures import (
    STANDIN,
    answers,
    api,
    gone,
    listening,
    run_to_end,
)
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for

CONSOLE_SCRIPT = Path(sys.executable).parent / "glyph-standin"


def _both_pids(log: Path) -> dict[str, int]:
    """The api and ui PIDs the launcher printed; empty until it printed both."""
    found = re.findall(r"^(api|ui): pid (\d+)", log.read_text(), re.M)
    pids = {name: int(pid) for name, pid in found}
    return pids if len(pids) == 2 else {}


def test_all_runs_both_components_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    api_port, ui_port = free_port(), free_port()
    argv = [
        *STANDIN,
        "--api-port",
        str(api_port),
        "--ui-port",
        str(ui_port),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--pages-dir",
        str(tmp_path / "pages"),
        "--log-level",
        "warning",
    ]
    log = tmp_path / "all.log"
    with log.open("wb") as out, spawned(argv, stdout=out, stderr=subprocess.STDOUT) as launcher:
        pids = wait_for(lambda: _both_pids(log), 10)
        assert f"http://127.0.0.1:{api_port}" in log.read_text()
        assert "stand-in" in log.read_text()
        wait_for(lambda: answers(f"http://127.0.0.1:{api_port}/health"), 30)
        wait_for(lambda: answers(f"http://127.0.0.1:{ui_port}/config"), 30)
        reply = httpx.post(
            f"http://127.0.0.1:{ui_port}/gradio_api/predict",
            json={"data": ["through both"]},
            timeout=20,
        )
        assert reply.status_code == 200
        api_proc = psutil.Process(pids["api"])
        assert api_proc.ppid() == launcher.pid
        engine = next(
            c for c in api_proc.children() if "glyph-standin-engine" in " ".join(c.cmdline())
        )
        everything = [launcher.pid, pids["api"], pids["ui"], engine.pid]

        config = load_config(EXAMPLE)
        argvs = {pid: psutil.Process(pid).cmdline() for pid in everything}
        matching = {
            c.name: [pid for pid, argv in argvs.items() if argv_matches(c.match, argv)]
            for c in config.components
        }
        assert matching == {"api": [pids["api"]], "ui": [pids["ui"]]}

        launcher.proc.send_signal(signal.SIGTERM)
        assert launcher.proc.wait(15) == 0
        for pid in everything:
            wait_for(lambda p=pid: gone(p), 5)  # type: ignore[misc]
        assert not listening(api_port)
        assert not listening(ui_port)


def test_hold_port_listens_never_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "hold.log"
    argv = [*STANDIN, "hold-port", str(port)]
    with log.open("wb") as out, spawned(argv, stdout=out, stderr=subprocess.STDOUT) as holder:
        wait_for(lambda: listening(port), 10)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
        blocked = run_to_end([*STANDIN, "api", "--port", str(port)])
        assert blocked.returncode == 1
        assert "Address already in use" in blocked.stderr
        assert "Traceback" not in blocked.stderr
        second = run_to_end([*STANDIN, "hold-port", str(port)])
        assert second.returncode == 1
        holder.proc.send_signal(signal.SIGTERM)
        assert holder.proc.wait(5) == 0
    assert not listening(port)
    assert f"holds 127.0.0.1:{port}" in log.read_text()


def test_example_config_matches_only_the_right_processes() -> None:
    config = load_config(EXAMPLE)
    api_c, ui_c = config.component("api"), config.component("ui")
    assert api_c is not None and ui_c is not None
    assert (api_c.port, ui_c.port) == (5002, 7860)
    assert {p.kind for p in api_c.probes} == {"http", "canary"}
    assert [p.path for p in ui_c.probes] == ["/config"]
    assert api_c.remediation.restart is not None and ui_c.remediation.restart is not None
    assert api_c.remediation.restart.start[:2] == ("glyph-standin", "api")  # type: ignore[union-attr]
    assert "clean_cache" in ui_c.remediation.actions

    def is_api(line: str) -> bool:
        return argv_matches(api_c.match, line.split())

    def is_ui(line: str) -> bool:
        return argv_matches(ui_c.match, line.split())

    py, bin_ = "/venv/bin/python3", "/venv/bin/glyph-standin"
    api_lines = [
        f"{py} {bin_} api --port 5002",
        f"{py} -m glyph_guard_demo.standin api --port 5002 --hang",
    ]
    ui_lines = [
        f"{py} {bin_} ui --port 7860",
        f"{py} -m glyph_guard_demo.standin ui --api-url http://x:5002",
    ]
    others = [
        f"{py} {bin_}",
        f"{py} {bin_} all --api-port 5002",
        f"{py} -m glyph_guard_demo.standin --api-port 5002",
        f"{py} {bin_} hold-port 5002",
        f"{py} -m glyph_guard_demo.standin.engine --name=glyph-standin-engine --api-pid=12",
        "vim standin/api.py",
    ]
    for line in api_lines:
        assert is_api(line) and not is_ui(line), line
    for line in ui_lines:
        assert is_ui(line) and not is_api(line), line
    for line in others:
        assert not is_api(line) and not is_ui(line), line


def test_help_names_the_stand_in() -> None:
    for argv in (
        [str(CONSOLE_SCRIPT), "--help"],
        [*STANDIN, "api", "--help"],
        [*STANDIN, "ui", "--help"],
    ):
        result = run_to_end(argv)
        assert result.returncode == 0
        assert "stand-in" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["api", "--port", "0"],
        ["api", "--port", "http"],
        ["api", "--slow-seconds", "-1"],
        ["api", "--leak-in", "gpu"],
        ["api", "--no-such-flag"],
        ["ui", "--cache-growth-kb-per-minute", "lots"],
        ["hold-port"],
        ["explode"],
    ],
)
def test_bad_flags_are_argparse_errors(args: list[str]) -> None:
    result = run_to_end([*STANDIN, *args])
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_port_taken_by_a_running_api(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        result = run_to_end([*STANDIN, "api", "--port", str(running.port)])
        assert result.returncode == 1
        assert "Address already in use" in result.stderr
        with socket.create_connection(("127.0.0.1", running.port), timeout=2):
            pass  # the first one still serves
