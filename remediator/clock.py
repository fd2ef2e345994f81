"""Time for the remediator: monotonic inside the process, wall clock in what it persists."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Both clocks; tests inject one they step by hand."""

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def to_wall(clock: Clock, instant: float) -> float:
    """A monotonic instant as wall-clock seconds, for the store."""
    return clock.wall() - (clock.monotonic() - instant)


def from_wall(clock: Clock, stamp: float) -> float:
    """A persisted wall-clock time as a monotonic instant; a time in the future counts as now."""
    return clock.monotonic() - max(0.0, clock.wall() - stamp)
