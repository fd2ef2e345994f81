"""The store: batches, retention and queries on its own thread, against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from glyph_guard.common.config import Retention
from glyph_guard.remediator.store.database import Store
from glyph_guard.remediator.store.pruning import prune
from glyph_guard.remediator.store.queries import decisions
from glyph_guard.remediator.store.records import (
    DecisionRow,
    mark_seen,
    payload_digest,
    record_decision,
    record_payload,
)


def test_retention_prunes_by_age_and_count(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store.open(tmp_path / "state.sqlite")
        old, now = 1_000.0, 1_000_000.0
        ops = [record_payload(b"old", payload_digest(b"old"), old)]
        ops += [record_decision(DecisionRow("skipped", "duplicate"), old) for _ in range(10)]
        ops += [record_decision(DecisionRow("skipped", "duplicate"), now) for _ in range(150)]
        ops += [mark_seen((f"f{i}", "t"), old if i < 10 else now) for i in range(150)]
        assert await store.write(ops)
        assert await store.write([prune(Retention(max_age_seconds=3600, max_rows=100), now)])

        def count(table: str) -> Callable[[sqlite3.Connection], int]:
            return lambda db: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

        assert await store.read(count("decisions")) == 100
        assert await store.read(count("seen_alerts")) == 100
        assert await store.read(count("payloads")) == 0
        newest = await store.read(decisions(None, 1))
        assert newest[0]["at"] == now
        store.close()

    asyncio.run(scenario())
