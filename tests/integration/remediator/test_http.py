"""The webhook's trust and semantics over real HTTP: auth, limits, schema, labels, records."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    alert,
    make_config,
    payload,
    tripwire,
)
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for


@pytest.fixture
def rem(tmp_path: Path) -> Iterator[Remediator]:
    _, component = tripwire(tmp_path)
    with Remediator(make_config(tmp_path, {"api": component})) as running:
        yield running


def test_requests_without_the_token_get_401(rem: Remediator) -> None:
    bare = httpx.Client(base_url=rem.url)
    with bare:
        for method, path in [
            ("POST", "/alerts"),
            ("GET", "/actions"),
            ("POST", "/components/api/pause"),
            ("POST", "/components/api/restart"),
        ]:
            response = bare.request(method, path, json=payload())
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = bare.post("/alerts", json=payload(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert bare.get("/healthz").status_code == 200
        assert bare.get("/metrics").status_code == 200
    assert rem.actions() == []


def test_basic_auth(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    password = tmp_path / "password"
    password.write_text("hunter2\n")
    password.chmod(0o600)
    config = make_config(
        tmp_path,
        {"api": component},
        token_file=None,
        basic_auth={"username": "am", "password_file": str(password)},
    )
    with Remediator(config, auth=httpx.BasicAuth("am", "hunter2")) as rem:

        def post(user: str, secret: str) -> int:
            raw = base64.b64encode(f"{user}:{secret}".encode()).decode()
            headers = {"Authorization": f"Basic {raw}"}
            return httpx.post(rem.url + "/alerts", json=payload(), headers=headers).status_code

        assert post("am", "hunter2") == 202
        assert post("am", "hunter3") == 401
        assert post("root", "hunter2") == 401
        bad = httpx.post(rem.url + "/alerts", json=payload(), headers={"Authorization": "Basic %%"})
        assert bad.status_code == 401


def test_bodies_over_the_cap_get_413_even_when_chunked(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    with Remediator(make_config(tmp_path, {"api": component}, max_body_bytes=4096)) as rem:
        big = payload()
        big["commonAnnotations"]["description"] = "x" * 5000
        assert rem.post(big).status_code == 413

        def chunks(total: int) -> Iterator[bytes]:
            body = json.dumps(payload()).encode()
            yield body[:-1]
            padding = total - len(body)
            while padding > 0:
                yield b" " * min(1000, padding)
                padding -= 1000
            yield body[-1:]

        headers = {"Content-Type": "application/json"}
        over = rem.http.post("/alerts", content=chunks(10_000), headers=headers)
        assert over.status_code == 413
        assert "4096 bytes" in over.json()["detail"]
        under = rem.http.post("/alerts", content=chunks(3000), headers=headers)
        assert under.status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({**payload(), "version": "3"}).encode(),
        json.dumps({k: v for k, v in payload().items() if k != "alerts"}).encode(),
        json.dumps(payload(alert(status="exploded"))).encode(),
        json.dumps(payload({**alert(), "labels": {"component": 1}})).encode(),
        json.dumps(payload({**alert(), "startsAt": "yesterday"})).encode(),
    ],
)
def test_malformed_payloads_get_422(rem: Remediator, body: bytes) -> None:
    response = rem.http.post("/alerts", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert rem.decisions() == []


def test_unknown_fields_are_ignored(rem: Remediator) -> None:
    body = payload(alert(status="resolved"))
    body["somethingNew"] = {"from": "a later Alertmanager"}
    body["alerts"][0]["silencedBy"] = []
    assert rem.post(body).status_code == 202


def test_resolved_alerts_never_act_even_inside_a_firing_group(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    with Remediator(make_config(tmp_path, {"api": component})) as rem:
        group = payload(alert(status="resolved"), alert(status="resolved", fingerprint="2" * 16))
        group["status"] = "firing"
        answer = rem.post(group).json()
        assert [a["reason"] for a in answer["alerts"]] == ["resolved", "resolved"]
        time.sleep(0.2)
        assert rem.actions() == []
        assert not flag.exists()


def test_unknown_component_or_action_is_skipped_and_recorded(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    with Remediator(make_config(tmp_path, {"api": component})) as rem:
        answer = rem.post(
            payload(
                alert(component="db"),
                alert(action="clean_cache", fingerprint="3" * 16),
                alert(action="reboot", fingerprint="4" * 16),
            )
        ).json()
        reasons = [a["reason"] for a in answer["alerts"]]
        assert reasons == ["unknown_component", "action_not_allowed", "action_not_allowed"]
        details = [d["detail"] for d in rem.decisions()]
        assert details[0] == "component label 'db' names no configured component"
        assert details[2] == "action label 'reboot' is not among ['restart']"
        time.sleep(0.2)
        assert rem.actions() == []
        assert not flag.exists()
        metrics = rem.http.get("/metrics").text
        assert 'glyph_remediator_alerts_skipped_total{reason="action_not_allowed"} 2.0' in metrics


def test_labels_with_shell_metacharacters_and_paths_change_nothing(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    pwned = tmp_path / "pwned"
    hostile = [
        "; rm -rf /",
        "../../etc",
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        "api; touch " + str(pwned),
        "api\n",
        "/etc/passwd",
        "api' --help",
    ]
    alerts = [
        alert(component=value, fingerprint=f"{i:016x}", extra=value)
        for i, value in enumerate(hostile)
    ] + [
        alert(action=value, fingerprint=f"{i + 100:016x}", extra=value)
        for i, value in enumerate(hostile)
    ]
    with Remediator(make_config(tmp_path, {"api": component})) as rem:
        answer = rem.post(payload(*alerts)).json()
        assert {a["reason"] for a in answer["alerts"]} == {
            "unknown_component",
            "action_not_allowed",
        }
        for value in hostile:  # also as path segments of the operator endpoints
            response = rem.http.post(f"/components/{quote(value, safe='')}/restart")
            assert response.status_code in (404, 405), value
        time.sleep(0.3)
        assert rem.actions() == []
        assert not pwned.exists()
        assert not flag.exists()
        assert not Path(f"{pwned}`").exists()


def test_duplicates_are_recorded_once_acted_once(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    with Remediator(make_config(tmp_path, {"api": component})) as rem:
        answers = [rem.post(payload()).json()["alerts"][0]["reason"] for _ in range(5)]
        assert answers == ["acted"] + ["duplicate"] * 4
        rem.finished_actions(1)
        assert flag.exists()
        assert len(rem.actions()) == 1
        metrics = rem.http.get("/metrics").text
        assert "glyph_remediator_alerts_received_total 5.0" in metrics
        assert 'glyph_remediator_alerts_skipped_total{reason="duplicate"} 4.0' in metrics


def test_dry_run_decides_and_records_but_does_nothing(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "old.png").write_bytes(b"x")
    component["caches"] = [f"{cache}/**"]
    component["remediation"]["actions"] = ["restart", "clean_cache"]
    component["remediation"]["clean_cache_min_age_seconds"] = 0
    with Remediator(make_config(tmp_path, {"api": component}), dry_run=True) as rem:
        answer = rem.post(
            payload(alert(), alert(action="clean_cache", fingerprint="5" * 16))
        ).json()
        assert [a["reason"] for a in answer["alerts"]] == ["dry_run", "dry_run"]
        assert rem.post(payload()).json()["alerts"][0]["reason"] == "duplicate"
        manual = rem.http.post("/components/api/restart")
        assert manual.status_code == 202
        assert manual.json()["reason"] == "dry_run"
        time.sleep(0.3)
        assert rem.actions() == []
        assert not flag.exists()
        assert (cache / "old.png").exists()
        assert rem.status()["dry_run"] is True
        assert "glyph_remediator_dry_run 1.0" in rem.http.get("/metrics").text


def test_operator_endpoints(rem: Remediator) -> None:
    assert rem.http.post("/components/nope/pause").status_code == 404
    assert rem.http.get("/actions", params={"component": "nope"}).status_code == 404
    assert rem.http.get("/actions", params={"limit": 0}).status_code == 422
    assert rem.http.post("/components/api/explode").status_code == 422
    paused = rem.http.post("/components/api/pause").json()
    assert paused["paused"] is True
    assert rem.post(payload()).json()["alerts"][0]["reason"] == "paused"
    assert rem.http.post("/components/api/resume").json()["paused"] is False
    assert rem.post(payload()).json()["alerts"][0]["reason"] == "acted"
    switches = [d["action"] for d in rem.decisions() if d["origin"] == "operator"]
    assert switches == ["pause", "resume"]


def test_metrics_pass_promtool(rem: Remediator) -> None:
    rem.post(payload())
    rem.post(payload(alert(component="db")))
    rem.finished_actions(1)
    text = rem.http.get("/metrics").text
    for name in [
        "glyph_remediator_alerts_received_total",
        "glyph_remediator_alerts_acted_total",
        "glyph_remediator_alerts_skipped_total",
        "glyph_remediator_restarts_total",
        "glyph_remediator_restart_duration_seconds_bucket",
        "glyph_remediator_restart_budget_remaining",
        "glyph_remediator_gave_up",
        "glyph_remediator_paused",
        "glyph_remediator_last_action_timestamp_seconds",
    ]:
        assert f"\n{name}" in text, name
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == b""


def _cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glyph_guard.remediator", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        **kwargs,
    )


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_rejects_invalid_config_naming_the_field(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    component["remediation"]["stop_grace_seconds"] = -1
    done = _cli("--config", str(_write(tmp_path, {"components": {"api": component}})))
    assert done.returncode == 2
    assert "components.api.remediation.stop_grace_seconds" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_refuses_a_public_bind_without_credentials(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    config = _write(tmp_path, {"components": {"api": component}})
    done = _cli("--config", str(config), "--listen", "0.0.0.0:9843")
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0:9843" in done.stderr
    missing = _write(
        tmp_path,
        {"components": {"api": component}, "remediator": {"token_file": str(tmp_path / "none")}},
    )
    done = _cli("--config", str(missing))
    assert done.returncode == 2
    assert "remediator.token_file: cannot read" in done.stderr
    assert _cli("--config", str(config), "--listen", "nowhere").returncode == 2


def test_cli_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    done = _cli("check-config", str(_write(tmp_path, {"components": {"api": component}})))
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["components"]["api"]["remediation"]["restart"]["backend"] == "command"
    assert effective["remediator"]["listen"] == "127.0.0.1:9843"


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    port = free_port()
    data = {
        "components": {"api": component},
        "remediator": {"state_db": str(tmp_path / "s.db"), "log_dir": str(tmp_path)},
    }
    config = _write(tmp_path, data)
    argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", str(config)]
    with spawned([*argv, "--listen", f"127.0.0.1:{port}", "--dry-run"]) as server:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 20)
        answer = httpx.post(f"http://127.0.0.1:{port}/alerts", json=payload()).json()
        assert answer["alerts"][0]["reason"] == "dry_run"
        server.proc.terminate()
        assert server.proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises it when done
