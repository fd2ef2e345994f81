"""The systemd backend through a systemctl double, the docker backend where no real engine
can be (tests/test_docker_backend.py has the real one), and clean_cache on a real tree."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from glyph_guard.common.config import ConfigError, parse_config
from glyph_guard.remediator.actions.cache import clean_cache
from glyph_guard_demo.testkit.doubles.docker_engine import FakeDockerEngine
from glyph_guard_demo.testkit.doubles.harness import (
    DOUBLES,
    Remediator,
    alert,
    healthy,
    make_config,
    marker,
    payload,
    service_argv,
)
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for


def probed(port: int, restart: dict[str, Any], **remediation: Any) -> dict[str, Any]:
    return {
        "match": {"cmdline": marker()},
        "port": port,
        "probes": [{"name": "health", "path": "/health", "timeout_seconds": 1}],
        "remediation": {
            "actions": ["restart"],
            "restart": restart,
            "stop_grace_seconds": 0,
            "startup_timeout_seconds": 3,
            **remediation,
        },
    }


@pytest.fixture
def systemctl_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "systemctl.log"
    monkeypatch.setenv("PATH", f"{DOUBLES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SYSTEMCTL_DOUBLE_LOG", str(log))
    return log


def test_systemd_backend_runs_a_fixed_argv_then_verifies(
    tmp_path: Path, systemctl_log: Path
) -> None:
    port = free_port()
    component = probed(port, {"backend": "systemd", "unit": "glyph-api.service"})
    config = make_config(tmp_path, {"api": component})
    with spawned(service_argv(port, marker())), Remediator(config) as rem:
        wait_for(lambda: healthy(port), 10)
        rem.post(payload(alert(unit="evil.service; reboot")))
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded", action
        assert action["details"]["argv"] == ["systemctl", "restart", "glyph-api.service"]
    calls = [json.loads(line) for line in systemctl_log.read_text().splitlines()]
    assert calls == [["restart", "glyph-api.service"]]


def test_systemd_failure_is_reported(
    tmp_path: Path, systemctl_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSTEMCTL_DOUBLE_EXIT", "1")
    component = probed(free_port(), {"backend": "systemd", "unit": "glyph-api.service"})
    config = make_config(tmp_path, {"api": component}, budget={"max_failed_restarts": 1})
    with Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "failed_to_start"
        assert "exited with code 1: Job for glyph-api.service failed." in action["reason"]
        wait_for(lambda: rem.status()["gave_up"], 5)
    assert systemctl_log.read_text().count("restart") == 1


def test_docker_answering_something_unexpected_is_reported(tmp_path: Path) -> None:
    """What no real engine sends (a proxy's page in front of it, say): the loopback double."""
    socket_path = tmp_path / "docker.sock"
    engine = FakeDockerEngine(socket_path, {"glyph": b"<html>502 Bad Gateway</html>"})
    restart = {"backend": "docker", "container": "glyph", "socket": str(socket_path)}
    component = probed(free_port(), restart, startup_timeout_seconds=0.5)
    config = make_config(tmp_path, {"api": component}, budget={"max_failed_restarts": 1})
    with engine, Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "failed_to_start"
        assert "Docker answered something unexpected" in action["reason"]
    assert engine.calls[0] == ("POST", "/containers/glyph/restart", "t=0")


def test_docker_socket_missing_is_reported(tmp_path: Path) -> None:
    restart = {"backend": "docker", "container": "glyph", "socket": str(tmp_path / "none.sock")}
    config = make_config(
        tmp_path, {"api": probed(free_port(), restart)}, budget={"max_failed_restarts": 1}
    )
    with Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "failed_to_start"
        assert "cannot reach Docker" in action["reason"]


def _old(path: Path, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - 7200
    os.utime(path, (then, then))
    return path


def cache_component(glob: str, **remediation: Any) -> dict[str, Any]:
    return {
        "match": {"cmdline": marker()},
        "caches": [glob],
        "remediation": {
            "actions": ["clean_cache"],
            "clean_cache_min_age_seconds": 3600,
            **remediation,
        },
    }


def test_clean_cache_deletes_only_old_files_under_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "gradio", tmp_path / "precious"
    old = [_old(root / "a.png"), _old(root / "sub" / "b.png", 50)]
    fresh = root / "sub" / "fresh.png"
    fresh.write_bytes(b"new")
    kept = [_old(outside / "c.png"), _old(outside / "deep" / "d.png")]
    (root / "link-to-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-to-file").symlink_to(kept[0])
    config = make_config(tmp_path, {"ui": cache_component(f"{root}/**")})
    with Remediator(config) as rem:
        answer = rem.post(payload(alert(component="ui", action="clean_cache"))).json()
        assert answer["alerts"][0]["reason"] == "acted"
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded", action
        assert action["details"]["files_deleted"] == 2
        assert action["details"]["bytes_freed"] == 150
        metrics = rem.http.get("/metrics").text
        assert 'glyph_remediator_cache_freed_bytes_total{component="ui"} 150.0' in metrics
    assert not any(p.exists() for p in old)
    assert fresh.exists()
    assert all(p.exists() for p in kept)
    assert (root / "link-to-dir").is_symlink()
    assert (root / "link-to-file").is_symlink()


def test_clean_cache_never_reaches_through_a_symlinked_directory(tmp_path: Path) -> None:
    root, outside = tmp_path / "cache", tmp_path / "elsewhere"
    inside = _old(root / "real" / "x.png")
    kept = _old(outside / "y.png")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    component = parse_config({"components": {"ui": cache_component(f"{root}/*/*.png")}})
    result = clean_cache(component.components[0], time.time())
    assert result.outcome == "succeeded"
    assert result.details["files_deleted"] == 1
    assert result.details["skipped_outside_root"] == 0  # never even listed
    assert not inside.exists()
    assert kept.exists()


def test_a_glob_rooted_at_the_filesystem_root_is_a_config_error() -> None:
    component = cache_component("/*.nothing-here", clean_cache_min_age_seconds=1e12)
    where = r"components\.ui\.caches\[0\]\.glob: /\*\.nothing-here is rooted at /,"
    with pytest.raises(ConfigError, match=where):
        parse_config({"components": {"ui": component}})


def test_docker_socket_left_behind_by_a_dead_engine_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # the file stays; nobody listens on it any more
    restart = {"backend": "docker", "container": "glyph", "socket": str(path)}
    config = make_config(
        tmp_path, {"api": probed(free_port(), restart)}, budget={"max_failed_restarts": 1}
    )
    with Remediator(config) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "failed_to_start"
        assert f"cannot reach Docker at {path}" in action["reason"]
