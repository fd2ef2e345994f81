"""The real NVML path; runs only where a GPU and its driver are present."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from glyph_guard.common.nvml import load_pynvml
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.remediator.actions.gpu import NvmlHolders
from glyph_guard_demo.testkit.exporter_fixtures import deployment, running_exporter, scrape
from glyph_guard_demo.testkit.support import sample, wait_for

pytestmark = pytest.mark.gpu


@pytest.fixture
def real_nvml() -> NvmlReader:
    module = load_pynvml()
    if module is None:
        pytest.skip("nvidia-ml-py is not installed")
    try:
        module.nvmlInit()
        count = module.nvmlDeviceGetCount()
        module.nvmlShutdown()
    except module.NVMLError as exc:
        pytest.skip(f"no usable NVIDIA driver here: {exc}")
    if count == 0:
        pytest.skip("NVML sees no GPU")
    return NvmlReader(module)


def test_real_devices_read(real_nvml: NvmlReader) -> None:
    snapshot = real_nvml.read()
    real_nvml.close()
    assert snapshot.available, snapshot.error
    assert snapshot.devices and snapshot.driver_version
    for device in snapshot.devices:
        assert device.readable and device.uuid.startswith(("GPU-", "MIG-"))
        assert device.memory_total_bytes and device.memory_total_bytes > 0
        assert device.memory_used_bytes is not None
        assert device.memory_used_bytes <= device.memory_total_bytes


def test_real_exporter_output_passes_promtool(real_nvml: NvmlReader) -> None:
    config = deployment({"api": {"match": {"cmdline": "no-such-process-xyz"}}})
    with running_exporter(config, real_nvml) as exporter:
        wait_for(lambda: sample(scrape(exporter), "glyph_exporter_nvml_available") == 1, 10)
        text = httpx.get(f"http://127.0.0.1:{exporter.server.port}/metrics", timeout=5).text
    assert "glyph_gpu_memory_total_bytes{" in text
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_real_gpu_holders_answer(real_nvml: NvmlReader) -> None:
    real_nvml.close()
    holders = NvmlHolders()()
    assert holders is not None  # a frozenset, possibly empty, once the driver answers
