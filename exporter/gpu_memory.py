"""Which GPU memory belongs to which component: worked out once per GPU sample, read by all."""

from __future__ import annotations

from collections.abc import Iterable

from glyph_guard.exporter.snapshot import ComponentLiveness, GpuSnapshot, GpuUnclaimed, GpuUsage


def attribute_gpu_memory(
    gpu: GpuSnapshot, readings: Iterable[ComponentLiveness]
) -> tuple[tuple[GpuUsage, ...], tuple[GpuUnclaimed, ...]]:
    """Each component's and no component's GPU memory per device whose process list is
    readable; a sum is None when the driver gives no figure for one of its processes."""
    trees = [(r.component, r.pids) for r in readings]
    usage: list[GpuUsage] = []
    orphans: list[GpuUnclaimed] = []
    for device in gpu.devices:
        if device.processes is None:
            continue
        claimed: set[int] = set()
        for component, pids in trees:
            mine = [p for p in device.processes if p.pid in pids]
            claimed.update(p.pid for p in mine)
            usage.append(
                GpuUsage(component, device.index, len(mine), _sum(p.used_bytes for p in mine))
            )
        others = [p.used_bytes for p in device.processes if p.pid not in claimed]
        orphans.append(GpuUnclaimed(device.index, _sum(others)))
    return tuple(usage), tuple(orphans)


def _sum(values: Iterable[int | None]) -> int | None:
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total
