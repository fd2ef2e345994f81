"""Judging alerts and running actions: a single-flight worker per component, all recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx

from glyph_common.config import Component, Deployment
from remediator import policy
from remediator.actions.base import ActionResult, Toolkit
from remediator.actions.dispatch import perform
from remediator.actions.gpu import GpuHolders, NvmlHolders
from remediator.actions.verify import healthy_now
from remediator.metrics import ComponentGauges, Metrics
from remediator.models import Alert, AlertVerdict, ComponentStatus, Verdict, WebhookPayload
from remediator.policy import ComponentState, Origin
from remediator.store import DecisionRow, Started, Store

log = logging.getLogger("glyph_remediator")

ACTION_ORDER = ("restart", "clean_cache")  # a restart waiting goes before cleaning
LABEL_ECHO_CHARS = 80


class Conflict(Exception):
    """An operator request that cannot be honoured now (the message says why)."""


@dataclass(frozen=True)
class Trigger:
    """Why an action is wanted: the decision row to record, and from whom."""

    origin: Origin
    row: DecisionRow
    retry_of: int | None = None  # the failed action a retry repeats
    recheck: bool = False  # deferred past a cooldown: act only if still unhealthy then

    def matches(self, fingerprint: str, starts_at: str) -> bool:
        return (self.row.fingerprint, self.row.starts_at) == (fingerprint, starts_at)


class Worker:
    """One component's state, what it is doing, and what waits for its turn."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.state = ComponentState()
        self.started: Started | None = None
        self.busy: str | None = None
        self.busy_action_id: int | None = None
        self.running: asyncio.Task[None] | None = None
        self.wanted: dict[str, Trigger] = {}
        self.last_action_at: float | None = None
        self.wake = asyncio.Event()
        self.loop: asyncio.Task[None] | None = None

    def cancel_waiting(self, fingerprint: str, starts_at: str) -> list[str]:
        """Drop waiting actions an alert wanted; the names of those dropped."""
        dropped = [a for a, t in self.wanted.items() if t.matches(fingerprint, starts_at)]
        for action in dropped:
            del self.wanted[action]
        return dropped


def _echo(value: str | None) -> str:
    text = repr(value) if value is not None else "no label"
    return text if len(text) <= LABEL_ECHO_CHARS else text[: LABEL_ECHO_CHARS - 3] + "..."


