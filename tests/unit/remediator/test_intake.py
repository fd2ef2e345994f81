"""The intake and the worker as tables; the engine under clock steps. Injected clock, no HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from glyph_guard.common.config import Budget, Component, Deployment, Retention, parse_config
from glyph_guard.remediator.engine import Engine
from glyph_guard.remediator.intake import ComponentView, Context, judge, key_of
from glyph_guard.remediator.metrics import Metrics
from glyph_guard.remediator.models import Alert, WebhookPayload
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.reasons import DEFERRED, SKIPPED, Reason
from glyph_guard.remediator.store import (
    DecisionRow,
    Store,
    mark_seen,
    payload_digest,
    prune,
    record_decision,
    record_payload,
)
from glyph_guard.remediator.worker import Conflict, Trigger, Worker
from glyph_guard_demo.testkit.doubles.harness import alert, payload

B = Budget()
NOW = 5_000.0


def component(**remediation: Any) -> Component:
    config = parse_config(
        {
            "components": {
                "api": {
                    "match": {"cmdline": "never-matches-anything-x9"},
                    "caches": ["/tmp/glyph-intake-test/**"],
                    "remediation": {
                        "actions": ["restart", "clean_cache"],
                        "restart": {"start": [sys.executable, "-c", "pass"]},
                        **remediation,
                    },
                }
            }
        }
    )
    return config.components[0]


API = component()
FIRING = Alert.model_validate(alert())
KEY = key_of(FIRING)
JUST = ComponentState(streak=1, last_restart_at=NOW - 1, healthy_since=NOW - 1)
STREAK = ComponentState(streak=3, last_restart_at=NOW - 35, healthy_since=None)


def view(**changes: Any) -> ComponentView:
    return replace(ComponentView(API, ComponentState()), **changes)


def labelled(**labels: Any) -> Alert:
    return Alert.model_validate(alert(**labels))


# name, alert, view (None: unknown component), seen, host, dry_run ->
#   verdict, reason, counts as seen, launch, enqueue
CASES: list[tuple[str, Alert, ComponentView | None, bool, str | None, bool, tuple[Any, ...]]] = [
    ("acts", FIRING, view(), False, None, False, ("acted", "acted", True, True, False)),
    (
        "another host's alert",
        labelled(host="gpu-7"),
        view(),
        False,
        "gpu-3",
        False,
        ("skipped", "wrong_host", False, False, False),
    ),
    (
        "its own host's alert",
        labelled(host="gpu-3"),
        view(),
        False,
        "gpu-3",
        False,
        ("acted", "acted", True, True, False),
    ),
    (
        "no host label is judged as usual",
        FIRING,
        view(),
        False,
        "gpu-3",
        False,
        ("acted", "acted", True, True, False),
    ),
    (
        "resolved",
        Alert.model_validate(alert(status="resolved")),
        view(),
        False,
        None,
        False,
        ("skipped", "resolved", False, False, False),
    ),
    (
        "unknown component",
        labelled(component="db"),
        None,
        False,
        None,
        False,
        ("skipped", "unknown_component", False, False, False),
    ),
    (
        "action not allowed",
        labelled(action="reboot"),
        view(),
        False,
        None,
        False,
        ("skipped", "action_not_allowed", False, False, False),
    ),
    ("duplicate", FIRING, view(), True, None, False, ("skipped", "duplicate", False, False, False)),
    (
        "joins the running restart",
        FIRING,
        view(busy="restart", busy_action_id=7),
        False,
        None,
        False,
        ("skipped", "coalesced", True, False, False),
    ),
    (
        "joins the waiting restart",
        FIRING,
        view(waiting={"restart": ("other", "2026-11-24T17:00:00+00:00")}),
        False,
        None,
        False,
        ("skipped", "coalesced", True, False, False),
    ),
    (
        "waits for the cleaning that runs",
        FIRING,
        view(busy="clean_cache", busy_action_id=3),
        False,
        None,
        False,
        ("deferred", "busy", True, False, True),
    ),
    (
        "cooldown",
        FIRING,
        view(state=JUST),
        False,
        None,
        False,
        ("deferred", "cooldown", True, False, True),
    ),
    (
        "back-off",
        FIRING,
        view(state=STREAK),
        False,
        None,
        False,
        ("deferred", "backoff", True, False, True),
    ),
    (
        "paused",
        FIRING,
        view(state=ComponentState(paused=True)),
        False,
        None,
        False,
        ("skipped", "paused", False, False, False),
    ),
    (
        "gave up",
        FIRING,
        view(state=ComponentState(gave_up=True)),
        False,
        None,
        False,
        ("skipped", "gave_up", False, False, False),
    ),
    ("dry run", FIRING, view(), False, None, True, ("skipped", "dry_run", True, False, False)),
]


@pytest.mark.parametrize(
    ("item", "seen_view", "seen", "host", "dry_run", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_intake(
    item: Alert,
    seen_view: ComponentView | None,
    seen: bool,
    host: str | None,
    dry_run: bool,
    expected: tuple[Any, ...],
) -> None:
    got = judge(item, seen_view, Context(B, dry_run, host, NOW), seen=seen)
    assert (got.verdict, got.reason, got.seen, got.launch, got.enqueue) == expected


def test_intake_details() -> None:
    other = judge(labelled(host="gpu-7"), view(), Context(B, False, "gpu-3", NOW), seen=False)
    assert other.detail is not None and "'gpu-7'" in other.detail and "'gpu-3'" in other.detail
    joined = judge(
        FIRING, view(busy="restart", busy_action_id=7), Context(B, False, None, NOW), seen=False
    )
    assert joined.action_id == 7
    waiting = view(waiting={"restart": KEY, "clean_cache": ("x", "y")})
    resolved = Alert.model_validate(alert(status="resolved"))
    assert judge(resolved, waiting, Context(B, False, None, NOW), seen=False).cancel == ("restart",)
    cooling = judge(FIRING, view(state=JUST), Context(B, False, None, NOW), seen=False)
    assert cooling.recheck is True
    long = labelled(component="x" * 300)
    unknown = judge(long, None, Context(B, False, None, NOW), seen=False)
    assert unknown.detail is not None and len(unknown.detail) < 200


def test_every_reason_has_its_series_from_the_start() -> None:
    metrics = Metrics(["api"], lambda: [], dry_run=False)
    for reason in SKIPPED:
        assert (
            metrics.registry.get_sample_value(
                "glyph_remediator_alerts_skipped_total", {"reason": reason.value}
            )
            == 0
        )
    for reason in DEFERRED:
        assert (
            metrics.registry.get_sample_value(
                "glyph_remediator_alerts_deferred_total", {"reason": reason.value}
            )
            == 0
        )
    intake_reasons = {case[-1][1] for case in CASES}
    # engine's own; gpu_needs_reset: tests/unit/remediator/test_gpu_health.py
    assert set(Reason) - intake_reasons == {"operator", "recovered", "truncated", "gpu_needs_reset"}


# -- the worker -------------------------------------------------------------------------------


def trigger(fingerprint: str = "a") -> Trigger:
    return Trigger(
        "alert", DecisionRow("acted", "acted", fingerprint=fingerprint, starts_at="t"), NOW
    )


def test_worker_transitions() -> None:
    worker = Worker(API)
    assert worker.next_wanted() is None
    worker.wait("clean_cache", trigger("c"))
    worker.wait("restart", trigger("r"))
    worker.wait("restart", trigger("later"))  # the first trigger stays
    assert worker.next_wanted() == ("restart", trigger("r"))  # a restart goes before cleaning
    assert worker.view().waiting == {"restart": ("r", "t"), "clean_cache": ("c", "t")}

    running = worker.launch("restart", trigger("r"), 11, NOW)
    assert (worker.busy, worker.view().busy_action_id, list(worker.wanted)) == (
        "restart",
        11,
        ["clean_cache"],
    )
    assert worker.next_wanted() is None  # single flight
    with pytest.raises(Conflict, match="restart of api is running"):
        worker.launch("clean_cache", trigger(), 12, NOW)
    assert running.started_at == NOW

    worker.wake.clear()
    worker.finish(replace(worker.state, streak=1), at=123.0)
    assert (worker.busy, worker.state.streak, worker.last_action_at) == (None, 1, 123.0)
    assert worker.wake.is_set()
    assert worker.next_wanted() == ("clean_cache", trigger("c"))
    assert worker.drop(["clean_cache", "restart"]) == ["clean_cache"]
    assert worker.next_wanted() is None


# -- the engine, with a clock the test steps ------------------------------------------------


class SteppedClock:
    def __init__(self) -> None:
        self.wall_now, self.mono_now = 1_800_000_000.0, 1_000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.mono_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.mono_now += seconds


def deployment(tmp_path: Path, **remediator: Any) -> Deployment:
    data = {
        "components": {
            "api": {
                "match": {"cmdline": "never-matches-anything-x9"},
                "remediation": {
                    "actions": ["restart"],
                    "restart": {"start": [sys.executable, "-c", "pass"]},
                },
            }
        },
        "remediator": {"state_db": str(tmp_path / "state.sqlite"), **remediator},
    }
    return parse_config(data)


def delivery(clock: SteppedClock, **labels: Any) -> WebhookPayload:
    stamp = f"{clock.wall_now:.3f}"
    starts = datetime.fromtimestamp(float(stamp), UTC).isoformat()
    body = payload(alert(fingerprint=f"{int(clock.wall_now):016x}", starts_at=starts, **labels))
    return WebhookPayload.model_validate(body)


async def _judge_once(engine: Engine, clock: SteppedClock) -> str:
    body = delivery(clock)
    [verdict] = await engine.receive(body, body.model_dump_json().encode())
    return verdict.reason


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_clock_step_neither_refills_the_budget_nor_stalls_a_restart(
    tmp_path: Path, step: float
) -> None:
    async def scenario() -> None:
        clock = SteppedClock()
        engine = Engine(deployment(tmp_path), Store.open(tmp_path / "state.sqlite"), clock=clock)
        await engine.start()
        worker = engine.workers["api"]
        try:
            # four short-lived recoveries so far; the last restart was healthy 2 s ago
            now = clock.monotonic()
            worker.state = ComponentState(
                failures=4, streak=1, last_restart_at=now - 40, healthy_since=now - 2
            )
            clock.wall_now += step  # NTP steps the wall clock an hour
            assert await _judge_once(engine, clock) == "gave_up"  # the 5th death within 10 s

            worker.state = ComponentState(
                streak=1, last_restart_at=clock.monotonic() - 1, healthy_since=clock.monotonic() - 1
            )
            clock.wall_now += step
            assert await _judge_once(engine, clock) == "cooldown"
            assert list(worker.wanted) == ["restart"]
            due = engine.budget.cooldown_seconds - 1
            assert worker.state.last_restart_at is not None
            assert (
                worker.state.last_restart_at + engine.budget.cooldown_seconds - clock.monotonic()
                == due
            )
        finally:
            await engine.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_persisted_times_survive_a_clock_step_between_runs(tmp_path: Path, step: float) -> None:
    async def scenario() -> None:
        clock = SteppedClock()
        config = deployment(tmp_path)
        engine = Engine(config, Store.open(tmp_path / "state.sqlite"), clock=clock)
        await engine.start()
        now = clock.monotonic()
        engine.workers["api"].state = ComponentState(
            streak=1, last_restart_at=now, healthy_since=now
        )
        await engine.set_switch(engine.workers["api"], "resume")  # saves the state
        await engine.stop()

        clock.wall_now += step
        clock.mono_now = 50.0  # a new process: another monotonic origin
        again = Engine(config, Store.open(tmp_path / "state.sqlite"), clock=clock)
        await again.start()
        try:
            last = again.workers["api"].state.last_restart_at
            assert last is not None
            # forward: the restart an hour ago; back: taken as now, never an hour in the future
            assert last == (clock.monotonic() - step if step > 0 else clock.monotonic())
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_operator_switch_and_truncated_delivery_are_recorded(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = SteppedClock()
        engine = Engine(
            deployment(tmp_path, max_alerts_per_delivery=2),
            Store.open(tmp_path / "state.sqlite"),
            clock=clock,
            dry_run=True,
        )
        await engine.start()
        try:
            await engine.set_switch(engine.workers["api"], "pause")
            many = [alert(fingerprint=f"{i:016x}") for i in range(5)]
            body = WebhookPayload.model_validate({**payload(*many), "truncatedAlerts": 3})
            verdicts = await engine.receive(body, b"{}")
            assert [v.reason for v in verdicts] == ["paused", "paused"]
            reasons = [d["reason"] for d in await engine.store.decisions(None, 10)]
            assert reasons[:1] == ["truncated"] and "operator" in reasons
            assert (
                engine.metrics.registry.get_sample_value("glyph_remediator_alerts_truncated_total")
                == 6
            )
        finally:
            await engine.stop()

    asyncio.run(scenario())


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
        newest = await store.decisions(None, 1)
        assert newest[0]["at"] == now
        store.close()

    asyncio.run(scenario())
