"""Liveness against real processes: trees found, deaths seen, restarts seen, port conflicts."""

from __future__ import annotations

import os
import re
import signal
import uuid

import psutil

from glyph_guard.common.lineage import LineageBook
from glyph_guard.common.processes import ProcessTable
from glyph_guard.exporter.liveness import sample_liveness
from glyph_guard_demo.testkit.exporter_fixtures import deployment, running_exporter, scrape
from glyph_guard_demo.testkit.support import free_port, python_argv, sample, spawned, wait_for

PARENT = """
import socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
port = int(sys.argv[2])
if port:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
time.sleep(600)
"""

HOLDER = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
time.sleep(600)
"""


def component(marker: str, port: int) -> dict[str, object]:
    return {"svc": {"match": {"cmdline": marker}, "port": port}}


def value(exporter: object, name: str, **labels: str) -> float | None:
    return sample(scrape(exporter), name, **labels)  # type: ignore[arg-type]


def tree_size(pid: int) -> int:
    try:
        return 1 + len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


def test_never_seen_component_is_zero_from_the_first_scrape() -> None:
    config = deployment(component(f"never-{uuid.uuid4().hex}", free_port()))
    with running_exporter(config) as exporter:
        samples = scrape(exporter)
    assert sample(samples, "glyph_component_up", component="svc") == 0
    assert sample(samples, "glyph_component_processes", component="svc") == 0
    assert sample(samples, "glyph_component_resident_memory_bytes", component="svc") == 0


def test_tree_found_death_seen_and_restart_seen() -> None:
    marker, port = f"glyph-test-{uuid.uuid4().hex}", free_port()
    config = deployment(component(marker, port))
    with running_exporter(config) as exporter:
        with spawned(python_argv(PARENT, marker, str(port))) as first:
            wait_for(lambda: tree_size(first.pid) == 2, 10)
            wait_for(lambda: value(exporter, "glyph_component_processes", component="svc") == 2, 5)
            samples = scrape(exporter)
            assert sample(samples, "glyph_component_up", component="svc") == 1
            assert sample(samples, "glyph_component_resident_memory_bytes", component="svc") > 0
            assert sample(samples, "glyph_component_threads", component="svc") >= 2
            assert sample(samples, "glyph_component_open_fds", component="svc") > 0
            started = sample(samples, "glyph_component_start_time_seconds", component="svc")
            assert started == psutil.Process(first.pid).create_time()
            wait_for(
                lambda: (
                    value(
                        exporter, "glyph_component_port_listening", component="svc", port=str(port)
                    )
                    == 1
                ),
                5,
            )
            assert (
                value(exporter, "glyph_component_port_conflict", component="svc", port=str(port))
                == 0
            )

            os.kill(first.pid, signal.SIGKILL)  # the child stays behind, orphaned
            # two liveness intervals (0.2 s each), or a few more on a busy machine
            wait_for(lambda: value(exporter, "glyph_component_up", component="svc") == 0, 3.0)
            assert value(exporter, "glyph_component_processes", component="svc") == 0

        with spawned(python_argv(PARENT, marker, str(port))) as second:
            wait_for(lambda: value(exporter, "glyph_component_up", component="svc") == 1, 5)
            restarted = value(exporter, "glyph_component_start_time_seconds", component="svc")
            assert restarted == psutil.Process(second.pid).create_time()
            assert restarted is not None and started is not None and restarted >= started


def test_child_only_death_is_seen() -> None:
    marker = f"glyph-test-{uuid.uuid4().hex}"
    config = deployment(component(marker, free_port()))
    with running_exporter(config) as exporter, spawned(python_argv(PARENT, marker, "0")) as proc:
        wait_for(lambda: value(exporter, "glyph_component_processes", component="svc") == 2, 10)
        child = psutil.Process(proc.pid).children()[0]
        child.kill()
        wait_for(lambda: value(exporter, "glyph_component_processes", component="svc") == 1, 2)
        assert value(exporter, "glyph_component_up", component="svc") == 1


def test_foreign_process_on_the_port_is_a_conflict() -> None:
    marker, port = f"glyph-test-{uuid.uuid4().hex}", free_port()
    config = deployment(component(marker, port))
    with running_exporter(config) as exporter, spawned(python_argv(HOLDER, str(port))):
        labels = {"component": "svc", "port": str(port)}
        wait_for(lambda: value(exporter, "glyph_component_port_conflict", **labels) == 1, 5)
        assert value(exporter, "glyph_component_port_listening", **labels) == 1
        assert value(exporter, "glyph_component_up", component="svc") == 0


def test_exporter_does_not_match_itself() -> None:
    own = re.escape(" ".join(psutil.Process().cmdline()))
    config = deployment({"svc": {"match": {"cmdline": f"^{own}$"}}})
    with running_exporter(config) as exporter:
        wait_for(
            lambda: value(
                exporter, "glyph_exporter_last_sample_timestamp_seconds", collector="processes"
            ),
            5,
        )
        assert value(exporter, "glyph_component_up", component="svc") == 0


# A leader (the component's main process) whose child outlives it in the leader's session.
LEADER_WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_left_in_the_dead_leaders_session_is_a_leftover_of_the_component() -> None:
    marker = f"glyph-test-{uuid.uuid4().hex}"
    config = deployment({"api": {"match": {"cmdline": marker}}})
    table, book = ProcessTable(), LineageBook()
    with spawned(python_argv(LEADER_WITH_CHILD, marker), stdout=-1) as leader:
        assert leader.proc.stdout is not None
        child = int(leader.proc.stdout.readline())
        leader.proc.stdout.close()
        (api,) = sample_liveness(table, config.components, book)
        assert api.pids == {leader.pid, child} and api.leftover_processes == 0
        os.kill(leader.pid, signal.SIGKILL)
        leader.proc.wait(5)
        wait_for(lambda: psutil.Process(child).ppid() != leader.pid, 5)
        (api,) = sample_liveness(table, config.components, book)
        assert not api.up and api.leftover_processes == 1 and api.leftover_rss_bytes > 0
