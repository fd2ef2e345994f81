"""glyph-remediator's operator commands against a real remediator over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from glyph_guard.common.config import Deployment, dump_config
from glyph_guard.remediator.cli import main
from glyph_guard.remediator.ctl import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    alert,
    make_config,
    payload,
    tripwire,
)
from glyph_guard_demo.testkit.support import REPO, free_port, wait_for

STATUS_KEYS = {
    "component",
    "health",
    "paused",
    "paused_until",
    "pause_reason",
    "gave_up",
    "budget_remaining",
    "failed_restarts",
    "backoff_seconds",
    "next_restart_at",
    "busy",
    "waiting",
    "waiting_for",
    "dry_run",
    "last_action",
}


def write_config(tmp_path: Path, config: Deployment) -> Path:
    path = tmp_path / "glyph.yaml"
    path.write_text(dump_config(config))
    return path


class Ctl:
    """glyph-remediator SUBCOMMAND --config FILE, run in this process; code, stdout, stderr."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([argv[0], "--config", str(self.config), *argv[1:]])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == EXIT_OK, err
        return json.loads(out)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Remediator, Path]]:
    """A remediator with two tripwire components, and its config file."""
    for name in ("api", "ui"):
        (tmp_path / name).mkdir()
    _, api = tripwire(tmp_path / "api")
    _, ui = tripwire(tmp_path / "ui")
    config = make_config(tmp_path, {"api": api, "ui": ui})
    with Remediator(config) as rem:
        yield rem, write_config(tmp_path, config)


@pytest.fixture
def ctl(two: tuple[Remediator, Path], capsys: pytest.CaptureFixture[str]) -> Ctl:
    return Ctl(two[1], capsys)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_status_has_one_line_per_component(ctl: Ctl) -> None:
    code, out, err = ctl("status")
    assert code == EXIT_OK, err
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["COMPONENT", "HEALTH", "STATE"]
    assert [row.split()[:3] for row in rows] == [
        ["api", "unhealthy", "active"],  # a tripwire has no process
        ["ui", "unhealthy", "active"],
    ]
    assert all("5 left" in row for row in rows)
    shown = ctl.json("status")
    assert [set(c) for c in shown] == [STATUS_KEYS, STATUS_KEYS]
    assert shown[0]["health"] == "unhealthy"
    assert shown[0]["last_action"] is None
    [only] = ctl.json("status", "ui")
    assert only["component"] == "ui"


def test_pause_for_a_while_ends_by_itself(two: tuple[Remediator, Path], ctl: Ctl) -> None:
    rem, _ = two
    before = time.time()
    paused = ctl.json("pause", "api", "--for", "1h", "--reason", "kernel upgrade")
    assert paused["paused"] and paused["pause_reason"] == "kernel upgrade"
    assert before + 3600 <= paused["paused_until"] <= time.time() + 3600
    _, out, _ = ctl("status")
    api_line = next(line for line in out.splitlines() if line.startswith("api"))
    assert "paused until" in api_line and "(kernel upgrade)" in api_line
    metrics = rem.http.get("/metrics").text
    assert 'glyph_remediator_pause_info{component="api",reason="kernel upgrade"} 1.0' in metrics
    assert 'glyph_remediator_pause_info{component="ui"' not in metrics
    skipped = rem.post(payload(alert())).json()["alerts"][0]
    assert skipped["reason"] == "paused"

    short = ctl.json("pause", "api", "--for", "1s")  # a new end replaces the old one
    assert short["paused"] and short["paused_until"] < paused["paused_until"]
    wait_for(lambda: not rem.status("api")["paused"], 30, interval=0.1)  # the pause ended
    last = rem.decisions()[-1]
    assert (last["origin"], last["action"]) == ("operator", "resume")
    assert last["detail"].startswith("the pause until ")
    assert time.time() >= short["paused_until"]
    assert "glyph_remediator_pause_info{" not in rem.http.get("/metrics").text
    assert rem.status("ui")["paused"] is False


