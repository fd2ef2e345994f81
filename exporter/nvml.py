"""The exporter's GPU readings: every device once per cycle through the shared NVML session."""

from __future__ import annotations

from typing import Any

from glyph_guard.common.nvml import NvmlSession, Unreadable
from glyph_guard.exporter.snapshot import GpuDevice, GpuProcess, GpuSnapshot


class NvmlReader:
    """Reads every device into a GpuSnapshot; errors become states, never exceptions."""

    def __init__(self, nvml: Any | None) -> None:
        self._session = NvmlSession(nvml)

    def read(self) -> GpuSnapshot:
        """Read every device once."""
        error = self._session.open()
        if error:
            devices = tuple(self._lost_device(index) for index in sorted(self._session.known))
            return GpuSnapshot(available=False, devices=devices, error=error)
        read = self._session.each_device(self._read_device, self._lost_device)
        return GpuSnapshot(available=True, devices=tuple(read), driver_version=self._session.driver)

    def close(self) -> None:
        self._session.close()

    def _read_device(self, index: int, handle: Any) -> GpuDevice:
        session = self._session
        nvml = session.nvml
        assert nvml is not None
        uuid, name = session.known[index]
        total = used = reserved = None
        try:
            memory = session.call(nvml.nvmlDeviceGetMemoryInfo, handle, version=nvml.nvmlMemory_v2)
            reserved = int(memory.reserved)
        except Unreadable:  # drivers before the v2 struct: no reserved figure
            memory = session.optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            total, used = int(memory.total), int(memory.used)
        utilization = session.optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        temperature = session.optional(
            nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        power_mw = session.optional(nvml.nvmlDeviceGetPowerUsage, handle)
        processes = session.processes(handle)
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
            processes=None
            if processes is None
            else tuple(GpuProcess(pid, memory) for pid, memory in sorted(processes.items())),
        )

    def _lost_device(self, index: int) -> GpuDevice:
        uuid, name = self._session.known.get(index, ("", ""))
        return GpuDevice(index=index, uuid=uuid, name=name, readable=False)
