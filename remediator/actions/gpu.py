"""Which processes hold GPU memory, through NVML when it is there (the pynvml adapter)."""

from __future__ import annotations

import threading
from typing import Any, Protocol


class GpuHolders(Protocol):
    def __call__(self) -> frozenset[int] | None:
        """PIDs holding GPU memory now, or None when that cannot be known."""


class NvmlHolders:
    """Reads compute and graphics processes of every device; NVML is initialised once, lazily."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._tried = False

    def _init(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml  # noqa: PLC0415 - optional, and only where a restart needs it

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                except Exception:  # no library, no driver, no device: nothing to wait for
                    self._nvml = None
            return self._nvml

    def __call__(self) -> frozenset[int] | None:
        nvml = self._init()
        if nvml is None:
            return None
        pids: set[int] = set()
        try:
            count = nvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for read in (
                    nvml.nvmlDeviceGetComputeRunningProcesses,
                    nvml.nvmlDeviceGetGraphicsRunningProcesses,
                ):
                    try:
                        pids.update(int(p.pid) for p in read(handle))
                    except nvml.NVMLError:
                        continue
        except nvml.NVMLError:
            return None
        return frozenset(pids)
