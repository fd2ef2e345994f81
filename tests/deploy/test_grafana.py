"""The Grafana dashboard and its provisioning: shape, and every panel query run against a real
Prometheus that scraped the real exporter (NVML fake), the real remediator and the stand-in."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from glyph_guard.common.config import dump_config, load_config, parse_config
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.remediator.cli import main
from glyph_guard_demo.stack.configs import Ports, write_stack_files
from glyph_guard_demo.stack.services import stop_group
from glyph_guard_demo.testkit.doubles.harness import Remediator, command_component, make_config
from glyph_guard_demo.testkit.exporter_fixtures import FAST, running_exporter
from glyph_guard_demo.testkit.fake_nvml import GIB, FakeDevice, FakeNvml
from glyph_guard_demo.testkit.standin_fixtures import start
from glyph_guard_demo.testkit.support import REPO, free_port, running_prometheus, spawned, wait_for

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "glyph-guard.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
COMPOSE = REPO / "docker-compose.yml"
VARIABLE_QUERY = "label_values(glyph_component_up, component)"
HOST_QUERY = 'label_values(up{job="glyph-exporter"}, host)'
# What Grafana puts in place of its built-in variables (the datasource's timeInterval is 5 s).
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
MIB = 1024**2
STANDIN = r"-m\s+glyph_guard_demo\.standin"  # how the stand-in's processes are started
API_GPU = 512 * MIB  # the api process's own CUDA context
ENGINE_GPU = 60 * GIB  # its engine child holds the weights and KV cache
FOREIGN_GPU = 2 * GIB  # a process outside every component: orphaned memory

# What an operator must find on the dashboard (the brief of deploy/grafana).
OPERATOR_METRICS = (
    "glyph_component_up",
    "glyph_probe_success",
    "glyph_component_port_conflict",
    "glyph_probe_duration_seconds_bucket",
    "glyph_gpu_memory_used_bytes",
    "glyph_gpu_memory_total_bytes",
    "glyph_gpu_memory_reserved_bytes",
    "glyph_component_gpu_memory_bytes",
    "glyph_gpu_orphan_memory_bytes",
    "glyph_component_resident_memory_bytes",
    "glyph_leak_slope_bytes_per_second",
    "glyph_leak_seconds_until_exhausted",
    "glyph_leak_suspected",
    "glyph_cache_bytes",
    "glyph_cache_files",
    "glyph_remediator_restarts_total",
    "glyph_remediator_restart_budget_remaining",
    "glyph_remediator_gave_up",
    "glyph_remediator_paused",
    "glyph_remediator_alerts_skipped_total",
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "glyph_exporter_last_sample_timestamp_seconds",
    "glyph_exporter_collector_duration_seconds",
)


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query on the dashboard."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", ())
    ]


def annotations(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, expr) of the dashboard's Prometheus annotations (Grafana's built-in one has none)."""
    return [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]


