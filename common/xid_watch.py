"""Watches NVML's XID events on a thread of its own, so that no sampler ever waits on them."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from glyph_guard.common.nvml import NvmlSession
from glyph_guard.common.xid import GpuXids

log = logging.getLogger(__name__)
WAIT_MS = 1000  # one wait's bound: how soon stop() is heard
REDISCOVER_SECONDS = 10.0  # while a GPU is lost, how often to initialise afresh to find it


class XidWatch:
    """XIDs per GPU (by UUID) and which GPUs are lost, through a session of its own (NVML
    counts initialisations, so the other sessions' re-initialisations do not disturb it)."""

    def __init__(
        self,
        nvml: Any | None,
        clock: Callable[[], float] = time.time,
        rediscover_seconds: float = REDISCOVER_SECONDS,
    ) -> None:
        self._session = NvmlSession(nvml)
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._rediscover = rediscover_seconds
        self._rediscovered_at = float("-inf")  # monotonic
        self._replacing = threading.Lock()  # xids: the watching thread and reacquired() replace it
        self._release = threading.Event()  # set: leave NVML closed (a GPU reset needs that)
        self._closed = threading.Event()  # the watching thread closed its session for it
        # Replaced whole by the watching thread, read whole by anyone.
        self.xids: dict[str, GpuXids] = {}
        self.lost: frozenset[str] = frozenset()  # UUIDs of devices that do not answer

    def start(self) -> None:
        if self._session.nvml is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._forever, name="xid-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._session.close()

    def poll(self, wait_ms: int = WAIT_MS) -> bool:
        """One wait for events; False when there was nothing to wait on (no NVML, no device
        that reports XIDs): the caller waits before asking again."""
        if self._session.open():
            return False
        self._note_presence()
        events = self._session.wait_xids(wait_ms)
        if events:
            now = self._clock()
            with self._replacing:
                xids = dict(self.xids)
                for index, xid in events:
                    uuid = self._session.known[index][0]
                    xids[uuid] = xids.get(uuid, GpuXids()).add(xid, now)
                    log.warning("GPU %d (%s): XID %d", index, uuid, xid)
                self.xids = xids
        if self.lost and time.monotonic() - self._rediscovered_at >= self._rediscover:
            self._rediscovered_at = time.monotonic()
            self._session.close()  # initialise afresh next time, to find the lost GPU
        return events is not None

    @property
    def indices(self) -> dict[str, int]:
        """UUID -> index (nvidia-smi -i) of the GPUs NVML named."""
        return {uuid: index for index, (uuid, _) in dict(self._session.known).items() if uuid}

    def reacquired(self, uuids: frozenset[str]) -> None:
        """These GPUs were reset: what their XIDs asked for is done."""
        with self._replacing:
            self.xids = {u: x.reacquired() if u in uuids else x for u, x in self.xids.items()}

    def _note_presence(self) -> None:
        present = self._session.present()
        lost = frozenset(self._session.known[i][0] for i, ok in present.items() if not ok)
        back = {self._session.known[i][0] for i, ok in present.items() if ok} & self.lost
        if back:  # reset or reloaded: what its XIDs asked for is done
            self.reacquired(frozenset(back))
        self.lost = lost

    @contextlib.contextmanager
    def released(self, timeout: float = 5.0) -> Iterator[None]:
        """NVML left closed by this watch while the body runs: nvidia-smi refuses to reset a GPU
        that any NVML client holds open. XIDs that come meanwhile are not seen."""
        if self._thread is None:
            yield
            return
        self._release.set()
        try:
            self._closed.wait(timeout)
            yield
        finally:
            self._closed.clear()
            self._release.clear()

    def _forever(self) -> None:
        while not self._stopping.is_set():
            if self._release.is_set():
                self._session.close()
                self._closed.set()
                self._stopping.wait(0.05)
                continue
            try:
                waited = self.poll()
            except Exception:
                log.exception("watching XID events failed")
                waited = False
            if not waited:
                self._stopping.wait(WAIT_MS / 1000)
