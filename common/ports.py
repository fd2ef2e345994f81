"""Who is listening on a TCP port: the component's own tree, a foreign process, or nobody."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class PortState:
    """The listeners on one port, as seen from this process's permissions."""

    listening: bool
    owned: bool  # a process of the tree holds it
    holders: frozenset[int] = frozenset()  # PIDs seen listening outside the tree
    attributable: bool = True  # False when the tree's sockets could not be read

    @property
    def conflict(self) -> bool:
        """Held by someone else: a leftover process or another service."""
        return self.listening and not self.owned and self.attributable


def _listens(conns: Iterable[Any], port: int) -> bool:  # psutil's connection tuples
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def port_state(port: int, tree_pids: Iterable[int]) -> PortState:
    """Check the tree first (cheap); scan the whole system only when the tree does not hold it."""
    attributable = True
    for pid in tree_pids:
        try:
            if _listens(psutil.Process(pid).net_connections(kind="tcp"), port):
                return PortState(listening=True, owned=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            attributable = False
    try:
        conns = [c for c in psutil.net_connections(kind="tcp") if _listens((c,), port)]
    except psutil.AccessDenied:
        return PortState(listening=False, owned=False, attributable=False)
    holders = frozenset(c.pid for c in conns if c.pid is not None)
    return PortState(bool(conns), owned=False, holders=holders, attributable=attributable)
