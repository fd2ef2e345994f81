"""Judging one alert, purely: the alert, a read-only view of its component and the clock in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from glyph_guard.common.config import Budget, Component
from glyph_guard.remediator import policy
from glyph_guard.remediator.models import Alert
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.reasons import Reason

LABEL_ECHO_CHARS = 80
Key = tuple[str, str]  # an alert's identity: fingerprint and startsAt


@dataclass(frozen=True)
class ComponentView:
    """What the intake may know of a component: its state, what runs and what waits."""

    component: Component
    state: ComponentState
    busy: str | None = None  # the action running
    busy_action_id: int | None = None
    waiting: Mapping[str, Key] = field(default_factory=dict)  # action -> the alert it is for


@dataclass(frozen=True)
class Context:
    """The engine-wide facts a judgement needs."""

    budget: Budget
    dry_run: bool
    host: str | None  # this agent's host (config `host`), or None: any host label is ours
    now: float
    gpu_hold: str | None = None  # why restarts cannot help now (gpu_health.restart_hold)


@dataclass(frozen=True)
class Judgement:
    """What becomes of one alert, and what the engine must do about it."""

    verdict: Literal["acted", "deferred", "skipped"]
    reason: Reason
    seen: bool  # remember the alert, so a repeat delivery is a duplicate
    detail: str | None = None
    component: str | None = None
    action: str | None = None
    action_id: int | None = None  # the running action it joins (coalesced)
    state: ComponentState | None = None  # the component's state after judging (None: unchanged)
    launch: bool = False  # acted: start the action now
    enqueue: bool = False  # deferred: wait for its turn
    recheck: bool = False  # acting when the wait ends only if still unhealthy then
    cancel: tuple[str, ...] = ()  # waiting actions a resolved alert withdraws


def echo(value: str | None) -> str:
    text = repr(value) if value is not None else "no label"
    return text if len(text) <= LABEL_ECHO_CHARS else text[: LABEL_ECHO_CHARS - 3] + "..."


def key_of(alert: Alert) -> Key:
    return alert.fingerprint, alert.startsAt.isoformat()


def judge(
    alert: Alert,
    view: ComponentView | None,
    ctx: Context,
    *,
    seen: bool,
    failed_at: float | None = None,
) -> Judgement:
    """Judge one alert (view: None when its component label names no configured component)."""
    labels = alert.labels
    host = labels.get("host")
    if ctx.host is not None and host is not None and host != ctx.host:
        detail = f"host label {echo(host)} is not this host ({ctx.host!r})"
        return Judgement("skipped", Reason.WRONG_HOST, False, detail)
    name = view.component.name if view else None
    if alert.status == "resolved":
        key = key_of(alert)
        cancel = tuple(a for a, k in view.waiting.items() if k == key) if view else ()
        withdrawn = f"cancelled waiting {', '.join(cancel)}" if cancel else None
        return Judgement("skipped", Reason.RESOLVED, False, withdrawn, name, cancel=cancel)
    if view is None:
        detail = f"component label {echo(labels.get('component'))} names no configured component"
        return Judgement("skipped", Reason.UNKNOWN_COMPONENT, False, detail)
    allowed = view.component.remediation.actions
    action = next((a for a in allowed if a == labels.get("action")), None)
    if action is None:
        detail = f"action label {echo(labels.get('action'))} is not among {list(allowed)}"
        return Judgement("skipped", Reason.ACTION_NOT_ALLOWED, False, detail, name)
    if seen:
        detail = "fingerprint and startsAt seen before"
        return Judgement("skipped", Reason.DUPLICATE, False, detail, name, action)
    if view.busy == action:
        detail = f"joins the {action} already running"
        return Judgement(
            "skipped", Reason.COALESCED, True, detail, name, action, view.busy_action_id
        )
    if action in view.waiting:
        detail = f"joins the waiting {action}"
        return Judgement("skipped", Reason.COALESCED, True, detail, name, action)
    if action == "restart" and ctx.gpu_hold is not None:  # not seen: acts once the GPU is back
        return Judgement("skipped", Reason.GPU_NEEDS_RESET, False, ctx.gpu_hold, name, action)
    decision = policy.decide(
        view.state,
        ctx.budget,
        ctx.now,
        action,
        origin="alert",
        dry_run=ctx.dry_run,
        failed_at=failed_at,
    )
    state = decision.state if decision.state != view.state else None
    if decision.verdict == "skip":
        counts = decision.reason == Reason.DRY_RUN  # paused or gave up: acts again once cleared
        return Judgement("skipped", decision.reason, counts, None, name, action, state=state)
    if decision.verdict == "act" and view.busy is None:
        return Judgement("acted", Reason.ACTED, True, None, name, action, state=state, launch=True)
    reason = decision.reason if decision.verdict == "wait" else Reason.BUSY
    return Judgement(
        "deferred",
        reason,
        True,
        None,
        name,
        action,
        state=state,
        enqueue=True,
        recheck=reason == Reason.COOLDOWN,
    )
