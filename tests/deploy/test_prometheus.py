"""deploy/prometheus: promtool and amtool accept the shipped and the rendered configs, and the
rules and routes keep the promises the remediator relies on."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml

from glyph_guard.common.config import (
    ExporterSettings,
    RemediatorSettings,
    load_config,
    parse_config,
)
from glyph_guard_demo.stack.cli import EXAMPLE
from glyph_guard_demo.stack.configs import Ports, prometheus_config, write_stack_files
from glyph_guard_demo.stack.services import find_binary
from glyph_guard_demo.testkit.support import REPO, free_port, spawned, wait_for, webhooks_settled

PROMETHEUS = REPO / "deploy" / "prometheus"
ACTIONS = {"restart", "clean_cache", "reset_gpu"}
DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `bash scripts/bootstrap.sh --test` (Debian's "
            "prometheus and prometheus-alertmanager packages)",
            pytrace=False,
        )
    return path


def run(*argv: str) -> str:
    done = subprocess.run(
        [tool(argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=540,  # promtool test rules evaluates the 1 s group over hours of test time
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(argv)} exited with {done.returncode}:\n{output}"
    return output


def seconds(duration: str) -> float:
    """A Prometheus / Alertmanager duration ("1h30m", "500ms") in seconds."""
    parts = DURATION.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def alertmanager() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    return data


# --------------------------------------------------------------------------- the tools


def test_promtool_accepts_the_prometheus_config() -> None:
    output = run("promtool", "check", "config", "deploy/prometheus/prometheus.yml")
    assert "SUCCESS" in output


def test_promtool_accepts_the_rules() -> None:
    output = run("promtool", "check", "rules", "deploy/prometheus/rules.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


@pytest.mark.timeout(600)  # some 2 min of CPU: the 1 s group evaluated over hours of test time
def test_promtool_rule_unit_tests_pass() -> None:
    output = run("promtool", "test", "rules", "deploy/prometheus/tests/rules_test.yml")
    assert "SUCCESS" in output


def test_amtool_accepts_the_alertmanager_config() -> None:
    output = run("amtool", "check-config", "deploy/prometheus/alertmanager.yml")
    assert "SUCCESS" in output


def test_rendered_local_stack_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    ports = Ports(exporter=19842, remediator=19843, prometheus=19090, alertmanager=19093)
    files = write_stack_files(config, ports, tmp_path)
    assert "SUCCESS" in run("promtool", "check", "config", str(files.prometheus))
    assert "SUCCESS" in run("amtool", "check-config", str(files.alertmanager))
    rendered = yaml.safe_load(files.prometheus.read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in rendered["scrape_configs"]
    }
    assert targets["glyph-exporter"] == ["127.0.0.1:19842"]
    assert targets["glyph-remediator"] == ["127.0.0.1:19843"]
    assert targets["vllm"] == ["127.0.0.1:5002"]
    routes = run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={files.alertmanager}",
        "alertname=GlyphComponentDown",
        "component=api",
        "severity=critical",
        "action=restart",
    )
    assert "remediator" in receivers(routes)


def test_the_vllm_target_carries_the_name_of_the_component_serving_its_engine() -> None:
    components = {
        "llm": {"match": {"cmdline": "x"}, "port": 5002, "engine": {"path": "/vllm-metrics"}},
        "ui": {"match": {"cmdline": "y"}, "port": 7860},
    }
    rendered = prometheus_config(parse_config({"components": components}), Ports())
    jobs = {job["job_name"]: job["static_configs"] for job in rendered["scrape_configs"]}
    assert jobs["vllm"] == [
        {
            "targets": ["127.0.0.1:5002"],
            "labels": {"component": "llm", "__metrics_path__": "/vllm-metrics"},
        }
    ]
    without = {"ui": components["ui"]}
    rendered = prometheus_config(parse_config({"components": without}), Ports())
    assert "vllm" not in [job["job_name"] for job in rendered["scrape_configs"]]


def test_no_rule_or_scrape_config_names_a_component() -> None:
    """Components are named by the deployment config: the rules join on whatever name the
    exporter publishes (rules_test.yml has a vLLM component named llm), and a scrape target
    gets its component label from a renderer that reads the config."""
    for rule in alert_rules():
        assert not re.search(r"component\s*=", rule["expr"]), rule["alert"]
    jobs = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    for job in jobs:
        for group in job.get("static_configs", ()):
            assert "component" not in group.get("labels", {}), job["job_name"]


# --------------------------------------------------------------------------- the rules


def test_every_alert_has_component_severity_and_annotations() -> None:
    for rule in alert_rules():
        name, labels = rule["alert"], rule.get("labels", {})
        assert labels.get("severity") in {"critical", "warning", "info"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        assert annotations.get("description", "").strip(), f"{name}: no description"
        if "action" in labels:
            assert labels["action"] in ACTIONS, f"{name}: the remediator has no {labels['action']}"


def test_every_alert_carries_a_component_label_when_it_fires() -> None:
    """Set in the rule, or kept from its series: the promtool unit tests (which pass, above)
    pin the labels each alert really fires with, so every alert needs a firing case there and
    every such case names its component."""
    tests = yaml.safe_load((PROMETHEUS / "tests" / "rules_test.yml").read_text())
    fired: dict[str, list[dict[str, str]]] = {}
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", ()):
            for expected in check.get("exp_alerts") or ():
                fired.setdefault(check["alertname"], []).append(expected["exp_labels"])
    for rule in alert_rules():
        name = rule["alert"]
        assert fired.get(name), f"{name}: rules_test.yml has no case in which it fires"
        for labels in fired[name]:
            assert labels.get("component"), f"{name} fires without a component: {labels}"
            assert labels.get("severity") == rule["labels"]["severity"], name
            assert labels.get("action") == rule["labels"].get("action"), name


def test_alerts_on_series_without_a_component_set_one() -> None:
    """Families without a component label (GPU devices, scrape health) need it in the rule."""
    componentless = re.compile(
        r"\b(glyph_gpu_(?!orphan)\w+|glyph_gpu_orphan_memory_bytes|glyph_exporter_\w+|up)\b"
    )
    with_component = re.compile(r"\bglyph_(component|probe|cache|leak|remediator)_\w+|vllm:\w+")
    for rule in alert_rules():
        expr = rule["expr"]
        if componentless.search(expr) and not with_component.search(expr):
            assert rule["labels"].get("component"), f"{rule['alert']} must set component"


# --------------------------------------------------------------------------- the routes


def receivers(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line and not line.startswith("Warning")]
    return [name.strip() for line in lines for name in line.split(",") if name.strip()]


def route_to(config: dict[str, Any], receiver: str) -> list[dict[str, Any]]:
    """The routes that deliver to receiver, each with its inherited settings filled in."""
    keys = ("group_by", "group_wait", "group_interval", "repeat_interval")
    found: list[dict[str, Any]] = []

    def walk(route: dict[str, Any], inherited: dict[str, Any]) -> None:
        effective = {**inherited, **{k: route[k] for k in keys if k in route}}
        effective["receiver"] = route.get("receiver", inherited.get("receiver"))
        if effective["receiver"] == receiver:
            found.append({**route, **effective})
        for child in route.get("routes", ()):
            walk(child, effective)

    walk(config["route"], {})
    return found


def test_action_alerts_route_to_the_remediator_and_others_do_not() -> None:
    path = "deploy/prometheus/alertmanager.yml"
    for rule in alert_rules():
        labels = {"alertname": rule["alert"], "component": "api", **rule["labels"]}
        argv = [f"{k}={v}" for k, v in sorted(labels.items())]
        got = receivers(run("amtool", "config", "routes", "test", f"--config.file={path}", *argv))
        if "action" in rule["labels"]:
            assert "remediator" in got, f"{rule['alert']} goes to {got}"
        else:
            assert "remediator" not in got, f"{rule['alert']} must not reach the remediator"


def test_remediator_receiver_is_safe_for_restarts() -> None:
    config = alertmanager()
    [receiver] = [r for r in config["receivers"] if r["name"] == "remediator"]
    [hook] = receiver["webhook_configs"]
    assert hook["send_resolved"] is True
    assert hook["url"] == f"http://{RemediatorSettings().listen}/alerts"
    auth = hook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert auth["credentials_file"], "the token comes from a file"
    assert "credentials" not in auth, "no token inline in the config"
    routes = route_to(config, "remediator")
    assert routes
    for route in routes:
        assert any("action" in m for m in route.get("matchers", ())), route
        assert {"alertname", "component"} <= set(route["group_by"]), route
        assert seconds(route["group_wait"]) <= 2, "restarts must not wait for grouping"
        # A repeat never restarts by itself: it comes long after any restart settled.
        assert seconds(route["repeat_interval"]) >= 3600, route


def test_prometheus_scrapes_the_services_where_they_listen_by_default() -> None:
    data = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in data["scrape_configs"]
    }
    assert targets["glyph-exporter"] == [ExporterSettings().listen]
    assert targets["glyph-remediator"] == [RemediatorSettings().listen]
    assert data["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"
    ]
    exporter = next(j for j in data["scrape_configs"] if j["job_name"] == "glyph-exporter")
    assert seconds(exporter["scrape_interval"]) <= 1, "a dead process is seen within seconds"


# --------------------------------------------------------------------------- runbooks, watchdog

RUNBOOKS = REPO / "docs" / "runbooks"


def test_every_alert_links_its_runbook_page_in_the_repository() -> None:
    bases = set()
    for rule in alert_rules():
        name = rule["alert"]
        url = rule.get("annotations", {}).get("runbook_url", "")
        base, _, page = url.rpartition("/docs/runbooks/")
        assert base.startswith("https://") and page == f"{name}.md", f"{name}: runbook_url {url!r}"
        bases.add(base)
        text = (RUNBOOKS / page).read_text() if (RUNBOOKS / page).is_file() else ""
        assert text.startswith(f"# {name}\n"), f"{name}: no runbook page docs/runbooks/{page}"
        for part in ("**Means:**", "**The remediator**", "```"):
            assert part in text, f"docs/runbooks/{page} lacks {part}"
    assert len(bases) == 1, f"every runbook_url under one base: {bases}"


def test_watchdog_always_fires_and_goes_to_its_own_receiver_only() -> None:
    [watchdog] = [rule for rule in alert_rules() if rule["alert"] == "Watchdog"]
    assert watchdog["expr"].strip() == "vector(1)"
    assert "for" not in watchdog
    labels = {"alertname": "Watchdog", **watchdog["labels"]}
    path = "deploy/prometheus/alertmanager.yml"
    argv = [f"{k}={v}" for k, v in sorted(labels.items())]
    got = receivers(run("amtool", "config", "routes", "test", f"--config.file={path}", *argv))
    assert got == ["watchdog"]
    [route] = route_to(alertmanager(), "watchdog")
    # The dead-man's switch is pinged at least every minute.
    assert seconds(route["repeat_interval"]) <= 60 and seconds(route["group_interval"]) <= 60
    # Another alert never reaches it.
    argv = ["alertname=GlyphGpuLost", "component=gpu", "severity=critical"]
    got = receivers(run("amtool", "config", "routes", "test", f"--config.file={path}", *argv))
    assert "watchdog" not in got


class _Hooks(http.server.BaseHTTPRequestHandler):
    """Records each webhook delivery: (path, body)."""

    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_watchdog_pings_its_receiver_through_a_real_alertmanager(tmp_path: Path) -> None:
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{hooks.server_address[1]}"
    token = tmp_path / "token"
    token.write_text("t\n")
    config = alertmanager()
    for receiver in config["receivers"]:
        if receiver["name"] == "watchdog":
            # What the runbook tells the operator to add: the dead-man's switch's ping URL.
            receiver["webhook_configs"] = [{"url": f"{base}/ping", "send_resolved": False}]
        for hook in receiver.get("webhook_configs", ()):
            if "http_config" in hook:
                hook["url"] = f"{base}/remediator"
                hook["http_config"]["authorization"]["credentials_file"] = str(token)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        find_binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        with spawned(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            wait_for(lambda: ready(f"{url}/-/ready"), 30)
            [watchdog] = [rule for rule in alert_rules() if rule["alert"] == "Watchdog"]
            alert = {"labels": {"alertname": "Watchdog", **watchdog["labels"]}}
            httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()
            wait_for(lambda: _Hooks.received, 20)
            # Routed to the watchdog alone, and nothing still on its way to any receiver.
            [held] = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
            assert [r["name"] for r in held["receivers"]] == ["watchdog"]
            wait_for(lambda: webhooks_settled(url), 20)
    finally:
        hooks.shutdown()
        hooks.server_close()
    [(path, body)] = _Hooks.received
    assert path == "/ping" and body["receiver"] == "watchdog"
    assert [a["labels"]["alertname"] for a in body["alerts"]] == ["Watchdog"]


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
