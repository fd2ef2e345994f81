"""Rate-limiting log records, so a flood of one message (accept errors...) stays a trickle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

BURST = 5  # records of one message let through per window
WINDOW_SECONDS = 10.0
MAX_KEYS = 1024


class RateLimit(logging.Filter):
    """At most BURST records of each message (logger and format string) per window; the first
    record of the next window says how many were held back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, object], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = self._clock()
        with self._lock:
            if len(self._windows) > MAX_KEYS:
                self._windows.clear()
            start, passed, held = self._windows.get(key, (now, 0, 0))
            if now - start >= WINDOW_SECONDS:
                if held:
                    record.msg = f"{record.getMessage()} ({held} more like this held back)"
                    record.args = ()
                start, passed, held = now, 0, 0
            if passed < BURST:
                self._windows[key] = (start, passed + 1, held)
                return True
            self._windows[key] = (start, passed, held + 1)
            return False


def limit_log_floods() -> None:
    """Rate-limit every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RateLimit())
