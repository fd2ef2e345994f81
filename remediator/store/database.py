"""The remediator's record and memory in SQLite, on a thread of its own with bounded waits.

Writes are batches applied in one transaction. A batch that cannot be written (the database is
locked, read-only, or the disk is full) is kept in memory and retried before the next one; the
orchestrator goes on acting meanwhile (see README: "When the store fails").
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from glyph_guard.common.config import Retention
from glyph_guard.remediator.store.pruning import prune
from glyph_guard.remediator.store.records import Write
from glyph_guard.remediator.store.schema import SCHEMA, StoreError, check, connect

log = logging.getLogger("glyph_remediator")
T = TypeVar("T")
OUTBOX_BATCHES = 10_000
MAINTENANCE_SECONDS = 10.0  # how often kept batches are retried
PRUNE_SECONDS = 3600.0


class StoreFault(Exception):
    """One operation on the store failed or took too long; it has been logged and counted."""


class Store:
    """One SQLite connection in WAL mode, used only from the store's own thread."""

    def __init__(self, db: sqlite3.Connection, path: Path, timeout: float, writable: bool):
        self._db = db
        self.path = path
        self.timeout = timeout
        self.writable = writable  # False: opened read-only; every write is kept and retried
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="glyph-store")
        self._outbox: collections.deque[list[Write]] = collections.deque()
        self._on_error: Callable[[str], None] = lambda operation: None

    @classmethod
    def open(cls, path: Path, timeout: float = 2.0) -> Store:
        """Open (or create) the database; a corrupt file is refused and left untouched."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(path, read_only=False, timeout=timeout)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"remediator.state_db: cannot open {path}: {exc}") from None
        check(db, path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise StoreError(f"remediator.state_db: cannot use {path}: {exc}") from None
            db.close()
            log.error(
                "state store %s is read-only (%s): acting with an in-memory record;"
                " nothing will be remembered until it is writable",
                path,
                exc,
            )
            try:
                db = connect(path, read_only=True, timeout=timeout)
                db.execute("SELECT 1 FROM component_state LIMIT 1").fetchall()
            except sqlite3.Error as again:
                raise StoreError(f"remediator.state_db: cannot read {path}: {again}") from None
            return cls(db, path, timeout, writable=False)
        return cls(db, path, timeout, writable=True)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._db.close()

    def count_errors(self, count: Callable[[str], None]) -> None:
        """Tell count (with the operation, read or write) about every failed operation."""
        self._on_error = count

    @property
    def pending_batches(self) -> int:
        return len(self._outbox)

    async def maintain(self, retention: Retention, wall: Callable[[], float]) -> None:
        """Retry batches kept while the store failed; prune old rows now and then (runs on)."""
        loop = asyncio.get_running_loop()
        last_prune = loop.time()
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            ops: list[Write] = []
            if loop.time() - last_prune >= PRUNE_SECONDS:
                ops.append(prune(retention, wall()))
                last_prune = loop.time()
            if ops or self._outbox:
                await self.write(ops)

    # -- running on the store's thread ---------------------------------------------------------

    async def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        future = self._thread.submit(fn, self._db)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), 2 * self.timeout + 1)
        except (sqlite3.Error, TimeoutError, asyncio.TimeoutError) as exc:
            self._on_error(operation)
            log.error("state store %s: %s failed: %s", self.path, operation, exc or "timed out")
            raise StoreFault(f"state store {operation} failed: {exc or 'timed out'}") from None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a query on the store's thread; StoreFault when it fails or takes too long."""
        return await self._run("read", fn)

    async def write(self, ops: Sequence[Write]) -> bool:
        """Apply one batch (after any kept earlier) in a transaction; False: kept for later."""
        if ops:
            if len(self._outbox) >= OUTBOX_BATCHES:
                self._outbox.popleft()
                log.error("state store %s: dropped the oldest unwritten batch", self.path)
            self._outbox.append(list(ops))
        if not self._outbox:
            return True
        try:
            return await self._run("write", self._drain)
        except StoreFault:
            return False

    def _drain(self, db: sqlite3.Connection) -> bool:
        """Write every kept batch in one transaction (group commit), or one by one on a bad one."""
        batches = list(self._outbox)
        if not batches:
            return True
        db.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                for op in batch:
                    op(db)
        except sqlite3.OperationalError:
            db.execute("ROLLBACK")
            raise  # locked, read-only, disk full: keep them for the next try
        except sqlite3.Error:
            db.execute("ROLLBACK")
            return self._drain_one_by_one(db, len(batches))
        db.execute("COMMIT")
        for _ in batches:
            self._outbox.popleft()
        return True

    def _drain_one_by_one(self, db: sqlite3.Connection, count: int) -> bool:
        for _ in range(count):
            batch = self._outbox[0]
            db.execute("BEGIN IMMEDIATE")
            try:
                for op in batch:
                    op(db)
            except sqlite3.OperationalError:
                db.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                log.error("state store %s: dropped a batch it cannot take: %s", self.path, exc)
            else:
                db.execute("COMMIT")
            self._outbox.popleft()
        return True
