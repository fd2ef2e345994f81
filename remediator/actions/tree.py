"""Stopping a whole process tree as systemd does: TERM every member, wait, KILL what is left."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

from remediator.store import Started

POLL_SECONDS = 0.05
START_ENV = "GLYPH_GUARD_START"  # environment variable marking what one start launched


def protected_pids() -> frozenset[int]:
    """PIDs never signalled, whatever a matcher says: init, this process and its parent."""
    return frozenset({0, 1, os.getpid(), os.getppid()})


@dataclass(frozen=True)
class StopReport:
    """Which processes were signalled and how they ended."""

    targeted: tuple[int, ...]
    killed: tuple[int, ...]  # still alive after the grace period, sent SIGKILL
    survivors: tuple[int, ...]  # alive even after SIGKILL (e.g. not ours to signal)


def collect(pids: Iterable[int]) -> dict[int, psutil.Process]:
    """Handles on the PIDs and their current descendants, taken before anything is signalled.

    Holding psutil handles (which remember each process's start time) means a PID reused by
    an unrelated process later is never signalled, and children that get re-parented when
    their parent dies are still ours to stop.
    """
    skip = protected_pids()
    handles: dict[int, psutil.Process] = {}
    for pid in pids:
        if pid in skip or pid in handles:
            continue
        try:
            proc = psutil.Process(pid)
            family = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        handles.update((p.pid, p) for p in family if p.pid not in skip)
    return handles


def _carries(proc: psutil.Process, token: str) -> bool:
    try:
        return proc.environ().get(START_ENV) == token
    except psutil.Error:
        return False


def session_members(started: Started | None, roots: Iterable[int]) -> set[int]:
    """Processes left in the sessions the component leads, orphans included.

    Two kinds of session count, so a shell's session is never swept: one a live root of the
    tree leads (it called setsid), and the one of the remediator's last start, whose members
    must also carry that start's token in their environment (a session number can be reused
    once all of its processes are gone; the token cannot).
    """
    sessions = {root for root in roots if _leads_session(root)} - {os.getsid(0)}
    ours = started.pid if started is not None and started.pid != os.getsid(0) else None
    if not sessions and ours is None:
        return set()
    members: set[int] = set()
    for proc in psutil.process_iter():
        try:
            sid = os.getsid(proc.pid)
        except OSError:
            continue
        if sid in sessions or (sid == ours and started and _carries(proc, started.token)):
            members.add(proc.pid)
    return members


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an unreaped zombie holds no port and no memory)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended or timeout seconds passed; return the living."""
    deadline = time.monotonic() + timeout
    living = [p for p in procs if alive(p)]
    while living and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        living = [p for p in living if alive(p)]
    return living


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # a survivor if not ours
        proc.send_signal(sig)


def stop_processes(
    handles: Mapping[int, psutil.Process], grace: float, kill_wait: float = 5.0
) -> StopReport:
    """SIGTERM all at once, SIGKILL whatever (and whichever new child) is left after grace."""
    for proc in handles.values():
        _signal(proc, signal.SIGTERM)
    living = wait_gone(handles.values(), grace)
    skip = protected_pids()
    targets = {p.pid: p for p in living}
    for proc in living:
        try:
            targets.update((c.pid, c) for c in proc.children(recursive=True) if c.pid not in skip)
        except psutil.Error:
            continue
    for proc in targets.values():
        _signal(proc, signal.SIGKILL)
    survivors = wait_gone(targets.values(), kill_wait)
    return StopReport(
        targeted=tuple(sorted(set(handles) | set(targets))),
        killed=tuple(sorted(targets)),
        survivors=tuple(sorted(p.pid for p in survivors)),
    )
