"""A small fake of the pynvml module: devices, processes and NVML's failure modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1024**3


@dataclass
class FakeDevice:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * GIB
    used: int = 70 * GIB
    reserved: int = 512 * 1024**2
    utilization: int = 42
    temperature: int = 55
    power_mw: int = 312_000
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    lost: bool = False


class FakeNvml:
    """Plays NVML at the pynvml boundary; errors are pynvml's own NVMLError classes."""

    def __init__(self, devices: list[FakeDevice], *, library: bool = True) -> None:
        self.devices = devices
        self.library = library
        self.driver_loaded = True
        self.initialised = False
        self.init_calls = 0

    def __getattr__(self, name: str) -> Any:  # constants, NVMLError, nvmlMemory_v2 ...
        return getattr(pynvml, name)

    def _fail(self, code: int) -> None:
        raise pynvml.NVMLError(code)

    def _ready(self) -> None:
        if not self.initialised:
            self._fail(pynvml.NVML_ERROR_UNINITIALIZED)

    def _device(self, handle: FakeDevice, function: str) -> FakeDevice:
        self._ready()
        if handle.lost:
            self._fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        if function in handle.failures:
            self._fail(handle.failures[function])
        return handle

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if not self.library:
            self._fail(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if not self.driver_loaded:
            self._fail(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._ready()
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._ready()
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        self._ready()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self._device(self.devices[index], "nvmlDeviceGetHandleByIndex")

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: FakeDevice) -> bytes:
        return self._device(handle, "nvmlDeviceGetName").name.encode()  # old bindings: bytes

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice, version: int | None = None) -> Any:
        device = self._device(handle, "nvmlDeviceGetMemoryInfo")
        if version is not None and "nvmlDeviceGetMemoryInfo_v2" in device.failures:
            self._fail(device.failures["nvmlDeviceGetMemoryInfo_v2"])
        free = device.total - device.used
        if version is None:
            return SimpleNamespace(total=device.total, used=device.used, free=free)
        return SimpleNamespace(
            total=device.total, used=device.used, free=free, reserved=device.reserved
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:
        device = self._device(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=device.utilization, memory=10)

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device(handle, "nvmlDeviceGetTemperature").temperature

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        return self._device(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[Any]:
        device = self._device(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in device.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeDevice) -> list[Any]:
        self._device(handle, "nvmlDeviceGetGraphicsRunningProcesses")
        return []
