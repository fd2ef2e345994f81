"""What a restart sweeps besides the live tree: the sessions the component leads, what the
remediator's last start left, and what earlier incarnations left (remembered lineages)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

import psutil

from glyph_guard.common.config import Component
from glyph_guard.common.lineage import CLOCK_SLACK, LineageBook
from glyph_guard.common.processes import ProcessTable
from glyph_guard.remediator.actions.base import Started

START_ENV = "GLYPH_GUARD_START"  # environment variable marking what one start launched
LINEAGE_SECONDS = 5.0  # how often the remediator notes the sessions and groups of components


def _carries(proc: psutil.Process, token: str) -> bool:
    try:
        return proc.environ().get(START_ENV) == token
    except psutil.Error:
        return False


def _created(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:
        return None


def _still_ours(started: Started) -> bool:
    """The start's session number was not reused: its leader is gone, or is the same process."""
    if started.created is None:
        return False
    try:
        created = psutil.Process(started.pid).create_time()
    except psutil.Error:
        return True
    return abs(created - started.created) <= CLOCK_SLACK


def _of_start(proc: psutil.Process, started: Started, ours: bool) -> bool:
    """A member of the start's session that the start made: it carries the start's token, or
    (the session number not reused) it was created after the start's leader."""
    if _carries(proc, started.token):
        return True
    created = _created(proc)
    return (
        ours
        and started.created is not None
        and created is not None
        and (created >= started.created - CLOCK_SLACK)
    )


def session_members(started: Started | None, roots: Iterable[int]) -> set[int]:
    """Processes left in the sessions the component leads, orphans included.

    Two kinds of session count, so a shell's session is never swept: one a live root of the
    tree leads (it called setsid), and the one of the remediator's last start, whose members
    must carry that start's token in their environment or be created after its leader, while
    the session number has not been reused (the leader gone, or still the same process).
    """
    sessions = {root for root in roots if _leads_session(root)} - {os.getsid(0)}
    ours = started.pid if started is not None and started.pid != os.getsid(0) else None
    if not sessions and ours is None:
        return set()
    unreused = started is not None and _still_ours(started)
    members: set[int] = set()
    for proc in psutil.process_iter():
        try:
            sid = os.getsid(proc.pid)
        except OSError:
            continue
        if sid in sessions or (sid == ours and started and _of_start(proc, started, unreused)):
            members.add(proc.pid)
    return members - {0, 1, os.getpid()}


def leftovers(component: Component, book: LineageBook, tree: Iterable[int]) -> set[int]:
    """What earlier incarnations of the component left: noting the live tree first (so a hung
    one's groups count too), the processes still in the sessions and groups it led."""
    pids = set(tree)
    book.observe(component.name, pids, time.time())
    return set(book.leftovers(component.name, pids))


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


async def watch_lineages(components: Iterable[Component], book: LineageBook) -> None:
    """Note, every few seconds, the sessions and groups the components' processes lead, so a
    restart after a death sweeps what the dead one left, whoever started it."""
    watched = tuple(components)
    table = ProcessTable()
    while True:
        await asyncio.to_thread(_observe, table, watched, book)
        await asyncio.sleep(LINEAGE_SECONDS)


def _observe(table: ProcessTable, components: tuple[Component, ...], book: LineageBook) -> None:
    table.refresh()
    now = time.time()
    for name, tree in table.find(components).items():
        book.observe(name, tree.pids, now)
