"""Forgetting old record rows, as an operation for a batch."""

from __future__ import annotations

import sqlite3

from glyph_guard.common.config import Retention
from glyph_guard.remediator.store.records import Write


def prune(retention: Retention, now: float) -> Write:
    """Forget payloads, decisions and seen alerts older than the age, or beyond the count."""
    cutoff, keep = now - retention.max_age_seconds, retention.max_rows

    def op(db: sqlite3.Connection) -> None:
        for table, stamp in (("decisions", "at"), ("payloads", "last_seen")):
            db.execute(f"DELETE FROM {table} WHERE {stamp} < ?", (cutoff,))  # noqa: S608
            db.execute(
                f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table}"  # noqa: S608
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (keep,),
            )
        db.execute("DELETE FROM seen_alerts WHERE first_seen < ?", (cutoff,))
        db.execute(
            "DELETE FROM seen_alerts WHERE rowid IN (SELECT rowid FROM seen_alerts"
            " ORDER BY first_seen DESC LIMIT -1 OFFSET ?)",
            (keep,),
        )

    return op
