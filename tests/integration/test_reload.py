"""SIGHUP (logrotate, `systemctl reload`): both daemons keep running and take the new config;
a config with an error leaves the running one in place and says so."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from glyph_guard_demo.testkit.support import free_port, parse_metrics, spawned, wait_for


def sleeper(tag: str) -> dict[str, Any]:
    return {
        "match": {"cmdline": rf"glyph-reload-test-{tag}\b"},
        "remediation": {
            "actions": ["restart"],
            "restart": {"backend": "command", "start": ["/bin/true"]},
        },
    }


def write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    os.replace(tmp, path)


def get(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=3, **kwargs)
    except httpx.HTTPError:
        return None


def logged(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


def test_the_exporter_reloads_on_sighup_and_keeps_a_running_config_on_error(
    tmp_path: Path,
) -> None:
    port, config, log = free_port(), tmp_path / "glyph.yaml", tmp_path / "exporter.log"
    data = {"components": {"api": sleeper("a")}, "exporter": {"nvml": False}}
    write(config, data)
    argv = [sys.executable, "-m", "glyph_guard.exporter", "--config", str(config)]
    url = f"http://127.0.0.1:{port}/metrics"

    def components() -> set[str]:
        answer = get(url)
        if answer is None:
            return set()
        samples = parse_metrics(answer.text)
        return {
            dict(labels)["component"] for name, labels in samples if name == "glyph_component_up"
        }

    with (
        log.open("wb") as out,
        spawned([*argv, "--listen", f"127.0.0.1:{port}"], stderr=out) as exporter,
    ):
        wait_for(lambda: components() == {"api"}, 30)
        data["components"]["ui"] = sleeper("u")
        write(config, data)
        exporter.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: components() == {"api", "ui"}, 30)
        assert exporter.proc.poll() is None

        config.write_text("components: {api: {match: {cmdline: ['not', 'a', 'regex']}}}\n")
        exporter.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: logged(log, "invalid config, keeping the running one"), 30)
        time.sleep(0.5)  # a second scrape after the refusal
        assert components() == {"api", "ui"}
        assert exporter.proc.poll() is None


def test_the_remediator_reloads_on_sighup_and_keeps_a_running_config_on_error(
    tmp_path: Path,
) -> None:
    port, config, log = free_port(), tmp_path / "glyph.yaml", tmp_path / "remediator.log"
    token = tmp_path / "token"
    token.write_text("reload-test-token\n")
    token.chmod(0o600)
    data = {
        "components": {"api": sleeper("a")},
        "remediator": {
            "token_file": str(token),
            "state_db": str(tmp_path / "state.sqlite"),
            "log_dir": str(tmp_path),
            "budget": {"max_failed_restarts": 5},
        },
    }
    write(config, data)
    argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", str(config)]
    url = f"http://127.0.0.1:{port}/components/api"

    def budget() -> int | None:
        answer = get(url, headers={"Authorization": "Bearer reload-test-token"})
        return (
            None
            if answer is None or answer.status_code != 200
            else answer.json()["budget_remaining"]
        )

    with (
        log.open("wb") as out,
        spawned([*argv, "--listen", f"127.0.0.1:{port}"], stderr=out) as remediator,
    ):
        wait_for(lambda: budget() == 5, 30)
        data["remediator"]["budget"]["max_failed_restarts"] = 2
        data["remediator"]["state_db"] = str(tmp_path / "other.sqlite")  # only a restart opens it
        write(config, data)
        remediator.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: budget() == 2, 30)
        wait_for(lambda: logged(log, "a restart applies remediator.state_db"), 30)

        data["remediator"]["budget"]["max_failed_restarts"] = 0  # must be at least 1
        write(config, data)
        remediator.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: logged(log, "invalid config, keeping the running one"), 30)
        assert budget() == 2
        assert remediator.proc.poll() is None
