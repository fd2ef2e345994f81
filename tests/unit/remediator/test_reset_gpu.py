"""The reset_gpu action's pure decisions as tables (injected clock): whether an alert may reset,
which lane a GPU alert goes to, when a GPU is safe to reset, the per-GPU hold, and its config."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from glyph_guard.common.config import Budget, Component, ConfigError, parse_config
from glyph_guard.common.xid_watch import XidWatch
from glyph_guard.remediator.actions.reset_gpu import gpu_lane, refusal, reset_argv
from glyph_guard.remediator.gpu_health import GpuHealth, GpuState, restart_hold
from glyph_guard.remediator.intake import ComponentView, Context, judge_alert
from glyph_guard.remediator.models import Alert
from glyph_guard.remediator.policy import ComponentState
from glyph_guard_demo.testkit.doubles.harness import alert
from glyph_guard_demo.testkit.fake_nvml import FakeDevice, FakeNvml

NOW = 5_000.0


def components(**by_name: dict[str, Any]) -> tuple[Component, ...]:
    """Components named by keyword, each given its `gpus` and remediation `actions`."""
    data = {
        name: {
            "match": {"cmdline": "never-matches-anything-x9"},
            "gpus": fields.get("gpus", []),
            "remediation": {
                "actions": fields.get("actions", ["restart"]),
                "restart": {"start": [sys.executable, "-c", "pass"]},
            },
        }
        for name, fields in by_name.items()
    }
    return parse_config({"components": data}).components


API = components(api={"gpus": [0], "actions": ["restart", "reset_gpu"]})[0]
DEFAULT = components(api={"gpus": [0]})[0]  # reset_gpu is off unless listed in its actions
HELD = "GPU GPU-a needs a reset_gpu after an XID before restarts can help"


# name, component, state, dry_run, GPU hold, labels -> verdict, reason, launch
CASES: list[tuple[str, Component, ComponentState, bool, str | None, dict[str, str], Any]] = [
    (
        "off by default",
        DEFAULT,
        ComponentState(),
        False,
        None,
        {},
        ("skipped", "action_not_allowed", False),
    ),
    ("enabled", API, ComponentState(), False, None, {}, ("acted", "acted", True)),
    ("the hold is for restarts", API, ComponentState(), False, HELD, {}, ("acted", "acted", True)),
    ("paused", API, ComponentState(paused=True), False, None, {}, ("skipped", "paused", False)),
    ("dry run", API, ComponentState(), True, None, {}, ("skipped", "dry_run", False)),
    (
        "gave up: like every action, until an operator resets the component",
        API,
        ComponentState(gave_up=True, failures=5),
        False,
        None,
        {},
        ("skipped", "gave_up", False),
    ),
    (
        "labels naming a GPU or a path change nothing",
        API,
        ComponentState(),
        False,
        None,
        {"gpu": "7; reboot", "nvidia_smi": "/tmp/evil", "index": "3"},
        ("acted", "acted", True),
    ),
]


@pytest.mark.parametrize(
    ("component", "state", "dry_run", "hold", "labels", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_judging_a_reset_gpu_alert(
    component: Component,
    state: ComponentState,
    dry_run: bool,
    hold: str | None,
    labels: dict[str, str],
    expected: tuple[str, str, bool],
) -> None:
    item = Alert.model_validate(alert(action="reset_gpu", **labels))
    ctx = Context(Budget(), dry_run, None, NOW, hold)
    got = judge_alert(item, ComponentView(component, state), ctx, seen=False)
    assert (got.verdict, got.reason.value, got.launch) == expected
    assert got.state is None  # spends no restart budget


def test_a_gpu_alert_no_component_allows_is_refused_with_its_own_reason() -> None:
    item = Alert.model_validate(alert(component="gpu", action="reset_gpu", gpu="0"))
    got = judge_alert(item, None, Context(Budget(), False, None, NOW), seen=False)
    assert (got.verdict, got.reason.value, got.seen) == ("skipped", "gpu_reset_off", False)
    assert got.detail == "no component allows reset_gpu on GPU '0'"


ON_0 = components(
    api={"gpus": [0, 1], "actions": ["restart", "reset_gpu"]},
    ui={"gpus": [2]},
    other={"gpus": [3], "actions": ["restart", "reset_gpu"]},
)


@pytest.mark.parametrize(
    ("labels", "lane"),
    [
        ({"component": "gpu", "action": "reset_gpu", "gpu": "0"}, "api"),
        ({"component": "gpu", "action": "reset_gpu", "gpu": "1"}, "api"),
        ({"component": "gpu", "action": "reset_gpu", "gpu": "3"}, "other"),
        ({"component": "gpu", "action": "reset_gpu", "gpu": "2"}, None),  # ui does not allow it
        ({"component": "gpu", "action": "reset_gpu", "gpu": "5"}, None),  # nobody's GPU
        ({"component": "gpu", "action": "reset_gpu", "gpu": "0 --force"}, None),
        ({"component": "gpu", "action": "reset_gpu", "gpu": "00"}, None),
        ({"component": "gpu", "action": "reset_gpu"}, None),
        ({"component": "gpu", "action": "restart", "gpu": "0"}, None),
        ({"component": "api", "action": "reset_gpu", "gpu": "0"}, None),  # named: its own lane
    ],
)
def test_which_lane_a_gpu_alert_goes_to(labels: dict[str, str], lane: str | None) -> None:
    assert gpu_lane(labels, ON_0) == lane


Running = dict[str, frozenset[int]]
# name, NVML's processes on GPU 0, our components on it that run, what its XIDs asked for
# -> refusal reason
REFUSALS: list[tuple[str, frozenset[int] | None, Running, str | None, str | None]] = [
    ("free", frozenset(), {}, None, None),
    ("free after a reset XID", frozenset(), {}, "reset_gpu", None),
    ("free, our component on it stopped", frozenset(), {"api": frozenset()}, None, None),
    ("NVML cannot say", None, {}, None, "gpu_unreadable"),
    ("a compute or graphics process", frozenset({4242}), {}, None, "gpu_in_use"),
    ("our component runs", frozenset(), {"api": frozenset({77})}, None, "component_running"),
    ("both", frozenset({4242}), {"api": frozenset({77})}, None, "gpu_in_use"),
    ("free, but an XID asks for a reboot", frozenset(), {}, "reboot", "needs_reboot"),
    ("lost after a reboot XID", None, {}, "reboot", "needs_reboot"),
]


@pytest.mark.parametrize(
    ("holders", "running", "required", "reason"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_when_a_gpu_may_be_reset(
    holders: frozenset[int] | None, running: Running, required: str | None, reason: str | None
) -> None:
    got = refusal(0, holders, running, required)
    assert (got.reason if got else None) == reason
    if got is not None:
        assert "GPU 0" in got.detail


def test_the_argv_is_fixed() -> None:
    assert reset_argv("/usr/bin/nvidia-smi", 3) == ["/usr/bin/nvidia-smi", "--gpu-reset", "-i", "3"]


NEEDS_0 = GpuState("GPU-a", required="reset_gpu", index=0)
LOST_1 = GpuState("GPU-b", lost=True, index=1)
UNNAMED = GpuState("", lost=True)  # lost before NVML could name it: its index is unknown


@pytest.mark.parametrize(
    ("gpus", "used", "held"),
    [
        ([NEEDS_0], (), True),  # not configured: any GPU of the host holds
        ([NEEDS_0], (0,), True),
        ([NEEDS_0], (1,), False),  # a component on another GPU restarts
        ([NEEDS_0, LOST_1], (1,), True),
        ([NEEDS_0, LOST_1], (2, 3), False),
        ([UNNAMED], (2,), True),  # which GPU it is cannot be known: it counts
        ([GpuState("GPU-c", index=2)], (2,), False),
    ],
)
def test_the_hold_is_per_gpu_where_the_config_says(
    gpus: list[GpuState], used: tuple[int, ...], held: bool
) -> None:
    assert (restart_hold(gpus, used) is not None) == held


def test_the_hold_follows_the_gpu_that_needs_a_reset_and_a_reset_lifts_it() -> None:
    fake = FakeNvml([FakeDevice("GPU-aaaa"), FakeDevice("GPU-bbbb")])
    health = GpuHealth(XidWatch(fake, rediscover_seconds=0))
    health.watch.poll(wait_ms=0)
    fake.xid(0, 48)  # double-bit ECC on GPU 0: it needs a reset
    health.watch.poll(wait_ms=0)
    assert health.hold((1,)) is None  # a component on GPU 1 restarts
    assert health.hold((0,)) is not None
    assert health.hold() is not None  # a component whose GPUs are not configured waits
    health.reset_done(1)
    assert health.hold((0,)) is not None
    health.reset_done(0)  # the reset_gpu action reset it
    assert health.hold((0,)) is None and health.hold() is None


@pytest.mark.parametrize(
    ("fields", "remediator", "message"),
    [
        (
            {"actions": ["restart", "reset_gpu"]},
            {},
            "components.api: the 'reset_gpu' action needs 'gpus'",
        ),
        ({"gpus": [0, 0]}, {}, "components.api: gpus: each GPU index once"),
        ({"gpus": [-1]}, {}, "components.api.gpus[0]: Input should be greater than or equal to 0"),
        ({"gpus": ["0; ls"]}, {}, "components.api.gpus[0]: Input should be a valid integer"),
        ({}, {"gpu_reset": {"nvidia_smi": "bin/nvidia-smi"}}, "remediator.gpu_reset: nvidia_smi:"),
        ({}, {"gpu_reset": {"timeout_seconds": 0}}, "remediator.gpu_reset.timeout_seconds:"),
        ({}, {"gpu_reset": {"path": "/x"}}, "remediator.gpu_reset.path: Extra inputs"),
    ],
)
def test_config_errors_name_the_field(
    fields: dict[str, Any], remediator: dict[str, Any], message: str
) -> None:
    api = {
        "match": {"cmdline": "x"},
        "remediation": {"actions": fields.get("actions", ["restart"]), "restart": {"start": ["x"]}},
        **({"gpus": fields["gpus"]} if "gpus" in fields else {}),
    }
    with pytest.raises(ConfigError) as caught:
        parse_config({"components": {"api": api}, "remediator": remediator}, "test")
    assert f"test: {message}" in str(caught.value)


def test_defaults() -> None:
    settings = parse_config({"components": {"api": {"match": {"cmdline": "x"}}}}).remediator
    assert (settings.gpu_reset.nvidia_smi, settings.gpu_reset.timeout_seconds) == (
        "nvidia-smi",
        120.0,
    )
