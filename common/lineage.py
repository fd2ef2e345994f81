"""What a component's earlier incarnations left behind: the sessions and process groups its
processes led, remembered while they were alive, and the processes still in them later."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import psutil

from glyph_guard.common.processes import protected_pids

Kind = Literal["session", "group"]
CLOCK_SLACK = 0.05  # create times are in clock ticks (10 ms): a margin for comparisons


@dataclass(frozen=True)
class Lineage:
    """A session or process group led by a process of the component, and when it was seen.

    Only processes created while the component was seen alive (since..until) count as what
    it left behind; a leader's PID that now names another process (reused) disowns it all.
    """

    kind: Kind
    id: int  # the session or process group id: its leader's PID
    leader_created: float
    since: float  # create time of the first member seen
    until: float  # the last time a member was seen in the component's tree

    def disowned(self) -> bool:
        """The leader's PID names a different process now (the number was reused)."""
        try:
            created = psutil.Process(self.id).create_time()
        except psutil.Error:
            return False
        return abs(created - self.leader_created) > CLOCK_SLACK

    def holds(self, created: float) -> bool:
        return self.since - CLOCK_SLACK <= created <= self.until + CLOCK_SLACK


def _ids(pid: int) -> tuple[int, int] | None:
    try:
        return os.getsid(pid), os.getpgid(pid)
    except OSError:
        return None


@dataclass
class LineageBook:
    """Per component, the sessions and groups its processes led; one book per service (its
    observer and its readers may be different threads)."""

    _entries: dict[str, dict[tuple[Kind, int], Lineage]] = field(default_factory=dict)
    _own: tuple[int, int] = field(default_factory=lambda: (os.getsid(0), os.getpgid(0)))
    _protected: frozenset[int] = field(default_factory=protected_pids)  # as ProcessTable's
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(
        self,
        component: str,
        pids: Iterable[int],
        now: float,
        created: Mapping[int, float] | None = None,
    ) -> None:
        """Remember the sessions and groups the component's live processes lead.

        created: create times the caller has already read (its tree's); the others are read.
        """
        with self._lock:
            self._observe(component, set(pids), now, created or {})

    def _observe(
        self, component: str, members: set[int], now: float, known: Mapping[int, float]
    ) -> None:
        book = self._entries.setdefault(component, {})
        created: dict[int, float] = {}
        for pid in members:
            if pid in known:
                created[pid] = known[pid]
                continue
            try:
                created[pid] = psutil.Process(pid).create_time()
            except psutil.Error:
                continue
        first: dict[tuple[Kind, int], float] = {}  # each led lineage: its first member's birth
        for pid, born in created.items():
            ids = _ids(pid)
            if ids is None:
                continue
            pairs: tuple[tuple[Kind, int], ...] = (("session", ids[0]), ("group", ids[1]))
            for kind, number in pairs:
                if number not in created or number in self._own or number <= 1:
                    continue  # led by a process not the component's (a shell, us): never
                key = (kind, number)
                first[key] = min(born, first.get(key, born))
        for (kind, number), born in first.items():
            old = book.get((kind, number))
            if old is not None and abs(old.leader_created - created[number]) <= CLOCK_SLACK:
                book[(kind, number)] = replace(old, since=min(old.since, born), until=now)
            else:
                book[(kind, number)] = Lineage(kind, number, created[number], born, now)

    def leftovers(
        self, component: str, alive: Iterable[int] = (), among: Iterable[int] | None = None
    ) -> dict[int, psutil.Process]:
        """Processes still in the component's remembered sessions and groups, created while
        it was seen alive, that are not among its live processes now (orphans).

        among: the host's PIDs as the caller has just listed them; listed here when None.
        """
        with self._lock:
            return self._leftovers(component, set(alive), among)

    def _leftovers(
        self, component: str, alive: set[int], among: Iterable[int] | None
    ) -> dict[int, psutil.Process]:
        book = self._entries.get(component)
        if not book:
            return {}
        lineages = [entry for entry in book.values() if not entry.disowned()]
        sessions = {e.id: e for e in lineages if e.kind == "session"}
        groups = {e.id: e for e in lineages if e.kind == "group"}
        skip = self._protected | alive
        found: dict[int, psutil.Process] = {}
        held: set[tuple[Kind, int]] = set()
        for pid in psutil.pids() if among is None else among:
            ids = None if pid in skip else _ids(pid)
            if ids is None:
                continue
            entry = sessions.get(ids[0]) or groups.get(ids[1])
            if entry is None:
                continue
            try:
                proc = psutil.Process(pid)
                if not entry.holds(proc.create_time()) or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            found[pid] = proc
            held.add((entry.kind, entry.id))
        self._prune(component, held, alive)
        return found

    def _prune(self, component: str, held: set[tuple[Kind, int]], alive: set[int]) -> None:
        """Forget lineages with no member left (neither a leftover nor a live leader)."""
        book = self._entries[component]
        for key, entry in list(book.items()):
            if key not in held and (entry.id not in alive or entry.disowned()):
                del book[key]
