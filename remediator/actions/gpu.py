"""Which processes hold GPU memory, through the shared NVML session when NVML is there."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from glyph_guard.common.nvml import NvmlSession, load_pynvml


class GpuHolders(Protocol):
    def __call__(self) -> frozenset[int] | None:
        """PIDs holding GPU memory now, or None when that cannot be known."""


@runtime_checkable
class GpuUsers(Protocol):
    def on(self, index: int) -> frozenset[int] | None:
        """PIDs of the compute and graphics processes of GPU index, or None when unreadable."""

    def released(self) -> contextlib.AbstractContextManager[None]:
        """NVML left closed while the body runs (a GPU reset needs every client gone)."""


class NvmlHolders:
    """Compute and graphics processes of every readable device; re-initialises after a loss."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._lock = threading.Lock()  # restarts of several components ask at once
        self._session = NvmlSession(nvml if nvml is not None else load_pynvml())

    def __call__(self) -> frozenset[int] | None:
        with self._lock:
            if self._session.open():
                return None  # no library, no driver: nothing to wait for
            lists = self._session.each_device(
                lambda _index, handle: self._session.processes(handle), lambda _index: None
            )
        known = [pids for pids in lists if pids is not None]
        if lists and not known:
            return None
        return frozenset(pid for pids in known for pid in pids)

    def on(self, index: int) -> frozenset[int] | None:
        with self._lock:
            if self._session.open():
                return None
            lists = self._session.each_device(
                lambda i, handle: self._session.processes(handle) if i == index else None,
                lambda _index: None,
            )
        pids = lists[index] if index < len(lists) else None
        return None if pids is None else frozenset(pids)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        with self._lock:  # whoever asks meanwhile waits for the reset to end
            self._session.close()
            yield
