"""Live recovery scenarios: break the service, then time each step of the stack's response."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from glyph_guard.common.config import Component
from glyph_guard.common.health import health_of
from glyph_guard.common.processes import ProcessTable
from glyph_guard_demo.stack.runner import LocalStack
from glyph_guard_demo.stack.services import StackError

STEP_TIMEOUT = 300.0  # a real vLLM restart on a busy 2-core machine


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by sample name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Timeline:
    """When each step happened, in seconds after the fault was injected."""

    fault: str
    component: str
    steps: dict[str, float] = field(default_factory=dict)
    outcome: str = ""

    def lines(self) -> list[str]:
        out = [f"scenario: {self.fault} {self.component}"]
        for name, seconds in sorted(self.steps.items(), key=lambda item: item[1]):
            out.append(f"  +{seconds:6.2f} s  {name}")
        out.append(f"  outcome: {self.outcome or 'unknown'}")
        return out


class StackReader:
    """Reads the stack's parts over loopback HTTP."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.client = httpx.Client(timeout=2.0, trust_env=False)
        self.auth = {"Authorization": f"Bearer {stack.token()}"}

    def close(self) -> None:
        self.client.close()

    def exporter_samples(self) -> Samples:
        return parse_samples(self.client.get(f"{self.stack.urls['exporter']}/metrics").text)

    def exporter_value(self, name: str, component: str, **labels: str) -> float | None:
        return self.exporter_samples().get(
            (name, frozenset({"component": component, **labels}.items()))
        )

    def firing(self, alertname: str, component: str) -> dict[str, Any] | None:
        url = f"{self.stack.urls['prometheus']}/api/v1/alerts"
        for alert in self.client.get(url).json()["data"]["alerts"]:
            labels = alert["labels"]
            wanted = (labels.get("alertname"), labels.get("component")) == (alertname, component)
            if wanted and alert["state"] == "firing":
                return dict(alert)
        return None

    def in_alertmanager(self, alertname: str, component: str) -> bool:
        url = f"{self.stack.urls['alertmanager']}/api/v2/alerts"
        params = {"filter": [f'alertname="{alertname}"', f'component="{component}"']}
        return bool(self.client.get(url, params=params).json())

    def actions(self, component: str) -> list[dict[str, Any]]:
        url = f"{self.stack.urls['remediator']}/actions"
        response = self.client.get(url, params={"component": component}, headers=self.auth)
        response.raise_for_status()
        return list(response.json())

    def decisions(self, component: str) -> list[dict[str, Any]]:
        url = f"{self.stack.urls['remediator']}/decisions"
        response = self.client.get(url, params={"component": component}, headers=self.auth)
        response.raise_for_status()
        return list(response.json())

    def firing_seconds(self, alertname: str, component: str, seconds: float) -> int:
        """How many rule evaluations in the last `seconds` found the alert firing."""
        query = (
            f'count_over_time(ALERTS{{alertname="{alertname}",component="{component}",'
            f'alertstate="firing"}}[{max(1, round(seconds))}s])'
        )
        url = f"{self.stack.urls['prometheus']}/api/v1/query"
        result = self.client.get(url, params={"query": query}).json()["data"]["result"]
        return sum(int(float(series["value"][1])) for series in result)

    def reset(self, component: str) -> None:
        url = f"{self.stack.urls['remediator']}/components/{component}/reset"
        self.client.post(url, headers=self.auth).raise_for_status()

    def healthy(self, component: str) -> bool:
        """Up and healthy (glyph_guard.common.health), in one scrape of the exporter."""
        samples = self.exporter_samples()

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, frozenset({"component": component, **labels}.items())))

        config = self._component(component)
        passed = {p.name: value("glyph_probe_success", probe=p.name) == 1 for p in config.probes}
        asleep = value("glyph_engine_asleep") == 1
        return value("glyph_component_up") == 1 and health_of(config, passed, asleep=asleep).healthy

    def _component(self, name: str) -> Component:
        component = self.stack.config.component(name)
        if component is None:
            raise StackError(f"no component named {name}")
        return component