def test_a_pause_survives_a_restart_and_ends_after_one(tmp_path: Path, capsys: Any) -> None:
    _, api = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": api})
    ctl = Ctl(write_config(tmp_path, config), capsys)
    with Remediator(config):
        long = ctl.json("pause", "api", "--for", "2h", "--reason", "disk swap")
        short_lived = ctl.json("pause", "api", "--for", "1s")
    assert long["paused_until"] > short_lived["paused_until"]
    with Remediator(config):  # the 1 s pause ended while no remediator ran, or ends now
        wait_for(lambda: not ctl.json("status", "api")[0]["paused"], 30, interval=0.1)
        ctl.json("pause", "api", "--for", "2h", "--reason", "disk swap")
    with Remediator(config):
        [after] = ctl.json("status", "api")
        assert after["paused"] and after["pause_reason"] == "disk swap"
        assert after["paused_until"] > time.time() + 3600


def test_resume_and_reset(tmp_path: Path, capsys: Any) -> None:
    start = [sys.executable, "-c", "raise SystemExit(3)"]
    _, api = tripwire(tmp_path)
    api["remediation"]["restart"]["start"] = start
    config = make_config(tmp_path, {"api": api}, budget={"max_failed_restarts": 1})
    ctl = Ctl(write_config(tmp_path, config), capsys)
    with Remediator(config) as rem:
        rem.post(payload(alert()))
        rem.finished_actions(1)
        rem.idle()
        [gave_up] = ctl.json("status")
        assert gave_up["gave_up"] and gave_up["budget_remaining"] == 0
        assert gave_up["last_action"]["outcome"] == "failed_to_start"
        code, out, _ = ctl("status")
        assert "gave up" in out.splitlines()[1]
        assert "never until an operator resets it" in ctl.json("explain", "api")["next"]

        code, out, err = ctl("reset", "api")
        assert code == EXIT_OK, err
        assert out == "api: reset done; now active\n"
        assert ctl.json("status")[0]["budget_remaining"] == 1

        ctl("pause", "api")
        code, out, err = ctl("resume", "api")
        assert (code, out) == (EXIT_OK, "api: resume done; now active\n"), err
        operator = [d["action"] for d in rem.decisions() if d["origin"] == "operator"]
        assert operator == ["reset", "pause", "resume"]


def test_restart_is_recorded_as_an_operators(two: tuple[Remediator, Path], ctl: Ctl) -> None:
    rem, _ = two
    code, out, err = ctl("restart", "api", "--wait")
    assert code == EXIT_OK, err
    first, second = out.splitlines()
    assert first.startswith("api: restart started (action ")
    assert "(operator): succeeded in" in second
    [action] = rem.actions()
    assert (action["origin"], action["outcome"]) == ("operator", "succeeded")
    shown = ctl.json("restart", "ui", "--wait")
    assert shown["verdict"] == "acted" and shown["action"]["outcome"] == "succeeded"
    assert shown["action"]["origin"] == "operator"


def test_restart_that_fails_exits_1(tmp_path: Path, capsys: Any) -> None:
    _, api = tripwire(tmp_path)
    api["remediation"]["restart"]["start"] = [sys.executable, "-c", "raise SystemExit(3)"]
    config = make_config(tmp_path, {"api": api})
    ctl = Ctl(write_config(tmp_path, config), capsys)
    with Remediator(config):
        code, _, err = ctl("restart", "api", "--wait")
        assert code == EXIT_FAILED
        assert one_error_line(err).startswith("glyph-remediator restart: restart of api failed_")


