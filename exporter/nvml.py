"""Reading GPUs through NVML (the pynvml adapter): one pass per cycle, errors become states."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from exporter.snapshot import GpuDevice, GpuProcess, GpuSnapshot

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_pynvml() -> ModuleType | None:
    """The real pynvml module, or None when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module("pynvml")  # on demand: never at import time
    except ImportError:
        return None


class _Unreadable(Exception):
    """A field the device does not support or we may not read: leave the sample out."""


class _DeviceLost(Exception):
    """The device (or the driver) went away: report it unreadable and re-initialise."""


class NvmlReader:
    """Initialises NVML once, keeps device handles, and re-initialises after lifecycle errors."""

    def __init__(self, nvml: Any | None) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self._known: dict[int, tuple[str, str]] = {}  # index -> (uuid, name), kept across loss
        self._driver = ""
        self._initialised = False
        if nvml is not None:
            self._skip_codes = {nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_NO_PERMISSION}
            self._lost_codes = {
                nvml.NVML_ERROR_GPU_IS_LOST,
                nvml.NVML_ERROR_UNINITIALIZED,
                nvml.NVML_ERROR_DRIVER_NOT_LOADED,
                nvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
                nvml.NVML_ERROR_RESET_REQUIRED,
            }

    def read(self) -> GpuSnapshot:
        """Read every device once."""
        if self._nvml is None:
            return GpuSnapshot(available=False, error="nvidia-ml-py is not installed")
        if not self._initialised:
            error = self._initialise()
            if error:
                return GpuSnapshot(available=False, devices=self._lost_devices(), error=error)
        devices = []
        reinit = False
        for index, handle in enumerate(self._handles):
            try:
                devices.append(self._read_device(index, handle))
            except _DeviceLost:
                reinit = True
                devices.append(self._lost_device(index))
        if reinit:
            self._shutdown()
        return GpuSnapshot(available=True, devices=tuple(devices), driver_version=self._driver)

    def close(self) -> None:
        self._shutdown()

    def _initialise(self) -> str:
        nvml = self._nvml
        assert nvml is not None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return f"NVML init failed: {_describe(exc)}"
        try:
            count = nvml.nvmlDeviceGetCount()
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._driver = _text(nvml.nvmlSystemGetDriverVersion())
            for index, handle in enumerate(self._handles):
                self._known[index] = (
                    _text(nvml.nvmlDeviceGetUUID(handle)),
                    _text(nvml.nvmlDeviceGetName(handle)),
                )
        except nvml.NVMLError as exc:
            self._shutdown()
            return f"NVML device enumeration failed: {_describe(exc)}"
        for stale in set(self._known) - set(range(len(self._handles))):
            del self._known[stale]  # the device is gone for good after a re-initialisation
        self._initialised = True
        log.info("NVML initialised: %d device(s), driver %s", len(self._handles), self._driver)
        return ""

    def _shutdown(self) -> None:
        if self._initialised and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.debug("nvmlShutdown: %s", _describe(exc))
        self._initialised = False
        self._handles = []

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        nvml = self._nvml
        assert nvml is not None
        try:
            return fn(*args, **kwargs)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in self._lost_codes:
                raise _DeviceLost(_describe(exc)) from exc
            if code in self._skip_codes:
                raise _Unreadable from exc
            log.debug("NVML %s: %s", getattr(fn, "__name__", fn), _describe(exc))
            raise _Unreadable from exc

    def _optional(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return self._call(fn, *args)
        except _Unreadable:
            return None

    def _read_device(self, index: int, handle: Any) -> GpuDevice:
        nvml = self._nvml
        assert nvml is not None
        uuid, name = self._known[index]
        total = used = reserved = None
        try:
            memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle, version=nvml.nvmlMemory_v2)
            reserved = int(memory.reserved)
        except _Unreadable:  # drivers before the v2 struct: no reserved figure
            memory = self._optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            total, used = int(memory.total), int(memory.used)
        utilization = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        temperature = self._optional(
            nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        power_mw = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
        return GpuDevice(
            index=index,
            uuid=uuid,
            name=name,
            readable=True,
            memory_total_bytes=total,
            memory_used_bytes=used,
            memory_reserved_bytes=reserved,
            utilization_ratio=None if utilization is None else utilization.gpu / 100.0,
            temperature_celsius=None if temperature is None else float(temperature),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            processes=self._processes(handle),
        )

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...] | None:
        nvml = self._nvml
        assert nvml is not None
        compute = self._optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        graphics = self._optional(nvml.nvmlDeviceGetGraphicsRunningProcesses, handle)
        if compute is None and graphics is None:
            return None
        by_pid: dict[int, int | None] = {}
        for entry in [*(graphics or ()), *(compute or ())]:  # compute wins for a pid in both
            memory = entry.usedGpuMemory
            by_pid[int(entry.pid)] = None if memory is None else int(memory)
        return tuple(GpuProcess(pid, memory) for pid, memory in sorted(by_pid.items()))

    def _lost_device(self, index: int) -> GpuDevice:
        uuid, name = self._known.get(index, ("", ""))
        return GpuDevice(index=index, uuid=uuid, name=name, readable=False)

    def _lost_devices(self) -> tuple[GpuDevice, ...]:
        return tuple(self._lost_device(index) for index in sorted(self._known))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # pynvml's __str__ calls into the library, which may be gone
        return f"NVML error {getattr(exc, 'value', '?')}"