def wait_until(check: Callable[[], object], timeout: float, what: str) -> float:
    """Poll check() every 50 ms; the time it first held."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise StackError(f"timed out after {timeout:g} s waiting for {what}")


def wait_healthy(probe: StackReader, component: str, timeout: float = STEP_TIMEOUT) -> None:
    wait_until(lambda: probe.healthy(component), timeout, f"{component} to be healthy")


def _main_pids(stack: LocalStack, component: Component) -> tuple[int, ...]:
    table = ProcessTable()
    table.refresh()
    return table.find([component])[component.name].roots


FAULT_ALERTS = {
    "kill": "GlyphComponentDown",
    "hang": "GlyphComponentHung",  # an idle engine hangs: only the canary can tell
    "hang-request": "GlyphComponentHung",  # a user request sent to a hung engine (t0: sent)
}


def send_request(component: Component, timeout: float = 120.0) -> threading.Thread:
    """A user's chat completion, in the background; it ends when answered or failed."""

    def ask() -> None:
        body = {"model": "glyph", "messages": [{"role": "user", "content": "a user request"}]}
        with contextlib.suppress(httpx.HTTPError):  # a restart cuts it off: that is the point
            httpx.post(f"{component.base_url()}/v1/chat/completions", json=body, timeout=timeout)

    thread = threading.Thread(target=ask, name="user-request", daemon=True)
    thread.start()
    return thread


def hang(stack: LocalStack, component: Component) -> None:
    """Hang the engine: the stand-in's hang fault, or (a real vLLM) SIGSTOP of every process
    under the API, EngineCore and its Worker included (the API keeps answering /health)."""
    answer = httpx.post(f"{component.base_url()}/admin/fault", json={"fault": "hang"}, timeout=5)
    if answer.status_code != 404:
        answer.raise_for_status()
        return
    for pid in _main_pids(stack, component):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.suspend()


def run_scenario(stack: LocalStack, fault: str, component_name: str = "api") -> Timeline:
    """Inject a fault (see FAULT_ALERTS) into a healthy component and time the recovery."""
    component = stack.config.component(component_name)
    if component is None:
        raise StackError(f"no component named {component_name}")
    probe = StackReader(stack)
    try:
        wait_healthy(probe, component_name)
        before = {a["id"] for a in probe.actions(component_name)}
        timeline = Timeline(fault, component_name)
        alertname = FAULT_ALERTS[fault]
        t0 = time.time()
        if fault == "kill":
            for pid in _main_pids(stack, component):
                os.kill(pid, signal.SIGKILL)
        else:
            hang(stack, component)
            if fault == "hang-request":
                t0 = time.time()
                send_request(component)
        steps = timeline.steps
        if fault == "kill":
            seen = wait_until(
                lambda: probe.exporter_value("glyph_component_up", component_name) == 0,
                STEP_TIMEOUT,
                "the exporter to see the process gone",
            )
            steps["exporter reports the process gone"] = seen - t0
        alert = wait_until(
            lambda: probe.firing(alertname, component_name), STEP_TIMEOUT, f"{alertname}"
        )
        steps[f"Prometheus fires {alertname}"] = alert - t0
        routed = wait_until(
            lambda: probe.in_alertmanager(alertname, component_name),
            STEP_TIMEOUT,
            "Alertmanager to hold the alert",
        )
        steps["Alertmanager holds it"] = routed - t0
        action = _wait_action(probe, component_name, before)
        steps["remediator begins the restart"] = action["started_at"] - t0
        finished = _wait_finished(probe, component_name, action["id"])
        timeline.outcome = str(finished["outcome"])
        steps[f"restart finished ({timeline.outcome})"] = finished["finished_at"] - t0
        if timeline.outcome == "succeeded":
            back = wait_until(lambda: probe.healthy(component_name), STEP_TIMEOUT, "health")
            steps["exporter reports it healthy again"] = back - t0
        return timeline
    finally:
        probe.close()


def _wait_action(probe: StackReader, component: str, before: set[int]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def new_action() -> bool:
        fresh = [a for a in probe.actions(component) if a["id"] not in before]
        if fresh:
            found.update(min(fresh, key=lambda a: a["id"]))
        return bool(fresh)

    wait_until(new_action, STEP_TIMEOUT, "the remediator to act")
    return found


def _wait_finished(probe: StackReader, component: str, action_id: int) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def finished() -> bool:
        for action in probe.actions(component):
            if action["id"] == action_id and action["finished_at"] is not None:
                found.update(action)
                return True
        return False

    wait_until(finished, 900.0, "the restart to finish")
    return found
