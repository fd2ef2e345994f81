"""The exporter's real /metrics, with every family populated, passes promtool; caches measured."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import psutil

from glyph_guard.common.cachefiles import cache_files
from glyph_guard.common.config import Cache
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard_demo.testkit.exporter_fixtures import (
    assert_promtool_accepts,
    deployment,
    running_exporter,
    scrape,
)
from glyph_guard_demo.testkit.fake_nvml import GIB, FakeDevice, FakeNvml
from glyph_guard_demo.testkit.support import parse_metrics, python_argv, sample, spawned, wait_for

SLEEPER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(600)
"""


def test_full_exposition_passes_promtool(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "sub").mkdir(parents=True)
    (cache / "a.png").write_bytes(b"x" * 1000)
    (cache / "sub" / "b.png").write_bytes(b"y" * 24)
    marker = f"glyph-test-{uuid.uuid4().hex}"
    with spawned(python_argv(SLEEPER, marker)) as proc:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 1, 10)
        child = psutil.Process(proc.pid).children()[0].pid
        fake = FakeNvml(
            [
                FakeDevice("GPU-0", processes=[(child, 30 * GIB), (4_000_000, GIB)]),
                FakeDevice("GPU-1"),
            ]
        )
        config = deployment(
            {
                "api": {
                    "match": {"cmdline": marker},
                    "port": 1,
                    "probes": [{"name": "health", "path": "/health", "timeout_seconds": 0.2}],
                    "caches": [f"{cache}/**"],
                }
            }
        )
        with running_exporter(config, NvmlReader(fake)) as exporter:
            wait_for(
                lambda: sample(
                    scrape(exporter), "glyph_cache_bytes", component="api", glob=f"{cache}/**"
                ),
                5,
            )
            wait_for(
                lambda: (
                    sample(scrape(exporter), "glyph_probe_success", component="api", probe="health")
                    is not None
                ),
                5,
            )
            wait_for(
                lambda: sample(
                    scrape(exporter), "glyph_component_gpu_memory_bytes", component="api", gpu="0"
                ),
                5,
            )
            response = httpx.get(f"http://127.0.0.1:{exporter.server.port}/metrics", timeout=5)
            index = httpx.get(f"http://127.0.0.1:{exporter.server.port}/", timeout=5)
            missing = httpx.get(f"http://127.0.0.1:{exporter.server.port}/nope", timeout=5)
    text = response.text
    assert index.status_code == 200 and 'href="/metrics"' in index.text
    assert missing.status_code == 404
    samples = parse_metrics(text)
    assert sample(samples, "glyph_cache_files", component="api", glob=f"{cache}/**") == 2
    assert sample(samples, "glyph_cache_bytes", component="api", glob=f"{cache}/**") == 1024
    assert sample(samples, "glyph_component_gpu_memory_bytes", component="api", gpu="0") == 30 * GIB
    assert (
        sample(
            samples,
            "glyph_gpu_orphan_memory_bytes",
            gpu="0",
            uuid="GPU-0",
            name="NVIDIA H100 80GB HBM3",
        )
        == GIB
    )
    for family in (
        "glyph_component_up",
        "glyph_gpu_memory_used_bytes",
        "glyph_probe_success",
        "glyph_exporter_collector_duration_seconds",
        "glyph_exporter_build_info",
    ):
        assert f"# HELP {family} " in text
    assert_promtool_accepts(text)


def test_cache_glob_never_follows_links(tmp_path: Path) -> None:
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    cache.mkdir()
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"z" * 5000)
    (cache / "page.png").write_bytes(b"p" * 10)
    os.symlink(outside, cache / "linkdir")
    os.symlink(outside / "secret.bin", cache / "linkfile")
    config = deployment({"ui": {"match": {"cmdline": "nothing-xyz"}, "caches": [f"{cache}/**"]}})
    with running_exporter(config) as exporter:
        labels = {"component": "ui", "glob": f"{cache}/**"}
        wait_for(lambda: sample(scrape(exporter), "glyph_cache_files", **labels) is not None, 5)
        samples = scrape(exporter)
    assert sample(samples, "glyph_cache_files", **labels) == 1
    assert sample(samples, "glyph_cache_bytes", **labels) == 10


def test_cache_glob_with_a_directory_wildcard_skips_symlinked_directories(tmp_path: Path) -> None:
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    (cache / "abc").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.png").write_bytes(b"z")
    (cache / "abc" / "x.png").write_bytes(b"p")
    os.symlink(outside, cache / "link")
    found = [path for path, _ in cache_files(Cache(glob=f"{cache}/*/x.png"))]
    assert found == [cache / "abc" / "x.png"]
