"""Finding each component's process tree and reading its resource use (the psutil adapter)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psutil

from glyph_common.config import Component, Matcher


@dataclass(frozen=True)
class ProcessStats:
    """One process of a tree, as read in one pass."""

    pid: int
    ppid: int
    create_time: float
    rss_bytes: int
    cpu_seconds: float
    threads: int
    open_fds: int | None  # None when /proc/PID/fd is not readable


@dataclass(frozen=True)
class ProcessTree:
    """A component's main processes and all their descendants."""

    roots: tuple[int, ...] = ()
    processes: tuple[ProcessStats, ...] = ()

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.processes)

    @property
    def start_time(self) -> float | None:
        """Creation time of the oldest main process (changes when the component restarts)."""
        times = [p.create_time for p in self.processes if p.pid in self.roots]
        return min(times) if times else None


@dataclass
class _Seen:
    create_time: float
    ppid: int
    cmdline: str


@dataclass
class ProcessTable:
    """Scans the process table; remembers command lines so each is read once per process."""

    own_pid: int = field(default_factory=os.getpid)
    _seen: dict[int, _Seen] = field(default_factory=dict)

    def refresh(self) -> None:
        """Read pid, parent and start time of every process; command lines only of new ones."""
        current: dict[int, _Seen] = {}
        for proc in psutil.process_iter(["ppid", "create_time", "status"]):
            ppid, created = proc.info["ppid"], proc.info["create_time"]
            if ppid is None or created is None or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # a zombie has exited; only its parent has not reaped it yet
            old = self._seen.get(proc.pid)
            if old is not None and old.create_time == created:
                old.ppid = ppid
                current[proc.pid] = old
                continue
            try:
                cmdline = " ".join(proc.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            current[proc.pid] = _Seen(created, ppid, cmdline)
        self._seen = current

    def find(self, components: Iterable[Component]) -> dict[str, ProcessTree]:
        """Each component's tree, from the last refresh, with fresh resource figures."""
        children: dict[int, list[int]] = {}
        for pid, seen in self._seen.items():
            children.setdefault(seen.ppid, []).append(pid)
        return {c.name: self._tree(c.match, children) for c in components}

    def _tree(self, matcher: Matcher, children: Mapping[int, list[int]]) -> ProcessTree:
        matched = self._matching(matcher)
        roots = sorted(pid for pid in matched if not self._has_matched_ancestor(pid, matched))
        members: dict[int, None] = {}  # insertion-ordered set: roots first
        stack = list(reversed(roots))
        while stack:
            pid = stack.pop()
            if pid not in members:
                members[pid] = None
                stack.extend(children.get(pid, ()))
        stats = tuple(s for s in (read_stats(pid) for pid in members) if s is not None)
        alive = {s.pid for s in stats}
        return ProcessTree(tuple(pid for pid in roots if pid in alive), stats)

    def _matching(self, matcher: Matcher) -> set[int]:
        candidates: set[int]
        if matcher.pidfile is not None:
            pid = read_pidfile(matcher.pidfile)
            candidates = {pid} if pid is not None and pid in self._seen else set()
        else:
            candidates = set(self._seen)
        candidates.discard(self.own_pid)
        if matcher.cmdline is None:
            return candidates
        pattern = re.compile(matcher.cmdline)
        return {pid for pid in candidates if pattern.search(self._seen[pid].cmdline)}

    def _has_matched_ancestor(self, pid: int, matched: set[int]) -> bool:
        hops = 0
        parent = self._seen[pid].ppid
        while parent in self._seen and hops < 256:  # bounded: ppid loops cannot happen, but
            if parent in matched:  # a racing table could show one
                return True
            parent = self._seen[parent].ppid
            hops += 1
        return False


def read_pidfile(path: os.PathLike[str] | str) -> int | None:
    """The PID in a pidfile, or None when it is missing or malformed."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def read_stats(pid: int) -> ProcessStats | None:
    """Resource figures of one process, or None if it is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            cpu = proc.cpu_times()
            stats = ProcessStats(
                pid=pid,
                ppid=proc.ppid(),
                create_time=proc.create_time(),
                rss_bytes=proc.memory_info().rss,
                cpu_seconds=cpu.user + cpu.system,
                threads=proc.num_threads(),
                open_fds=_open_fds(proc),
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    return stats


def _open_fds(proc: psutil.Process) -> int | None:
    try:
        return proc.num_fds()
    except psutil.AccessDenied:
        return None
