"""End to end, the slow engine cases (`pytest -m e2e_long`): a start-up that
wedges is restarted after its allowance, and an engine death under
VLLM_KEEP_ALIVE_ON_ENGINE_DEATH (the API stays up answering 503) is restarted as unhealthy."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from glyph_guard.common.config import dump_config, parse_config
from glyph_guard_demo.stack.scenario import StackReader, wait_healthy
from glyph_guard_demo.testkit.stack_fixtures import (
    local_stack,
    standin_deployment,
    wait_cooldown_over,
)
from glyph_guard_demo.testkit.standin_fixtures import STANDIN
from glyph_guard_demo.testkit.support import spawned, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.e2e_long,
    pytest.mark.timeout(420),
]
ALLOWANCE = 20.0


def acted_on(probe: StackReader) -> list[str]:
    """The alerts the remediator acted on, oldest first."""
    acted = [d for d in probe.decisions("api") if d["verdict"] == "acted" and d["alertname"]]
    return [str(d["alertname"]) for d in sorted(acted, key=lambda d: float(d["at"]))]


def test_wedged_start_up_then_keep_alive_engine_death(tmp_path: Path) -> None:
    data = yaml.safe_load(dump_config(standin_deployment(tmp_path)))
    api = data["components"]["api"]
    api["remediation"]["startup_timeout_seconds"] = ALLOWANCE
    argv = api["remediation"]["restart"]["start"]
    argv += ["--vllm-generation", "current", "--keep-alive-on-engine-death"]
    config = parse_config(data, "e2e deployment")
    port = str(api["port"])
    wedged = [*STANDIN, "api", "--port", port, "--pages-dir", str(tmp_path / "wedged")]
    wedged += ["--startup-delay", "3600"]  # loading that never ends: up, port never open
    with (
        (tmp_path / "wedged.log").open("wb") as log,
        spawned(wedged, stdout=log, stderr=subprocess.STDOUT) as stuck,
    ):
        started = time.time()
        with local_stack(tmp_path, config) as (_stack, probe):
            wait_for(lambda: probe.firing("GlyphComponentStuckStarting", "api"), ALLOWANCE + 60)
            actions = wait_for(lambda: [a for a in probe.actions("api") if a["finished_at"]], 60)
            assert actions[0]["outcome"] == "succeeded", actions
            assert actions[0]["started_at"] - started <= ALLOWANCE + 15 + 5  # +5: our spawn
            assert stuck.proc.poll() is not None, "the wedged process was stopped"
            assert acted_on(probe) == ["GlyphComponentStuckStarting"]
            wait_healthy(probe, "api")
            wait_cooldown_over(probe, "api")  # an alert inside the cooldown is stale
            probe.reset("api")

            # Keep-alive: the engine dies, the API stays up answering 503 until restarted.
            url = f"http://127.0.0.1:{port}"
            httpx.post(f"{url}/admin/fault", json={"fault": "engine_death"}, timeout=5)
            wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 503, 10)
            wait_for(lambda: probe.firing("GlyphComponentUnhealthy", "api"), 60)
            wait_for(lambda: len([a for a in probe.actions("api") if a["finished_at"]]) == 2, 90)
            assert acted_on(probe) == ["GlyphComponentStuckStarting", "GlyphComponentUnhealthy"]
            wait_healthy(probe, "api")
