"""Leak-trend gauges end to end: a real process whose RSS grows, time scaled down 600 times."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client import CollectorRegistry

from glyph_guard.common.config import LeakSettings
from glyph_guard.exporter.gpu_memory import attribute_gpu_memory
from glyph_guard.exporter.leak_tracking import LeakTracker
from glyph_guard.exporter.metrics import SnapshotCollector
from glyph_guard.exporter.snapshot import (
    ComponentLiveness,
    GpuDevice,
    GpuProcess,
    GpuSnapshot,
    GpuUnclaimed,
    GpuUsage,
    Readings,
)
from glyph_guard_demo.testkit.exporter_fixtures import (
    assert_promtool_accepts,
    deployment,
    running_exporter,
    scrape,
)
from glyph_guard_demo.testkit.support import python_argv, sample, spawned, wait_for

GROWER = """
import sys, time
hoard = []
rate = float(sys.argv[2])  # MB per second
while True:
    block = bytearray(int(rate * 1e6 / 10))
    block[::4096] = b"x" * len(block[::4096])  # touch every page, so it counts in RSS
    hoard.append(block)
    time.sleep(0.1)
"""

AGE = "glyph_leak_segment_age_seconds"
GB = 10**9
SCALED = LeakSettings(  # the defaults, 600 times faster: 2 h windows become 12 s, 1 h of grace 6 s
    window_seconds=12,
    min_window_seconds=LeakSettings().min_window_seconds / 600,
    bin_seconds=0.1,
    history_seconds=36,
    grace_seconds=6,
    warmup_seconds=2,
    min_history_seconds=3,
    min_reach_seconds=1,
    min_rate_bytes_per_second=LeakSettings().min_rate_bytes_per_second * 600,
    max_gap_seconds=3,
)


def trend(samples: dict, name: str) -> float | None:  # type: ignore[type-arg]
    return sample(samples, name, component="svc", resource="rss")


def test_growing_rss_is_suspected_with_a_time_to_exhaustion() -> None:
    marker = f"glyph-leak-{uuid.uuid4().hex}"
    limit = 8_000_000_000
    config = deployment(
        {"svc": {"match": {"cmdline": marker}, "memory_limit_bytes": limit}},
        liveness=0.1,
    )
    config = config.model_copy(
        update={"exporter": config.exporter.model_copy(update={"leak": SCALED})}
    )
    with running_exporter(config) as exporter, spawned(python_argv(GROWER, marker, "40")):
        found = wait_for(
            lambda: (s := scrape(exporter)) and trend(s, "glyph_leak_suspected") == 1 and s, 40
        )
        exposition = httpx.get(f"http://127.0.0.1:{exporter.server.port}/metrics").text
    assert_promtool_accepts(exposition)
    slope = trend(found, "glyph_leak_slope_bytes_per_second")
    assert slope is not None and 20e6 < slope < 80e6  # about 40 MB/s
    until = trend(found, "glyph_leak_seconds_until_exhausted")
    rss = sample(found, "glyph_component_resident_memory_bytes", component="svc")
    assert until is not None and rss is not None
    assert until == pytest.approx((limit - rss) / slope, rel=0.3)
    lower = trend(found, "glyph_leak_exhaustion_lower_bound_seconds")
    upper = trend(found, "glyph_leak_exhaustion_upper_bound_seconds")
    assert lower is not None and lower <= until
    assert upper is None or upper >= until
    # minutes left at 40 MB/s towards 8 GB: the remediator is asked to act at once
    assert trend(found, "glyph_leak_urgency") == 2
    assert trend(found, "glyph_leak_segment_age_seconds") >= 6


def test_a_flat_process_is_not_suspected_and_a_restart_starts_a_new_segment() -> None:
    marker = f"glyph-leak-{uuid.uuid4().hex}"
    config = deployment({"svc": {"match": {"cmdline": marker}}}, liveness=0.1)
    config = config.model_copy(
        update={"exporter": config.exporter.model_copy(update={"leak": SCALED})}
    )
    with running_exporter(config) as exporter:
        with spawned(python_argv(GROWER, marker, "0")) as first:
            wait_for(
                lambda: (trend(scrape(exporter), "glyph_leak_segment_age_seconds") or 0) > 8, 20
            )
            assert trend(scrape(exporter), "glyph_leak_suspected") == 0
            first.stop()
        with spawned(python_argv(GROWER, marker, "0")) as second:
            wait_for(lambda: psutil.pid_exists(second.pid), 5)
            wait_for(
                lambda: 0 <= (trend(scrape(exporter), AGE) or 99) < 3,
                10,
            )


def test_leak_settings_errors_name_the_field_for_both_services(tmp_path: Path) -> None:
    config = tmp_path / "deploy.yaml"
    for leak, expected in [
        ("{windw_seconds: 1}", "exporter.leak.windw_seconds: Extra inputs are not permitted"),
        ("{blocks: 2.5}", "exporter.leak.blocks: Input should be a valid integer"),
        ("{bin_seconds: -1}", "exporter.leak.bin_seconds: Input should be greater than 0"),
        ("{history_seconds: 60}", "exporter.leak: history_seconds must be >= window_seconds"),
    ]:
        config.write_text(
            f"components:\n  a: {{match: {{cmdline: x}}}}\nexporter: {{leak: {leak}}}\n"
        )
        for service in ("exporter", "remediator"):
            done = subprocess.run(
                [sys.executable, "-m", f"glyph_guard.{service}", "check-config", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode != 0, (service, leak)
            assert expected in done.stderr, (service, done.stderr)
            assert "Traceback" not in done.stderr


def test_replay_uses_a_deployments_tuning(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"{i * 15.0},{5e9 + i * 15 * 1e6 / 36}" for i in range(600)]  # 100 MB/h for 2.5 h
    trace.write_text("timestamp_seconds,bytes\n" + "\n".join(rows) + "\n")
    config = tmp_path / "deploy.yaml"

    def replay(leak: str) -> subprocess.CompletedProcess[str]:
        config.write_text(
            f"components:\n  a: {{match: {{cmdline: x}}}}\nexporter: {{leak: {leak}}}\n"
        )
        argv = ["replay", str(trace), "--limit-bytes", "64e9", "--config", str(config)]
        return subprocess.run(
            [sys.executable, "-m", "glyph_guard.exporter", *argv],
            capture_output=True,
            text=True,
            check=False,
        )

    strict = replay("{min_rate_bytes_per_second: 1000000}")  # 3.6 GB/h floor: no suspicion
    lenient = replay("{min_rate_bytes_per_second: 10000, min_rise_bytes: 10000000}")
    assert strict.returncode == lenient.returncode == 0
    assert '"suspected": true' not in strict.stdout
    assert '"suspected": true' in lenient.stdout
    bad = replay("{grace: 1}")
    assert (
        bad.returncode == 2 and "exporter.leak.grace: Extra inputs are not permitted" in bad.stderr
    )


def test_gpu_memory_is_attributed_once_for_the_metrics_and_the_leak_trend() -> None:
    api = ComponentLiveness("api", processes=2, start_time=1.0, pids=frozenset({10, 11}))
    ui = ComponentLiveness("ui", processes=1, start_time=1.0, pids=frozenset({20}))
    device = GpuDevice(0, "GPU-0", "H100", True, memory_total_bytes=80 * GB)
    known = GpuSnapshot(
        True, (replace(device, processes=(GpuProcess(10, 3 * GB), GpuProcess(11, GB))),)
    )
    unknown = GpuSnapshot(
        True, (replace(device, processes=(GpuProcess(10, 3 * GB), GpuProcess(20, None))),)
    )
    usage, orphans = attribute_gpu_memory(known, (api, ui))
    assert usage == (GpuUsage("api", 0, 2, 4 * GB), GpuUsage("ui", 0, 0, 0))
    assert orphans == (GpuUnclaimed(0, 0),)
    config = deployment({"api": {"match": {"cmdline": "a"}}, "ui": {"match": {"cmdline": "u"}}})
    tracker = LeakTracker(config.components)
    tracker.observe_gpu(known, usage, (api, ui), 100.0)
    assert [(t.component, t.resource) for t in tracker.readings()] == [("api", "gpu_memory")]
    usage, orphans = attribute_gpu_memory(unknown, (api, ui))
    assert usage[1] == GpuUsage("ui", 0, 1, None)
    tracker.observe_gpu(unknown, usage, (api, ui), 200.0)  # ui's figure is unknown: skipped
    assert [(t.component, t.resource) for t in tracker.readings()] == [("api", "gpu_memory")]
    registry = CollectorRegistry(auto_describe=False)
    snapshot = Readings(gpu=unknown, gpu_memory=usage, gpu_orphans=orphans)
    registry.register(SnapshotCollector(lambda: snapshot))
    series = "glyph_component_gpu_memory_bytes"
    assert registry.get_sample_value(series, {"component": "api", "gpu": "0"}) == 3 * GB
    assert registry.get_sample_value(series, {"component": "ui", "gpu": "0"}) is None
