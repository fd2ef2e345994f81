"""A small fake of the pynvml module: devices, processes and NVML's failure modes."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
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
    memory_utilization: int = 10
    power_limit_mw: int = 700_000
    # (counter type, error type) -> count, e.g. (NVML_VOLATILE_ECC, ..._UNCORRECTED): 0
    ecc: dict[tuple[int, int], int] = field(
        default_factory=lambda: {(c, e): 0 for c in (0, 1) for e in (0, 1)}
    )
    retired_pages_pending: bool = False
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)  # corr, unc, pending, failure
    clock_event_reasons: int = 0  # an nvmlClocksEventReason* bit mask
    pcie_replays: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    lost: bool = False
    resets: int = 0  # how many times it was reset (see FakeNvml's resets file)


class FakeNvml:
    """Plays NVML at the pynvml boundary; errors are pynvml's own NVMLError classes."""

    def __init__(
        self, devices: list[FakeDevice], *, library: bool = True, resets: Path | None = None
    ) -> None:
        self.devices = devices
        # resets: a file where another process (the nvidia-smi double of a test) writes the
        # index of each GPU it reset, one a line; read at the next call, as a driver would show it
        self.resets = resets
        self.library = library
        self.driver_loaded = True
        self.references = 0  # nvmlInit and nvmlShutdown count, as NVML's do
        self.init_calls = 0
        self.event_sets: list[FakeEventSet] = []

    @property
    def initialised(self) -> bool:
        return self.references > 0

    @initialised.setter
    def initialised(self, value: bool) -> None:  # False: the driver went away under every user
        self.references = max(self.references, 1) if value else 0

    def xid(self, index: int, code: int) -> None:
        """The driver reports an XID on a device: every set registered for it gets the event."""
        device = self.devices[index]
        for events in self.event_sets:
            if id(device) in events.devices:
                events.put(
                    SimpleNamespace(
                        device=device,
                        eventType=pynvml.nvmlEventTypeXidCriticalError,
                        eventData=code,
                        gpuInstanceId=0,
                        computeInstanceId=0,
                    )
                )

    def lose(self, index: int) -> None:
        """The device falls off the bus: calls on it fail and waits on its sets end."""
        device = self.devices[index]
        device.lost = True
        for events in self.event_sets:
            if id(device) in events.devices:
                events.put(None)

    def __getattr__(self, name: str) -> Any:  # constants, NVMLError, nvmlMemory_v2 ...
        return getattr(pynvml, name)

    def _fail(self, code: int) -> None:
        raise pynvml.NVMLError(code)

    def _take_resets(self) -> None:
        if self.resets is None or not self.resets.exists():
            return
        for line in self.resets.read_text(encoding="utf-8").split():
            device = self.devices[int(line)]
            device.lost, device.processes, device.failures = False, [], {}
            device.resets += 1
        self.resets.write_text("", encoding="utf-8")

    def _ready(self) -> None:
        self._take_resets()
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
        self.references += 1

    def nvmlShutdown(self) -> None:
        self._ready()
        self.references -= 1

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

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeDevice) -> int:
        return self._device(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def nvmlDeviceGetTotalEccErrors(self, handle: FakeDevice, error: int, counter: int) -> int:
        return self._device(handle, "nvmlDeviceGetTotalEccErrors").ecc[(counter, error)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: FakeDevice) -> int:
        device = self._device(handle, "nvmlDeviceGetRetiredPagesPendingStatus")
        return int(device.retired_pages_pending)

    def nvmlDeviceGetRemappedRows(self, handle: FakeDevice) -> tuple[int, int, int, int]:
        return self._device(handle, "nvmlDeviceGetRemappedRows").remapped_rows

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeDevice) -> int:
        return self._device(handle, "nvmlDeviceGetCurrentClocksEventReasons").clock_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeDevice) -> int:
        device = self._device(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return device.clock_event_reasons

    def nvmlDeviceGetPcieReplayCounter(self, handle: FakeDevice) -> int:
        return self._device(handle, "nvmlDeviceGetPcieReplayCounter").pcie_replays

    def nvmlEventSetCreate(self) -> FakeEventSet:
        self._ready()
        events = FakeEventSet()
        self.event_sets.append(events)
        return events

    def nvmlDeviceRegisterEvents(
        self, handle: FakeDevice, types: int, events: FakeEventSet
    ) -> None:
        device = self._device(handle, "nvmlDeviceRegisterEvents")
        assert types == pynvml.nvmlEventTypeXidCriticalError
        events.devices.add(id(device))

    def nvmlEventSetWait_v2(self, events: FakeEventSet, timeout_ms: int) -> Any:
        self._ready()
        assert not events.freed
        event = events.take(timeout_ms / 1000)
        if event is None:
            self._fail(
                pynvml.NVML_ERROR_TIMEOUT if not events.lost else pynvml.NVML_ERROR_GPU_IS_LOST
            )
        return event

    def nvmlEventSetFree(self, events: FakeEventSet) -> None:
        self._ready()
        events.freed = True
        self.event_sets.remove(events)


class FakeEventSet:
    """Queued events of one set; a wait blocks until one comes or its timeout ends."""

    def __init__(self) -> None:
        self.devices: set[int] = set()
        self.freed = False
        self.lost = False
        self.waits: list[float] = []  # the timeouts asked for, in seconds
        self._queue: deque[Any] = deque()
        self._ready = threading.Condition()

    def put(self, event: Any | None) -> None:
        """An event, or None: a device of the set was lost."""
        with self._ready:
            if event is None:
                self.lost = True
            else:
                self._queue.append(event)
            self._ready.notify_all()

    def take(self, timeout: float) -> Any | None:
        self.waits.append(timeout)
        with self._ready:
            self._ready.wait_for(lambda: self._queue or self.lost, timeout)
            if self.lost:
                return None
            return self._queue.popleft() if self._queue else None
