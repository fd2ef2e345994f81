"""A restart stops what the component's previous incarnation left behind, whoever started it:
the remediator notes the sessions and groups of the component's processes while they live."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from glyph_guard.remediator.actions.tree import LINEAGE_SECONDS
from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    command_component,
    healthy,
    make_config,
    marker,
    payload,
    service_argv,
)
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for


def test_the_orphan_of_a_service_started_by_someone_else_is_stopped(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    facts = tmp_path / "facts.json"
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    argv = service_argv(port, mark, "--child", "--report", str(facts))
    with spawned(argv) as service, Remediator(config) as rem:
        wait_for(lambda: healthy(port) and facts.exists() and facts.read_text(), 10)
        child = int(json.loads(facts.read_text())["child"])
        time.sleep(LINEAGE_SECONDS + 1)  # the remediator has seen the service alive
        psutil.Process(service.pid).kill()  # the API dies; its engine child stays, orphaned
        service.proc.wait(5)
        assert psutil.Process(child).is_running()

        rem.post(payload())
        [action] = rem.finished_actions(1)

        assert action["outcome"] == "succeeded", action
        assert child in action["details"]["stopped_pids"]
        assert [c["pid"] for c in action["details"]["leftovers"]] == [child]
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
        assert healthy(port)
