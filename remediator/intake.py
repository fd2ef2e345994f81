"""Judging an alert or an operator's request, purely: it, its component's view and the time in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from glyph_guard.common.config import Budget, Component, PlannedRestarts
from glyph_guard.remediator import planning, policy
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
    planned: frozenset[str] = frozenset()  # waiting actions that wait for an idle engine


@dataclass(frozen=True)
class Context:
    """The remediator-wide facts a judgement needs."""

    budget: Budget
    dry_run: bool
    host: str | None  # this agent's host (config `host`), or None: any host label is ours
    now: float
    gpu_hold: str | None = None  # why restarts cannot help now (gpu_health.restart_hold)
    planned: PlannedRestarts = field(default_factory=PlannedRestarts)


@dataclass(frozen=True)
class Judgement:
    """What becomes of one request, and what the orchestrator must do about it."""

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
    refused: bool = False  # an operator's request that cannot be honoured now (detail: why)
    not_before: float | None = None  # deferred on its turn: when to judge it again
    idle_until: float | None = None  # deferred, planned: waits for an idle engine until then


def echo(value: str | None) -> str:
    text = repr(value) if value is not None else "no label"
    return text if len(text) <= LABEL_ECHO_CHARS else text[: LABEL_ECHO_CHARS - 3] + "..."


def key_of(alert: Alert) -> Key:
    return alert.fingerprint, alert.startsAt.isoformat()


def judge_alert(
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
    if view is None and labels.get("action") == "reset_gpu":
        detail = f"no component allows reset_gpu on GPU {echo(labels.get('gpu'))}"
        return Judgement("skipped", Reason.GPU_RESET_OFF, False, detail)
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
    wait = None
    if action == "restart" and view.component.engine is not None:
        wait = planning.planned_wait(labels, alert.annotations, ctx.planned)
    if action in view.waiting and (wait is not None or action not in view.planned):
        detail = f"joins the waiting {action}"
        return Judgement("skipped", Reason.COALESCED, True, detail, name, action)
    if action == "restart" and ctx.gpu_hold is not None:  # not seen: acts once the GPU is back
        return Judgement("skipped", Reason.GPU_NEEDS_RESET, False, ctx.gpu_hold, name, action)
    got = _by_policy(view, ctx, action, "alert", failed_at)
    return got if wait is None else _planned(got, ctx.now, wait)


def _planned(got: Judgement, now: float, wait: float) -> Judgement:
    """A restart the policy allows, held until the engine is idle or wait seconds pass (an
    urgent alert meanwhile acts at once: it does not join this one)."""
    if not (got.launch or got.enqueue):
        return got
    return replace(
        got,
        verdict="deferred",
        reason=Reason.WAITING_FOR_IDLE if got.launch else got.reason,
        detail=f"planned: waits up to {wait:.0f} s for an idle engine",
        launch=False,
        enqueue=True,
        idle_until=now + wait,
    )


SWITCHES = {"pause": policy.pause, "resume": policy.resume, "reset": policy.reset}


@dataclass(frozen=True)
class Pause:
    """An operator's pause: until a wall-clock time (None: until resumed), and why."""

    until: float | None = None
    reason: str | None = None


def judge_operator(
    view: ComponentView,
    ctx: Context,
    command: str,
    *,
    pause: Pause | None = None,
    note: str | None = None,
) -> Judgement:
    """Judge an operator's switch (pause, resume, reset) or action on a component."""
    name = view.component.name
    if command == "pause" and pause is not None:
        state = policy.pause(view.state, pause.until, pause.reason)
        return Judgement("acted", Reason.OPERATOR, False, note, name, command, state=state)
    switch = SWITCHES.get(command)
    if switch is not None:
        state = switch(view.state)
        return Judgement("acted", Reason.OPERATOR, False, note, name, command, state=state)
    if command not in view.component.remediation.actions:
        detail = f"component {name} does not allow the {command} action"
        return Judgement("skipped", Reason.ACTION_NOT_ALLOWED, False, detail, name, refused=True)
    if view.busy is not None:
        detail = f"a {view.busy} of {name} is running (action {view.busy_action_id})"
        return Judgement("skipped", Reason.BUSY, False, detail, name, command, refused=True)
    return _by_policy(view, ctx, command, "operator", None)


def _decide(
    view: ComponentView, ctx: Context, action: str, origin: policy.Origin, failed_at: float | None
) -> tuple[policy.Decision, ComponentState | None]:
    """The policy's decision, and the state it leaves (None: unchanged)."""
    decision = policy.decide(
        view.state,
        ctx.budget,
        ctx.now,
        action,
        origin=origin,
        dry_run=ctx.dry_run,
        failed_at=failed_at,
    )
    return decision, decision.state if decision.state != view.state else None


def _by_policy(
    view: ComponentView, ctx: Context, action: str, origin: policy.Origin, failed_at: float | None
) -> Judgement:
    """The policy's verdict on acting now, for a request nothing else settled."""
    name = view.component.name
    decision, state = _decide(view, ctx, action, origin, failed_at)
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


def judge_turn(
    view: ComponentView,
    ctx: Context,
    action: str,
    origin: policy.Origin,
    failed_at: float,
    *,
    recovered: bool = False,
) -> Judgement:
    """Judge a waiting action whose turn came (recovered: found healthy again meanwhile)."""
    name = view.component.name
    if recovered:
        detail = "healthy again when its turn came"
        return Judgement("skipped", Reason.RECOVERED, False, detail, name, action, cancel=(action,))
    decision, state = _decide(view, ctx, action, origin, failed_at)
    if decision.verdict == "act":
        return Judgement("acted", Reason.ACTED, False, None, name, action, state=state, launch=True)
    if decision.verdict == "wait":
        after = decision.not_before
        return Judgement("deferred", decision.reason, False, None, name, action, not_before=after)
    return Judgement(
        "skipped", decision.reason, False, None, name, action, state=state, cancel=(action,)
    )
