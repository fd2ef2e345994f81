"""GPU readings through a fake at the pynvml boundary: devices, processes and NVML's failures."""

from __future__ import annotations

import pynvml
import pytest
from prometheus_client import CollectorRegistry

from glyph_guard.exporter.gpu_memory import attribute_gpu_memory
from glyph_guard.exporter.metrics import SnapshotCollector
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.exporter.snapshot import ComponentLiveness, GpuSnapshot, Readings
from glyph_guard.remediator.actions.gpu import NvmlHolders
from glyph_guard_demo.testkit.fake_nvml import GIB, FakeDevice, FakeNvml


def registry_for(gpu: GpuSnapshot, *liveness: ComponentLiveness) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    usage, orphans = attribute_gpu_memory(gpu, liveness)
    snapshot = Readings(liveness=liveness, gpu=gpu, gpu_memory=usage, gpu_orphans=orphans)
    registry.register(SnapshotCollector(lambda: snapshot))
    return registry


def gpu_labels(index: int, fake: FakeNvml) -> dict[str, str]:
    device = fake.devices[index]
    return {"gpu": str(index), "uuid": device.uuid, "name": device.name}


def two_devices() -> FakeNvml:
    return FakeNvml(
        [
            FakeDevice("GPU-aaaa", processes=[(100, 60 * GIB), (101, 2 * GIB), (300, 5 * GIB)]),
            FakeDevice("GPU-bbbb", processes=[(200, None)], used=1 * GIB),
        ]
    )


def test_several_devices_and_their_processes() -> None:
    fake = two_devices()
    gpu = NvmlReader(fake).read()
    api = ComponentLiveness("api", processes=2, pids=frozenset({100, 101}))
    ui = ComponentLiveness("ui", processes=1, pids=frozenset({200}))
    registry = registry_for(gpu, api, ui)
    first, second = gpu_labels(0, fake), gpu_labels(1, fake)

    assert registry.get_sample_value("glyph_exporter_nvml_available") == 1
    assert registry.get_sample_value("glyph_gpu_info", {**first, "driver_version": "550.54.15"})
    assert registry.get_sample_value("glyph_gpu_readable", second) == 1
    assert registry.get_sample_value("glyph_gpu_memory_total_bytes", first) == 80 * GIB
    assert registry.get_sample_value("glyph_gpu_memory_used_bytes", second) == 1 * GIB
    assert registry.get_sample_value("glyph_gpu_memory_reserved_bytes", first) == 512 * 1024**2
    assert registry.get_sample_value("glyph_gpu_utilization_ratio", first) == 0.42
    assert registry.get_sample_value("glyph_gpu_temperature_celsius", first) == 55
    assert registry.get_sample_value("glyph_gpu_power_watts", first) == 312
    # the api tree (engine child included) on device 0; pid 300 belongs to nobody: an orphan
    component = "glyph_component_gpu_memory_bytes"
    assert registry.get_sample_value(component, {"component": "api", "gpu": "0"}) == 62 * GIB
    assert registry.get_sample_value(component, {"component": "ui", "gpu": "0"}) == 0
    assert registry.get_sample_value("glyph_gpu_orphan_memory_bytes", first) == 5 * GIB
    # a process without a memory figure leaves its samples out rather than reporting 0
    assert registry.get_sample_value(component, {"component": "ui", "gpu": "1"}) is None
    assert registry.get_sample_value(component, {"component": "api", "gpu": "1"}) == 0
    assert registry.get_sample_value("glyph_gpu_orphan_memory_bytes", second) == 0


def test_not_supported_and_no_permission_leave_samples_out() -> None:
    fake = two_devices()
    fake.devices[0].failures = {
        "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NO_PERMISSION,
        "nvmlDeviceGetMemoryInfo_v2": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        "nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
        "nvmlDeviceGetGraphicsRunningProcesses": pynvml.NVML_ERROR_NOT_SUPPORTED,
    }
    gpu = NvmlReader(fake).read()
    registry = registry_for(gpu, ComponentLiveness("api", processes=1, pids=frozenset({100})))
    first = gpu_labels(0, fake)
    assert registry.get_sample_value("glyph_gpu_readable", first) == 1
    assert registry.get_sample_value("glyph_gpu_power_watts", first) is None
    assert registry.get_sample_value("glyph_gpu_temperature_celsius", first) is None
    assert registry.get_sample_value("glyph_gpu_memory_total_bytes", first) == 80 * GIB  # v1
    assert registry.get_sample_value("glyph_gpu_memory_reserved_bytes", first) is None
    assert registry.get_sample_value("glyph_gpu_orphan_memory_bytes", first) is None
    labels = {"component": "api", "gpu": "0"}
    assert registry.get_sample_value("glyph_component_gpu_memory_bytes", labels) is None
    assert registry.get_sample_value("glyph_gpu_utilization_ratio", first) == 0.42


