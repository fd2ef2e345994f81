"""The exporter's GPU readings: every device once per cycle through the shared NVML session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from glyph_guard.common.nvml import NvmlSession, Unreadable
from glyph_guard.common.xid import GpuXids
from glyph_guard.common.xid_watch import XidWatch
from glyph_guard.exporter.snapshot import (
    EccCount,
    GpuDevice,
    GpuProcess,
    GpuSnapshot,
    RemappedRows,
)

# The clock-event (throttle) reasons exported, each the NVML bits that mean it.
CLOCK_EVENTS = (
    ("thermal", ("SwThermalSlowdown", "HwThermalSlowdown")),
    ("power", ("SwPowerCap", "HwPowerBrakeSlowdown")),
    ("hw_slowdown", ("HwSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown")),
)


# Counters and states that change seldom (ECC counts, retired pages, remapped rows, the power
# limit, PCIe replays) are read this often, not every cycle; the XIDs that come with a failing
# GPU arrive at once through the event thread.
SELDOM_SECONDS = 30.0


@dataclass(frozen=True)
class _Seldom:
    """The fields of one device read every SELDOM_SECONDS."""

    read_at: float  # monotonic
    power_limit_watts: float | None
    ecc_errors: tuple[EccCount, ...]
    retired_pages_pending: bool | None
    remapped_rows: RemappedRows | None
    pcie_replays: int | None


class NvmlReader:
    """Reads every device into a GpuSnapshot; errors become states, never exceptions."""

    def __init__(self, nvml: Any | None, seldom_seconds: float = SELDOM_SECONDS) -> None:
        self._session = NvmlSession(nvml)
        self.events = XidWatch(nvml)  # XIDs arrive on its own thread; read() only looks
        self._seldom_seconds = seldom_seconds
        self._seldom: dict[str, _Seldom] = {}  # by UUID; forgotten when the device is lost

    def read(self) -> GpuSnapshot:
        """Read every device once."""
        error = self._session.open()
        if error:
            devices = tuple(self._lost_device(index) for index in sorted(self._session.known))
            return GpuSnapshot(available=False, devices=devices, error=error)
        read = self._session.each_device(self._read_device, self._lost_device)
        return GpuSnapshot(available=True, devices=tuple(read), driver_version=self._session.driver)

    def start(self) -> None:
        self.events.start()

    def close(self) -> None:
        self.events.stop()
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
        seldom = self._seldom.get(uuid)
        if seldom is None or time.monotonic() - seldom.read_at >= self._seldom_seconds:
            seldom = self._seldom[uuid] = self._read_seldom(handle)
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
            memory_utilization_ratio=None if utilization is None else utilization.memory / 100.0,
            temperature_celsius=None if temperature is None else float(temperature),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            power_limit_watts=seldom.power_limit_watts,
            ecc_errors=seldom.ecc_errors,
            retired_pages_pending=seldom.retired_pages_pending,
            remapped_rows=seldom.remapped_rows,
            clock_events=self._clock_events(handle),
            pcie_replays=seldom.pcie_replays,
            xids=self.events.xids.get(uuid, GpuXids()),
            processes=None
            if processes is None
            else tuple(GpuProcess(pid, memory) for pid, memory in sorted(processes.items())),
        )

    def _read_seldom(self, handle: Any) -> _Seldom:
        session = self._session
        nvml = session.nvml
        assert nvml is not None
        limit_mw = session.optional(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        pending = session.optional(nvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
        rows = session.optional(nvml.nvmlDeviceGetRemappedRows, handle)
        replays = session.optional(nvml.nvmlDeviceGetPcieReplayCounter, handle)
        return _Seldom(
            read_at=time.monotonic(),
            power_limit_watts=None if limit_mw is None else limit_mw / 1000.0,
            ecc_errors=self._ecc(handle),
            retired_pages_pending=None if pending is None else bool(pending),
            remapped_rows=None
            if rows is None
            else RemappedRows(pending=bool(rows[2]), failed=bool(rows[3])),
            pcie_replays=None if replays is None else int(replays),
        )

    def _ecc(self, handle: Any) -> tuple[EccCount, ...]:
        nvml = self._session.nvml
        assert nvml is not None
        counts = []
        for counter, counter_type in (
            ("volatile", nvml.NVML_VOLATILE_ECC),
            ("aggregate", nvml.NVML_AGGREGATE_ECC),
        ):
            for error, error_type in (
                ("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            ):
                count = self._session.optional(
                    nvml.nvmlDeviceGetTotalEccErrors, handle, error_type, counter_type
                )
                if count is not None:  # None: ECC off, or not supported here
                    counts.append(EccCount(counter, error, int(count)))
        return tuple(counts)

    def _clock_events(self, handle: Any) -> tuple[tuple[str, bool], ...] | None:
        nvml = self._session.nvml
        assert nvml is not None
        try:
            mask = self._session.call(nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
        except Unreadable:  # drivers before 535 name them throttle reasons
            mask = self._session.optional(nvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
        if mask is None:
            return None
        return tuple(
            (reason, any(mask & getattr(nvml, f"nvmlClocksEventReason{bit}") for bit in bits))
            for reason, bits in CLOCK_EVENTS
        )

    def _lost_device(self, index: int) -> GpuDevice:
        uuid, name = self._session.known.get(index, ("", ""))
        self._seldom.pop(uuid, None)  # once back (reset, reloaded), read them all afresh
        xids = self.events.xids.get(uuid, GpuXids()) if uuid else GpuXids()
        return GpuDevice(index=index, uuid=uuid, name=name, readable=False, xids=xids)
