"""The pynvml adapter: NVML's lifecycle (init once, GPU lost / driver gone -> re-initialise)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_EVENTS_PER_WAIT = 64  # a storm of events is read over several waits, never unbounded


def load_pynvml() -> ModuleType | None:
    """The real pynvml module, or None when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module("pynvml")  # on demand: never at import time
    except ImportError:
        return None


class Unreadable(Exception):
    """A field the device does not support or we may not read: leave the sample out."""


class _DeviceLost(Exception):
    """The device (or the driver) went away: report it unreadable and re-initialise."""


class NvmlSession:
    """Initialises NVML once, keeps device handles, and re-initialises after lifecycle errors.

    Not thread-safe: each user reads from one thread at a time.
    """

    def __init__(self, nvml: Any | None) -> None:
        self.nvml = nvml
        self.driver = ""
        self.known: dict[int, tuple[str, str]] = {}  # index -> (uuid, name), kept across loss
        self._handles: list[Any | None] = []  # None: this device was lost at initialisation
        self._events: Any | None = None  # the XID event set, registered on first wait
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

    def open(self) -> str:
        """Initialise if needed: "" when NVML is ready, else why it is not."""
        if self.nvml is None:
            return "nvidia-ml-py is not installed"
        return "" if self._initialised else self._initialise()

    def each_device(self, read: Callable[[int, Any], T], lost: Callable[[int], T]) -> list[T]:
        """read(index, handle) for every device; lost(index) for one that went away."""
        results = []
        reinit = False
        for index, handle in enumerate(self._handles):
            if handle is None:
                reinit = True  # look for it again next time
                results.append(lost(index))
                continue
            try:
                results.append(read(index, handle))
            except _DeviceLost:
                reinit = True
                results.append(lost(index))
        if reinit:
            self.close()  # the next open() initialises afresh
        return results

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call NVML; "not supported" and the like raise Unreadable, loss ends the pass."""
        nvml = self.nvml
        assert nvml is not None
        try:
            return fn(*args, **kwargs)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in self._lost_codes:
                raise _DeviceLost(describe(exc)) from exc
            if code not in self._skip_codes:
                log.debug("NVML %s: %s", getattr(fn, "__name__", fn), describe(exc))
            raise Unreadable from exc

    def optional(self, fn: Callable[..., T], *args: Any) -> T | None:
        """call(), with None for a field that cannot be read."""
        try:
            return self.call(fn, *args)
        except Unreadable:
            return None

    def processes(self, handle: Any) -> dict[int, int | None] | None:
        """PID -> GPU memory (None when the driver does not say); None when unreadable."""
        nvml = self.nvml
        assert nvml is not None
        compute = self.optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        graphics = self.optional(nvml.nvmlDeviceGetGraphicsRunningProcesses, handle)
        if compute is None and graphics is None:
            return None
        by_pid: dict[int, int | None] = {}
        for entry in [*(graphics or ()), *(compute or ())]:  # compute wins for a pid in both
            memory = entry.usedGpuMemory
            by_pid[int(entry.pid)] = None if memory is None else int(memory)
        return by_pid

    def present(self) -> dict[int, bool]:
        """index -> whether the device answered at initialisation (False: lost)."""
        return {index: handle is not None for index, handle in enumerate(self._handles)}

    def wait_xids(self, timeout_ms: int) -> list[tuple[int, int]] | None:
        """XID events as (device index, XID) that come within timeout_ms ([] when none came);
        None when no device can report them. A device lost while waiting ends the wait and the
        session (the next open() initialises afresh); the other devices are registered again."""
        nvml = self.nvml
        assert nvml is not None
        if self._events is None:
            self._events = self._register_xids()
            if self._events is None:
                return None
        events: list[tuple[int, int]] = []
        wait = timeout_ms
        while len(events) < MAX_EVENTS_PER_WAIT:
            try:
                data = nvml.nvmlEventSetWait_v2(self._events, wait)
            except nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code == nvml.NVML_ERROR_TIMEOUT:
                    return events
                if code in self._lost_codes:
                    log.info("NVML event wait: %s; initialising afresh", describe(exc))
                    self.close()
                    return events
                log.warning("NVML event wait failed: %s", describe(exc))
                return events or None
            wait = 0  # drain what is queued, without waiting again
            if not data.eventType & nvml.nvmlEventTypeXidCriticalError:
                continue
            index = self._index_of(data.device)
            if index is None:
                log.warning("XID %d from a device NVML no longer names", data.eventData)
            else:
                events.append((index, int(data.eventData)))
        return events

    def _register_xids(self) -> Any | None:
        nvml = self.nvml
        assert nvml is not None
        try:
            events = self.call(nvml.nvmlEventSetCreate)
        except (Unreadable, _DeviceLost):
            return None
        registered = 0
        for index, handle in enumerate(self._handles):
            if handle is None:
                continue
            try:
                self.call(
                    nvml.nvmlDeviceRegisterEvents,
                    handle,
                    nvml.nvmlEventTypeXidCriticalError,
                    events,
                )
                registered += 1
            except Unreadable:  # not supported on this device: its XIDs are not reported
                continue
            except _DeviceLost:
                self._handles[index] = None  # reported lost; looked for again after re-init
        if registered:
            return events
        self._free_events(events)
        return None

    def _index_of(self, device: Any) -> int | None:
        nvml = self.nvml
        assert nvml is not None
        try:
            uuid = text(nvml.nvmlDeviceGetUUID(device))
        except nvml.NVMLError:
            return None
        return next((i for i, (known, _) in self.known.items() if known == uuid), None)

    def _free_events(self, events: Any) -> None:
        nvml = self.nvml
        assert nvml is not None
        try:
            nvml.nvmlEventSetFree(events)
        except nvml.NVMLError as exc:
            log.debug("nvmlEventSetFree: %s", describe(exc))

    def close(self) -> None:
        if self._events is not None:
            self._free_events(self._events)
            self._events = None
        if self._initialised and self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError as exc:
                log.debug("nvmlShutdown: %s", describe(exc))
        self._initialised = False
        self._handles = []

    def _initialise(self) -> str:
        nvml = self.nvml
        assert nvml is not None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return f"NVML init failed: {describe(exc)}"
        try:
            count = nvml.nvmlDeviceGetCount()
            self.driver = text(nvml.nvmlSystemGetDriverVersion())
            self._handles = [self._acquire(index) for index in range(count)]
        except nvml.NVMLError as exc:
            self._initialised = True  # so that close() shuts down what init opened
            self.close()
            return f"NVML device enumeration failed: {describe(exc)}"
        for stale in set(self.known) - set(range(len(self._handles))):
            del self.known[stale]  # the device is gone for good after a re-initialisation
        self._initialised = True
        log.info("NVML initialised: %d device(s), driver %s", len(self._handles), self.driver)
        return ""

    def _acquire(self, index: int) -> Any | None:
        """One device's handle and names; None when that device alone fails (lost, or it
        cannot be named): the others are read all the same."""
        nvml = self.nvml
        assert nvml is not None
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            self.known[index] = (
                text(nvml.nvmlDeviceGetUUID(handle)),
                text(nvml.nvmlDeviceGetName(handle)),
            )
        except nvml.NVMLError as exc:
            log.info("NVML device %d: %s", index, describe(exc))
            self.known.setdefault(index, ("", ""))
            return None
        return handle


def text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # pynvml's __str__ calls into the library, which may be gone
        return f"NVML error {getattr(exc, 'value', '?')}"
