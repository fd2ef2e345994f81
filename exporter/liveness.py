"""Summing each component's process tree, and finding who holds its port."""

from __future__ import annotations

from glyph_guard.common.config import Component
from glyph_guard.common.ports import port_state
from glyph_guard.common.processes import ProcessTable, ProcessTree
from glyph_guard.exporter.snapshot import ComponentLiveness, PortReading


def summarise(component: Component, tree: ProcessTree) -> ComponentLiveness:
    """One component's reading from its tree."""
    procs = tree.processes
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
    )


def sample_liveness(
    table: ProcessTable, components: tuple[Component, ...]
) -> tuple[ComponentLiveness, ...]:
    """Refresh the process table and read every component."""
    table.refresh()
    trees = table.find(components)
    return tuple(summarise(c, trees[c.name]) for c in components)


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
