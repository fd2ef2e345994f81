"""End to end with a real Gradio app as the `ui` component (tests/e2e/gradio_app.py, shaped like
Glyph's demo): probed on /config, its real cache measured and cleaned, killed and restarted,
and its port taken by a second instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from glyph_guard.common.config import parse_config
from glyph_guard_demo.stack.runner import LocalStack
from glyph_guard_demo.stack.scenario import StackReader, run_scenario
from glyph_guard_demo.testkit.doubles.harness import alert, payload
from glyph_guard_demo.testkit.stack_fixtures import FAST_BUDGET, local_stack
from glyph_guard_demo.testkit.support import free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

APP = Path(__file__).with_name("gradio_app.py")


def app_argv(port: int, cache: Path, role: str = "guarded") -> list[str]:
    return [
        sys.executable,
        str(APP),
        "--port",
        str(port),
        "--cache-dir",
        str(cache),
        "--role",
        role,
    ]


@pytest.fixture(scope="module")
def gradio_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, StackReader, Path]]:
    tmp_path = tmp_path_factory.mktemp("gradio")
    port, cache = free_port(), tmp_path / "gradio-cache"
    config = parse_config(
        {
            "components": {
                "ui": {
                    # Only the guarded instance, not a second one on the same port.
                    "match": {"cmdline": rf"gradio_app\.py --port {port} .*--role guarded"},
                    "port": port,
                    "probes": [{"name": "config", "path": "/config"}],
                    "caches": [f"{cache}/**"],
                    "remediation": {
                        "actions": ["restart", "clean_cache"],
                        "restart": {
                            "backend": "command",
                            "start": app_argv(port, cache),
                            "log_file": str(tmp_path / "ui-restarts.log"),
                        },
                        "stop_grace_seconds": 5,
                        "startup_timeout_seconds": 90,
                        "clean_cache_min_age_seconds": 0,
                    },
                }
            },
            "exporter": {"intervals": {"caches": 1}},
            "remediator": {"budget": FAST_BUDGET},
        },
        "gradio e2e deployment",
    )
    with local_stack(tmp_path, config) as (stack, reader):
        yield stack, reader, cache


def render(port: int, text: str) -> Path:
    """One call of the app's API, as the browser makes it; the cached image it returns."""
    base = f"http://127.0.0.1:{port}/gradio_api/call/render"
    event = httpx.post(base, json={"data": [text]}, timeout=30).json()["event_id"]
    with httpx.stream("GET", f"{base}/{event}", timeout=60) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data:")]
    [output] = json.loads(lines[-1].removeprefix("data:"))
    return Path(output["path"])


def ui_port(stack: LocalStack) -> int:
    component = stack.config.component("ui")
    assert component is not None and component.port is not None
    return component.port


def cache_bytes(reader: StackReader, cache: Path) -> float | None:
    return reader.exporter_value("glyph_cache_bytes", "ui", glob=f"{cache}/**")


def on_disk(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def test_config_probe_passes_and_cache_growth_is_measured(
    gradio_stack: tuple[LocalStack, StackReader, Path],
) -> None:
    stack, reader, cache = gradio_stack
    wait_for(lambda: reader.healthy("ui"), 60)
    assert reader.exporter_value("glyph_probe_http_status", "ui", probe="config") == 200
    before = cache_bytes(reader, cache) or 0.0
    images = [render(ui_port(stack), f"page {n}: {uuid.uuid4().hex * 20}") for n in range(3)]
    for image in images:
        assert image.is_file() and cache in image.parents, image
    wait_for(lambda: (cache_bytes(reader, cache) or 0) >= on_disk(cache) > before, 15)


def test_clean_cache_deletes_gradio_files_and_gradio_keeps_serving(
    gradio_stack: tuple[LocalStack, StackReader, Path],
) -> None:
    stack, reader, cache = gradio_stack
    old = render(ui_port(stack), f"to be cleaned {uuid.uuid4().hex}")
    assert old.is_file()
    time.sleep(1.1)  # older than the minimum age (0 s) by a whole second of mtime
    body = payload(
        alert(component="ui", action="clean_cache", alertname="GlyphCacheGrowing", fingerprint="c1")
    )
    response = httpx.post(
        f"{stack.urls['remediator']}/alerts", json=body, headers=reader.auth, timeout=5
    )
    assert response.status_code == 202, response.text

    def cleaned() -> dict[str, Any] | None:
        done = [a for a in reader.actions("ui") if a["action"] == "clean_cache"]
        return done[0] if done and done[0].get("outcome") else None

    action = wait_for(cleaned, 30)
    assert action["outcome"] == "succeeded", action
    assert not old.exists()
    wait_for(lambda: cache_bytes(reader, cache) == on_disk(cache), 15)
    # Gradio writes its next output into the same directory again.
    assert render(ui_port(stack), f"after the clean {uuid.uuid4().hex}").is_file()
    assert reader.healthy("ui")


def test_killed_gradio_is_restarted_and_serves_again(
    gradio_stack: tuple[LocalStack, StackReader, Path],
) -> None:
    stack, _, _ = gradio_stack
    timeline = run_scenario(stack, "kill", "ui")
    assert timeline.outcome == "succeeded", timeline.lines()
    assert httpx.get(f"http://127.0.0.1:{ui_port(stack)}/config", timeout=5).status_code == 200
    assert render(ui_port(stack), "after the restart").is_file()


def test_port_held_by_a_second_instance_is_a_conflict(
    gradio_stack: tuple[LocalStack, StackReader, Path], tmp_path: Path
) -> None:
    stack, reader, cache = gradio_stack
    port = ui_port(stack)
    # A second copy of the app, started by hand, cannot take the port from the guarded one:
    second = subprocess.run(
        app_argv(port, tmp_path / "cache", role="second"),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert second.returncode != 0
    assert f"Cannot find empty port in range: {port}-{port}" in second.stderr
    # ... but one that holds it while the guarded one is down makes the guarded one's start
    # fail the same way, and the exporter reports the conflict.
    switch = f"{stack.urls['remediator']}/components/ui"
    httpx.post(f"{switch}/pause", headers=reader.auth, timeout=5).raise_for_status()
    for proc in psutil.process_iter(["cmdline"]):
        if f"--port {port} " in " ".join(proc.info["cmdline"] or ()):
            os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: reader.exporter_value("glyph_component_up", "ui") == 0, 15)
    with subprocess.Popen(
        app_argv(port, tmp_path / "cache", role="second"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as holder:
        try:
            wait_for(
                lambda: (
                    reader.exporter_value("glyph_component_port_conflict", "ui", port=str(port))
                    == 1
                ),
                60,
            )
            again = subprocess.run(
                app_argv(port, cache), capture_output=True, text=True, timeout=90, check=False
            )
            assert f"Cannot find empty port in range: {port}-{port}" in again.stderr
        finally:
            os.killpg(holder.pid, signal.SIGKILL)
    httpx.post(f"{switch}/resume", headers=reader.auth, timeout=5).raise_for_status()
