"""glyph-stack stopped with Ctrl-C while its remediator restarts the api: nothing is left."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from glyph_guard.common.config import dump_config
from glyph_guard.common.processes import ProcessTable
from glyph_guard_demo.testkit.stack_fixtures import pinned_to_ports, standin_deployment
from glyph_guard_demo.testkit.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _ours(words: list[str], since: float) -> list[psutil.Process]:
    """Live processes started since `since` whose command line names this test's dirs or ports."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
        line = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] == psutil.STATUS_ZOMBIE or (proc.info["create_time"] or 0) < since:
            continue
        if any(word in line for word in words):
            found.append(proc)
    return found


def _restart_running(db: Path) -> bool:
    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM actions WHERE action = 'restart' AND outcome IS NULL"
        ).fetchone()
    return row is not None


@pytest.mark.parametrize("moment", [0.5, 3.0])  # stopping the old api / verifying the new one
def test_ctrl_c_during_a_restart_leaves_no_process(tmp_path: Path, moment: float) -> None:
    config = pinned_to_ports(standin_deployment(tmp_path, api_args=("--startup-delay", "4")))
    file = tmp_path / "glyph.yaml"
    file.write_text(dump_config(config))
    work = tmp_path / "stack"
    api, ui = config.components
    words = [str(work), f"--port {api.port}", f"--port {ui.port}"]
    output = tmp_path / "glyph-stack.out"
    since = time.time() - 1  # create_time is rounded
    with output.open("wb") as out:
        stack = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "glyph_guard_demo.stack",
                "--config",
                str(file),
                "--work-dir",
                str(work),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: b"running" in output.read_bytes(), 90)
        table = ProcessTable()
        table.refresh()
        for pid in table.find([api])["api"].roots:
            psutil.Process(pid).kill()
        wait_for(lambda: _restart_running(work / "remediator.sqlite"), 60)
        time.sleep(moment)
        stack.send_signal(signal.SIGINT)
        stack.wait(120)
        with suppress(AssertionError):  # a moment for the last exits to be reaped
            wait_for(lambda: not _ours(words, since), 5)
        left = _ours(words, since)
        assert left == [], [p.info["cmdline"] for p in left]
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait(10)
        for proc in _ours(words, since):
            with suppress(psutil.NoSuchProcess):
                proc.kill()
