"""The orchestrator under clock steps, operator switches and bounded deliveries (no HTTP)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from glyph_guard.common.config import Deployment, parse_config
from glyph_guard.remediator.models import WebhookPayload
from glyph_guard.remediator.orchestrator import Orchestrator
from glyph_guard.remediator.policy import ComponentState, backoff_delay
from glyph_guard.remediator.store.database import Store
from glyph_guard.remediator.store.queries import decisions
from glyph_guard_demo.testkit.doubles.harness import alert, payload


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


async def _judge_once(orchestrator: Orchestrator, clock: SteppedClock) -> str:
    body = delivery(clock)
    [verdict] = await orchestrator.receive(body, body.model_dump_json().encode())
    return verdict.reason


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_clock_step_neither_refills_the_budget_nor_stalls_a_restart(
    tmp_path: Path, step: float
) -> None:
    async def scenario() -> None:
        clock = SteppedClock()
        orchestrator = Orchestrator(
            deployment(tmp_path), Store.open(tmp_path / "state.sqlite"), clock=clock
        )
        await orchestrator.start()
        lane = orchestrator.lanes["api"]
        try:
            # four short-lived recoveries so far; the last restart was healthy 2 s ago
            now = clock.monotonic()
            lane.set_state(
                ComponentState(failures=4, last_restart_at=now - 40, healthy_since=now - 2)
            )
            clock.wall_now += step  # NTP steps the wall clock an hour
            assert await _judge_once(orchestrator, clock) == "gave_up"  # the 5th death within 10 s

            # a second death 1 s after a healthy restart: the back-off (2 s) runs on, unstalled
            lane.set_state(
                ComponentState(
                    failures=1,
                    last_restart_at=clock.monotonic() - 1,
                    healthy_since=clock.monotonic() - 1,
                )
            )
            clock.wall_now += step
            assert await _judge_once(orchestrator, clock) == "backoff"
            assert list(lane.wanted) == ["restart"]
            assert lane.state.last_restart_at is not None
            delay = backoff_delay(orchestrator.budget, 2)
            assert lane.state.last_restart_at + delay - clock.monotonic() == delay - 1
        finally:
            await orchestrator.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_persisted_times_survive_a_clock_step_between_runs(tmp_path: Path, step: float) -> None:
    async def scenario() -> None:
        clock = SteppedClock()
        config = deployment(tmp_path)
        orchestrator = Orchestrator(config, Store.open(tmp_path / "state.sqlite"), clock=clock)
        await orchestrator.start()
        now = clock.monotonic()
        orchestrator.lanes["api"].set_state(ComponentState(last_restart_at=now, healthy_since=now))
        await orchestrator.operate(orchestrator.lanes["api"], "resume")  # saves the state
        await orchestrator.stop()

        clock.wall_now += step
        clock.mono_now = 50.0  # a new process: another monotonic origin
        again = Orchestrator(config, Store.open(tmp_path / "state.sqlite"), clock=clock)
        await again.start()
        try:
            last = again.lanes["api"].state.last_restart_at
            assert last is not None
            # forward: the restart an hour ago; back: taken as now, never an hour in the future
            assert last == (clock.monotonic() - step if step > 0 else clock.monotonic())
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_operator_switch_and_truncated_delivery_are_recorded(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = SteppedClock()
        orchestrator = Orchestrator(
            deployment(tmp_path, max_alerts_per_delivery=2),
            Store.open(tmp_path / "state.sqlite"),
            clock=clock,
            dry_run=True,
        )
        await orchestrator.start()
        try:
            await orchestrator.operate(orchestrator.lanes["api"], "pause")
            many = [alert(fingerprint=f"{i:016x}") for i in range(5)]
            body = WebhookPayload.model_validate({**payload(*many), "truncatedAlerts": 3})
            verdicts = await orchestrator.receive(body, b"{}")
            assert [v.reason for v in verdicts] == ["paused", "paused"]
            reasons = [d["reason"] for d in await orchestrator.store.read(decisions(None, 10))]
            assert reasons[:1] == ["truncated"] and "operator" in reasons
            assert (
                orchestrator.metrics.registry.get_sample_value(
                    "glyph_remediator_alerts_truncated_total"
                )
                == 6
            )
        finally:
            await orchestrator.stop()

    asyncio.run(scenario())
