"""GPU readings through a fake at the pynvml boundary: devices, processes and NVML's failures."""

from __future__ import annotations

import pynvml
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
