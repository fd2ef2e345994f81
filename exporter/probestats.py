"""Accumulating probe results into the counters and histogram a scrape exposes."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from glyph_guard.common.probes import ProbeResult
from glyph_guard.exporter.snapshot import ProbeStats

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class ProbeAccumulator:
    """Running totals of one probe."""

    component: str
    probe: str
    _buckets: list[int] = field(default_factory=lambda: [0] * len(PROBE_BUCKETS))
    _count: int = 0
    _sum: float = 0.0
    _failures: int = 0
    _last_success: float | None = None

    def add(self, result: ProbeResult, now: float) -> ProbeStats:
        index = bisect.bisect_left(PROBE_BUCKETS, result.duration_seconds)
        if index < len(self._buckets):
            self._buckets[index] += 1
        self._count += 1
        self._sum += result.duration_seconds
        if result.success:
            self._failures = 0
            self._last_success = now
        else:
            self._failures += 1
        cumulative, running = [], 0
        for count in self._buckets:
            running += count
            cumulative.append(running)
        return ProbeStats(
            component=self.component,
            probe=self.probe,
            success=result.success,
            http_status=result.status,
            duration_seconds=result.duration_seconds,
            last_success_timestamp=self._last_success,
            consecutive_failures=self._failures,
            bucket_counts=tuple(cumulative),
            count=self._count,
            duration_sum=self._sum,
        )
