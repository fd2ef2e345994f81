"""Acting on what is true now, against real processes and real HTTP: a component restarted by
someone else (a supervisor, a person) before the alert arrives is not restarted again."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from glyph_guard.common.config import CommandRestart, Deployment
from glyph_guard.remediator.incarnation import STARTS_AT_LAG_SECONDS
from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    alert,
    command_component,
    healthy,
    make_config,
    marker,
    payload,
    service_argv,
)
from glyph_guard_demo.testkit.support import Spawned, free_port, spawned, wait_for

pytestmark = pytest.mark.timeout(120)


def own_start(config: Deployment) -> list[str]:
    """The component's own start command, as a supervisor would run it."""
    component = config.component("api")
    assert component is not None and isinstance(component.remediation.restart, CommandRestart)
    return list(component.remediation.restart.start)


def late_alert(failed: datetime, about: str | None) -> dict[str, Any]:
    """The alert about a failure that began at `failed` (its startsAt), arriving now."""
    labels = {"about": about} if about else {}
    fingerprint = f"{time.time_ns():016x}"[-16:]
    return payload(alert(fingerprint=fingerprint, starts_at=failed.isoformat(), **labels))


def decided(rem: Remediator, reason: str, timeout: float = 30) -> dict[str, Any]:
    found = wait_for(lambda: [d for d in rem.decisions() if d["reason"] == reason], timeout)
    return found[-1]


def restarted_by_someone_else(first: Spawned, argv: list[str]) -> tuple[datetime, Spawned]:
    """Kill the running incarnation (the failure, as the alert will say) and start the next."""
    failed = datetime.now(UTC)
    first.stop(0)
    return failed, Spawned(argv)


@pytest.mark.parametrize("about", ["health", None])  # a death, and an alert not about health
def test_a_component_restarted_and_healthy_before_the_alert_is_left_alone(
    tmp_path: Path, about: str | None
) -> None:
    port, mark = free_port(), marker()
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    with spawned(own_start(config)) as first:
        wait_for(lambda: healthy(port), 10)
        failed, second = restarted_by_someone_else(first, own_start(config))
        try:
            wait_for(lambda: healthy(port), 10)
            with Remediator(config) as rem:
                assert rem.post(late_alert(failed, about)).status_code == 202
                decision = decided(rem, "recovered")
                rem.idle()
                assert "a new incarnation" in decision["detail"], decision
                assert "is healthy now" in decision["detail"], decision
                assert rem.actions() == [], "a healthy new incarnation was restarted"
                assert second.proc.poll() is None and healthy(port)
        finally:
            second.stop(0)


def test_a_new_incarnation_still_starting_is_left_to_start(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    start = service_argv(port, mark, "--delay", "4")  # loads for 4 s before it serves
    config = make_config(tmp_path, {"api": command_component(port, mark, start=start)})
    with spawned(own_start(config)) as first:
        wait_for(lambda: healthy(port), 15)
        failed, second = restarted_by_someone_else(first, own_start(config))
        try:
            with Remediator(config) as rem:
                rem.post(late_alert(failed, "health"))
                assert not healthy(port), "the test meant it to arrive while it starts"
                waits = decided(rem, "starting", timeout=5)
                assert "a new incarnation" in waits["detail"], waits
                decision = decided(rem, "recovered", timeout=20)
                assert healthy(port), "recovered before it served"
                rem.idle()
                assert rem.actions() == [], "a starting new incarnation was restarted"
                assert second.proc.poll() is None
                assert "a new incarnation" in decision["detail"], decision
        finally:
            second.stop(0)


def test_a_new_incarnation_unhealthy_past_its_allowance_is_restarted(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    start = service_argv(port, mark, "--delay", "60")  # never serves within the test
    component = command_component(port, mark, start=start, startup_timeout_seconds=3)
    config = make_config(tmp_path, {"api": component})
    with spawned(service_argv(port, mark)) as first:
        wait_for(lambda: healthy(port), 10)
        failed, second = restarted_by_someone_else(first, own_start(config))
        try:
            with Remediator(config) as rem:
                rem.post(late_alert(failed, "health"))
                decision = decided(rem, "acted", timeout=20)
                assert "still unhealthy after its 3 s start-up allowance" in decision["detail"]
                begun = wait_for(rem.actions, 5)[0]
                assert float(begun["started_at"]) - float(decision["at"]) < 1
                wait_for(lambda: second.proc.poll() is not None, 20)  # the restart stopped it
        finally:
            second.stop(0)


@pytest.mark.parametrize(
    ("about", "reason"),
    [("health", "recovered"), (None, "acted")],  # healthy now clears only an alert about health
)
def test_the_incarnation_the_alert_is_about_is_judged_by_its_health(
    tmp_path: Path, about: str | None, reason: str
) -> None:
    port, mark = free_port(), marker()
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    with spawned(own_start(config)) as running:
        wait_for(lambda: healthy(port), 10)
        time.sleep(STARTS_AT_LAG_SECONDS + 0.5)  # it ran when the alert's rule looked
        with Remediator(config) as rem:
            rem.post(late_alert(datetime.now(UTC), about))
            decision = decided(rem, reason)
            assert "the incarnation the alert is about" in decision["detail"], decision
            if reason == "acted":
                [action] = rem.finished_actions(1, timeout=30)
                assert action["outcome"] == "succeeded", action
                assert running.proc.poll() is not None, "restarted without stopping it"
            else:
                rem.idle()
                assert rem.actions() == [] and running.proc.poll() is None
