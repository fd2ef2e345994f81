"""Back-off only in a crash loop, against real processes: a new failure is never held back."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    alert,
    command_component,
    healthy,
    kill_group,
    make_config,
    marker,
    payload,
)
from glyph_guard_demo.testkit.support import free_port, wait_for


def new_failure(number: int) -> dict[str, object]:
    """An alert about a failure that begins now."""
    return alert(fingerprint=f"{number:016x}", starts_at=datetime.now(UTC).isoformat())


def test_a_new_failure_inside_the_cooldown_is_restarted_at_once(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    budget = {"cooldown_seconds": 600, "min_healthy_seconds": 1}
    budget |= {"backoff_initial_seconds": 600, "backoff_max_seconds": 600}
    config = make_config(tmp_path, {"api": command_component(port, mark)}, budget=budget)
    with Remediator(config) as rem:
        assert rem.post(payload(new_failure(1))).json()["alerts"][0]["reason"] == "acted"
        [first] = rem.finished_actions(1, timeout=30)
        assert first["outcome"] == "succeeded", first
        wait_for(lambda: healthy(port), 10)
        time.sleep(1.5)  # a lasting recovery
        kill_group(first["details"]["started_pid"])
        wait_for(lambda: not healthy(port), 5)
        # well inside the 600 s cooldown and with a 600 s back-off: acted on at once
        assert rem.post(payload(new_failure(2))).json()["alerts"][0]["reason"] == "acted"
        second = rem.finished_actions(2, timeout=30)[-1]
        assert second["outcome"] == "succeeded", second
        kill_group(second["details"]["started_pid"])


def test_the_failure_count_and_back_off_survive_a_remediator_restart(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    failing = [sys.executable, "-c", "raise SystemExit(3)", mark]
    budget = {"backoff_initial_seconds": 30, "backoff_max_seconds": 30, "max_failed_restarts": 5}
    config = make_config(
        tmp_path, {"api": command_component(port, mark, start=failing)}, budget=budget
    )
    with Remediator(config) as rem:
        rem.post(payload(new_failure(1)))
        [action] = rem.finished_actions(1, timeout=30)
        assert action["outcome"] == "failed_to_start"
        wait_for(lambda: rem.status()["waiting"] == ["restart"], 10)  # its retry, 30 s away
        assert rem.status()["budget_remaining"] == 4

    with Remediator(config) as rem:
        assert rem.status()["budget_remaining"] == 4
        assert rem.status()["waiting"] == ["restart"]
        time.sleep(2)
        assert len(rem.actions()) == 1  # the retry still waits out its back-off
