"""Stopping process trees as systemd does: TERM (the main processes first), wait, KILL the rest."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import psutil

from glyph_guard.common.processes import protected_pids

POLL_SECONDS = 0.05
KILL_WAIT_SECONDS = 5.0
REST_SECONDS = 1.0  # at least this (within the grace) for the rest, once the main processes end


@dataclass(frozen=True)
class StopReport:
    """Which processes were signalled and how they ended."""

    targeted: tuple[int, ...]
    killed: tuple[int, ...]  # still alive after the grace period, sent SIGKILL
    survivors: tuple[int, ...]  # alive even after SIGKILL (e.g. not ours to signal)


def collect(pids: Iterable[int], descendants: bool = True) -> dict[int, psutil.Process]:
    """Handles on the PIDs (and their current descendants), taken before anything is signalled.

    Holding psutil handles (which remember each process's start time) means a PID reused by
    an unrelated process later is never signalled, and children that get re-parented when
    their parent dies are still ours to stop. Init, this process and its ancestors are
    never included, whatever the caller passes.
    """
    skip = protected_pids()
    handles: dict[int, psutil.Process] = {}
    for pid in pids:
        if pid in skip or pid in handles:
            continue
        try:
            proc = psutil.Process(pid)
            family = [proc, *proc.children(recursive=True)] if descendants else [proc]
        except psutil.Error:
            continue
        handles.update((p.pid, p) for p in family if p.pid not in skip)
    return handles


def group_members(pgid: int) -> list[int]:
    """Every process in a process group, whoever its parent is now."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid:
                members.append(pid)
    return members


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
    handles: Mapping[int, psutil.Process],
    grace: float,
    kill_wait: float = KILL_WAIT_SECONDS,
    descendants: bool = True,
    first: Collection[int] = (),
) -> StopReport:
    """SIGTERM all, SIGKILL whatever is left after grace (with any new children of it, unless
    descendants is False: then exactly the given processes are signalled).

    The processes in `first` (a service's main processes) are sent SIGTERM alone, and the rest
    only once those have ended or the grace is over (then they still get REST_SECONDS): a vLLM
    API drains its requests in flight (`--shutdown-timeout`) and stops its own engine, which a
    SIGTERM of its own would abort.
    """
    deadline = time.monotonic() + grace
    leading = [p for pid, p in handles.items() if pid in first]
    for proc in leading:
        _signal(proc, signal.SIGTERM)
    wait_gone(leading, grace)
    for pid, proc in handles.items():
        if pid not in first and alive(proc):
            _signal(proc, signal.SIGTERM)
    rest = max(deadline - time.monotonic(), min(grace, REST_SECONDS) if leading else 0.0)
    living = wait_gone(handles.values(), rest)
    targets = {p.pid: p for p in living}
    if descendants:
        targets.update((pid, p) for pid, p in collect(targets).items() if alive(p))
    for proc in targets.values():
        _signal(proc, signal.SIGKILL)
    survivors = wait_gone(targets.values(), kill_wait)
    return StopReport(
        targeted=tuple(sorted(set(handles) | set(targets))),
        killed=tuple(sorted(targets)),
        survivors=tuple(sorted(p.pid for p in survivors)),
    )


def stop_tree(
    pids: Iterable[int], grace: float, kill_wait: float = KILL_WAIT_SECONDS
) -> StopReport:
    """Stop the processes and all their descendants."""
    return stop_processes(collect(pids), grace, kill_wait)
