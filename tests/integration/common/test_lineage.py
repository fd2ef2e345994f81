"""What a component's earlier incarnations left behind, on real processes: an orphan that
kept its session and group (and lost its environment) is found; nothing else is."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil

from glyph_guard.common.lineage import LineageBook
from glyph_guard_demo.testkit.support import spawned, wait_for

# A leader that starts a child with an empty environment (as vLLM's EngineCore looks after
# setproctitle), prints the child's PID, then waits.
LEADER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env={})
print(child.pid, flush=True)
time.sleep(120)
"""


def test_an_orphan_in_the_dead_leaders_session_is_left_over_and_nothing_else() -> None:
    book = LineageBook()
    argv = [sys.executable, "-c", LEADER]
    with spawned(argv, stdout=-1) as leader, spawned(argv, stdout=-1) as stranger:
        assert leader.proc.stdout is not None and stranger.proc.stdout is not None
        child = int(leader.proc.stdout.readline())
        other = int(stranger.proc.stdout.readline())
        try:
            book.observe("api", [leader.pid, child], time.time())
            assert book.leftovers("api", [leader.pid, child]) == {}  # alive: in the tree
            os.kill(leader.pid, signal.SIGKILL)
            leader.proc.wait(5)
            wait_for(lambda: psutil.Process(child).ppid() != leader.pid, 5)
            assert set(book.leftovers("api")) == {child}
            assert other not in book.leftovers("api")  # another session, never observed
        finally:
            os.kill(child, signal.SIGKILL)
            os.kill(other, signal.SIGKILL)
            leader.proc.stdout.close()
            stranger.proc.stdout.close()
        wait_for(lambda: not book.leftovers("api"), 5)
        assert book.leftovers("api") == {}


def test_the_observers_own_session_and_group_are_never_remembered() -> None:
    book = LineageBook()
    book.observe("api", [os.getpid()], time.time())
    assert book.leftovers("api") == {}


def test_a_process_created_after_the_component_was_last_seen_is_not_its() -> None:
    book = LineageBook()
    argv = [sys.executable, "-c", LEADER]
    with spawned(argv, stdout=-1) as leader:
        assert leader.proc.stdout is not None
        child = int(leader.proc.stdout.readline())
        try:
            book.observe("api", [leader.pid], time.time() - 60)  # last seen a minute ago
            os.kill(leader.pid, signal.SIGKILL)
            leader.proc.wait(5)
            assert child not in book.leftovers("api")
        finally:
            os.kill(child, signal.SIGKILL)
            leader.proc.stdout.close()
