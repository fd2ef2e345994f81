"""Feeding each component's RSS, GPU memory and cache bytes to its own leak detector."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import psutil

from exporter.leak import LeakDetector, LeakReading, LeakSettings
from exporter.snapshot import CacheUsage, ComponentLiveness, GpuSnapshot, LeakTrend
from glyph_common.config import Component, ConfigError, Deployment


def leak_settings(config: Deployment) -> LeakSettings:
    """The detector settings of exporter.leak; a ConfigError names a bad one."""
    known = {f.name: f.type for f in fields(LeakSettings)}
    values: dict[str, Any] = {}
    for name, value in config.exporter.leak.items():
        if name not in known:
            raise ConfigError(
                f"exporter.leak.{name}: unknown setting; known: {', '.join(sorted(known))}"
            )
        if known[name] == "int" and value != int(value):
            raise ConfigError(f"exporter.leak.{name}: must be a whole number")
        values[name] = int(value) if known[name] == "int" else value
    try:
        return LeakSettings(**values)
    except ValueError as exc:
        raise ConfigError(f"exporter.leak: {exc}") from None


class LeakTracker:
    """One detector per component and resource; RSS and GPU series restart with the process."""

    def __init__(self, components: Iterable[Component], settings: LeakSettings | None = None):
        self._components = {c.name: c for c in components}
        self._settings = settings or LeakSettings()
        self._host_memory = psutil.virtual_memory().total
        self._detectors: dict[tuple[str, str], LeakDetector] = {}
        self._started: dict[tuple[str, str], float | None] = {}
        self._readings: dict[tuple[str, str], LeakReading] = {}

    def readings(self) -> tuple[LeakTrend, ...]:
        return tuple(
            LeakTrend(
                component,
                resource,
                reading.slope_bytes_per_second,
                reading.suspected,
                reading.seconds_until_exhausted,
                reading.segment_age_seconds,
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
        self, gpu: GpuSnapshot, liveness: Iterable[ComponentLiveness], now: float
    ) -> None:
        for reading in liveness:
            used, total, known = 0, 0, False
            for device in gpu.devices:
                figures = [
                    p.used_bytes
                    for p in device.processes or ()
                    if p.pid in reading.pids and p.used_bytes is not None
                ]
                if figures:
                    known = True
                    used += sum(figures)
                    total += device.memory_total_bytes or 0
            if known and total:
                self._update(
                    reading.component,
                    "gpu_memory",
                    now,
                    used,
                    limit=total,
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
