"""Feeding each component's RSS, GPU memory and cache bytes to its own leak detector."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import psutil

from glyph_guard.common.config import Component, Deployment
from glyph_guard.exporter.leak_detector import LeakDetector, LeakReading, LeakSettings
from glyph_guard.exporter.snapshot import (
    CacheUsage,
    ComponentLiveness,
    GpuSnapshot,
    GpuUsage,
    LeakTrend,
)


class LeakTracker:
    """One detector per component and resource; RSS and GPU series restart with the process."""

    def __init__(self, components: Iterable[Component], settings: LeakSettings | None = None):
        self._components = {c.name: c for c in components}
        self._settings = settings or LeakSettings()
        self._host_memory = psutil.virtual_memory().total
        self._detectors: dict[tuple[str, str], LeakDetector] = {}
        self._started: dict[tuple[str, str], float | None] = {}
        self._readings: dict[tuple[str, str], LeakReading] = {}

    def carried_to(self, config: Deployment) -> LeakTracker:
        """A tracker for a reloaded config that keeps the history of what it still tracks."""
        tracker = LeakTracker(config.components, config.exporter.leak)
        if tracker._settings != self._settings:
            return tracker  # judged on other settings: the old evidence does not carry over
        for key in self._detectors.keys() & {
            (c.name, r) for c in config.components for r in ("rss", "gpu_memory", "cache")
        }:
            tracker._detectors[key] = self._detectors[key]
            tracker._started[key] = self._started[key]
            tracker._readings[key] = self._readings[key]
        return tracker

    def readings(self) -> tuple[LeakTrend, ...]:
        return tuple(
            LeakTrend(
                component,
                resource,
                reading.slope_bytes_per_second,
                reading.suspected,
                reading.segment_age_seconds,
                reading.forecast,
            )
            for (component, resource), reading in list(self._readings.items())
        )

    def observe_rss(self, liveness: ComponentLiveness, now: float) -> None:
        if not liveness.up:
            return
        component = self._components[liveness.component]
        limit = component.memory_limit_bytes or self._host_memory
        self._update(
            liveness.component,
            "rss",
            now,
            liveness.rss_bytes,
            limit=limit,
            started=liveness.start_time,
        )

    def observe_gpu(
        self,
        gpu: GpuSnapshot,
        usage: Iterable[GpuUsage],
        liveness: Iterable[ComponentLiveness],
        now: float,
    ) -> None:
        """Each component's GPU memory over the devices it uses; skipped while a figure is
        unknown, since a partial sum would look like a drop and a rise."""
        totals = {d.index: d.memory_total_bytes or 0 for d in gpu.devices}
        used: dict[str, int | None] = {}
        limit: dict[str, int] = {}
        for u in usage:
            if u.processes == 0:
                continue
            known = used.get(u.component, 0)
            used[u.component] = (
                None if known is None or u.used_bytes is None else known + u.used_bytes
            )
            limit[u.component] = limit.get(u.component, 0) + totals.get(u.gpu, 0)
        for reading in liveness:
            value = used.get(reading.component)
            if value is not None and limit[reading.component]:
                self._update(
                    reading.component,
                    "gpu_memory",
                    now,
                    value,
                    limit=limit[reading.component],
                    started=reading.start_time,
                )

    def observe_caches(self, caches: Iterable[CacheUsage], now: float) -> None:
        per_component: dict[str, int] = {}
        for usage in caches:
            per_component[usage.component] = per_component.get(usage.component, 0) + usage.bytes
        for name, used in per_component.items():
            free = _free_bytes(c.root for c in self._components[name].caches)
            # A cache outlives process restarts: its series only restarts on a large drop.
            self._update(name, "cache", now, used, limit=used + free, started=None)

    def _update(
        self,
        component: str,
        resource: str,
        now: float,
        value: float,
        *,
        limit: float,
        started: float | None,
    ) -> None:
        key = (component, resource)
        detector = self._detectors.get(key)
        if detector is None:
            detector = self._detectors[key] = LeakDetector(self._settings)
        elif started is not None and self._started.get(key) != started:
            detector.reset()
        self._started[key] = started
        self._readings[key] = detector.update(now, value, limit)


def _free_bytes(roots: Iterable[Path]) -> int:
    """Free space of the filesystems holding the cache roots (their nearest existing parent)."""
    seen: dict[int, int] = {}
    for root in roots:
        path = root
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            seen[path.stat().st_dev] = shutil.disk_usage(path).free
        except OSError:
            continue
    return sum(seen.values())
