"""Which sessions a component leads or the remediator's last start left behind (to sweep them)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil

from glyph_guard.remediator.actions.base import Started

START_ENV = "GLYPH_GUARD_START"  # environment variable marking what one start launched


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
