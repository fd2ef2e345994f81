"""A real remediator (uvicorn in a thread, real HTTP on loopback) and the data tests feed it."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from glyph_guard.common.config import Deployment, parse_config
from glyph_guard.common.processes import ProcessTable
from glyph_guard.remediator.actions.gpu import GpuHolders
from glyph_guard.remediator.cli import build_server
from glyph_guard_demo.testkit.support import free_port, wait_for

SERVICE = Path(__file__).with_name("service.py")
DOUBLES = Path(__file__).resolve().parent  # the source folder: editable installs link modules
TOKEN = "s3cret-token"

# The body Alertmanager 0.25 delivered for a firing alert (captured; see the shared fixtures).
FIRING: dict[str, Any] = {
    "receiver": "remediator",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "action": "restart",
                "alertname": "GlyphComponentDown",
                "component": "api",
                "severity": "critical",
            },
            "annotations": {
                "description": "The api component has no process.",
                "summary": "api is down",
            },
            "startsAt": "2026-11-24T17:24:52.426Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://vm:19090/graph?g0.expr=vector%281%29+%3E+0&g0.tab=1",
            "fingerprint": "0841a20fe06ea8c7",
        }
    ],
    "groupLabels": {"alertname": "GlyphComponentDown", "component": "api"},
    "commonLabels": {
        "action": "restart",
        "alertname": "GlyphComponentDown",
        "component": "api",
        "severity": "critical",
    },
    "commonAnnotations": {
        "description": "The api component has no process.",
        "summary": "api is down",
    },
    "externalURL": "http://vm:19093",
    "version": "4",
    "groupKey": '{}:{alertname="GlyphComponentDown", component="api"}',
    "truncatedAlerts": 0,
}

TEST_BUDGET = {
    "cooldown_seconds": 0,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.2,
    "max_failed_restarts": 5,
    "min_healthy_seconds": 2,
}


def alert(
    component: str = "api",
    action: str = "restart",
    status: str = "firing",
    fingerprint: str = "0841a20fe06ea8c7",
    starts_at: str = "2026-11-24T17:24:52.426Z",
    **labels: str,
) -> dict[str, Any]:
    """One alert shaped like the captured one, with the labels that select what to do."""
    item: dict[str, Any] = copy.deepcopy(FIRING["alerts"][0])
    item["labels"].update(component=component, action=action, **labels)
    item.update(status=status, fingerprint=fingerprint, startsAt=starts_at)
    if status == "resolved":
        item["endsAt"] = "2026-11-24T17:25:02.426Z"
    return item


def payload(*alerts: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """A delivery around the alerts (the captured one when none are given)."""
    body = copy.deepcopy(FIRING)
    if alerts:
        body["alerts"] = list(alerts)
        body["status"] = status or (
            "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
        )
    return body


def marker() -> str:
    """A word only this test's processes carry on their command line."""
    return f"glyph-remediator-test-{uuid.uuid4().hex[:12]}"


def service_argv(port: int, mark: str, *options: str) -> list[str]:
    return [sys.executable, str(SERVICE), str(port), mark, *options]


def command_component(
    port: int,
    mark: str,
    start: list[str] | None = None,
    probes: bool = True,
    **remediation: Any,
) -> dict[str, Any]:
    """A component matched by the marker and restarted with the service (or a given argv)."""
    return {
        "match": {"cmdline": re.escape(mark)},
        "port": port,
        "probes": [{"name": "health", "path": "/health", "timeout_seconds": 1}] if probes else [],
        "remediation": {
            "actions": ["restart"],
            "restart": {"start": start or service_argv(port, mark)},
            "stop_grace_seconds": 0.5,
            "release_timeout_seconds": 5,
            "startup_timeout_seconds": 10,
            **remediation,
        },
    }


def tripwire(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A component whose restart writes a file (if the file appears, something acted) and
    leaves a process that ends by itself: a start whose process exits at once is a failed one."""
    flag, mark = tmp_path / "restart-ran", marker()
    code = f"open({str(flag)!r}, 'w').close(); import time; time.sleep(20)"
    start = [sys.executable, "-c", code, mark]
    component = command_component(free_port(), mark, start=start, probes=False)
    component["remediation"]["stop_grace_seconds"] = 0
    return flag, component


def make_config(tmp_path: Path, components: dict[str, Any], **remediator: Any) -> Deployment:
    """A deployment whose remediator listens on a free loopback port with a token."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "token_file": str(token_file),
        "state_db": str(tmp_path / "state" / "remediator.sqlite"),
        "log_dir": str(tmp_path / "logs"),
    }
    settings.update(remediator)
    settings["budget"] = {**TEST_BUDGET, **remediator.get("budget", {})}
    return parse_config({"components": components, "remediator": settings}, "test config")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Remediator:
    """The glyph-remediator server as the CLI builds it, served from a thread of this process.

    On exit it also kills the process groups of everything it started (by recorded PID, and
    the components' own matchers, the tests' unique markers, for a start still in flight).
    """

    def __init__(
        self,
        config: Deployment,
        dry_run: bool = False,
        gpu: GpuHolders | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.config = config
        self.server = build_server(config, dry_run=dry_run, gpu=gpu)
        host, port = config.remediator.address
        self.url = f"http://{host}:{port}"
        headers = {} if auth else {"Authorization": f"Bearer {TOKEN}"}
        self.http = httpx.Client(base_url=self.url, headers=headers, auth=auth, timeout=10)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Remediator:
        self._thread.start()
        wait_for(lambda: self.server.started, 10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            started = [a["details"].get("started_pid") for a in self.actions(limit=1000)]
        finally:
            self.server.should_exit = True
            self._thread.join(30)
            self.http.close()
        table = ProcessTable()  # and what a restart in flight at exit started, by its marker
        table.refresh()
        leaders = {p for tree in table.find(self.config.components).values() for p in tree.roots}
        for pid in {p for p in started if p} | leaders:
            kill_group(pid)

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post("/alerts", json=body)

    def restart(self, component: str = "api") -> httpx.Response:
        """An operator's restart: acts on the component as it runs now (no alert to judge)."""
        return self.http.post(f"/components/{component}/restart")

    def actions(self, component: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if component:
            params["component"] = component
        response = self.http.get("/actions", params=params)
        response.raise_for_status()
        return list(reversed(response.json()))  # oldest first

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        response = self.http.get("/decisions", params={"limit": limit})
        response.raise_for_status()
        return list(reversed(response.json()))

    def reasons(self) -> list[str]:
        return [f"{d['verdict']}:{d['reason']}" for d in self.decisions()]

    def finished_actions(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until at least count actions have finished; all actions, oldest first."""

        def done() -> list[dict[str, Any]]:
            actions = self.actions()
            finished = [a for a in actions if a["outcome"] is not None]
            return actions if len(finished) >= count else []

        return wait_for(done, timeout)

    def status(self, component: str = "api") -> dict[str, Any]:
        response = self.http.get(f"/components/{component}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def idle(self, timeout: float = 30) -> None:
        wait_for(
            lambda: all(
                c["busy"] is None and not c["waiting"] for c in self.http.get("/components").json()
            ),
            timeout,
        )
