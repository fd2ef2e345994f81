"""Why the last alert on a component did or did not act, and when one would act next (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from glyph_guard.remediator.models import ActionRecord, DecisionRecord, Explanation
from glyph_guard.remediator.reasons import Reason
from glyph_guard.remediator.report import Turn, stamp

# What each recorded reason means for the alert that got it.
WHY: Mapping[str, str] = {
    Reason.ACTED: "it acted",
    Reason.COOLDOWN: (
        "it waited: a restart had just finished, so the remediator looks at the component"
        " again when the cooldown ends"
    ),
    Reason.BACKOFF: "it waited: consecutive restarts wait longer and longer (back-off)",
    Reason.BUSY: "it waited: another action on the component was running",
    Reason.COALESCED: "it joined the same action, already running or waiting",
    Reason.DUPLICATE: "Alertmanager delivered an alert already judged; it was not acted on twice",
    Reason.RESOLVED: "the alert was resolved; resolved alerts never act",
    Reason.WRONG_HOST: "the alert's host label names another host",
    Reason.UNKNOWN_COMPONENT: "the alert names no configured component",
    Reason.ACTION_NOT_ALLOWED: "the alert asks for an action the component does not allow",
    Reason.PAUSED: "remediation of the component was paused by an operator",
    Reason.GAVE_UP: "the remediator had given up on the component (too many failed restarts)",
    Reason.DRY_RUN: "the remediator runs in dry-run mode: it records, never acts",
    Reason.RECOVERED: "the component was healthy again when the alert's turn came",
    Reason.TRUNCATED: "the alert was beyond the delivery's bound and not judged",
    Reason.WAITING_FOR_IDLE: (
        "it waited: a planned restart waits for an idle engine, at the latest until its deadline"
    ),
}


def alert_thread(decisions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last alert's decisions (its own, the retries and the acts it led to), oldest first.

    decisions: the component's, newest first, as the record returns them.
    """
    last = next((d for d in decisions if d["origin"] == "alert"), None)
    if last is None:
        return []
    key = (last["fingerprint"], last["starts_at"])
    return [d for d in reversed(decisions) if (d["fingerprint"], d["starts_at"]) == key]


def why(final: Mapping[str, Any], action: Mapping[str, Any] | None) -> str:
    """A sentence on the fate of an alert, from its last decision and the action it led to."""
    text = WHY.get(final["reason"], f"recorded reason {final['reason']!r}")
    if final["reason"] == Reason.ACTED and final["action"]:
        text = f"it acted: {final['action']} (action {final['action_id']})"
    if final["detail"]:
        text += f" ({final['detail']})"
    if action is not None:
        if action["outcome"] is None:
            text += f"; action {action['id']} is still running"
        else:
            text += f"; action {action['id']} ended {action['outcome']}: {action['reason']}"
    return text


def next_turn(next_: Turn, paused_until: float | None, busy: str | None) -> str:
    """When an alert arriving now would act (next_.at in wall-clock seconds)."""
    if busy is not None:
        return f"after the running {busy} ends (an alert now joins or waits for it)"
    reason = next_.reason
    if next_.verdict == "act":
        return "now: an alert arriving now would act at once"
    if next_.verdict == "wait" and next_.at is not None:
        held = "cooldown" if reason == Reason.COOLDOWN else "back-off"
        return f"at {stamp(next_.at)}, when the {held} ends"
    if reason == Reason.PAUSED:
        if paused_until is not None:
            return f"at {stamp(paused_until)}, when the pause ends (or after `resume`)"
        return "never until an operator resumes it (`glyph-remediator resume`)"
    if reason == Reason.GAVE_UP:
        return "never until an operator resets it (`glyph-remediator reset`)"
    if reason == Reason.DRY_RUN:
        return "never: dry-run mode records what it would do"
    return f"not now ({reason})"


def explain(
    component: str,
    decisions: Sequence[Mapping[str, Any]],
    actions: Mapping[int, Mapping[str, Any]],
    next_: Turn,
    *,
    paused_until: float | None,
    busy: str | None,
) -> Explanation:
    """The explanation, from the component's recent decisions (newest first) and its state."""
    thread = alert_thread(decisions)
    linked = [d["action_id"] for d in thread if d["action_id"] is not None]
    action = actions.get(linked[-1]) if linked else None
    if thread:
        final = thread[-1]
        reason = why(final, action)
        text = f"the last alert ({thread[0]['alertname'] or 'unnamed'}) did not act: {reason}"
        if final["verdict"] == "acted" or (final["reason"] == Reason.COALESCED and action):
            text = f"the last alert ({thread[0]['alertname'] or 'unnamed'}): {reason}"
    else:
        text = "no alert about this component is on record"
    waits = next_.verdict == "wait" and next_.at is not None and busy is None
    return Explanation(
        component=component,
        last_alert=[DecisionRecord.model_validate(d) for d in thread],
        action=None if action is None else ActionRecord.model_validate(action),
        why=text,
        next=next_turn(next_, paused_until, busy),
        next_at=next_.at if waits else paused_until if next_.reason == Reason.PAUSED else None,
    )