def test_gpu_lost_mid_run_then_back_initialises_once_per_loss() -> None:
    fake = two_devices()
    reader = NvmlReader(fake)
    assert all(d.readable for d in reader.read().devices)
    assert all(d.readable for d in reader.read().devices)
    assert fake.init_calls == 1  # handles are kept, not re-made per cycle

    fake.devices[1].lost = True
    lost = reader.read()
    assert lost.available
    assert [d.readable for d in lost.devices] == [True, False]
    registry = registry_for(lost)
    second = gpu_labels(1, fake)
    assert registry.get_sample_value("glyph_gpu_readable", second) == 0
    assert registry.get_sample_value("glyph_gpu_memory_used_bytes", second) is None

    fake.devices[1].lost = False
    back = reader.read()
    assert [d.readable for d in back.devices] == [True, True]
    assert fake.init_calls == 2  # re-initialised once after the loss


def test_driver_unloaded_then_reloaded() -> None:
    fake = two_devices()
    reader = NvmlReader(fake)
    reader.read()
    fake.initialised = False  # the driver went away under us
    fake.driver_loaded = False
    gone = reader.read()
    assert [d.readable for d in gone.devices] == [False, False]
    failed = reader.read()
    assert not failed.available and "init failed" in failed.error
    assert [d.uuid for d in failed.devices] == ["GPU-aaaa", "GPU-bbbb"]  # still named
    assert registry_for(failed).get_sample_value("glyph_exporter_nvml_available") == 0
    fake.driver_loaded = True
    assert [d.readable for d in reader.read().devices] == [True, True]


def test_device_removed_for_good_disappears_after_reinit() -> None:
    fake = two_devices()
    reader = NvmlReader(fake)
    reader.read()
    fake.devices[1].lost = True
    reader.read()
    del fake.devices[1]
    devices = reader.read().devices
    assert [d.uuid for d in devices] == ["GPU-aaaa"]
    registry = registry_for(reader.read())
    assert (
        registry.get_sample_value(
            "glyph_gpu_info",
            {
                "gpu": "1",
                "uuid": "GPU-bbbb",
                "name": "NVIDIA H100 80GB HBM3",
                "driver_version": "550.54.15",
            },
        )
        is None
    )


def test_no_library_at_all() -> None:
    fake = FakeNvml([], library=False)
    snapshot = NvmlReader(fake).read()
    assert not snapshot.available and "init failed" in snapshot.error
    assert NvmlReader(None).read().error == "nvidia-ml-py is not installed"
    registry = registry_for(snapshot, ComponentLiveness("api"))
    assert registry.get_sample_value("glyph_exporter_nvml_available") == 0
    assert registry.get_sample_value("glyph_component_up", {"component": "api"}) == 0


def test_remediator_holders_share_the_lifecycle() -> None:
    fake = two_devices()
    holders = NvmlHolders(fake)
    assert holders() == {100, 101, 300, 200}
    fake.devices[1].lost = True
    assert holders() == {100, 101, 300}  # what can be known, from the device still there
    fake.devices[1].lost = False
    assert holders() == {100, 101, 300, 200}
    assert fake.init_calls == 2  # re-initialised after the loss, not given up on
    fake.initialised = False
    fake.driver_loaded = False
    assert holders() is None  # every device lost: unknown, not "nobody"
    assert holders() is None  # the driver is still gone: init fails
    fake.driver_loaded = True
    assert holders() == {100, 101, 300, 200}
    assert NvmlHolders(FakeNvml([], library=False))() is None