def every_query(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The panels' queries and the annotations' (refId "annotation")."""
    return targets(dashboard) + [(n, "annotation", e) for n, e in annotations(dashboard)]


def render(expr: str, component: str) -> str:
    """The query as Grafana sends it, with $component set to a value and $host to All."""
    text = expr.replace("${component}", component).replace("$component", component)
    text = text.replace("$host", ".*")  # All: the variable's allValue, which also matches no host
    for name in sorted(BUILTINS, key=len, reverse=True):
        text = text.replace(name, BUILTINS[name])
    assert "$" not in text, f"unknown variable left in {text!r}"
    return text


def provisioned_datasource() -> dict[str, Any]:
    data = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    [source] = data["datasources"]
    assert isinstance(source, dict)
    return source


# --------------------------------------------------------------------------- static shape


def test_dashboard_has_the_promised_shape() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "glyph-guard"
    assert 38 <= dashboard["schemaVersion"] <= 41
    assert dashboard["refresh"] == "5s"
    assert dashboard["id"] is None  # provisioned dashboards must not carry a database id
    host, variable = dashboard["templating"]["list"]
    assert (host["name"], host["definition"], host["query"]["query"]) == ("host", *[HOST_QUERY] * 2)
    assert host["multi"] and host["includeAll"] and host["allValue"] == ".*"
    assert variable["name"] == "component"
    assert variable["type"] == "query"
    assert variable["definition"] == VARIABLE_QUERY
    assert variable["query"]["query"] == VARIABLE_QUERY
    assert variable["multi"] and variable["includeAll"]

    uid = provisioned_datasource()["uid"]
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_shows_everything_an_operator_needs() -> None:
    exprs = " ".join(expr for _, _, expr in every_query(load_dashboard()))
    missing = [name for name in OPERATOR_METRICS if not re.search(rf"{re.escape(name)}\b", exprs)]
    assert not missing, f"no panel shows {missing}"


def test_component_filter_is_applied_to_component_series() -> None:
    """A query on a per-component family honours the variable (GPU, vLLM and self are global)."""
    per_component = re.compile(
        r"glyph_(component_|probe_|cache_|leak_|remediator_(restarts|restart_budget|gave_up"
        r"|paused|last_action|alerts_acted))\w*"
    )
    for title, ref, expr in every_query(load_dashboard()):
        for match in per_component.finditer(expr):
            selector = expr[match.end() : match.end() + 40]
            assert selector.startswith('{component=~"$component"'), (title, ref, match.group())


def test_every_series_is_filtered_by_host() -> None:
    """In a fleet each host's series carry its `host` label; the host variable picks hosts."""
    selector = re.compile(r"\b(glyph_[a-z_]+|vllm:[a-z_:]+|up|ALERTS)\b(\{[^}]*\})?(?!\s*\()")
    for title, ref, expr in every_query(load_dashboard()):
        for match in selector.finditer(expr):
            assert 'host=~"$host"' in (match.group(2) or ""), (title, ref, match.group())


def test_annotations_mark_restarts_pauses_and_give_ups_on_every_panel() -> None:
    """Drawn from the remediator's own series on every time series (no panel filter)."""
    dashboard = load_dashboard()
    uid = provisioned_datasource()["uid"]
    marks = {a["name"]: a for a in dashboard["annotations"]["list"] if "expr" in a}
    assert set(marks) == {
        "Restarts",
        "Failed restarts",
        "Remediation paused",
        "Remediation gave up",
    }
    for name, mark in marks.items():
        assert mark["datasource"] == {"type": "prometheus", "uid": uid}, name
        assert mark["enable"] and not mark["hide"], name
        assert "filter" not in mark, f"{name}: shown on every panel"
        assert "{{component}}" in mark["titleFormat"], name
    assert "glyph_remediator_restarts_total" in marks["Restarts"]["expr"]
    assert "outcome" in marks["Failed restarts"]["tagKeys"]
    assert "{{reason}}" in marks["Remediation paused"]["textFormat"]
    assert "glyph_remediator_gave_up" in marks["Remediation gave up"]["expr"]


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """A range query as Grafana sends an annotation's, one point a second."""
    form = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
    response = httpx.post(f"{url}/api/v1/query_range", data=form, timeout=10, trust_env=False)
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    return list(body["data"]["result"])


def drawn_marks(url: str, component: str, began: float) -> dict[str, list[dict[str, Any]]] | None:
    """Each annotation's series since `began`, once a restart and a pause are both drawn."""
    marks = {
        name: query_range(url, render(expr, component), began, time.time())
        for name, expr in annotations(load_dashboard())
    }
    return marks if marks["Restarts"] and marks["Remediation paused"] else None


@pytest.mark.e2e
def test_annotation_queries_mark_a_real_remediators_restarts_and_pauses(tmp_path: Path) -> None:
    """The annotations alone: a real remediator scraped by a real Prometheus, one restart by
    an operator, one pause with a reason (the whole stack's test checks them too)."""
    flag = tmp_path / "restarted"
    code = f"open({str(flag)!r}, 'w').close(); import time; time.sleep(20)"  # ends by itself
    start = [sys.executable, "-c", code, "glyph-annotation-test"]
    component = command_component(free_port(), "glyph-annotation-test", start=start, probes=False)
    config = make_config(tmp_path, {"api": component})
    config_file = tmp_path / "glyph.yaml"
    config_file.write_text(dump_config(config))
    host, port = config.remediator.address
    scrape = tmp_path / "prometheus.yml"
    scrape.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "glyph-remediator",
                        "static_configs": [{"targets": [f"{host}:{port}"]}],
                    }
                ],
            }
        )
    )
    ctl = ["--config", str(config_file)]
    with Remediator(config) as rem, running_prometheus(scrape, tmp_path) as prometheus:
        wait_for(lambda: prometheus.query("glyph_remediator_restarts_total"), 20, interval=0.2)
        began = time.time()
        assert main(["restart", "api", "--wait", *ctl]) == 0
        assert main(["pause", "api", "--reason", "annotation test", *ctl]) == 0
        # a loaded machine scrapes late: wait until both are drawn, while the pause is still on
        marks = wait_for(lambda: drawn_marks(prometheus.url, "api", began), 30, interval=0.5)
        assert main(["resume", "api", *ctl]) == 0
        wait_for(lambda: rem.status("api")["paused"] is False, 10)
    shown = [(s["metric"]["component"], s["metric"]["outcome"]) for s in marks["Restarts"]]
    assert shown == [("api", "succeeded")], marks
    assert [s["metric"]["reason"] for s in marks["Remediation paused"]] == ["annotation test"]
    assert marks["Failed restarts"] == marks["Remediation gave up"] == [], marks