def test_history_has_one_block_per_incident(two: tuple[Remediator, Path], ctl: Ctl) -> None:
    rem, _ = two
    rem.post(payload(alert()))
    rem.finished_actions(1)
    ctl("pause", "ui", "--reason", "maintenance")
    code, out, err = ctl("history", "--since", "1h")
    assert code == EXIT_OK, err
    blocks = out.split("\n\n")
    assert len(blocks) == 2
    alert_block, pause_block = (b.splitlines() for b in blocks)
    assert "GlyphComponentDown on api (alert 0841a20fe06ea8c7" in alert_block[0]
    assert "alert firing restart -> acted: acted (action 1)" in alert_block[1]
    assert "action 1 restart (alert): succeeded in" in alert_block[2]
    assert "operator pause on ui" in pause_block[0]
    assert "operator pause -> acted: operator - maintenance" in pause_block[1]

    [incident] = ctl.json("history", "api")
    assert set(incident) == {
        *("component", "origin", "alertname", "fingerprint", "starts_at"),
        *("first_at", "last_at", "decisions", "actions"),
    }
    assert [a["outcome"] for a in incident["actions"]] == ["succeeded"]
    assert ctl.json("history", "ui")[0]["decisions"][0]["action"] == "pause"


def test_explain_says_why_and_when(two: tuple[Remediator, Path], ctl: Ctl) -> None:
    rem, _ = two
    nothing = ctl.json("explain", "api")
    assert nothing["why"] == "no alert about this component is on record"
    assert nothing["next"].startswith("now")
    rem.post(payload(alert()))
    rem.finished_actions(1)
    acted = ctl.json("explain", "api")
    assert acted["why"].startswith("the last alert (GlyphComponentDown): it acted: restart")
    assert acted["action"]["outcome"] == "succeeded"

    ctl("pause", "api", "--for", "1h")
    rem.post(payload(alert(fingerprint="2" * 16)))
    code, out, err = ctl("explain", "api")
    assert code == EXIT_OK, err
    assert "did not act: remediation of the component was paused" in out.splitlines()[0]
    assert out.splitlines()[-1].startswith("next: at ")
    assert "when the pause ends" in out


# -- errors: one line, a non-zero exit, never a traceback --------------------------------------


def test_wrong_token(two: tuple[Remediator, Path], capsys: Any, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-token\n")  # the file the config names; the server read the old one
    code, _, err = Ctl(two[1], capsys)("status")
    assert code == EXIT_USAGE
    assert "refused the credentials of" in one_error_line(err)


def test_not_running(tmp_path: Path, capsys: Any) -> None:
    _, api = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": api}, listen=f"127.0.0.1:{free_port()}")
    code, _, err = Ctl(write_config(tmp_path, config), capsys)("status")
    assert code == EXIT_FAILED
    assert one_error_line(err).startswith("glyph-remediator status: the remediator is not running")


@pytest.mark.parametrize(
    "argv",
    [
        ("pause", "db"),
        ("resume", "db"),
        ("reset", "db"),
        ("restart", "db"),
        ("explain", "db"),
        ("status", "db"),
        ("history", "db"),
        ("explain", "../api"),
    ],
)
def test_unknown_component(ctl: Ctl, argv: tuple[str, ...]) -> None:
    code, out, err = ctl(*argv)
    assert code == EXIT_USAGE
    assert "no component named" in one_error_line(err)
    assert out == ""


def test_usage_and_config_errors(tmp_path: Path, capsys: Any) -> None:
    missing = Ctl(tmp_path / "nowhere.yaml", capsys)
    code, _, err = missing("status")
    assert code == EXIT_USAGE
    assert "nowhere.yaml" in one_error_line(err)
    with pytest.raises(SystemExit) as exited:
        missing("pause", "api", "--for", "soon")
    assert exited.value.code == EXIT_USAGE
    assert "expected a duration" in capsys.readouterr().err


def test_the_installed_command(two: tuple[Remediator, Path]) -> None:
    """The console entry point, as an operator runs it: status --json, in a process of its own."""
    argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", str(two[1])]
    done = subprocess.run(
        [*argv, "status", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert [c["component"] for c in json.loads(done.stdout)] == ["api", "ui"]
    assert httpx.get(two[0].url + "/healthz").status_code == 200