def test_every_health_field() -> None:
    fake = two_devices()
    device = fake.devices[0]
    device.ecc = {
        (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED): 3,
        (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED): 1,
        (pynvml.NVML_AGGREGATE_ECC, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED): 30,
        (pynvml.NVML_AGGREGATE_ECC, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED): 2,
    }
    device.retired_pages_pending = True
    device.remapped_rows = (4, 1, 1, 0)
    device.clock_event_reasons = (
        pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonGpuIdle
    )
    device.pcie_replays = 17
    registry = registry_for(NvmlReader(fake).read())
    first, second = gpu_labels(0, fake), gpu_labels(1, fake)

    def value(name: str, labels: dict[str, str], **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    assert value("glyph_gpu_memory_utilization_ratio", first) == 0.10
    assert value("glyph_gpu_power_limit_watts", first) == 700
    ecc = "glyph_gpu_ecc_errors_total"
    assert value(ecc, first, scope="volatile", type="corrected") == 3
    assert value(ecc, first, scope="volatile", type="uncorrected") == 1
    assert value(ecc, first, scope="aggregate", type="corrected") == 30
    assert value(ecc, first, scope="aggregate", type="uncorrected") == 2
    assert value(ecc, second, scope="volatile", type="uncorrected") == 0
    assert value("glyph_gpu_retired_pages_pending", first) == 1
    assert value("glyph_gpu_retired_pages_pending", second) == 0
    assert value("glyph_gpu_remapped_rows_pending", first) == 1
    assert value("glyph_gpu_remapped_rows_failed", first) == 0
    clock = "glyph_gpu_clock_event_active"
    assert value(clock, first, reason="thermal") == 1
    assert value(clock, first, reason="hw_slowdown") == 1  # the hardware's own
    assert value(clock, first, reason="power") == 0
    assert value(clock, first, reason="gpu_idle") is None  # idle is not being held back
    assert value(clock, second, reason="thermal") == 0
    assert value("glyph_gpu_pcie_replays_total", first) == 17
    assert value("glyph_gpu_pcie_replays_total", second) == 0
    assert value("glyph_gpu_last_xid", first, xid_action="reboot") is None  # no XID yet


HEALTH_FIELDS = {
    "nvmlDeviceGetEnforcedPowerLimit": ["glyph_gpu_power_limit_watts"],
    "nvmlDeviceGetUtilizationRates": [
        "glyph_gpu_utilization_ratio",
        "glyph_gpu_memory_utilization_ratio",
    ],
    "nvmlDeviceGetTotalEccErrors": ["glyph_gpu_ecc_errors_total"],
    "nvmlDeviceGetRetiredPagesPendingStatus": ["glyph_gpu_retired_pages_pending"],
    "nvmlDeviceGetRemappedRows": [
        "glyph_gpu_remapped_rows_pending",
        "glyph_gpu_remapped_rows_failed",
    ],
    "nvmlDeviceGetPcieReplayCounter": ["glyph_gpu_pcie_replays_total"],
    "nvmlDeviceGetTemperature": ["glyph_gpu_temperature_celsius"],
    "nvmlDeviceGetPowerUsage": ["glyph_gpu_power_watts"],
}


def samples_of(registry: CollectorRegistry, gpu: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.labels.get("gpu") == gpu and "component" not in s.labels:
                counts[s.name] = counts.get(s.name, 0) + 1
    return counts


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION])
@pytest.mark.parametrize("function", sorted(HEALTH_FIELDS))
def test_each_field_not_supported_is_absent_alone(function: str, code: int) -> None:
    everything = registry_for(NvmlReader(two_devices()).read())
    whole = samples_of(everything, "0")
    fake = two_devices()
    fake.devices[0].failures = {function: code}
    registry = registry_for(NvmlReader(fake).read())
    partial = samples_of(registry, "0")
    gone = set(HEALTH_FIELDS[function])
    assert gone <= set(whole) and not gone & set(partial)
    assert {n: c for n, c in whole.items() if n not in gone} == partial  # the rest all there
    assert samples_of(registry, "1") == samples_of(everything, "1")  # the other GPU untouched


