"""The `docker` restart backend against a real Docker Engine: real containers restarted,
exiting at once, failing their health check, missing. Each by an operator's restart: an alert's
would first be judged against the container as it runs (see test_incarnation.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from glyph_guard_demo.testkit.doubles.harness import Remediator, make_config
from glyph_guard_demo.testkit.support import free_port, wait_for

if TYPE_CHECKING:
    from tests.deploy.conftest import Engine

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SECOND_NS = 1_000_000_000


@pytest.fixture
def container(docker_engine: Engine) -> Iterator[Any]:
    """Create and start containers on the base image (host network); removed after the test."""
    names: list[str] = []

    def create(cmd: list[str], healthcheck: dict[str, Any] | None = None) -> str:
        name = f"glyph-test-{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {
            "Image": docker_engine.base_image,
            "Cmd": cmd,
            "HostConfig": {"NetworkMode": "host", "Init": True},
        }
        if healthcheck is not None:
            body["Healthcheck"] = healthcheck
        with docker_engine.client() as client:
            client.post("/containers/create", params={"name": name}, json=body).raise_for_status()
            names.append(name)
            client.post(f"/containers/{name}/start").raise_for_status()
        return name

    yield create
    for name in names:
        docker_engine.remove_container(name)


def started_at(engine: Engine, name: str) -> str:
    with engine.client() as client:
        return str(client.get(f"/containers/{name}/json").json()["State"]["StartedAt"])


def restart_config(tmp_path: Path, engine: Engine, name: str, port: int, startup: float) -> Any:
    component = {
        # What runs in the container, seen from the host like any process.
        "match": {"cmdline": rf"http\.server --bind 127\.0\.0\.1 {port}$"},
        "port": port,
        "probes": [{"name": "health", "path": "/", "timeout_seconds": 1}],
        "remediation": {
            "actions": ["restart"],
            "restart": {"backend": "docker", "container": name, "socket": str(engine.socket)},
            "stop_grace_seconds": 1,
            "startup_timeout_seconds": startup,
        },
    }
    return make_config(tmp_path, {"api": component}, budget={"max_failed_restarts": 1})


def test_restarts_the_container_and_waits_for_its_health_check(
    tmp_path: Path, docker_engine: Engine, container: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    probe = f"import urllib.request as u; u.urlopen({url!r}, timeout=1)"
    name = container(
        ["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        {"Test": ["CMD", "python3", "-c", probe], "Interval": SECOND_NS, "Retries": 3},
    )
    wait_for(lambda: started_at(docker_engine, name), 10)
    before = started_at(docker_engine, name)
    with Remediator(restart_config(tmp_path, docker_engine, name, port, 60)) as rem:
        assert rem.restart().status_code == 202
        [action] = rem.finished_actions(1, timeout=90)
    assert action["outcome"] == "succeeded", action
    assert action["details"]["health"] == "healthy"
    assert "container running and healthy" in action["reason"]
    assert started_at(docker_engine, name) != before


def test_a_container_that_exits_at_once_failed_to_start(
    tmp_path: Path, docker_engine: Engine, container: Any
) -> None:
    name = container(["sh", "-c", "exit 3"])
    with Remediator(restart_config(tmp_path, docker_engine, name, free_port(), 3)) as rem:
        assert rem.restart().status_code == 202
        [action] = rem.finished_actions(1, timeout=60)
    assert action["outcome"] == "failed_to_start", action
    assert "container not running (exit code 3)" in action["reason"]


def test_a_failing_health_check_is_unhealthy_after_start(
    tmp_path: Path, docker_engine: Engine, container: Any
) -> None:
    name = container(
        ["sleep", "infinity"], {"Test": ["CMD", "false"], "Interval": SECOND_NS, "Retries": 1}
    )
    with Remediator(restart_config(tmp_path, docker_engine, name, free_port(), 300)) as rem:
        assert rem.restart().status_code == 202
        [action] = rem.finished_actions(1, timeout=360)
    assert action["outcome"] == "unhealthy_after_start", action
    # Reported when Docker says so: at the start-up timeout it says "container health still".
    assert "healthcheck says unhealthy" in action["reason"], action


def test_a_container_that_does_not_exist_is_reported(tmp_path: Path, docker_engine: Engine) -> None:
    name = f"glyph-test-missing-{uuid.uuid4().hex[:8]}"
    with Remediator(restart_config(tmp_path, docker_engine, name, free_port(), 3)) as rem:
        assert rem.restart().status_code == 202
        [action] = rem.finished_actions(1, timeout=30)
    assert action["outcome"] == "failed_to_start", action
    assert f"No such container: {name}" in action["reason"]
