"""Alerts and operator requests through the pure decisions, once: intake, lane, record, action."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from glyph_guard.common.config import Component, Deployment
from glyph_guard.common.reloading import reloaded
from glyph_guard.remediator import incarnation, policy
from glyph_guard.remediator.acting import Runner
from glyph_guard.remediator.actions.base import ActionResult, Started
from glyph_guard.remediator.actions.gpu import GpuHolders, GpuUsers, NvmlHolders
from glyph_guard.remediator.actions.reset_gpu import GpuResetter, gpu_lane
from glyph_guard.remediator.actions.tree import watch_lineages
from glyph_guard.remediator.carryover import carry_over
from glyph_guard.remediator.clock import Clock, SystemClock, from_wall
from glyph_guard.remediator.codec import saved_intent, saved_state
from glyph_guard.remediator.gpu_health import GpuHealth
from glyph_guard.remediator.intake import (
    Context,
    Judgement,
    Key,
    Pause,
    judge_alert,
    judge_operator,
    judge_turn,
    key_of,
)
from glyph_guard.remediator.lane import Conflict, Lane, Running, Trigger
from glyph_guard.remediator.looks import Look, guarded, look
from glyph_guard.remediator.metrics import ComponentGauges, Metrics
from glyph_guard.remediator.models import (
    AlertVerdict,
    ComponentStatus,
    Disposition,
    WebhookPayload,
)
from glyph_guard.remediator.policy import Origin
from glyph_guard.remediator.reasons import Reason
from glyph_guard.remediator.seen import SeenAlerts
from glyph_guard.remediator.store import records
from glyph_guard.remediator.store.database import Store, StoreFault
from glyph_guard.remediator.store.pruning import prune
from glyph_guard.remediator.store.queries import seen_among, snapshot
from glyph_guard.remediator.store.records import DecisionRow, Write, decision_row

log = logging.getLogger("glyph_remediator")

Launched = list[tuple[Lane, Running]]


class Orchestrator:
    """Takes alerts and operator requests, decides with the pure intake, acts through lanes."""

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
        self.lanes = {c.name: Lane(c) for c in config.components}
        self.metrics = Metrics(
            list(self.lanes), self.gauges, self.dry_run, lambda: store.pending_batches
        )
        store.count_errors(lambda operation: self.metrics.store_errors.labels(operation).inc())
        self._gpu = gpu or NvmlHolders()
        self.gpu_health = GpuHealth()  # restart alerts wait while a GPU needs a reset
        users = self._gpu if isinstance(self._gpu, GpuUsers) else NvmlHolders()
        self.gpu_reset = GpuResetter(
            config.remediator.gpu_reset,
            lambda: self.config.components,
            users,
            self.gpu_health,
        )
        self._runner: Runner | None = None
        self._seen = SeenAlerts()
        self._next_id = 1
        self._loops: list[asyncio.Task[None]] = []

    def reload(self, config: Deployment) -> list[str]:
        """Act by a new config from now on; the changed settings only a restart applies are kept
        and named. An action already running finishes as it began."""
        config, kept = reloaded(self.config, config, "remediator")
        for component in config.components:
            self.lanes[component.name].set_component(component)
        self.config, self.budget = config, config.remediator.budget
        return kept

    def _context(self, component: Component | None = None) -> Context:
        gpus = component.gpus if component is not None else ()
        now, hold = self.clock.monotonic(), self.gpu_health.hold(gpus)
        planned = self.config.remediator.planned_restarts
        return Context(self.budget, self.dry_run, self.config.host, now, hold, planned)

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take up what earlier runs left (read on the store's thread), start the lanes' loops."""
        carried = carry_over(
            await self.store.read(snapshot), self.config.components, self.budget, self.clock
        )
        self._next_id = carried.next_action_id
        self._seen.reopen(carried.reopened)
        for action in carried.interrupted:
            log.warning(
                "action %d (%s %s) of an earlier run was interrupted",
                *(action.id, action.action, action.component),
            )
        ops = carried.writes
        for name, lane in self.lanes.items():
            left = carried.lanes[name]
            lane.restore(left.state, left.started, left.last_action_at, left.wanted)
        for action in carried.retries:
            lane = self.lanes[action.component]
            self._retry(lane, DecisionRow("", "", component=lane.name), action.id, True, ops)
            ops.append(saved_state(self.clock, lane))
        if waiting := sum(len(lane.wanted) for lane in self.lanes.values()):
            log.warning("taking up %d unfinished action(s) of an earlier run", waiting)
        ops.append(prune(self.config.remediator.retention, self.clock.wall()))
        await self.store.write(ops)
        self.gpu_health.start()
        log_dir = self.config.remediator.log_dir
        self._runner = Runner(
            log_dir, self._gpu, self._record_start, self._ended, gpu_reset=self.gpu_reset
        )
        for lane in self.lanes.values():
            self._loops.append(asyncio.create_task(self._work(lane), name=f"lane-{lane.name}"))
        components = [lane.component for lane in self.lanes.values()]
        watch = watch_lineages(components, self._runner.lineages)
        self._loops.append(asyncio.create_task(watch, name="lineages"))
        upkeep = self.store.maintain(self.config.remediator.retention, self.clock.wall)
        self._loops.append(asyncio.create_task(upkeep, name="store-maintenance"))

    async def stop(self) -> None:
        """Stop waiting, interrupt what runs (recording it), then write what is left."""
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.stop()
        await asyncio.to_thread(self.gpu_health.stop)
        if not await self.store.write([]):
            log.error("%d record batch(es) could not be written", self.store.pending_batches)
        self.store.close()

    # -- requests: judged once, applied to the lane, recorded, acted on -------------------------

    async def receive(self, payload: WebhookPayload, body: bytes) -> list[AlertVerdict]:
        """Record a delivery and judge each of its alerts; acting starts in the background."""
        self.metrics.deliveries.inc()
        self.metrics.received.inc(len(payload.alerts))
        limit = self.config.remediator.max_alerts_per_delivery
        alerts = payload.alerts[:limit]
        keys = [key_of(a) for a in alerts if a.status == "firing"]
        unknown = self._seen.unknown(keys)
        stored: set[Key] = set()
        if unknown:
            with contextlib.suppress(StoreFault):  # logged and counted; memory still dedups
                stored = await self.store.read(seen_among(unknown))
        digest, wall = records.payload_digest(body), self.clock.wall()
        ops = [records.record_payload(body, digest, wall)]
        launched: Launched = []
        try:
            verdicts = []
            for alert in alerts:
                name = alert.labels.get("component") or ""
                key, lane = key_of(alert), self.lanes.get(name) or self._gpu_lane(alert.labels)
                failed_at = from_wall(self.clock, alert.startsAt.timestamp())
                seen = self._seen.seen(key, stored)
                view = lane.view() if lane else None
                ctx = self._context(lane.component if lane else None)
                got = judge_alert(alert, view, ctx, seen=seen, failed_at=failed_at)
                if got.seen:
                    self._seen.remember(key)
                    ops.append(records.mark_seen(key, wall))
                row = decision_row(got, "alert", alert, digest)
                if lane is not None:
                    about = incarnation.about_health(alert.labels)
                    self._apply(lane, got, row, "alert", failed_at, ops, launched, about)
                else:
                    self.metrics.skipped.labels(got.reason).inc()
                    ops.append(records.record_decision(row, wall))
                verdict = AlertVerdict(
                    fingerprint=alert.fingerprint, verdict=got.verdict, reason=got.reason
                )
                verdicts.append(verdict)
            if beyond := len(payload.alerts) - len(alerts) + payload.truncatedAlerts:
                self.metrics.truncated.inc(beyond)
                detail = (
                    f"{len(payload.alerts) - len(alerts)} alert(s) beyond"
                    f" max_alerts_per_delivery ({limit}) not judged;"
                    f" Alertmanager truncated {payload.truncatedAlerts}"
                )
                log.warning("delivery %s: %s", digest[:12], detail)
                row = DecisionRow("skipped", Reason.TRUNCATED, detail=detail, payload_sha256=digest)
                ops.append(records.record_decision(row, wall))
        finally:  # a slot taken is always run (and freed), whatever else was raised
            persisted = self._persist(ops, launched)
        await asyncio.shield(persisted)
        return verdicts

    async def operate(
        self, lane: Lane, command: str, *, pause: Pause | None = None, note: str | None = None
    ) -> tuple[Disposition, str, int | None]:
        """An operator's switch or action: judged like an alert; free of back-off and budget."""
        ctx = self._context(lane.component)
        got = judge_operator(lane.view(), ctx, command, pause=pause, note=note)
        if got.refused:
            raise Conflict(got.detail)
        row = decision_row(got, "operator")
        ops: list[Write] = []
        launched: Launched = []
        self._apply(lane, got, row, "operator", self.clock.monotonic(), ops, launched)
        await asyncio.shield(self._persist(ops, launched))
        if got.reason == Reason.PAUSED:
            raise Conflict(f"component {lane.name} is paused; resume it first")
        return got.verdict, got.reason, launched[0][1].action_id if launched else None

    def _apply(  # noqa: PLR0917 (the request, as judged)
        self,
        lane: Lane,
        got: Judgement,
        row: DecisionRow,
        origin: Origin,
        failed_at: float,
        ops: list[Write],
        launched: Launched,
        about_health: bool = False,
    ) -> None:
        """Carry a judgement out on its lane; its records go into the batch."""
        if got.state is not None:
            lane.set_state(got.state, wake=origin == "operator")
            ops.append(saved_state(self.clock, lane))
        ops.extend(records.drop_intent(lane.name, a) for a in lane.drop(got.cancel))
        if got.action is not None and got.launch:
            trigger = Trigger(origin, row, failed_at, about_health=about_health)
            if guarded(got.action, trigger):  # judged against what is true now first (_run_due)
                self._wait(lane, got.action, trigger, ops)
                return
            launched.append((lane, self._launch(lane, got.action, trigger, ops)))
            return
        if got.action is not None and got.enqueue:
            trigger = Trigger(
                origin,
                row,
                failed_at,
                recheck=got.recheck,
                idle_until=got.idle_until,
                about_health=about_health,
            )
            self._wait(lane, got.action, trigger, ops)
            self.metrics.deferred.labels(got.reason).inc()
        elif origin != "operator":
            self.metrics.skipped.labels(got.reason).inc()
        ops.append(records.record_decision(row, self.clock.wall()))

    def _wait(self, lane: Lane, action: str, trigger: Trigger, ops: list[Write]) -> None:
        """Queue an action for its turn; a waiting request it takes the place of (a planned
        restart, for an urgent one) is recorded as joining it."""
        waiting = lane.wanted.get(action)
        lane.wait(action, trigger)
        if waiting is not None and lane.wanted.get(action) is trigger:
            ops.append(self._joins(waiting, trigger, action))
        ops.append(saved_intent(self.clock, lane, action, trigger))

    def _joins(self, joined: Trigger, trigger: Trigger, action: str) -> Write:
        """The record of a waiting request that another one's action takes up."""
        joins = f"joins an {trigger.origin}'s {action}"
        row = replace(joined.row, verdict="skipped", reason=Reason.COALESCED, detail=joins)
        return records.record_decision(row, self.clock.wall())

    def _retry(
        self, lane: Lane, row: DecisionRow, action_id: int, recheck: bool, ops: list[Write]
    ) -> None:
        """Want a failed restart again (the first trigger waiting stays)."""
        retry = replace(row, origin="retry", action="restart")
        trigger = Trigger("retry", retry, self.clock.monotonic(), action_id, recheck)
        if lane.wait("restart", trigger):
            ops.append(saved_intent(self.clock, lane, "restart", trigger))

    def _gpu_lane(self, labels: dict[str, str]) -> Lane | None:
        """A GPU alert's reset_gpu goes to the lane of the component configured on that GPU."""
        name = gpu_lane(labels, self.config.components)
        return self.lanes.get(name) if name is not None else None

    # -- acting ---------------------------------------------------------------------------------

    def _launch(
        self, lane: Lane, action: str, trigger: Trigger, ops: list[Write], why: str | None = None
    ) -> Running:
        """Take the lane's slot for an action and put its intent and records in the batch (why:
        what the acted record says, in place of the trigger's detail)."""
        action_id, self._next_id = self._next_id, self._next_id + 1
        wall, joined = self.clock.wall(), lane.wanted.get(action)
        if joined is not None and joined is not trigger:  # an operator's or urgent alert's takes it
            ops.append(self._joins(joined, trigger, action))
        running = lane.launch(action, trigger, action_id, self.clock.monotonic())
        retry = f"retry of action {trigger.retry_of}" if trigger.retry_of else None
        detail = retry or why or trigger.row.detail
        row = replace(
            trigger.row,
            action=action,
            verdict="acted",
            reason=Reason.ACTED,
            action_id=action_id,
            detail=detail,
        )
        ops += [
            saved_intent(self.clock, lane, action, trigger),
            records.begin_action(action_id, lane.name, action, trigger.origin, wall),
            records.record_decision(row, wall),
        ]
        if trigger.origin == "alert":
            self.metrics.acted.labels(lane.name, action).inc()
        self._seen.settle(trigger.key)
        return running

    def _persist(self, ops: list[Write], launched: Launched) -> asyncio.Future[bool]:
        """Write the batch; the actions launched start once it is written (or failed to be)."""
        persisted = asyncio.ensure_future(self.store.write(ops))
        assert self._runner is not None
        for lane, running in launched:
            self._runner.spawn(lane, running, persisted)
        return persisted

    async def _ended(
        self, lane: Lane, running: Running, result: ActionResult, started: Started | None
    ) -> None:
        """Record how an action ended and what follows from it."""
        assert running.action_id is not None
        action, trigger = running.action, running.trigger
        now, wall = self.clock.monotonic(), self.clock.wall()
        took = now - running.started_at
        ops = [records.finish_action(running.action_id, wall, took, result)]
        log.info("%s %s: %s (%s) in %.1f s", action, lane.name, result.outcome, result.reason, took)
        ending = policy.ending_of(result.outcome)
        self.metrics.ended(lane.name, action, result, took)
        lane.ended(running, ending, started, self.budget, now, wall)
        ops.append(saved_state(self.clock, lane))
        if result.outcome != "interrupted":  # an interrupted intent stays for the next start
            ops.append(records.drop_intent(lane.name, action))
        if action == "restart" and policy.retries(ending, trigger.origin, earlier_run=False):
            self._retry(lane, trigger.row, running.action_id, False, ops)
        await self.store.write(ops)

    async def _record_start(self, name: str, started: Started) -> None:
        """A process was started: remember it at once, so the next restart sweeps its session."""
        lane = self.lanes[name]
        lane.set_started(started)
        await self.store.write([saved_state(self.clock, lane)])

    async def _work(self, lane: Lane) -> None:
        """Run waiting actions in turn as the policy allows; sleep until woken or due."""
        while True:
            due = await self._run_due(lane)
            await lane.woken(None if due is None else max(0.0, due - self.clock.monotonic()))

    async def _run_due(self, lane: Lane) -> float | None:
        """Start or drop waiting actions; when to look again (None: when woken)."""
        assert self._runner is not None
        while (turn := lane.next_wanted()) is not None:
            action, trigger = turn
            origin, failed_at = trigger.origin, trigger.failed_at
            got = judge_turn(lane.view(), self._context(lane.component), action, origin, failed_at)
            if got.not_before is not None:
                return got.not_before
            seen = Look()
            if got.launch:
                poll = self.config.remediator.planned_restarts.poll_seconds
                seen = await look(self._runner, self.clock, lane, turn, poll)
                if seen.starting is not None:
                    await self._starting(lane, turn, seen.starting)
                if seen.again is not None:
                    return seen.again
                if seen.recovered:
                    ctx = self._context(lane.component)
                    got = judge_turn(lane.view(), ctx, action, origin, failed_at, recovered=True)
                    got = replace(got, detail=seen.note or got.detail)
            ops: list[Write] = []
            if got.launch and lane.next_wanted() == turn:  # else an operator's restart took it
                self._persist(ops, [(lane, self._launch(lane, action, trigger, ops, seen.note))])
            elif not got.launch:
                self._seen.settle(trigger.key)
                row = replace(
                    trigger.row,
                    action=action,
                    verdict=got.verdict,
                    reason=got.reason,
                    detail=got.detail,
                )
                self._apply(lane, got, row, origin, failed_at, ops, [])
                await self.store.write(ops)
        return None

    async def _starting(self, lane: Lane, turn: tuple[str, Trigger], detail: str) -> None:
        """Record, once, that an alert's restart waits while a new incarnation starts."""
        action, trigger = turn
        if trigger.row.reason == Reason.STARTING:
            return
        row = replace(
            trigger.row, action=action, verdict="deferred", reason=Reason.STARTING, detail=detail
        )
        lane.restate(action, replace(trigger, row=row))
        self.metrics.deferred.labels(Reason.STARTING).inc()
        await self.store.write([records.record_decision(row, self.clock.wall())])

    # -- what operators and metrics see ---------------------------------------------------------

    def status(self, lane: Lane) -> ComponentStatus:
        return lane.status(self.budget, self.clock.monotonic(), self.dry_run)

    def gauges(self) -> list[ComponentGauges]:
        now = self.clock.monotonic()
        return [lane.gauges(self.budget, now) for lane in self.lanes.values()]
