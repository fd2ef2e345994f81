"""Measuring cache directories: count and size of each configured glob's files."""

from __future__ import annotations

from glyph_guard.common.cachefiles import cache_files
from glyph_guard.common.config import Component
from glyph_guard.exporter.snapshot import CacheUsage


def measure_caches(components: tuple[Component, ...]) -> tuple[CacheUsage, ...]:
    """Every configured cache glob of every component."""
    usages = []
    for component in components:
        for cache in component.caches:
            files = size = 0
            for _, info in cache_files(cache):
                files += 1
                size += info.st_size
            usages.append(CacheUsage(component.name, cache.glob, files, size))
    return tuple(usages)
