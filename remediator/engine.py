"""Alerts and operator requests through the pure intake and policy; actions in the background."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from glyph_guard.common.config import Deployment
from glyph_guard.remediator import policy
from glyph_guard.remediator.actions.base import ActionResult, Started, Toolkit
from glyph_guard.remediator.actions.dispatch import perform
from glyph_guard.remediator.actions.gpu import GpuHolders, NvmlHolders
from glyph_guard.remediator.actions.tree import watch_lineages
from glyph_guard.remediator.actions.verify import healthy_now
from glyph_guard.remediator.clock import Clock, SystemClock, from_wall, to_wall
from glyph_guard.remediator.intake import Context, Key, judge, key_of
from glyph_guard.remediator.metrics import ComponentGauges, Metrics
from glyph_guard.remediator.models import (
    Alert,
    AlertVerdict,
    ComponentStatus,
    Verdict,
    WebhookPayload,
)
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.reasons import Reason
from glyph_guard.remediator.store import (
    DecisionRow,
    Store,
    StoreFault,
    Write,
    begin_action,
    drop_intent,
    finish_action,
    mark_seen,
    payload_digest,
    prune,
    put_intent,
    record_decision,
    record_payload,
    save_state,
)
from glyph_guard.remediator.worker import Conflict, Running, Trigger, Worker

__all__ = ["Conflict", "Engine", "Worker"]

log = logging.getLogger("glyph_remediator")

SEEN_IN_MEMORY = 50_000  # recent alerts remembered here too, so dedup holds while the store fails
MAINTENANCE_SECONDS = 10.0  # how often kept record batches are retried
PRUNE_SECONDS = 3600.0


class Engine:
    """Takes alerts and operator requests, decides with the pure intake and policy, acts."""

    def __init__(
        self,
        config: Deployment,
        store: Store,
        dry_run: bool = False,
        gpu: GpuHolders | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.dry_run = dry_run or config.remediator.dry_run
        self.budget = config.remediator.budget
        self.clock = clock or SystemClock()
        self.workers = {c.name: Worker(c) for c in config.components}
        self.metrics = Metrics(
            list(self.workers), self.gauges, self.dry_run, lambda: store.pending_batches
        )
        store.on_error = lambda operation: self.metrics.store_errors.labels(operation).inc()
        self._gpu = gpu or NvmlHolders()
        self._kit: Toolkit | None = None
        self._seen: OrderedDict[Key, None] = OrderedDict()
        self._reopened: set[Key] = set()  # alerts whose action an earlier run never finished
        self._next_id = 1
        self._loops: list[asyncio.Task[None]] = []
        self._actions: set[asyncio.Task[None]] = set()

    # -- time: monotonic in the process, wall clock in the store -------------------------------

    def _now(self) -> float:
        return self.clock.monotonic()

    def _state_out(self, state: ComponentState) -> ComponentState:
        return self._restamp(state, lambda t: to_wall(self.clock, t))

    def _state_in(self, state: ComponentState) -> ComponentState:
        return self._restamp(state, lambda t: from_wall(self.clock, t))

    @staticmethod
    def _restamp(state: ComponentState, convert: Callable[[float], float]) -> ComponentState:
        return replace(
            state,
            last_restart_at=None
            if state.last_restart_at is None
            else convert(state.last_restart_at),
            healthy_since=None if state.healthy_since is None else convert(state.healthy_since),
        )

    def _trigger_out(self, trigger: Trigger) -> dict[str, Any]:
        data = dataclasses.asdict(trigger)
        data["failed_at"] = to_wall(self.clock, trigger.failed_at)
        return data

    def _trigger_in(self, data: dict[str, Any]) -> Trigger:
        return Trigger(
            data["origin"],
            DecisionRow(**data["row"]),
            from_wall(self.clock, float(data["failed_at"])),
            data.get("retry_of"),
            bool(data.get("recheck")),
        )

    def _save(self, worker: Worker) -> Write:
        return save_state(
            worker.name, self._state_out(worker.state), worker.started, self.clock.wall()
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what earlier runs left, take up their unfinished intent, start the workers."""
        now, wall = self._now(), self.clock.wall()
        snap = self.store.load(wall)
        self._next_id = snap.next_action_id
        for name, worker in self.workers.items():
            state, worker.started = snap.states.get(name, (ComponentState(), None))
            worker.state = self._state_in(state)
            worker.last_action_at = snap.last_actions.get(name)
        ops: list[Write] = []
        for name, intents in snap.intents.items():
            owner = self.workers.get(name)
            for action, data in intents.items():
                if owner is None or action not in owner.component.remediation.actions:
                    ops.append(drop_intent(name, action))
                    continue
                trigger = replace(self._trigger_in(data), recheck=action == "restart")
                owner.wanted[action] = trigger
                self._reopened.add(trigger.key)
        for unfinished in snap.interrupted:
            found = self.workers.get(unfinished["component"])
            log.warning(
                "action %d (%s %s) of an earlier run was interrupted",
                unfinished["id"],
                unfinished["action"],
                unfinished["component"],
            )
            if found is None or unfinished["action"] != "restart":
                continue
            began = from_wall(self.clock, unfinished["started_at"])
            found.state = policy.after_restart(
                found.state,
                self.budget,
                failed_at=began,
                started=began,
                finished=now,
                ending="interrupted",
                origin=unfinished["origin"],
            )
            row = DecisionRow("", "", "retry", found.name, "restart")
            found.wanted.setdefault(
                "restart", Trigger("retry", row, now, unfinished["id"], recheck=True)
            )
            ops.append(self._save(found))
        waiting = sum(len(w.wanted) for w in self.workers.values())
        if waiting:
            log.warning("taking up %d unfinished action(s) of an earlier run", waiting)
        ops.append(prune(self.config.remediator.retention, wall))
        await self.store.write(ops)
        client = httpx.AsyncClient(trust_env=False)
        self._kit = Toolkit(
            client, self.config.remediator.log_dir, self._gpu, record_start=self._record_start
        )
        for worker in self.workers.values():
            self._loops.append(
                asyncio.create_task(self._work(worker), name=f"worker-{worker.name}")
            )
        self._loops.append(asyncio.create_task(self._maintain(), name="store-maintenance"))
        watched = [w.component for w in self.workers.values()]
        self._loops.append(asyncio.create_task(watch_lineages(watched, self._kit.lineages)))

    async def stop(self) -> None:
        """Stop waiting, interrupt what runs (recording it), then write what is left."""
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        actions = list(self._actions)
        for task in actions:
            task.cancel()
        for task in actions:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not await self.store.write([]):
            log.error("%d record batch(es) could not be written", self.store.pending_batches)
        if self._kit is not None:
            await self._kit.client.aclose()
        self.store.close()

    async def _maintain(self) -> None:
        """Retry record batches kept while the store failed; prune old rows now and then."""
        last_prune = self._now()
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            ops: list[Write] = []
            if self._now() - last_prune >= PRUNE_SECONDS:
                ops.append(prune(self.config.remediator.retention, self.clock.wall()))
                last_prune = self._now()
            if ops or self.store.pending_batches:
                await self.store.write(ops)

    # -- alerts ---------------------------------------------------------------------------------

    async def receive(self, payload: WebhookPayload, body: bytes) -> list[AlertVerdict]:
        """Record a delivery and judge each of its alerts; acting starts in the background."""
        self.metrics.deliveries.inc()
        self.metrics.received.inc(len(payload.alerts))
        limit = self.config.remediator.max_alerts_per_delivery
        alerts = payload.alerts[:limit]
        keys = [key_of(a) for a in alerts if a.status == "firing"]
        unknown = [k for k in dict.fromkeys(keys) if k not in self._seen]
        stored: set[Key] = set()
        if unknown:
            with contextlib.suppress(StoreFault):  # logged and counted; memory still dedups
                stored = await self.store.seen_among(unknown)
        digest = payload_digest(body)
        wall = self.clock.wall()
        ops = [record_payload(body, digest, wall)]
        launched: list[tuple[Worker, Running]] = []
        try:
            verdicts = [self._take(a, digest, stored, ops, launched) for a in alerts]
            beyond = len(payload.alerts) - len(alerts) + payload.truncatedAlerts
            if beyond:
                self.metrics.truncated.inc(beyond)
                detail = (
                    f"{len(payload.alerts) - len(alerts)} alert(s) beyond"
                    f" max_alerts_per_delivery ({limit}) not judged;"
                    f" Alertmanager truncated {payload.truncatedAlerts}"
                )
                log.warning("delivery %s: %s", digest[:12], detail)
                row = DecisionRow("skipped", Reason.TRUNCATED, detail=detail, payload_sha256=digest)
                ops.append(record_decision(row, wall))
        finally:  # a slot taken is always run (and freed), whatever else was raised
            persisted = asyncio.ensure_future(self.store.write(ops))
            for worker, running in launched:
                self._spawn(worker, running, persisted)
        await asyncio.shield(persisted)
        return verdicts

    def _take(
        self,
        alert: Alert,
        digest: str,
        stored: set[Key],
        ops: list[Write],
        launched: list[tuple[Worker, Running]],
    ) -> AlertVerdict:
        key = key_of(alert)
        worker = self.workers.get(alert.labels.get("component") or "")
        now, wall = self._now(), self.clock.wall()
        failed_at = from_wall(self.clock, alert.startsAt.timestamp())
        context = Context(self.budget, self.dry_run, self.config.host, now)
        seen = (key in self._seen or key in stored) and key not in self._reopened
        got = judge(
            alert, worker.view() if worker else None, context, seen=seen, failed_at=failed_at
        )
        row = DecisionRow(
            got.verdict,
            got.reason,
            component=got.component,
            action=got.action,
            fingerprint=alert.fingerprint,
            starts_at=key[1],
            alert_status=alert.status,
            alertname=alert.labels.get("alertname"),
            detail=got.detail,
            payload_sha256=digest,
            action_id=got.action_id,
        )
        if got.seen:
            self._remember(key)
            ops.append(mark_seen(key, wall))
        if worker is not None and got.state is not None:
            worker.state = got.state
            ops.append(self._save(worker))
        if worker is not None and got.cancel:
            ops.extend(drop_intent(worker.name, a) for a in worker.drop(got.cancel))
        if worker is not None and got.action is not None and got.launch:
            trigger = Trigger("alert", row, failed_at)
            launched.append((worker, self._launch(worker, got.action, trigger, ops)))
            return AlertVerdict(fingerprint=alert.fingerprint, verdict="acted", reason="acted")
        if worker is not None and got.action is not None and got.enqueue:
            trigger = Trigger("alert", row, failed_at, recheck=got.recheck)
            worker.wait(got.action, trigger)
            ops.append(put_intent(worker.name, got.action, self._trigger_out(trigger), wall))
            self.metrics.deferred.labels(got.reason).inc()
        else:
            self.metrics.skipped.labels(got.reason).inc()
        ops.append(record_decision(row, wall))
        return AlertVerdict(fingerprint=alert.fingerprint, verdict=got.verdict, reason=got.reason)

    def _remember(self, key: Key) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > SEEN_IN_MEMORY:
            self._seen.popitem(last=False)

    # -- acting ---------------------------------------------------------------------------------

    def _launch(self, worker: Worker, action: str, trigger: Trigger, ops: list[Write]) -> Running:
        """Take the worker's slot for an action and put its intent and record in the batch."""
        action_id, self._next_id = self._next_id, self._next_id + 1
        running = worker.launch(action, trigger, action_id, self._now())
        wall = self.clock.wall()
        detail = f"retry of action {trigger.retry_of}" if trigger.retry_of else trigger.row.detail
        row = replace(
            trigger.row,
            action=action,
            verdict="acted",
            reason=Reason.ACTED,
            action_id=action_id,
            detail=detail,
        )
        ops += [
            put_intent(worker.name, action, self._trigger_out(trigger), wall),
            begin_action(action_id, worker.name, action, trigger.origin, wall),
            record_decision(row, wall),
        ]
        if trigger.origin == "alert":
            self.metrics.acted.labels(worker.name, action).inc()
        self._reopened.discard(trigger.key)
        return running

    def _spawn(self, worker: Worker, running: Running, persisted: asyncio.Future[bool]) -> None:
        task = asyncio.create_task(self._execute(worker, running, persisted))
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _execute(
        self, worker: Worker, running: Running, persisted: asyncio.Future[bool]
    ) -> None:
        assert self._kit is not None and running.action_id is not None
        try:
            await asyncio.shield(persisted)  # intent and record first (or logged as failing)
            try:
                result, started = await perform(
                    worker.component, running.action, worker.started, self._kit
                )
            except asyncio.CancelledError:
                await self._ended(worker, running, None, worker.started)
                raise
            except Exception as exc:  # a backend bug must still end in a record
                log.exception(
                    "action %d (%s %s) failed unexpectedly",
                    running.action_id,
                    running.action,
                    worker.name,
                )
                result, started = ActionResult("failed", f"internal error: {exc!r}"), worker.started
            await self._ended(worker, running, result, started)
        finally:
            if worker.running is running:  # whatever was raised, the slot is freed
                worker.finish()

    async def _ended(
        self,
        worker: Worker,
        running: Running,
        result: ActionResult | None,
        started: Started | None,
    ) -> None:
        """Record how an action ended (result None: interrupted) and what follows from it."""
        assert running.action_id is not None
        action, trigger = running.action, running.trigger
        now, wall = self._now(), self.clock.wall()
        if result is None:
            result = ActionResult("interrupted", "the remediator stopped while acting")
        ops = [
            finish_action(
                running.action_id,
                wall,
                now - running.started_at,
                result.outcome,
                result.reason,
                result.details,
            )
        ]
        log.info(
            "%s %s: %s (%s) in %.1f s",
            action,
            worker.name,
            result.outcome,
            result.reason,
            now - running.started_at,
        )
        state = worker.state
        if action == "restart":
            self.metrics.restarts.labels(worker.name, result.outcome).inc()
            self.metrics.restart_duration.labels(worker.name).observe(now - running.started_at)
            worker.started = started
            ending: policy.Ending = (
                "healthy"
                if result.succeeded
                else "interrupted"
                if result.outcome == "interrupted"
                else "failed"
            )
            state = policy.after_restart(
                state,
                self.budget,
                failed_at=trigger.failed_at,
                started=running.started_at,
                finished=now,
                ending=ending,
                origin=trigger.origin,
            )
        else:
            self.metrics.cache_files.labels(worker.name).inc(result.details.get("files_deleted", 0))
            self.metrics.cache_bytes.labels(worker.name).inc(result.details.get("bytes_freed", 0))
        worker.finish(state, wall)
        ops.append(self._save(worker))
        if result.outcome != "interrupted":  # an interrupted intent stays for the next start
            ops.append(drop_intent(worker.name, action))
        if (
            action == "restart"
            and result.outcome not in ("succeeded", "interrupted")
            and trigger.origin != "operator"
            and "restart" not in worker.wanted
        ):
            # the alert still fires as far as we know: try again, within back-off and budget
            retry = Trigger("retry", replace(trigger.row, origin="retry"), now, running.action_id)
            worker.wait("restart", retry)
            ops.append(put_intent(worker.name, "restart", self._trigger_out(retry), wall))
        await self.store.write(ops)

    async def _record_start(self, name: str, started: Started) -> None:
        """A process was started: remember it at once, so the next restart sweeps its session."""
        worker = self.workers[name]
        worker.started = started
        await self.store.write([self._save(worker)])

    async def _work(self, worker: Worker) -> None:
        """Run waiting actions in turn as the policy allows; sleep until woken or due."""
        while True:
            due = await self._run_due(worker)
            timeout = None if due is None else max(0.0, due - self._now())
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(worker.wake.wait(), timeout)
            worker.wake.clear()

    async def _run_due(self, worker: Worker) -> float | None:
        """Start or drop waiting actions; when to look again (None: when woken)."""
        while (turn := worker.next_wanted()) is not None:
            action, trigger = turn
            now = self._now()
            decision = policy.decide(
                worker.state,
                self.budget,
                now,
                action,
                origin=trigger.origin,
                dry_run=self.dry_run,
                failed_at=trigger.failed_at,
            )
            ops: list[Write] = []
            if decision.state != worker.state:
                worker.state = decision.state
                ops.append(self._save(worker))
            if decision.verdict == "wait":
                await self.store.write(ops)
                return decision.not_before
            if (
                decision.verdict == "act"
                and trigger.recheck
                and await self._recovered(worker, action, trigger)
            ):
                decision = policy.Decision("skip", Reason.RECOVERED, worker.state)
            if decision.verdict == "skip":
                worker.drop([action])
                self._reopened.discard(trigger.key)
                detail = (
                    "healthy again when its turn came"
                    if decision.reason == Reason.RECOVERED
                    else None
                )
                row = replace(
                    trigger.row,
                    action=action,
                    verdict="skipped",
                    reason=decision.reason,
                    detail=detail,
                )
                ops += [drop_intent(worker.name, action), record_decision(row, self.clock.wall())]
                if trigger.origin != "operator":
                    self.metrics.skipped.labels(decision.reason).inc()
                await self.store.write(ops)
                continue
            if worker.next_wanted() != (action, trigger):
                continue  # an operator's restart took the slot while we looked
            running = self._launch(worker, action, trigger, ops)
            self._spawn(worker, running, asyncio.ensure_future(self.store.write(ops)))
        return None

    async def _recovered(self, worker: Worker, action: str, trigger: Trigger) -> bool:
        """Whether the component is healthy now; alerts arriving meanwhile coalesce."""
        assert self._kit is not None
        worker.launch(action, trigger, None, self._now())
        worker.wanted[action] = trigger  # still wanted until the check says otherwise
        try:
            return await healthy_now(self._kit.client, worker.component)
        finally:
            worker.finish()

    # -- operators ------------------------------------------------------------------------------

    def worker(self, name: str) -> Worker | None:
        return self.workers.get(name)

    def status(self, worker: Worker) -> ComponentStatus:
        return ComponentStatus(
            component=worker.name,
            paused=worker.state.paused,
            gave_up=worker.state.gave_up,
            budget_remaining=policy.budget_remaining(worker.state, self.budget, self._now()),
            busy=worker.busy,
            waiting=list(worker.wanted),
            dry_run=self.dry_run,
        )

    async def set_switch(self, worker: Worker, command: str) -> ComponentStatus:
        """Pause, resume or reset a component, and record who did it."""
        change = {"pause": policy.pause, "resume": policy.resume, "reset": policy.reset}[command]
        worker.state = change(worker.state)
        row = DecisionRow("acted", Reason.OPERATOR, "operator", worker.name, command)
        await self.store.write([self._save(worker), record_decision(row, self.clock.wall())])
        worker.wake.set()
        return self.status(worker)

    async def operator_restart(self, worker: Worker) -> tuple[Verdict, str, int | None]:
        """A manual restart: single-flight and recorded, but free of back-off and budget."""
        name = worker.name
        if "restart" not in worker.component.remediation.actions:
            raise Conflict(f"component {name} does not allow the restart action")
        if worker.running is not None:
            raise Conflict(
                f"a {worker.running.action} of {name} is running"
                f" (action {worker.running.action_id})"
            )
        now, wall = self._now(), self.clock.wall()
        row = DecisionRow("skipped", "", "operator", name, "restart")
        decision = policy.decide(
            worker.state, self.budget, now, "restart", origin="operator", dry_run=self.dry_run
        )
        if decision.verdict == "skip":
            await self.store.write([record_decision(replace(row, reason=decision.reason), wall)])
            if decision.reason == Reason.PAUSED:
                raise Conflict(f"component {name} is paused; resume it first")
            return "skipped", decision.reason, None
        ops: list[Write] = []
        waiting = worker.wanted.get("restart")
        if waiting is not None:
            joined = replace(
                waiting.row,
                verdict="skipped",
                reason=Reason.COALESCED,
                detail="joins an operator's restart",
            )
            ops.append(record_decision(joined, wall))
        running = self._launch(worker, "restart", Trigger("operator", row, now), ops)
        persisted = asyncio.ensure_future(self.store.write(ops))
        self._spawn(worker, running, persisted)
        await asyncio.shield(persisted)
        return "acted", "acted", running.action_id

    def gauges(self) -> list[ComponentGauges]:
        now = self._now()
        return [
            ComponentGauges(
                component=name,
                budget_remaining=policy.budget_remaining(w.state, self.budget, now),
                failed_restarts=policy.current_failures(w.state, self.budget, now),
                gave_up=w.state.gave_up,
                paused=w.state.paused,
                busy=w.busy is not None,
                last_action_timestamp=w.last_action_at,
            )
            for name, w in self.workers.items()
        ]