class Engine:
    """Takes alerts and operator requests, decides with the pure policy, acts in the background."""

    def __init__(
        self,
        config: Deployment,
        store: Store,
        dry_run: bool = False,
        gpu: GpuHolders | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.dry_run = dry_run or config.remediator.dry_run
        self.budget = config.remediator.budget
        self.clock = clock
        self.workers = {c.name: Worker(c) for c in config.components}
        self.metrics = Metrics(list(self.workers), self.gauges, self.dry_run)
        self._gpu = gpu or NvmlHolders()
        self._kit: Toolkit | None = None

    async def start(self) -> None:
        """Load what earlier runs remembered, then start one worker per component."""
        now = self.clock()
        interrupted = self.store.interrupt_unfinished(now)
        if interrupted:
            log.warning("marked %d action(s) of an earlier run as interrupted", interrupted)
        saved = self.store.load_states()
        last = self.store.last_actions()
        for name, worker in self.workers.items():
            worker.state, worker.started = saved.get(name, (ComponentState(), None))
            worker.last_action_at = last.get(name)
        client = httpx.AsyncClient(trust_env=False)
        self._kit = Toolkit(client, self.config.remediator.log_dir, self._gpu)
        for worker in self.workers.values():
            worker.loop = asyncio.create_task(
                self._work(worker), name=f"worker-{worker.component.name}"
            )

    async def stop(self) -> None:
        tasks = [t for w in self.workers.values() for t in (w.loop, w.running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._kit is not None:
            await self._kit.client.aclose()
        self.store.close()

    # -- alerts -------------------------------------------------------------------------------

    def receive(self, payload: WebhookPayload, body: bytes) -> list[AlertVerdict]:
        """Record a delivery and judge each of its alerts; acting starts in the background."""
        now = self.clock()
        self.metrics.deliveries.inc()
        self.metrics.received.inc(len(payload.alerts))
        with self.store.transaction():
            payload_id = self.store.record_payload(body, now)
            return [self._judge(alert, payload_id, now) for alert in payload.alerts]

    def _judge(self, alert: Alert, payload_id: int, now: float) -> AlertVerdict:
        labels = alert.labels
        starts_at = alert.startsAt.isoformat()
        row = DecisionRow(
            verdict="skipped",
            reason="",
            fingerprint=alert.fingerprint,
            starts_at=starts_at,
            alert_status=alert.status,
            alertname=labels.get("alertname"),
            payload_id=payload_id,
        )
        component_label, action_label = labels.get("component"), labels.get("action")
        worker = self.workers.get(component_label) if component_label is not None else None
        if worker is not None:
            row = replace(row, component=worker.component.name)
        own_host, host_label = self.config.host, labels.get("host")
        if own_host is not None and host_label is not None and host_label != own_host:
            mine = f"host label {_echo(host_label)} is not this host {own_host!r}"
            return self._skip(row, "wrong_host", now, mine)
        if alert.status == "resolved":
            dropped = worker.cancel_waiting(alert.fingerprint, starts_at) if worker else []
            detail = f"cancelled waiting {', '.join(dropped)}" if dropped else None
            return self._skip(row, "resolved", now, detail)
        if worker is None:
            detail = f"component label {_echo(component_label)} names no configured component"
            return self._skip(row, "unknown_component", now, detail)
        allowed = worker.component.remediation.actions
        action = next((a for a in allowed if a == action_label), None)
        if action is None:
            detail = f"action label {_echo(action_label)} is not among {list(allowed)}"
            return self._skip(row, "action_not_allowed", now, detail)
        row = replace(row, action=action)
        if self.store.seen(alert.fingerprint, starts_at):
            return self._skip(row, "duplicate", now, "fingerprint and startsAt seen before")
        if worker.busy == action or action in worker.wanted:
            self.store.mark_seen(alert.fingerprint, starts_at, now)
            action_id = worker.busy_action_id if worker.busy == action else None
            detail = (
                f"joins the {action} already running"
                if action_id
                else f"joins the waiting {action}"
            )
            return self._skip(replace(row, action_id=action_id), "coalesced", now, detail)
        decision = self._decide(worker, action, "alert", now)
        self._set_state(worker, decision.state, now)
        if decision.verdict == "skip":
            if decision.reason == "dry_run":
                self.store.mark_seen(alert.fingerprint, starts_at, now)
            return self._skip(row, decision.reason, now)
        self.store.mark_seen(alert.fingerprint, starts_at, now)
        trigger = Trigger("alert", row)
        if decision.verdict == "act" and worker.busy is None:
            self._launch(worker, action, trigger, now)
            return AlertVerdict(fingerprint=alert.fingerprint, verdict="acted", reason="acted")
        reason = decision.reason if decision.verdict == "wait" else "busy"
        worker.wanted[action] = replace(trigger, recheck=reason == "cooldown")
        worker.wake.set()
        self.store.record_decision(replace(row, verdict="deferred", reason=reason), now)
        return AlertVerdict(fingerprint=alert.fingerprint, verdict="deferred", reason=reason)

    def _skip(
        self, row: DecisionRow, reason: str, now: float, detail: str | None = None
    ) -> AlertVerdict:
        self.store.record_decision(
            replace(row, verdict="skipped", reason=reason, detail=detail), now
        )
        if row.origin == "alert":
            self.metrics.skipped.labels(reason).inc()
        return AlertVerdict(fingerprint=row.fingerprint or "", verdict="skipped", reason=reason)

    # -- acting -------------------------------------------------------------------------------

    def _decide(self, worker: Worker, action: str, origin: Origin, now: float) -> policy.Decision:
        return policy.decide(
            worker.state, self.budget, now, action, origin=origin, dry_run=self.dry_run
        )

    def _set_state(self, worker: Worker, state: ComponentState, now: float) -> None:
        if state != worker.state:
            worker.state = state
            self.store.save_state(worker.component.name, state, worker.started, now)

    def _launch(self, worker: Worker, action: str, trigger: Trigger, now: float) -> int:
        """Start an action now (the caller checked the worker is idle); returns its record id."""
        name = worker.component.name
        action_id = self.store.begin_action(name, action, trigger.origin, now)
        detail = f"retry of action {trigger.retry_of}" if trigger.retry_of else None
        row = replace(
            trigger.row, verdict="acted", reason="acted", action_id=action_id, detail=detail
        )
        self.store.record_decision(row, now)
        if trigger.origin == "alert":
            self.metrics.acted.labels(name, action).inc()
        worker.busy, worker.busy_action_id = action, action_id
        worker.running = asyncio.create_task(self._execute(worker, action, trigger, action_id, now))
        return action_id

    async def _execute(
        self, worker: Worker, action: str, trigger: Trigger, action_id: int, started_at: float
    ) -> None:
        component = worker.component
        assert self._kit is not None
        try:
            result, started = await perform(component, action, worker.started, self._kit)
        except asyncio.CancelledError:
            self.store.finish_action(
                action_id, self.clock(), "interrupted", "the remediator stopped while acting", {}
            )
            raise
        except Exception as exc:  # a backend bug must still end in a record, not a lost action
            log.exception(
                "action %d (%s %s) failed unexpectedly", action_id, action, component.name
            )
            result, started = ActionResult("failed", f"internal error: {exc!r}"), worker.started
        finished = self.clock()
        self.store.finish_action(action_id, finished, result.outcome, result.reason, result.details)
        log.info(
            "%s %s: %s (%s) in %.1f s",
            action,
            component.name,
            result.outcome,
            result.reason,
            finished - started_at,
        )
        worker.last_action_at = finished
        if action == "restart":
            self._restarted(
                worker,
                trigger,
                result,
                started=started,
                span=(started_at, finished),
                action_id=action_id,
            )
        else:
            self.metrics.cache_files.labels(component.name).inc(
                result.details.get("files_deleted", 0)
            )
            self.metrics.cache_bytes.labels(component.name).inc(
                result.details.get("bytes_freed", 0)
            )
        worker.busy = worker.busy_action_id = worker.running = None
        worker.wake.set()

    def _restarted(
        self,
        worker: Worker,
        trigger: Trigger,
        result: ActionResult,
        *,
        started: Started | None,
        span: tuple[float, float],
        action_id: int,
    ) -> None:
        name = worker.component.name
        started_at, finished = span
        self.metrics.restarts.labels(name, result.outcome).inc()
        self.metrics.restart_duration.labels(name).observe(finished - started_at)
        worker.started = started
        state = policy.after_restart(
            worker.state,
            self.budget,
            started=started_at,
            finished=finished,
            healthy=result.succeeded,
            origin=trigger.origin,
        )
        self.store.save_state(name, state, started, finished)
        worker.state = state
        if not result.succeeded and trigger.origin != "operator" and "restart" not in worker.wanted:
            # the alert still fires as far as we know: try again, within back-off and budget
            worker.wanted["restart"] = Trigger(
                "retry", replace(trigger.row, origin="retry"), action_id
            )

    async def _work(self, worker: Worker) -> None:
        """Run waiting actions in turn as the policy allows; sleep until woken or due."""
        while True:
            due = await self._run_due(worker)
            timeout = None if due is None else max(0.0, due - self.clock())
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(worker.wake.wait(), timeout)
            worker.wake.clear()

    async def _run_due(self, worker: Worker) -> float | None:
        """Start or drop waiting actions; when to look again (None: when woken)."""
        while worker.busy is None and worker.wanted:
            action = next(a for a in ACTION_ORDER if a in worker.wanted)
            trigger = worker.wanted[action]
            now = self.clock()
            decision = self._decide(worker, action, trigger.origin, now)
            self._set_state(worker, decision.state, now)
            if decision.verdict == "wait":
                return decision.not_before
            del worker.wanted[action]
            if decision.verdict == "skip":
                self._skip(replace(trigger.row, action=action), decision.reason, now)
            elif trigger.recheck and await self._recovered(worker, action):
                detail = "healthy again when the cooldown ended"
                self._skip(replace(trigger.row, action=action), "recovered", self.clock(), detail)
            else:
                self._launch(worker, action, trigger, self.clock())
        return None

    async def _recovered(self, worker: Worker, action: str) -> bool:
        """Whether the component is healthy now; alerts arriving meanwhile coalesce."""
        assert self._kit is not None
        worker.busy = action
        try:
            return await healthy_now(self._kit.client, worker.component)
        finally:
            worker.busy = None

    # -- operators ----------------------------------------------------------------------------

    def worker(self, name: str) -> Worker | None:
        return self.workers.get(name)

    def status(self, worker: Worker) -> ComponentStatus:
        return ComponentStatus(
            component=worker.component.name,
            paused=worker.state.paused,
            gave_up=worker.state.gave_up,
            budget_remaining=policy.budget_remaining(worker.state, self.budget, self.clock()),
            busy=worker.busy,
            waiting=list(worker.wanted),
            dry_run=self.dry_run,
        )

    def set_switch(self, worker: Worker, command: str) -> ComponentStatus:
        """Pause, resume or reset a component, and record who did it."""
        change = {"pause": policy.pause, "resume": policy.resume, "reset": policy.reset}[command]
        now = self.clock()
        self._set_state(worker, change(worker.state), now)
        row = DecisionRow(
            verdict="acted",
            reason="operator",
            origin="operator",
            component=worker.component.name,
            action=command,
        )
        self.store.record_decision(row, now)
        worker.wake.set()
        return self.status(worker)

    def operator_restart(self, worker: Worker) -> tuple[Verdict, str, int | None]:
        """A manual restart: single-flight and recorded, but free of back-off and budget."""
        name = worker.component.name
        if "restart" not in worker.component.remediation.actions:
            raise Conflict(f"component {name} does not allow the restart action")
        if worker.busy is not None:
            raise Conflict(f"a {worker.busy} of {name} is running (action {worker.busy_action_id})")
        now = self.clock()
        row = DecisionRow(
            verdict="skipped", reason="", origin="operator", component=name, action="restart"
        )
        decision = self._decide(worker, "restart", "operator", now)
        if decision.reason == "paused":
            self.store.record_decision(replace(row, reason="paused"), now)
            raise Conflict(f"component {name} is paused; resume it first")
        if decision.verdict == "skip":
            self.store.record_decision(replace(row, reason=decision.reason), now)
            return "skipped", decision.reason, None
        waiting = worker.wanted.pop("restart", None)
        if waiting is not None:
            self._skip(waiting.row, "coalesced", now, "joins an operator's restart")
        action_id = self._launch(worker, "restart", Trigger("operator", row), now)
        return "acted", "acted", action_id

    def gauges(self) -> list[ComponentGauges]:
        now = self.clock()
        return [
            ComponentGauges(
                component=name,
                budget_remaining=policy.budget_remaining(w.state, self.budget, now),
                gave_up=w.state.gave_up,
                paused=w.state.paused,
                busy=w.busy is not None,
                last_action_timestamp=w.last_action_at,
            )
            for name, w in self.workers.items()
        ]
