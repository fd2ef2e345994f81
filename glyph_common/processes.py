"""Finding each component's process tree and reading its resource use (the psutil adapter)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psutil

from glyph_common.config import Component, Matcher


@dataclass(frozen=True)
class ProcessStats:
    """One process of a tree, as read in one pass."""

    pid: int
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
    proc: psutil.Process
    ppid: int
    cmdline: str
    stats: ProcessStats | None = None  # as last read


FRESH_SECONDS = 5.0  # a process this young may still exec: read its command line again
MEMBERS_EVERY = 5  # main processes are read on every pass, the rest of a tree on every fifth


@dataclass
class ProcessTable:
    """Knows every process's parent and command line; reads each only when a process is new.

    A scan lists /proc and looks only at new (or very young) PIDs, so its cost does not grow
    with the number of long-lived processes. A tree's main processes are read on every
    find(), so their death is seen at once (and with it the departure of their children);
    a PID that leaves /proc leaves its tree at once too, and the other members' figures are
    refreshed on every MEMBERS_EVERY-th pass.
    """

    own_pid: int = field(default_factory=os.getpid)
    _seen: dict[int, _Seen] = field(default_factory=dict)
    _passes: int = 0

    def refresh(self) -> None:
        """List the processes; read parent and command line of the new ones."""
        now = time.time()
        current: dict[int, _Seen] = {}
        for pid in psutil.pids():
            old = self._seen.get(pid)
            if old is not None and now - old.proc.create_time() > FRESH_SECONDS:
                current[pid] = old
                continue
            try:
                proc = old.proc if old is not None else psutil.Process(pid)
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue  # it has exited; only its parent has not reaped it yet
                    current[pid] = _Seen(proc, proc.ppid(), " ".join(proc.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._seen = current

    def find(self, components: Iterable[Component]) -> dict[str, ProcessTree]:
        """Each component's tree, from the last refresh, with fresh resource figures."""
        self._passes += 1
        children: dict[int, list[int]] = {}
        for pid, seen in self._seen.items():
            children.setdefault(seen.ppid, []).append(pid)
        return {c.name: self._tree(c.match, children) for c in components}

    def _tree(self, matcher: Matcher, children: Mapping[int, list[int]]) -> ProcessTree:
        matched = self._matching(matcher)
        roots = sorted(pid for pid in matched if not self._has_matched_ancestor(pid, matched))
        members: dict[int, None] = {}  # insertion-ordered set: parents before children
        stack = list(reversed(roots))
        while stack:
            pid = stack.pop()
            if pid not in members:
                members[pid] = None
                stack.extend(children.get(pid, ()))
        kept: dict[int, ProcessStats] = {}
        every = self._passes % MEMBERS_EVERY == 0
        for pid in members:
            seen = self._seen[pid]
            if every or seen.stats is None or pid in roots:
                seen.stats = read_stats(seen.proc)
            # A child whose parent died has been re-parented: it left the tree with it.
            if seen.stats is not None and (pid in roots or seen.ppid in kept):
                kept[pid] = seen.stats
        return ProcessTree(tuple(pid for pid in roots if pid in kept), tuple(kept.values()))

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


def read_stats(proc: psutil.Process) -> ProcessStats | None:
    """Resource figures of one process, or None if it is gone."""
    try:
        with proc.oneshot():
            rss = proc.memory_info().rss
            if rss == 0:  # a zombie (exited, not reaped yet): no memory, no port, not alive
                return None
            cpu = proc.cpu_times()
            return ProcessStats(
                pid=proc.pid,
                create_time=proc.create_time(),
                rss_bytes=rss,
                cpu_seconds=cpu.user + cpu.system,
                threads=proc.num_threads(),
                open_fds=_open_fds(proc),
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _open_fds(proc: psutil.Process) -> int | None:
    """None when /proc/PID/fd is not ours to read."""
    try:
        return proc.num_fds()
    except psutil.AccessDenied:
        return None
