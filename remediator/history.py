"""The record as incidents: each alert (or operator request) with its decisions and actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from glyph_guard.remediator.models import ActionRecord, DecisionRecord, Incident


def _key(decision: Mapping[str, Any]) -> tuple[Any, ...]:
    """What ties decisions into one incident: the alert, else the operator's own request."""
    if decision["fingerprint"]:
        return ("alert", decision["fingerprint"], decision["starts_at"])
    if decision["action_id"] is not None:
        return ("action", decision["action_id"])
    return ("decision", decision["id"])


def incidents(
    decisions: Sequence[Mapping[str, Any]],
    actions: Mapping[int, Mapping[str, Any]],
    since: float | None = None,
) -> list[Incident]:
    """Decisions (any order) grouped into incidents, oldest first; since: wall-clock seconds."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for decision in sorted(decisions, key=lambda d: d["id"]):
        if since is None or decision["at"] >= since:
            groups.setdefault(_key(decision), []).append(decision)
    result = []
    for group in groups.values():
        first = group[0]
        linked = dict.fromkeys(d["action_id"] for d in group if d["action_id"] is not None)
        result.append(
            Incident(
                component=first["component"],
                origin=first["origin"],
                alertname=first["alertname"],
                fingerprint=first["fingerprint"],
                starts_at=first["starts_at"],
                first_at=first["at"],
                last_at=group[-1]["at"],
                decisions=[DecisionRecord.model_validate(d) for d in group],
                actions=[ActionRecord.model_validate(actions[i]) for i in linked if i in actions],
            )
        )
    return result
