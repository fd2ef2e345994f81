"""Summing each component's process tree and port into liveness readings."""

from __future__ import annotations

from exporter.snapshot import ComponentLiveness
from glyph_common.config import Component
from glyph_common.ports import port_state
from glyph_common.processes import ProcessTable, ProcessTree


def summarise(component: Component, tree: ProcessTree) -> ComponentLiveness:
    """One component's reading from its tree (and a look at who holds its port)."""
    procs = tree.processes
    fds = [p.open_fds for p in procs]
    port = port_state(component.port, [p.pid for p in procs]) if component.port else None
    return ComponentLiveness(
        component=component.name,
        processes=len(procs),
        rss_bytes=sum(p.rss_bytes for p in procs),
        cpu_seconds=sum(p.cpu_seconds for p in procs),
        threads=sum(p.threads for p in procs),
        open_fds=None if None in fds else sum(f for f in fds if f is not None),
        start_time=tree.start_time,
        pids=tree.pids,
        port=component.port,
        port_listening=port.listening if port else False,
        port_conflict=port.conflict if port else False,
    )


def sample_liveness(
    table: ProcessTable, components: tuple[Component, ...]
) -> tuple[ComponentLiveness, ...]:
    """Refresh the process table and read every component."""
    table.refresh()
    trees = table.find(components)
    return tuple(summarise(c, trees[c.name]) for c in components)
