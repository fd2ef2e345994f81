"""Summing each component's process tree and what earlier ones left, and who holds its port."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil

from glyph_guard.common.config import Component
from glyph_guard.common.lineage import LineageBook
from glyph_guard.common.ports import port_state
from glyph_guard.common.processes import ProcessTable, ProcessTree, read_stats
from glyph_guard.exporter.snapshot import ComponentLiveness, PortReading


def summarise(
    component: Component, tree: ProcessTree, leftovers: Iterable[psutil.Process] = ()
) -> ComponentLiveness:
    """One component's reading from its tree (and the processes earlier ones left behind)."""
    procs = tree.processes
    left = [s for s in (read_stats(p) for p in leftovers) if s is not None]
    fds = [p.open_fds for p in procs]
    return ComponentLiveness(
        component=component.name,
        processes=len(procs),
        rss_bytes=sum(p.rss_bytes for p in procs),
        cpu_seconds=sum(p.cpu_seconds for p in procs),
        threads=sum(p.threads for p in procs),
        open_fds=None if None in fds else sum(f for f in fds if f is not None),
        start_time=tree.start_time,
        pids=tree.pids,
        leftover_processes=len(left),
        leftover_rss_bytes=sum(s.rss_bytes for s in left),
    )


def sample_liveness(
    table: ProcessTable, components: tuple[Component, ...], lineages: LineageBook
) -> tuple[ComponentLiveness, ...]:
    """Refresh the process table and read every component and what its past ones left."""
    table.refresh()
    trees = table.find(components)
    now = time.time()
    readings = []
    for c in components:
        tree = trees[c.name]
        created = {p.pid: p.create_time for p in tree.processes}
        lineages.observe(c.name, created, now, created)
        leftovers = lineages.leftovers(c.name, created, table.listed).values()
        readings.append(summarise(c, tree, leftovers))
    return tuple(readings)


def sample_ports(
    components: tuple[Component, ...], liveness: tuple[ComponentLiveness, ...]
) -> tuple[PortReading, ...]:
    """Who listens on each component's port, given the trees of the last liveness sample."""
    pids = {reading.component: reading.pids for reading in liveness}
    readings = []
    for component in components:
        if component.port is None:
            continue
        state = port_state(component.port, pids.get(component.name, ()))
        readings.append(
            PortReading(component.name, component.port, state.listening, state.conflict)
        )
    return tuple(readings)
