"""The real NVML path; runs only where a GPU and its driver are present."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest

from glyph_guard.common.nvml import load_pynvml
from glyph_guard.common.xid_watch import XidWatch
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.remediator.actions.gpu import NvmlHolders
from glyph_guard_demo.testkit.exporter_fixtures import deployment, running_exporter, scrape
from glyph_guard_demo.testkit.real_nvml import real_nvml_or_skip
from glyph_guard_demo.testkit.support import sample, wait_for

pytestmark = pytest.mark.gpu


@pytest.fixture
def real_nvml() -> NvmlReader:
    module, _ = real_nvml_or_skip()
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


def raw(module: Any, name: str, *args: Any) -> Any:
    """The real pynvml call, or None when the driver does not support it here."""
    try:
        return getattr(module, name)(*args)
    except module.NVMLError:
        return None


def test_real_health_fields_agree_with_nvml(real_nvml: NvmlReader) -> None:
    """Each new field is read where NVML answers the call, and absent exactly where not."""
    module = load_pynvml()
    assert module is not None
    snapshot = real_nvml.read()
    real_nvml.close()
    assert snapshot.available, snapshot.error
    module.nvmlInit()
    try:
        for device in snapshot.devices:
            handle = module.nvmlDeviceGetHandleByIndex(device.index)
            limit = raw(module, "nvmlDeviceGetEnforcedPowerLimit", handle)
            assert (device.power_limit_watts is None) == (limit is None)
            assert device.power_limit_watts is None or device.power_limit_watts > 0
            rates = raw(module, "nvmlDeviceGetUtilizationRates", handle)
            assert (device.memory_utilization_ratio is None) == (rates is None)
            assert device.memory_utilization_ratio is None or (
                0 <= device.memory_utilization_ratio <= 1
            )
            ecc = raw(
                module,
                "nvmlDeviceGetTotalEccErrors",
                handle,
                module.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                module.NVML_AGGREGATE_ECC,
            )
            kinds = {(e.counter, e.error) for e in device.ecc_errors}
            assert (("aggregate", "uncorrected") in kinds) == (ecc is not None)
            pending = raw(module, "nvmlDeviceGetRetiredPagesPendingStatus", handle)
            assert (device.retired_pages_pending is None) == (pending is None)
            rows = raw(module, "nvmlDeviceGetRemappedRows", handle)
            assert (device.remapped_rows is None) == (rows is None)
            replays = raw(module, "nvmlDeviceGetPcieReplayCounter", handle)
            assert (device.pcie_replays is None) == (replays is None)
            reasons = raw(module, "nvmlDeviceGetCurrentClocksEventReasons", handle)
            if reasons is None:
                reasons = raw(module, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
            assert (device.clock_events is None) == (reasons is None)
            for name in ("temperature_celsius", "power_watts", "utilization_ratio"):
                assert getattr(device, name) is None or getattr(device, name) >= 0, name
    finally:
        module.nvmlShutdown()


def test_real_xid_events_can_be_waited_for(real_nvml: NvmlReader) -> None:
    """Where a device reports XID events, a wait times out empty (no XID is made up here)."""
    module = load_pynvml()
    assert module is not None
    real_nvml.close()
    module.nvmlInit()
    try:
        supported = [
            bool(
                (raw(module, "nvmlDeviceGetSupportedEventTypes", h) or 0)
                & module.nvmlEventTypeXidCriticalError
            )
            for h in (
                module.nvmlDeviceGetHandleByIndex(i) for i in range(module.nvmlDeviceGetCount())
            )
        ]
    finally:
        module.nvmlShutdown()
    watch = XidWatch(module)
    try:
        started = time.monotonic()
        assert watch.poll(wait_ms=200) is any(supported)
        assert time.monotonic() - started < 30
        assert watch.lost == frozenset()
    finally:
        watch.stop()
