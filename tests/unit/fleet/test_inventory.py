"""The fleet's inventory, its rendered configs (amtool, promtool), and the wrong_host refusal."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from glyph_guard.common.config import ConfigError, parse_config
from glyph_guard.fleet.render import parse_inventory
from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    alert,
    command_component,
    make_config,
    marker,
    payload,
    tripwire,
)
from glyph_guard_demo.testkit.support import REPO, free_port, wait_for

FLEET = REPO / "deploy" / "fleet"


def glyph_fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from glyph_guard.fleet.cli import main; main()", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def inventory(tmp_path: Path, hosts: dict[str, Any], **top: Any) -> Path:
    """An inventory in tmp_path using the shipped single-host Alertmanager config as its base."""
    data = {
        "alertmanager_base": str(REPO / "deploy" / "prometheus" / "alertmanager.yml"),
        "alertmanagers": ["127.0.0.1:9093", "127.0.0.2:9093"],
        "token_dir": "/etc/alertmanager/glyph-guard",
        "hosts": hosts,
        **top,
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("amtool")
    if tool is None:
        pytest.skip("amtool is not installed (scripts/bootstrap.sh installs it)")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False)


def routed(config: Path, **labels: str) -> list[str]:
    done = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(",")


def test_shipped_fleet_configs_are_rendered_from_the_shipped_inventory() -> None:
    done = glyph_fleet("render", "--check", str(FLEET / "inventory.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    checked = amtool("check-config", str(FLEET / "alertmanager.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run(
            [promtool, "check", "config", str(FLEET / "prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_routes_reach_only_the_alerts_own_host(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        {
            "gpu-01": {"address": "10.0.0.1", "vllm_component": "llm"},
            "gpu-02": {"address": "10.0.0.2", "vllm_port": None},
            "gpu-03": {"address": "10.0.0.3"},
        },
    )
    assert glyph_fleet("render", str(path)).returncode == 0
    config = tmp_path / "alertmanager.yml"
    assert amtool("check-config", str(config)).returncode == 0
    common = {"alertname": "GlyphComponentDown", "component": "api"}
    assert routed(config, host="gpu-02", action="restart", **common) == [
        "remediator-gpu-02",
        "operators",
    ]
    assert routed(config, host="gpu-09", action="restart", **common) == [
        "remediator-unrouted",
        "operators",
    ]
    assert routed(config, host="gpu-01", **common) == ["operators"]  # no action: no remediator
    rendered = yaml.safe_load(config.read_text())
    hooks = {r["name"]: r.get("webhook_configs") for r in rendered["receivers"]}
    hook = hooks["remediator-gpu-02"][0]
    assert hook["url"] == "http://10.0.0.2:9843/alerts"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/alertmanager/glyph-guard/gpu-02",
    }
    assert "remediator" not in hooks
    vllm = yaml.safe_load((tmp_path / "targets" / "vllm.json").read_text())
    assert vllm == [  # labelled with the host's own name for its vLLM component, if any
        {"targets": ["10.0.0.1:5002"], "labels": {"host": "gpu-01", "component": "llm"}},
        {"targets": ["10.0.0.3:5002"], "labels": {"host": "gpu-03"}},
    ]


def test_rendering_is_idempotent_and_follows_inventory_changes(tmp_path: Path) -> None:
    hosts = {"gpu-01": {"address": "10.0.0.1"}, "gpu-02": {"address": "10.0.0.2"}}
    path = inventory(tmp_path, hosts)
    first = glyph_fleet("render", str(path))
    assert first.returncode == 0 and "written" in first.stdout
    files = [*sorted(tmp_path.rglob("*.json")), tmp_path / "alertmanager.yml"]
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    again = glyph_fleet("render", str(path))
    assert again.returncode == 0 and "written" not in again.stdout, again.stdout
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files} == before
    assert glyph_fleet("render", "--check", str(path)).returncode == 0

    # hosts listed in another order render the same bytes
    inventory(tmp_path, dict(reversed(list(hosts.items()))))
    assert "written" not in glyph_fleet("render", str(path)).stdout

    inventory(tmp_path, {"gpu-02": hosts["gpu-02"], "gpu-03": {"address": "10.0.0.3"}})
    stale = glyph_fleet("render", "--check", str(path))
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert glyph_fleet("render", str(path)).returncode == 0
    exporters = yaml.safe_load((tmp_path / "targets" / "glyph-exporter.json").read_text())
    assert [g["labels"]["host"] for g in exporters] == ["gpu-02", "gpu-03"]
    config = tmp_path / "alertmanager.yml"
    assert amtool("check-config", str(config)).returncode == 0
    labels = {"alertname": "GlyphComponentDown", "component": "api", "action": "restart"}
    assert routed(config, host="gpu-01", **labels)[0] == "remediator-unrouted"
    assert routed(config, host="gpu-03", **labels)[0] == "remediator-gpu-03"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hosts": {"gpu 01": {"address": "10.0.0.1"}}}, "hosts.gpu 01.name: String should match"),
        ({"hosts": {"gpu-01": {"address": "10.0.0.1:9842"}}}, "hosts.gpu-01.address"),
        ({"hosts": {"gpu-01": {"adress": "10.0.0.1"}}}, "hosts.gpu-01.adress: Extra inputs"),
        ({"hosts": {"gpu-01": {"address": "10.0.0.1", "exporter_port": 0}}}, "exporter_port"),
        (
            {"hosts": {"gpu-01": {"address": "10.0.0.1", "token_file": "tokens/a"}}},
            "hosts.gpu-01.token_file: must be an absolute path",
        ),
        (
            {"hosts": {"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.1"}}},
            "a.exporter_port and b.exporter_port both use 10.0.0.1:9842",
        ),
        (
            {"hosts": {"a": {"address": "10.0.0.1", "remediator_port": 9842}}},
            "a.exporter_port and a.remediator_port both use 10.0.0.1:9842",
        ),
        (
            {"hosts": [{"name": "a", "address": "10.0.0.1"}, {"name": "a", "address": "x"}]},
            "host names must be unique",
        ),
        ({"alertmanagers": []}, "alertmanagers: Tuple should have at least 1 item"),
        ({"alertmanagers": ["am-1"]}, "alertmanagers[0]: expected HOST:PORT"),
        ({"hosts": {}}, "hosts: Tuple should have at least 1 item"),
    ],
)
def test_inventory_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    data = {"alertmanagers": ["127.0.0.1:9093"], "hosts": {"gpu-01": {"address": "10.0.0.1"}}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_inventory({**data, **change}, "inv.yml")


def test_bad_inventory_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    path = inventory(tmp_path, {"gpu-01": {"address": "10.0.0.1"}}, alertmanager_base="nope.yml")
    done = glyph_fleet("render", str(path))
    assert done.returncode == 2
    assert "alertmanager_base: cannot read" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "targets").exists()  # nothing half-written
    broken = tmp_path / "broken.yml"
    broken.write_text("hosts: [\n")
    done = glyph_fleet("render", str(broken))
    assert done.returncode == 2 and "not valid YAML" in done.stderr
    assert "Traceback" not in done.stderr


def test_host_name_in_the_deployment_config_is_validated() -> None:
    base = {"components": {"api": {"match": {"cmdline": "x"}}}}
    assert parse_config({**base, "host": "gpu-01"}).host == "gpu-01"
    assert parse_config(base).host is None
    with pytest.raises(ConfigError, match="host: String should match"):
        parse_config({**base, "host": "gpu 01/../x"})


def test_an_alert_for_another_host_is_refused_and_recorded(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": component}).model_copy(update={"host": "gpu-02"})
    with Remediator(config) as rem:
        misrouted = alert(host="gpu-01", fingerprint="aaaa000000000001")
        assert rem.post(payload(misrouted)).status_code == 202
        resolved = alert(host="gpu-01", status="resolved", fingerprint="aaaa000000000001")
        assert rem.post(payload(resolved)).status_code == 202
        decision = rem.decisions()[-2]
        assert (decision["verdict"], decision["reason"]) == ("skipped", "wrong_host")
        assert "'gpu-01'" in decision["detail"] and "'gpu-02'" in decision["detail"]
        assert rem.reasons()[-1] == "skipped:wrong_host"
        metrics = rem.http.get("/metrics").text
        assert 'glyph_remediator_alerts_skipped_total{reason="wrong_host"} 2.0' in metrics
        rem.idle()
        assert rem.actions() == [] and not flag.exists()
        # its own host, and an alert without a host label, are judged as before
        own = alert(host="gpu-02", fingerprint="aaaa000000000002")
        assert rem.post(payload(own)).status_code == 202
        rem.finished_actions(1)
        assert flag.exists()


def test_ha_duplicates_of_one_incident_make_one_action(tmp_path: Path) -> None:
    """What 2 Prometheus replicas and 2 clustered Alertmanagers deliver for one kill (seen in
    tests/test_fleet_stack.py): the same alert from both members at once; after the restart a
    `resolved`, then the same firing alert again (one replica had not yet seen it recover);
    and, where the replicas' evaluations differ, the alert with the other replica's startsAt."""
    component = command_component(free_port(), marker())
    config = make_config(tmp_path, {"api": component}, budget={"cooldown_seconds": 3})
    config = config.model_copy(update={"host": "gpu-02"})
    fingerprint, starts_at = "58adf08c74e3b1dd", "2026-12-01T10:46:04.193Z"
    firing = payload(alert(host="gpu-02", fingerprint=fingerprint, starts_at=starts_at))
    resolved = payload(
        alert(host="gpu-02", fingerprint=fingerprint, starts_at=starts_at, status="resolved")
    )
    with Remediator(config) as rem, ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(rem.post, [firing, firing]))
        assert [a.status_code for a in answers] == [202, 202]
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded"
        for body in (resolved, firing, resolved):
            assert rem.post(body).status_code == 202
        shifted = alert(
            host="gpu-02", fingerprint=fingerprint, starts_at="2026-12-01T10:46:03.193Z"
        )
        assert rem.post(payload(shifted)).json()["alerts"][0]["reason"] == "cooldown"
        wait_for(lambda: "skipped:recovered" in rem.reasons(), 15)
        rem.idle()
        assert len(rem.actions()) == 1
        reasons = rem.reasons()
        assert reasons.count("acted:acted") == 1
        assert "skipped:duplicate" in reasons and reasons.count("skipped:resolved") == 2
