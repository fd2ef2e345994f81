"""A simulated fleet end to end: 3 hosts in their own PID namespaces, 2 Prometheus replicas and
2 clustered Alertmanagers, configured by glyph-fleet. One fleet serves the module; each scenario
first brings it back to as started (Fleet.restore) and takes its own baselines, so the
scenarios run in any order."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from glyph_guard_demo.testkit.doubles.harness import alert, payload
from glyph_guard_demo.testkit.fleet_stack import (
    Fleet,
    SimHost,
    acting_alert,
    firing_deliveries,
    new_restart,
    wait_resolved,
)
from glyph_guard_demo.testkit.support import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def started_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def fleet(started_fleet: Fleet) -> Fleet:
    """The module's fleet, as started: whatever the scenario before this one left."""
    started_fleet.restore()
    return started_fleet


def kill_api_once(fleet: Fleet, target: SimHost, skip: SimHost | None = None) -> float:
    """Kill the api on one host: it alone is restarted, once, however many copies arrive.
    The time of the kill."""
    before_counts = fleet.restart_counts(skip)
    before = {a["id"] for a in target.restarts()}
    wait_for(target.healthy, 60, interval=0.5)
    t0 = time.time()
    assert target.kill_api()
    action = new_restart(target, before, 90)
    assert action["outcome"] == "succeeded", action
    alertname = acting_alert(target, action)
    wait_for(target.healthy, 60, interval=0.5)
    wait_resolved(target, alertname, t0)
    # Copies a pipeline still holds back for its peer's turn cannot be seen from outside;
    # every other one has landed and been judged by now.
    wait_for(lambda: fleet.deliveries_settled(target, alertname), 60, interval=0.5)
    after = fleet.restart_counts(skip)
    expected = {n: c + (n == target.name) for n, c in before_counts.items()}
    assert after == expected, (before_counts, after)
    copies = firing_deliveries(target, alertname, t0)
    assert copies and copies[0]["verdict"] == "acted"
    assert all(d["verdict"] != "acted" for d in copies[1:]), copies
    return t0


def test_kill_on_one_host_restarts_that_host_once(fleet: Fleet) -> None:
    t0 = kill_api_once(fleet, fleet.hosts[1])
    for other in (fleet.hosts[0], fleet.hosts[2]):
        firing = [d for d in other.decisions() if d["alert_status"] == "firing"]
        assert not [d for d in firing if d["at"] >= t0], firing


def test_with_one_alertmanager_dead(fleet: Fleet) -> None:
    fleet.kill_service("am-1")
    wait_for(lambda: fleet.cluster_size() == 1, 60, interval=0.5)
    kill_api_once(fleet, fleet.hosts[1])
    fleet.services["am-1"].start()  # it rejoins the cluster
    fleet.services["am-1"].wait_ready(30)
    wait_for(lambda: fleet.cluster_size() == 2, 60, interval=0.5)


def test_with_one_prometheus_replica_dead(fleet: Fleet) -> None:
    fleet.kill_service("prometheus-a")
    kill_api_once(fleet, fleet.hosts[1])


def test_remediator_down_alerts_for_its_host_only(fleet: Fleet) -> None:
    down = fleet.hosts[2]
    assert down.kill(r"-m glyph_guard\.remediator\b")
    labels = wait_for(lambda: fleet.firing("b", "GlyphRemediatorDown"), 90, interval=1)
    assert [a["host"] for a in labels] == [down.name]
    # the others are still remediated
    kill_api_once(fleet, fleet.hosts[0], skip=down)
    assert [a["host"] for a in fleet.firing("b", "GlyphRemediatorDown")] == [down.name]


def test_alert_for_another_host_is_refused(fleet: Fleet) -> None:
    first, second = fleet.hosts[0], fleet.hosts[1]
    before = len(second.restarts())
    pids = {p.pid for p in first.api_processes()} | {p.pid for p in second.api_processes()}
    misrouted = payload(alert(host=first.name, fingerprint="feedfacefeedface"))
    response = httpx.post(
        second.remediator_url + "/alerts",
        json=misrouted,
        headers={"Authorization": f"Bearer {second.token}"},
        timeout=5,
    )
    assert response.status_code == 202
    decision = wait_for(
        lambda: [d for d in second.decisions() if d["fingerprint"] == "feedfacefeedface"], 10
    )[0]
    assert (decision["verdict"], decision["reason"]) == ("skipped", "wrong_host")
    assert first.name in decision["detail"] and second.name in decision["detail"]
    # Judged (and recorded) before the remediator answered: skipped, so no action follows.
    assert decision["action_id"] is None
    assert len(second.restarts()) == before
    now = {p.pid for p in first.api_processes()} | {p.pid for p in second.api_processes()}
    assert now == pids, "a process was touched"


def test_inventory_change_is_picked_up_without_restarting_prometheus(fleet: Fleet) -> None:
    prometheus = fleet.services["prometheus-b"].process
    assert prometheus is not None
    pid = prometheus.pid
    extra = SimHost("gpu-99", fleet.hosts[0].address.rsplit(".", 1)[0] + ".99", fleet.work / "h99")
    extra.work.mkdir(parents=True, exist_ok=True)
    kept = fleet.hosts[1:]

    def hosts_scraped() -> set[str]:
        return {
            t["labels"]["host"]
            for t in fleet.targets("b")
            if t["labels"]["job"] == "glyph-exporter"
        }

    fleet.render([*kept, extra])  # gpu-01 removed, gpu-99 added
    wanted = {h.name for h in kept} | {"gpu-99"}
    wait_for(lambda: hosts_scraped() == wanted, 60, interval=0.5)
    assert prometheus.poll() is None and prometheus.pid == pid
    for name in ("am-1", "am-2"):  # the routes: Alertmanager reloads its config on request
        port = fleet.alertmanager_ports[name]
        assert httpx.post(f"http://127.0.0.1:{port}/-/reload", timeout=10).status_code == 200
        config = httpx.get(f"http://127.0.0.1:{port}/api/v2/status", timeout=5).json()
        original = config["config"]["original"]
        assert "remediator-gpu-99" in original and "remediator-gpu-01" not in original