def test_clock_events_fall_back_to_throttle_reasons_on_older_drivers() -> None:
    fake = two_devices()
    fake.devices[0].clock_event_reasons = pynvml.nvmlClocksThrottleReasonHwSlowdown
    fake.devices[0].failures = {
        "nvmlDeviceGetCurrentClocksEventReasons": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    }
    registry = registry_for(NvmlReader(fake).read())
    clock = {**gpu_labels(0, fake), "reason": "hw_slowdown"}
    assert registry.get_sample_value("glyph_gpu_clock_event_active", clock) == 1
    fake.devices[0].failures["nvmlDeviceGetCurrentClocksThrottleReasons"] = (
        pynvml.NVML_ERROR_NOT_SUPPORTED
    )
    registry = registry_for(NvmlReader(fake).read())
    assert registry.get_sample_value("glyph_gpu_clock_event_active", clock) is None


def test_one_lost_gpu_does_not_blind_the_other() -> None:
    fake = two_devices()
    reader = NvmlReader(fake)
    reader.read()
    fake.devices[1].lost = True
    for _ in range(3):  # the loss, then re-initialisations in which its handle lookup fails
        snapshot = reader.read()
        assert snapshot.available, snapshot.error
        assert [d.readable for d in snapshot.devices] == [True, False]
        assert [d.uuid for d in snapshot.devices] == ["GPU-aaaa", "GPU-bbbb"]  # still named
        assert snapshot.devices[0].memory_used_bytes == 70 * GIB
    registry = registry_for(snapshot)
    assert registry.get_sample_value("glyph_gpu_readable", gpu_labels(0, fake)) == 1
    assert registry.get_sample_value("glyph_gpu_readable", gpu_labels(1, fake)) == 0
    fake.devices[1].lost = False
    assert [d.readable for d in reader.read().devices] == [True, True]
    assert fake.references == 1  # every re-initialisation shut down what it opened


def test_xids_with_their_action() -> None:
    fake = two_devices()
    reader = NvmlReader(fake)
    reader.events.poll(wait_ms=0)
    fake.xid(0, 13)
    fake.xid(0, 79)
    fake.xid(0, 13)
    fake.xid(1, 9999)
    reader.events.poll(wait_ms=0)
    registry = registry_for(reader.read())
    first, second = gpu_labels(0, fake), gpu_labels(1, fake)
    xids = "glyph_gpu_xid_errors_total"
    assert registry.get_sample_value(xids, {**first, "xid": "13", "xid_action": "restart_app"}) == 2
    assert registry.get_sample_value(xids, {**first, "xid": "79", "xid_action": "reboot"}) == 1
    assert registry.get_sample_value(xids, {**second, "xid": "9999", "xid_action": "unknown"}) == 1
    assert (
        registry.get_sample_value("glyph_gpu_last_xid", {**first, "xid_action": "restart_app"})
        == 13
    )
    assert registry.get_sample_value("glyph_gpu_last_xid_timestamp_seconds", first) is not None
    required = "glyph_gpu_xid_required_action"
    assert registry.get_sample_value(required, {**first, "xid_action": "reboot"}) == 1
    assert registry.get_sample_value(required, {**second, "xid_action": "unknown"}) == 1
    fake.devices[0].lost = True  # an unreadable GPU still shows what it reported
    registry = registry_for(reader.read())
    assert registry.get_sample_value(required, {**first, "xid_action": "reboot"}) == 1
    reader.close()
    assert fake.references == 0


def test_seldom_changing_fields_are_read_every_interval_and_afresh_after_a_loss() -> None:
    fake = two_devices()
    reader = NvmlReader(fake, seldom_seconds=3600)
    assert reader.read().devices[1].pcie_replays == 0
    fake.devices[1].pcie_replays = 9
    fake.devices[1].remapped_rows = (0, 0, 1, 0)
    fake.devices[1].used = 3 * GIB
    kept = reader.read().devices[1]
    assert kept.memory_used_bytes == 3 * GIB  # read every cycle
    assert kept.pcie_replays == 0 and kept.remapped_rows is not None  # not yet due
    assert not kept.remapped_rows.pending

    fake.devices[1].lost = True  # a reset: what it counted is read again once it is back
    reader.read()
    fake.devices[1].lost = False
    back = reader.read().devices[1]
    assert back.pcie_replays == 9 and back.remapped_rows is not None
    assert back.remapped_rows.pending

    every_cycle = NvmlReader(fake, seldom_seconds=0)
    every_cycle.read()
    fake.devices[0].pcie_replays = 4
    assert every_cycle.read().devices[0].pcie_replays == 4
