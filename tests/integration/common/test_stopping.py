"""Stopping a process tree: the main process is sent SIGTERM alone first, so a service that
drains its requests and stops its own workers (a vLLM API) is not cut off by their deaths."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from glyph_guard.common.stopping import collect, stop_processes
from glyph_guard_demo.testkit.support import spawned, wait_for

# The main process starts a worker; on SIGTERM it "drains" for 0.5 s, notes when it finished,
# and exits (leaving the worker to its own SIGTERM, or not: `ignore` never exits on SIGTERM).
MAIN = """
import os, signal, subprocess, sys, time
out, ignore = sys.argv[1], sys.argv[2] == "ignore"
worker = subprocess.Popen([sys.executable, "-c", sys.argv[3], out])
def drain(*_):
    if ignore:
        return
    time.sleep(0.5)
    open(out + "/drained", "w").write(repr(time.time()))
    os._exit(0)
signal.signal(signal.SIGTERM, drain)
open(out + "/ready", "w").write(str(worker.pid))
while True:
    time.sleep(0.05)
"""
WORKER = """
import signal, sys, time
def term(*_):
    open(sys.argv[1] + "/worker-term", "w").write(repr(time.time()))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    time.sleep(0.05)
"""


def stopped_at(tmp_path: Path, name: str) -> float:
    return float((tmp_path / name).read_text())


def test_the_main_process_drains_before_its_workers_are_signalled(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", MAIN, str(tmp_path), "drain", WORKER]
    with spawned(argv) as main:
        wait_for((tmp_path / "ready").exists, 10)
        handles = collect([main.pid])
        assert len(handles) == 2
        report = stop_processes(handles, grace=10, first=[main.pid])
        assert report.killed == ()
        assert stopped_at(tmp_path, "worker-term") >= stopped_at(tmp_path, "drained")


def test_a_main_process_that_ignores_sigterm_does_not_hold_up_the_rest(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", MAIN, str(tmp_path), "ignore", WORKER]
    with spawned(argv) as main:
        wait_for((tmp_path / "ready").exists, 10)
        handles = collect([main.pid])
        report = stop_processes(handles, grace=1.0, first=[main.pid])
        assert report.killed == (main.pid,)  # the worker ended on its SIGTERM, sent at the grace
        assert (tmp_path / "worker-term").exists()
        assert main.proc.wait(5) == -signal.SIGKILL