def test_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    source = provisioned_datasource()
    assert source["name"] == "Prometheus"
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "glyph-guard.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    # docker-compose.yml mounts deploy/grafana/dashboards exactly where the provider looks.
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = [v.split(":") for v in compose["services"]["grafana"]["volumes"]]
    assert ["./deploy/grafana/dashboards", path, "ro"] in mounts
    assert ["./deploy/grafana/provisioning", "/etc/grafana/provisioning", "ro"] in mounts


# --------------------------------------------------------------------------- live queries


def deployment_data(tmp: Path, api_port: int, ui_port: int) -> dict[str, Any]:
    """The stand-in api and ui on the given ports, matched by their port so no stray matches."""
    cache = tmp / "gradio-cache"
    api_argv = [
        *[sys.executable, "-m", "glyph_guard_demo.standin"],
        *["api", "--port", str(api_port), "--log-level", "warning"],
        *["--pages-dir", str(tmp / "pages")],
    ]
    return {
        "components": {
            "api": {
                "match": {"cmdline": rf"{STANDIN}\s+api\s+--port\s+{api_port}(\s|$)"},
                "port": api_port,
                "engine": {"path": "/metrics"},  # scraped as vLLM, labelled api
                "probes": [
                    {"name": "health", "path": "/health"},
                    {"name": "models", "path": "/v1/models"},
                    {"name": "canary", "kind": "canary", "path": "/v1/chat/completions"},
                ],
                "remediation": {
                    "actions": ["restart"],
                    "restart": {"start": api_argv, "log_file": str(tmp / "api-restarted.log")},
                    "stop_grace_seconds": 5,
                    "release_timeout_seconds": 10,
                    "startup_timeout_seconds": 30,
                },
            },
            "ui": {
                "match": {"cmdline": rf"{STANDIN}\s+ui\s+--port\s+{ui_port}(\s|$)"},
                "port": ui_port,
                "probes": [{"name": "config", "path": "/config"}],
                "caches": [f"{cache}/**"],
            },
        },
        "exporter": {"listen": "127.0.0.1:9842", "intervals": FAST},
    }


def fast_prometheus_config(path: Path) -> None:
    """The rendered config, every job scraped (and every rule group evaluated) each second."""
    data = yaml.safe_load(path.read_text())
    data["global"].update(scrape_interval="1s", evaluation_interval="1s")
    for job in data["scrape_configs"]:
        job.update(scrape_interval="1s", scrape_timeout="1s")
    path.write_text(yaml.safe_dump(data))


