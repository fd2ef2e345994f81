"""Restarts against real processes: trees, orphans, port holders, crash loops, coalescing."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from glyph_guard.common.stopping import alive
from glyph_guard.remediator.actions.base import Started
from glyph_guard.remediator.actions.tree import START_ENV, session_members
from glyph_guard_demo.testkit.doubles.harness import (
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
from glyph_guard_demo.testkit.support import free_port, port_holder, spawned, wait_for


def gone(pid: int) -> bool:
    try:
        return not alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def report(path: Path) -> dict[str, Any]:
    def written() -> dict[str, Any]:
        return json.loads(path.read_text() or "{}") if path.exists() else {}

    return wait_for(written, 10)


def test_killed_service_is_restarted_and_verified_healthy(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    with spawned(service_argv(port, mark)) as service, Remediator(config) as rem:
        wait_for(lambda: healthy(port), 10)
        service.stop()  # the crash
        assert not healthy(port)

        response = rem.post(payload())
        assert response.status_code == 202
        assert response.json()["alerts"] == [
            {"fingerprint": "0841a20fe06ea8c7", "verdict": "acted", "reason": "acted"}
        ]
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded", action
        assert healthy(port)
        started = action["details"]["started_pid"]
        assert psutil.Process(started).is_running()
        assert Path(action["details"]["log_file"]).is_file()
        assert action["duration_seconds"] < 10


def test_start_uses_path_env_cwd_and_runs_the_stop_argv_first(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    state, stopped, workdir = tmp_path / "new.json", tmp_path / "stop-ran", tmp_path / "work"
    workdir.mkdir()
    python = Path(sys.executable)
    component = command_component(port, mark)
    component["remediation"]["restart"] = {
        "start": [python.name, *service_argv(port, mark, "--report", str(state))[1:]],
        "stop": [python.name, "-c", f"open({str(stopped)!r}, 'w').close()"],
        "cwd": str(workdir),
        "env": {"PATH": f"{python.parent}:/usr/bin:/bin", "GLYPH_TEST_ENV": "from-config"},
        "log_file": str(tmp_path / "api-own.log"),
    }
    with Remediator(make_config(tmp_path, {"api": component})) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded", action
        assert action["details"]["stop_command"]["returncode"] == 0
        assert stopped.exists()
        started = report(state)
        assert (started["cwd"], started["env"]) == (str(workdir), "from-config")
        assert action["details"]["log_file"] == str(tmp_path / "api-own.log")


def test_start_command_not_found_fails_to_start(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    component = command_component(port, mark, start=["glyph-no-such-command", mark])
    with Remediator(
        make_config(tmp_path, {"api": component}, budget={"max_failed_restarts": 1})
    ) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "failed_to_start"
        assert action["reason"] == "start command 'glyph-no-such-command' not found on PATH"


def test_tree_whose_child_outlives_its_parent_is_cleaned_completely(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    state = tmp_path / "old.json"
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    argv = service_argv(port, mark, "--child-ignores-term", "--report", str(state))
    with spawned(argv), Remediator(config) as rem:
        old = report(state)
        wait_for(lambda: healthy(port), 10)

        rem.restart()  # an alert about this healthy incarnation would find it recovered
        [action] = rem.finished_actions(1)

        assert action["outcome"] == "succeeded", action
        assert {old["pid"], old["child"]} <= set(action["details"]["stopped_pids"])
        assert old["child"] in action["details"]["killed_pids"]  # it ignored SIGTERM
        assert gone(old["pid"])
        assert gone(old["child"])
        assert healthy(port)


def test_orphaned_child_of_the_previous_start_is_swept(tmp_path: Path) -> None:
    """An engine child whose parent died is found through the session the remediator started."""
    port, mark = free_port(), marker()
    state = tmp_path / "started.json"
    start = service_argv(port, mark, "--child", "--report", str(state))
    config = make_config(tmp_path, {"api": command_component(port, mark, start=start)})
    with Remediator(config) as rem:
        rem.post(payload())
        rem.finished_actions(1)
        first = report(state)
        state.unlink()
        psutil.Process(first["pid"]).kill()  # the API process dies; its engine child stays
        wait_for(lambda: gone(first["pid"]), 5)
        assert not gone(first["child"])

        rem.post(payload(alert(starts_at="2026-11-24T17:30:00Z")))
        actions = rem.finished_actions(2)

        assert actions[1]["outcome"] == "succeeded", actions[1]
        assert first["child"] in actions[1]["details"]["stopped_pids"]
        assert gone(first["child"])
        assert healthy(port)


def test_foreign_port_holder_is_reported_and_left_alone(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    config = make_config(
        tmp_path,
        {"api": command_component(port, mark)},
        budget={"max_failed_restarts": 1, "cooldown_seconds": 0},
    )
    with port_holder(port) as stray, Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)

        assert action["outcome"] == "failed_to_stop"
        assert f"port {port} is held by PID {stray.pid}" in action["reason"]
        assert "kill_port_holders" in action["reason"]
        assert [h["pid"] for h in action["details"]["port_holders"]] == [stray.pid]
        assert stray.proc.poll() is None  # not killed
        assert "started_pid" not in action["details"]  # nothing started over it


def test_port_holder_is_stopped_when_allowed(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    component = command_component(port, mark, kill_port_holders=True)
    config = make_config(tmp_path, {"api": component})
    with port_holder(port) as stray, Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)

        assert action["outcome"] == "succeeded", action
        assert stray.pid in action["details"]["stopped_pids"]
        assert gone(stray.pid)
        assert healthy(port)


def test_start_that_always_fails_gives_up_within_budget_and_stays(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    failing = [sys.executable, "-c", "import sys; print('no model'); sys.exit(3)", mark]
    component = command_component(port, mark, start=failing)
    config = make_config(
        tmp_path,
        {"api": component},
        budget={"max_failed_restarts": 3, "backoff_initial_seconds": 0.05},
    )
    with Remediator(config) as rem:
        rem.post(payload())
        wait_for(lambda: rem.status()["gave_up"], 30)
        rem.idle()

        actions = rem.actions()
        assert [a["outcome"] for a in actions] == ["failed_to_start"] * 3
        assert [a["origin"] for a in actions] == ["alert", "retry", "retry"]
        assert "exited with code 3" in actions[0]["reason"]
        assert "no model" in actions[0]["details"]["log_tail"]
        assert rem.status()["budget_remaining"] == 0
        metrics = rem.http.get("/metrics").text
        assert 'glyph_remediator_gave_up{component="api"} 1.0' in metrics
        assert 'glyph_remediator_restarts_total{component="api",outcome="failed_to_start"} 3.0' in (
            metrics
        )

        # a new incident does not restart either: it stays given up until reset
        answer = rem.post(payload(alert(starts_at="2026-11-24T18:00:00Z"))).json()
        assert answer["alerts"][0]["reason"] == "gave_up"
        time.sleep(0.3)
        assert len(rem.actions()) == 3

        assert rem.http.post("/components/api/reset").json()["gave_up"] is False
        assert rem.status()["budget_remaining"] == 3


def test_concurrent_alerts_coalesce_into_exactly_one_restart(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    slow = service_argv(port, mark, "--delay", "2")
    component = command_component(port, mark, start=slow)
    config = make_config(tmp_path, {"api": component}, budget={"cooldown_seconds": 60})
    bodies = [payload(alert(fingerprint=f"{i:016x}", alertname=f"A{i}")) for i in range(12)]
    with Remediator(config) as rem:
        answers: list[str] = []

        def send(body: dict[str, object]) -> None:
            answers.append(rem.post(body).json()["alerts"][0]["reason"])

        threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rem.post(payload(alert(fingerprint="0" * 15 + "5", alertname="A5")))  # a repeat
        rem.finished_actions(1)
        rem.idle()

        assert sorted(answers) == ["acted"] + ["coalesced"] * 11
        [action] = rem.actions()
        assert action["outcome"] == "succeeded"
        coalesced = [d for d in rem.decisions() if d["reason"] == "coalesced"]
        # those that came while the first was judged against the component now (before the
        # restart had an id) joined it then
        assert {d["action_id"] for d in coalesced} <= {action["id"], None}
        assert rem.reasons().count("skipped:duplicate") == 1  # the repeat (its acted row may
        # come after it: an alert's restart is recorded when it begins)


def test_state_survives_a_remediator_restart(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    failing = [sys.executable, "-c", "raise SystemExit(1)", mark]
    config = make_config(
        tmp_path,
        {
            "api": command_component(port, mark, start=failing),
            "ui": command_component(free_port(), marker()),
        },
        budget={"max_failed_restarts": 2},
    )
    with Remediator(config) as rem:
        rem.post(payload())
        wait_for(lambda: rem.status("api")["gave_up"], 20)
        rem.http.post("/components/ui/pause").raise_for_status()
        rem.idle()

    with Remediator(config) as rem:
        assert rem.status("api")["gave_up"] is True
        assert rem.status("api")["budget_remaining"] == 0
        assert rem.status("ui")["paused"] is True
        again = rem.post(payload(alert(), alert(component="ui", fingerprint="1" * 16))).json()
        assert [a["reason"] for a in again["alerts"]] == ["duplicate", "paused"]
        assert len(rem.actions()) == 2
        metrics = rem.http.get("/metrics").text
        assert 'glyph_remediator_paused{component="ui"} 1.0' in metrics


def test_operator_restart_is_single_flight_and_recorded(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    slow = service_argv(port, mark, "--delay", "0.8")
    config = make_config(tmp_path, {"api": command_component(port, mark, start=slow)})
    with Remediator(config) as rem:
        first = rem.http.post("/components/api/restart")
        assert first.status_code == 202
        assert first.json()["verdict"] == "acted"
        second = rem.http.post("/components/api/restart")
        assert second.status_code == 409
        assert "running" in second.json()["detail"]
        [action] = rem.finished_actions(1)
        assert action["origin"] == "operator"
        assert action["outcome"] == "succeeded"

        rem.http.post("/components/api/pause").raise_for_status()
        paused = rem.http.post("/components/api/restart")
        assert paused.status_code == 409
        assert "paused" in paused.json()["detail"]


class LaggingDriver:
    """Reports the old PIDs as holding GPU memory until 0.3 s after they are gone."""

    def __init__(self) -> None:
        self.pids: frozenset[int] = frozenset()
        self.gone_at: float | None = None

    def __call__(self) -> frozenset[int]:
        if self.pids and all(gone(p) for p in self.pids):
            self.gone_at = self.gone_at or time.monotonic()
            if time.monotonic() - self.gone_at > 0.3:
                return frozenset()
        return self.pids


def test_gpu_memory_of_the_old_tree_is_waited_for(tmp_path: Path) -> None:
    """Where NVML reports the old PIDs, the start waits until they no longer hold memory."""
    port, mark = free_port(), marker()
    config = make_config(tmp_path, {"api": command_component(port, mark)})
    state = tmp_path / "old.json"
    driver = LaggingDriver()
    with (
        spawned(service_argv(port, mark, "--report", str(state))),
        Remediator(config, gpu=driver) as rem,
    ):
        driver.pids = frozenset({report(state)["pid"]})
        rem.restart()  # an alert about this healthy incarnation would find it recovered
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded"
        assert action["details"]["nvml"] is True
        assert action["details"]["release_seconds"] >= 0.25


def test_gpu_memory_never_released_fails_to_stop(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    component = command_component(port, mark, release_timeout_seconds=0.5)
    config = make_config(tmp_path, {"api": component}, budget={"max_failed_restarts": 1})
    with (
        spawned(service_argv(port, mark)) as service,
        Remediator(config, gpu=lambda: frozenset({service.pid})) as rem,
    ):
        wait_for(lambda: healthy(port), 10)
        rem.restart()  # an alert about this healthy incarnation would find it recovered
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "failed_to_stop"
        assert f"GPU memory still held by PID {service.pid}" in action["reason"]
        assert not healthy(port)


def test_unhealthy_after_start_when_probes_never_pass(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    wrong_port = service_argv(free_port(), mark)  # healthy, but not where the probe looks
    component = command_component(port, mark, start=wrong_port, startup_timeout_seconds=1)
    config = make_config(tmp_path, {"api": component}, budget={"max_failed_restarts": 1})
    with Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "unhealthy_after_start"
        assert "probe health still failing after 1 s" in action["reason"]


def test_resolved_alert_cancels_a_waiting_retry(tmp_path: Path) -> None:
    port, mark = free_port(), marker()
    failing = [sys.executable, "-c", "raise SystemExit(1)", mark]
    config = make_config(
        tmp_path,
        {"api": command_component(port, mark, start=failing)},
        budget={"backoff_initial_seconds": 30, "backoff_max_seconds": 30},
    )
    with Remediator(config) as rem:
        rem.post(payload())
        rem.finished_actions(1)
        wait_for(lambda: rem.status()["waiting"] == ["restart"], 5)
        answer = rem.post(payload(alert(status="resolved"))).json()
        assert answer["alerts"][0]["reason"] == "resolved"
        assert rem.status()["waiting"] == []
        assert rem.decisions()[-1]["detail"] == "cancelled waiting restart"
        assert len(rem.actions()) == 1


def test_a_session_is_swept_only_with_the_start_token(tmp_path: Path) -> None:
    """A reused session number without the token of the remediator's start is left alone."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)", marker()]
    env = {**os.environ, START_ENV: "t0ken"}
    with spawned(argv, env=env) as ours, spawned(argv) as stranger:
        assert session_members(Started(ours.pid, "t0ken"), ()) == {ours.pid}
        assert session_members(Started(ours.pid, "other"), ()) == set()
        assert session_members(Started(stranger.pid, "t0ken"), ()) == set()
        assert session_members(None, (stranger.pid,)) == {stranger.pid}  # a live leader's own


@pytest.mark.parametrize("dies_again", [False, True])
def test_alert_in_cooldown_acts_only_if_still_unhealthy_when_it_ends(
    tmp_path: Path, dies_again: bool
) -> None:
    port, mark = free_port(), marker()
    config = make_config(
        tmp_path, {"api": command_component(port, mark)}, budget={"cooldown_seconds": 3}
    )
    with Remediator(config) as rem:
        rem.post(payload())
        [first] = rem.finished_actions(1)
        assert first["outcome"] == "succeeded"
        if dies_again:  # a new failure inside the cooldown
            kill_group(first["details"]["started_pid"])
            wait_for(lambda: not healthy(port), 5)
        # else: a late alert about the incarnation just replaced
        late = alert(fingerprint="1" * 16, starts_at="2026-11-24T17:30:00.000Z")
        assert rem.post(payload(late)).json()["alerts"][0]["reason"] == "cooldown"
        if dies_again:
            [_, second] = rem.finished_actions(2, timeout=20)
            assert second["outcome"] == "succeeded"
            assert healthy(port)
        else:
            wait_for(lambda: "skipped:recovered" in rem.reasons(), 10)
            rem.idle()
            assert len(rem.actions()) == 1
