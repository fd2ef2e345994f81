"""Host-memory leaks on demand: real, touched allocations so a process's RSS really grows."""

from __future__ import annotations

import threading
import time

MIB = 1024 * 1024
_TICK_SECONDS = 0.5


class MemoryHog:
    """Holds leaked memory; grows it per request and/or per minute; never gives it back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: list[bytes] = []
        self._held = 0
        self.mb_per_request = 0.0
        self.mb_per_minute = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def held_bytes(self) -> int:
        return self._held

    def allocate(self, megabytes: float) -> None:
        """Allocate and touch this much memory (every page is written, so it counts in RSS)."""
        size = int(megabytes * MIB)
        if size <= 0:
            return
        block = b"\xa5" * size  # filled, not calloc'ed: the pages are resident
        with self._lock:
            self._blocks.append(block)
            self._held += size

    def on_request(self) -> None:
        self.allocate(self.mb_per_request)

    def configure(self, mb_per_request: float, mb_per_minute: float) -> None:
        """Set the leak rates; a per-minute rate starts a background thread once."""
        self.mb_per_request = max(0.0, mb_per_request)
        self.mb_per_minute = max(0.0, mb_per_minute)
        if self.mb_per_minute > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._grow, name="rss-leak", daemon=True)
            self._thread.start()

    def _grow(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(_TICK_SECONDS):
            now = time.monotonic()
            self.allocate(self.mb_per_minute * (now - last) / 60.0)
            last = now

    def stop(self) -> None:
        self._stop.set()