def engine_of(pid: int) -> int | None:
    try:
        children = psutil.Process(pid).children()
        return next(
            (c.pid for c in children if "glyph-standin-engine" in " ".join(c.cmdline())), None
        )
    except psutil.Error:
        return None


def gpu_processes(api_pid: int, engine_pid: int) -> list[tuple[int, int | None]]:
    return [(api_pid, API_GPU), (engine_pid, ENGINE_GPU), (os.getpid(), FOREIGN_GPU)]


def values(series: list[dict[str, Any]], **labels: str) -> list[float]:
    return [
        float(s["value"][1])
        for s in series
        if all(s["metric"].get(k) == v for k, v in labels.items())
    ]


@pytest.mark.e2e
def test_every_panel_query_returns_series_in_a_fresh_stack(tmp_path: Path) -> None:
    api_port, ui_port = free_port(), free_port()
    ports = Ports(
        exporter=free_port(),
        remediator=free_port(),
        prometheus=free_port(),
        alertmanager=free_port(),
    )
    config = parse_config(deployment_data(tmp_path, api_port, ui_port), "panel test")
    files = write_stack_files(config, ports, tmp_path / "stack")
    fast_prometheus_config(files.prometheus)
    deployment = load_config(files.deployment)
    token = files.token.read_text().strip()
    devices = [
        FakeDevice(uuid="GPU-6f1d5b0e-0000-4000-8000-000000000000"),
        FakeDevice(uuid="GPU-6f1d5b0e-0000-4000-8000-000000000001", used=GIB, processes=[]),
    ]
    remediator_log = tmp_path / "remediator.log"
    restarted: set[int] = set()

    with ExitStack() as stack:
        api = stack.enter_context(start("api", tmp_path, ready_path="/health", port=api_port))
        stack.enter_context(
            start(
                "ui",
                tmp_path,
                *["--api-url", api.url, "--cache-dir", str(tmp_path / "gradio-cache")],
                ready_path="/config",
                port=ui_port,
            )
        )
        devices[0].processes = gpu_processes(api.pid, wait_for(lambda: engine_of(api.pid), 10))
        out = stack.enter_context(remediator_log.open("wb"))
        remediator = stack.enter_context(
            spawned(
                [sys.executable, "-m", "glyph_guard.remediator", "--config", str(files.deployment)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
        # Whatever the remediator started is this test's too: end those groups last.
        stack.callback(lambda: [stop_group(pid, grace=5.0) for pid in restarted])
        rem_url = f"http://127.0.0.1:{ports.remediator}"
        http = stack.enter_context(
            httpx.Client(
                base_url=rem_url, headers={"Authorization": f"Bearer {token}"}, trust_env=False
            )
        )

        def remediator_up() -> bool:
            assert remediator.proc.poll() is None, remediator_log.read_text(errors="replace")
            try:
                return http.get("/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(remediator_up, 20, interval=0.1)
        stack.enter_context(running_exporter(deployment, NvmlReader(FakeNvml(devices))))
        prometheus = stack.enter_context(
            running_prometheus(files.prometheus, tmp_path, port=ports.prometheus)
        )

        # Prometheus sees the counters at 0 first, then one restart through the operator
        # endpoint, so that remediation history exists (and increase() can count it).
        wait_for(lambda: prometheus.query("glyph_remediator_restarts_total"), 20, interval=0.2)
        began = time.time()
        response = http.post("/components/api/restart", timeout=10)
        assert response.status_code == 202, response.text
        action_id = response.json()["action_id"]

        def finished() -> dict[str, Any] | None:
            actions = http.get("/actions", params={"component": "api"}, timeout=5).json()
            action = next((a for a in actions if a["id"] == action_id), None)
            if action and action["details"].get("started_pid"):
                restarted.add(action["details"]["started_pid"])
            return action if action and action["outcome"] is not None else None

        action = wait_for(finished, 45, interval=0.2)
        assert action["outcome"] == "succeeded", action
        new_api = action["details"]["started_pid"]
        devices[0].processes = gpu_processes(new_api, wait_for(lambda: engine_of(new_api), 10))

        # The variable's values: what Grafana's label_values() asks Prometheus for.
        def components() -> list[str]:
            response = httpx.get(
                f"{prometheus.url}/api/v1/label/component/values",
                params={"match[]": "glyph_component_up"},
                timeout=5,
                trust_env=False,
            )
            return sorted(response.json()["data"])

        wait_for(lambda: components() == ["api", "ui"], 20, interval=0.2)

        queries = {
            (title, ref, value): render(expr, value)
            for title, ref, expr in targets(load_dashboard())
            for value in ("api", "ui", "(api|ui)")  # one component, or All (a multi-value regex)
        }
        results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

        def every_query_has_series() -> bool:
            # An error raises at once (AssertionError naming the query); no series: try again.
            # Every query of a pass reads one moment, older than any scrape still in flight,
            # so that a scrape landing mid-pass cannot mix two states in one result.
            moment = time.time() - 1.5
            results.update({key: prometheus.query(e, at=moment) for key, e in queries.items()})
            restarts = values(results[("Restarts in range", "A", "api")], outcome="succeeded")
            owner = results[("GPU memory by owner", "A", "api")]
            up = results[("Component up", "A", "(api|ui)")]
            targets_up = results[("Scrape targets", "A", "(api|ui)")]  # vllm: the api, restarted
            return (
                all(results.values())
                and restarts == [1.0]
                and values(owner, component="api", gpu="0") == [API_GPU + ENGINE_GPU]
                and values(up, component="api") == values(up, component="ui") == [1.0]
                and values(targets_up) == [1.0, 1.0, 1.0]
            )

        deadline = time.monotonic() + 30
        while not every_query_has_series():
            if time.monotonic() > deadline:
                empty = [f"{key}: {queries[key]}" for key, series in results.items() if not series]
                pytest.fail(
                    "queries without series (or no restart / new GPU owner / all up):\n"
                    + "\n".join(empty or ["(all have series)"])
                    + f"\nrestarts: {results[('Restarts in range', 'A', 'api')]}"
                    + f"\nGPU owners: {results[('GPU memory by owner', 'A', 'api')]}"
                    + f"\ncomponents up: {results[('Component up', 'A', '(api|ui)')]}"
                )
            time.sleep(0.5)

        # The annotations over the test's span, as Grafana draws them on every time series:
        # the restart, then an operator's pause with its reason (resumed once drawn).
        ctl = ["--config", str(files.deployment)]
        assert main(["pause", "api", *ctl, "--reason", "panel test"]) == 0
        # a range query's one-second steps can fall either side of a pause scraped only once
        marks = wait_for(lambda: drawn_marks(prometheus.url, "(api|ui)", began), 30, interval=0.5)
        assert main(["resume", "api", *ctl]) == 0
        shown = [(s["metric"]["component"], s["metric"]["outcome"]) for s in marks["Restarts"]]
        assert shown == [("api", "succeeded")], marks
        assert [s["metric"]["reason"] for s in marks["Remediation paused"]] == ["panel test"]
        assert marks["Failed restarts"] == marks["Remediation gave up"] == [], marks

    # A few values an operator reads, from the All view.
    def at(title: str, ref: str = "A") -> list[dict[str, Any]]:
        return results[(title, ref, "(api|ui)")]

    assert values(at("GPU memory by owner", "B"), gpu="0") == [FOREIGN_GPU]
    assert values(at("GPU memory by owner", "B"), gpu="1") == [0.0]
    assert values(at("Cache size"), component="api") == [0.0]  # no cache dirs: 0, not absent
    assert values(at("Remediation"), component="api") == [0.0]  # armed
    assert values(at("Scrape targets")) == [1.0, 1.0, 1.0]
    for seconds in values(at("Time to exhaustion")):
        assert seconds == -1 or seconds > 0  # -1: not growing
    for age in values(at("Sample age")):
        assert math.isfinite(age) and age < 30
