"""Restarts held while a GPU needs a reset or a reboot: the pure rule as a table, the intake's
refusal, and the resumption once NVML (the fake) shows the GPU back."""

from __future__ import annotations

import sys

import pytest

from glyph_guard.common.config import Budget, parse_config
from glyph_guard.common.xid_watch import XidWatch
from glyph_guard.remediator.gpu_health import GpuHealth, GpuState, restart_hold
from glyph_guard.remediator.intake import ComponentView, Context, judge_alert
from glyph_guard.remediator.models import Alert
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.reasons import Reason
from glyph_guard_demo.testkit.doubles.harness import alert
from glyph_guard_demo.testkit.fake_nvml import FakeDevice, FakeNvml

NOW = 5_000.0


@pytest.mark.parametrize(
    ("gpus", "held"),
    [
        ([], None),
        ([GpuState("GPU-a")], None),
        ([GpuState("GPU-a", required="restart_app")], None),
        ([GpuState("GPU-a", required="unknown")], None),
        ([GpuState("GPU-a", required="contact_support")], None),
        ([GpuState("GPU-a", required="reset_gpu")], "GPU GPU-a needs a reset_gpu"),
        ([GpuState("GPU-a", required="reboot")], "GPU GPU-a needs a reboot"),
        ([GpuState("GPU-a", lost=True)], "GPU GPU-a is lost"),
        ([GpuState("", lost=True)], "GPU (unnamed) is lost"),
        ([GpuState("GPU-a"), GpuState("GPU-b", required="reboot")], "GPU GPU-b needs a reboot"),
    ],
)
def test_restart_hold(gpus: list[GpuState], held: str | None) -> None:
    got = restart_hold(gpus)
    assert got == held if held is None else got is not None and got.startswith(held)


def config_component() -> ComponentView:
    config = parse_config(
        {
            "components": {
                "api": {
                    "match": {"cmdline": "never-matches-anything-x9"},
                    "caches": ["/tmp/glyph-gpu-health-test/**"],
                    "remediation": {
                        "actions": ["restart", "clean_cache"],
                        "restart": {"start": [sys.executable, "-c", "pass"]},
                    },
                }
            }
        }
    )
    return ComponentView(config.components[0], ComponentState())


def judged(health: GpuHealth, action: str = "restart") -> tuple[str, Reason, bool, bool, bool]:
    """(verdict, reason, remembered, launched, state changed)"""
    item = Alert.model_validate(alert(action=action))
    ctx = Context(Budget(), False, None, NOW, health.hold())
    got = judge_alert(item, config_component(), ctx, seen=False)
    return got.verdict, got.reason, got.seen, got.launch, got.state is not None


def test_refused_while_the_gpu_needs_a_reset_and_resumed_once_it_is_back() -> None:
    fake = FakeNvml([FakeDevice("GPU-aaaa"), FakeDevice("GPU-bbbb")])
    health = GpuHealth(XidWatch(fake, rediscover_seconds=0))
    health.watch.poll(wait_ms=0)
    assert judged(health) == ("acted", Reason.ACTED, True, True, False)
    fake.xid(1, 13)  # an application fault: a restart is what helps
    health.watch.poll(wait_ms=0)
    assert judged(health) == ("acted", Reason.ACTED, True, True, False)
    fake.xid(1, 48)  # double-bit ECC: the GPU needs a reset
    health.watch.poll(wait_ms=0)
    # refused, not remembered (acts once the GPU is back), and no budget spent (no new state)
    assert judged(health) == ("skipped", Reason.GPU_NEEDS_RESET, False, False, False)
    assert judged(health, "clean_cache")[1] == Reason.ACTED  # only restarts are futile
    fake.xid(1, 13)  # a later, milder XID does not lift the hold
    health.watch.poll(wait_ms=0)
    assert judged(health)[1] == Reason.GPU_NEEDS_RESET
    fake.lose(1)  # the reset: the GPU drops off and comes back
    health.watch.poll(wait_ms=0)
    health.watch.poll(wait_ms=0)
    assert judged(health)[1] == Reason.GPU_NEEDS_RESET  # lost: still held
    fake.devices[1].lost = False
    health.watch.poll(wait_ms=0)
    assert judged(health) == ("acted", Reason.ACTED, True, True, False)
    health.stop()
    assert fake.references == 0


def test_a_reboot_starts_with_a_healthy_gpu_and_no_nvml_holds_nothing() -> None:
    fake = FakeNvml([FakeDevice("GPU-aaaa")])
    health = GpuHealth(XidWatch(fake, rediscover_seconds=0))
    health.watch.poll(wait_ms=0)
    fake.xid(0, 79)
    health.watch.poll(wait_ms=0)
    assert judged(health)[1] == Reason.GPU_NEEDS_RESET
    health.stop()
    rebooted = GpuHealth(XidWatch(FakeNvml([FakeDevice("GPU-aaaa")])))  # a new process, a new watch
    rebooted.watch.poll(wait_ms=0)
    assert judged(rebooted)[1] == Reason.ACTED
    nothing = GpuHealth(XidWatch(FakeNvml([], library=False)))
    nothing.watch.poll(wait_ms=0)
    assert nothing.hold() is None
