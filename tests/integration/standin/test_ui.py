"""The stand-in's Gradio-shaped UI against a real stand-in API: /config, predict, its cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from glyph_guard_demo.testkit.standin_fixtures import (
    STANDIN,
    Running,
    api,
    dir_bytes,
    run_to_end,
    start,
    ui,
)
from glyph_guard_demo.testkit.support import free_port, wait_for


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with api(tmp_path_factory.mktemp("api")) as running:
        yield running


def test_config_page_and_gradio_temp_dir(backend: Running, tmp_path: Path) -> None:
    gradio_tmp = tmp_path / "gradio"
    env = {"GRADIO_TEMP_DIR": str(gradio_tmp)}
    flags = ("--api-url", backend.url)
    with start("ui", tmp_path, *flags, ready_path="/config", env=env) as running:
        config = httpx.get(f"{running.url}/config")
        assert config.status_code == 200
        assert httpx.head(f"{running.url}/config").status_code == 200
        assert config.json()["stand_in"] is True
        assert "mode" in config.json()
        page = httpx.get(f"{running.url}/")
        assert page.status_code == 200
        assert "stand-in" in page.text
        assert httpx.get(f"{running.url}/admin/faults").json()["cache_dir"] == str(gradio_tmp)
        assert gradio_tmp.is_dir()


def test_predict_copies_rendered_pages_into_the_cache(backend: Running, tmp_path: Path) -> None:
    with ui(tmp_path, backend.url) as running:
        for path in ("/gradio_api/predict", "/api/predict"):
            reply = httpx.post(f"{running.url}{path}", json={"data": ["text " * 2000]}, timeout=20)
            assert reply.status_code == 200
            answer, files = reply.json()["data"]
            assert "rendered" in answer
            assert len(files) >= 2
            for name in files:
                cached = Path(name)
                assert cached.is_relative_to(tmp_path / "cache")
                with Image.open(cached) as image:
                    assert image.format == "PNG"
        assert len(list((tmp_path / "cache").rglob("*.png"))) >= 2
        bad = httpx.post(f"{running.url}/gradio_api/predict", json={"text": 1})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == 400


def test_predict_with_the_api_down_is_a_502(tmp_path: Path) -> None:
    with ui(tmp_path, f"http://127.0.0.1:{free_port()}") as running:
        reply = httpx.post(f"{running.url}/gradio_api/predict", json={"data": ["x"]}, timeout=10)
        assert reply.status_code == 502
        assert "cannot reach the api" in reply.json()["error"]["message"]


def test_cache_growth_at_start_and_at_run_time(backend: Running, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with ui(tmp_path, backend.url, "--cache-growth-kb-per-minute", "6000") as running:
        wait_for(lambda: dir_bytes(cache) >= 100 * 1024, 10)  # 100 KB/s
        reply = httpx.post(
            f"{running.url}/admin/fault", json={"fault": "cache_growth", "kb_per_minute": 0}
        )
        assert reply.status_code == 202
        time.sleep(0.6)  # at most one write was in flight
        stopped = dir_bytes(cache)
        time.sleep(1.1)
        assert dir_bytes(cache) == stopped
        reply = httpx.post(
            f"{running.url}/admin/fault", json={"fault": "cache_growth", "kb_per_minute": 12000}
        )
        assert reply.status_code == 202
        wait_for(lambda: dir_bytes(cache) >= stopped + 150 * 1024, 10)
        faults = httpx.get(f"{running.url}/admin/faults").json()
        assert faults["cache_growth"]["written_bytes"] >= 250 * 1024


def test_ui_slow_and_crash_faults(backend: Running, tmp_path: Path) -> None:
    with ui(tmp_path, backend.url, "--slow-seconds", "0.5") as running:
        started = time.monotonic()
        reply = httpx.post(f"{running.url}/gradio_api/predict", json={"data": ["x"]}, timeout=10)
        assert reply.status_code == 200
        assert time.monotonic() - started >= 0.5
        assert httpx.post(f"{running.url}/admin/fault", json={"fault": "crash"}).status_code == 202
        assert running.proc.proc.wait(10) == 70


def test_ui_slow_start_and_failed_start(tmp_path: Path) -> None:
    with start(
        "ui",
        tmp_path,
        "--startup-delay",
        "30",
        "--fail-start-after",
        "0.3",
        "--cache-dir",
        str(tmp_path / "cache"),
    ) as running:
        assert running.proc.proc.wait(15) == 1
        assert "failed to start" in running.output()


def test_ui_on_a_taken_port_fails_like_gradio(backend: Running, tmp_path: Path) -> None:
    result = run_to_end(
        [*STANDIN, "ui", "--port", str(backend.port), "--cache-dir", str(tmp_path / "cache")]
    )
    assert result.returncode == 1
    assert f"Cannot find empty port in range: {backend.port}-{backend.port}" in result.stderr
    assert "Traceback" not in result.stderr
