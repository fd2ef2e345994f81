"""Planned restarts as pure decisions: how long an alert may wait for an idle engine, and when
its turn acts (idle now, or its deadline reached)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from glyph_guard.common.config import PlannedRestarts

URGENCY_LABEL = "urgency"
PLANNED = "planned"  # the one value that asks to wait; any other (or none) acts at once
LOWER_BOUND = "exhaustion_lower_bound_seconds"  # annotation: earliest plausible exhaustion
DEADLINE_SHARE = 0.5  # of the forecast's lower bound: the other half is a margin for its error

Turn = Literal["wait", "idle", "deadline"]


def seconds_of(text: str | None) -> float | None:
    """A finite, positive number of seconds, or None for anything else (empty, nan, text)."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def planned_wait(
    labels: Mapping[str, str], annotations: Mapping[str, str], settings: PlannedRestarts
) -> float | None:
    """Seconds a restart may wait for an idle engine; None: the alert is urgent (acts now).

    The wait is half the forecast's lower bound of exhaustion, at most `max_wait_seconds`
    (all of it when the alert carries no usable bound).
    """
    if labels.get(URGENCY_LABEL) != PLANNED:
        return None
    bound = seconds_of(annotations.get(LOWER_BOUND))
    if bound is None:
        return settings.max_wait_seconds
    return min(settings.max_wait_seconds, bound * DEADLINE_SHARE)


def planned_turn(now: float, until: float, idle: bool | None, poll: float) -> tuple[Turn, float]:
    """A planned restart's turn: act when the engine is idle or the deadline is reached, else
    read again after `poll` seconds (never past the deadline). idle None: unreadable, not idle."""
    if idle:
        return "idle", now
    if now >= until:
        return "deadline", now
    return "wait", min(until, now + poll)


def acted_note(turn: Turn) -> str:
    """What the record of a planned restart says about when it acted."""
    if turn == "idle":
        return "planned restart: acted at idle (nothing running or waiting)"
    return "planned restart: acted at its deadline (the engine was not idle)"
