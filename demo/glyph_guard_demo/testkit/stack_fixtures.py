"""A whole local stack for end-to-end tests: stand-in, exporter, remediator, Prometheus, AM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from glyph_guard.common.config import Deployment, parse_config
from glyph_guard_demo.stack.cli import EXAMPLE
from glyph_guard_demo.stack.configs import Ports
from glyph_guard_demo.stack.runner import LocalStack
from glyph_guard_demo.stack.scenario import StackReader
from glyph_guard_demo.testkit.support import (
    free_port,
    past_cooldown,
    wait_for,
    webhooks_settled,
)

FAST_BUDGET = {
    "cooldown_seconds": 5,
    "backoff_initial_seconds": 1,
    "backoff_max_seconds": 4,
    "max_failed_restarts": 5,
}


def standin_deployment(
    tmp_path: Path,
    *,
    api_args: tuple[str, ...] = (),
    budget: dict[str, Any] | None = None,
    api_extra: dict[str, Any] | None = None,
    exporter_extra: dict[str, Any] | None = None,
) -> Deployment:
    """The stand-in example deployment on free ports, with its cache under tmp_path."""
    data = yaml.safe_load((EXAMPLE).read_text())
    api, ui = data["components"]["api"], data["components"]["ui"]
    api_port, ui_port = free_port(), free_port()
    cache = tmp_path / "gradio-cache"
    api["port"] = api_port
    # Only this test's processes: a parallel run's stand-in must never be guarded or stopped.
    api["match"]["cmdline"] = (
        rf"(glyph-standin|-m\s+glyph_guard_demo\.standin)\s+api\s+--port\s+{api_port}(\s|$)"
    )
    api["remediation"]["restart"]["start"] = [
        "glyph-standin",
        "api",
        "--port",
        str(api_port),
        "--pages-dir",
        str(tmp_path / "pages"),
        "--enable-server-load-tracking",
        *api_args,
    ]
    api["remediation"]["restart"]["log_file"] = str(tmp_path / "logs" / "api-restarts.log")
    api.update(api_extra or {})
    ui["port"] = ui_port
    ui["match"]["cmdline"] = (
        rf"(glyph-standin|-m\s+glyph_guard_demo\.standin)\s+ui\s+--port\s+{ui_port}(\s|$)"
    )
    ui["caches"] = [f"{cache}/**"]
    ui["remediation"]["restart"]["start"] = [
        "glyph-standin",
        "ui",
        "--port",
        str(ui_port),
        "--cache-dir",
        str(cache),
        "--api-url",
        f"http://127.0.0.1:{api_port}",
    ]
    ui["remediation"]["restart"]["log_file"] = str(tmp_path / "logs" / "ui-restarts.log")
    data["remediator"]["budget"] = {**FAST_BUDGET, **(budget or {})}
    data.setdefault("exporter", {}).update(exporter_extra or {})
    return parse_config(data, "e2e deployment")


@contextmanager
def local_stack(tmp_path: Path, config: Deployment) -> Iterator[tuple[LocalStack, StackReader]]:
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    stack = LocalStack(config, tmp_path / "stack", ports)
    try:
        stack.start()
        probe = StackReader(stack)
        try:
            yield stack, probe
        finally:
            probe.close()
    finally:
        stack.stop()


def deliveries_judged(probe: StackReader) -> bool:
    """Alertmanager has nothing in flight to the remediator: every delivery is judged."""
    return webhooks_settled(probe.stack.urls["alertmanager"])


def component_status(probe: StackReader, component: str) -> dict[str, Any]:
    """The remediator's /components/<name>: gave_up, busy, the actions waiting their turn."""
    url = f"{probe.stack.urls['remediator']}/components/{component}"
    response = probe.client.get(url, headers=probe.auth)
    response.raise_for_status()
    status: dict[str, Any] = response.json()
    return status


def wait_cooldown_over(probe: StackReader, component: str, timeout: float = 120) -> None:
    """Until an alert about the component acts again instead of being taken for the
    incarnation just replaced."""
    cooldown = probe.stack.config.remediator.budget.cooldown_seconds
    wait_for(lambda: past_cooldown(probe.actions(component), cooldown), timeout, interval=0.2)


def pinned_to_ports(config: Deployment) -> Deployment:
    """The deployment with each stand-in matched only with its own port on its command line.

    On a machine shared with other stacks, the stand-in's usual matcher would also find (and a
    restart would stop) their `glyph-standin api` processes.
    """
    components = []
    for component in config.components:
        pattern = (
            rf"(^|[/\s])(glyph-standin|-m\s+glyph_guard_demo\.standin)\s+{component.name}\s+--port\s+"
            rf"{component.port}(\s|$)"
        )
        match = component.match.model_copy(update={"cmdline": pattern})
        components.append(component.model_copy(update={"match": match}))
    return config.model_copy(update={"components": tuple(components)})
