"""Running a real exporter in the test process and scraping it over loopback HTTP."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from glyph_guard.common.config import Deployment, parse_config
from glyph_guard.exporter.cli import Exporter
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard_demo.testkit.support import free_port, parse_metrics


def assert_promtool_accepts(exposition: str) -> None:
    """`promtool check metrics` finds nothing to say about an exposition."""
    path = shutil.which("promtool")
    assert path is not None, (
        "promtool is missing: the test command installs the Debian 'prometheus' package"
    )
    checked = subprocess.run(
        [path, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


FAST = {"liveness": 0.2, "ports": 0.2, "probes": 0.2, "canary": 1, "gpu": 0.2, "caches": 1}


def deployment(components: dict[str, Any], **intervals: float) -> Deployment:
    return parse_config(
        {
            "components": components,
            "exporter": {
                "listen": f"127.0.0.1:{free_port()}",
                "intervals": {**FAST, **intervals},
            },
        }
    )


@contextmanager
def running_exporter(config: Deployment, nvml: NvmlReader | None = None) -> Iterator[Exporter]:
    exporter = Exporter(config, nvml=nvml)
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()


def scrape(exporter: Exporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{exporter.server.port}/metrics"
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return parse_metrics(response.text)


def timed_scrape(exporter: Exporter) -> tuple[float, str]:
    url = f"http://127.0.0.1:{exporter.server.port}/metrics"
    started = time.perf_counter()
    response = httpx.get(url, timeout=5)
    return time.perf_counter() - started, response.text
