"""The intake as tables: alerts and operator requests judged purely, with an injected clock."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import pytest

from glyph_guard.common.config import Budget, Component, parse_config
from glyph_guard.remediator.intake import (
    ComponentView,
    Context,
    judge_alert,
    judge_operator,
    judge_turn,
    key_of,
)
from glyph_guard.remediator.metrics import Metrics
from glyph_guard.remediator.models import Alert
from glyph_guard.remediator.policy import ComponentState, Origin, backoff_delay
from glyph_guard.remediator.reasons import DEFERRED, SKIPPED, Reason
from glyph_guard_demo.testkit.doubles.harness import alert

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
JUST = ComponentState(last_restart_at=NOW - 1, healthy_since=NOW - 1)
STREAK = ComponentState(failures=3, last_restart_at=NOW - 3, healthy_since=None)
BEGAN = NOW - 2  # when the table's alerts began: before JUST's restart, after STREAK's


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
    got = judge_alert(item, seen_view, Context(B, dry_run, host, NOW), seen=seen, failed_at=BEGAN)
    assert (got.verdict, got.reason, got.seen, got.launch, got.enqueue) == expected


def test_intake_details() -> None:
    other = judge_alert(labelled(host="gpu-7"), view(), Context(B, False, "gpu-3", NOW), seen=False)
    assert other.detail is not None and "'gpu-7'" in other.detail and "'gpu-3'" in other.detail
    joined = judge_alert(
        FIRING, view(busy="restart", busy_action_id=7), Context(B, False, None, NOW), seen=False
    )
    assert joined.action_id == 7
    waiting = view(waiting={"restart": KEY, "clean_cache": ("x", "y")})
    resolved = Alert.model_validate(alert(status="resolved"))
    assert judge_alert(resolved, waiting, Context(B, False, None, NOW), seen=False).cancel == (
        "restart",
    )
    cooling = judge_alert(
        FIRING, view(state=JUST), Context(B, False, None, NOW), seen=False, failed_at=BEGAN
    )
    assert cooling.recheck is True
    long = labelled(component="x" * 300)
    unknown = judge_alert(long, None, Context(B, False, None, NOW), seen=False)
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
    # the orchestrator's own; gpu_needs_reset: tests/unit/remediator/test_gpu_health.py;
    # gpu_reset_off: tests/unit/remediator/test_reset_gpu.py;
    # waiting_for_idle: tests/unit/remediator/test_planning.py;
    # starting: tests/unit/remediator/test_incarnation.py
    others = {"operator", "recovered", "truncated", "gpu_needs_reset", "gpu_reset_off"}
    assert set(Reason) - intake_reasons == others | {"waiting_for_idle", "starting"}


# name, command, view, dry_run -> verdict, reason, refused, launch, state after (None: unchanged)
OPERATOR: list[tuple[str, str, ComponentView, bool, tuple[Any, ...]]] = [
    ("restart", "restart", view(), False, ("acted", "acted", False, True, None)),
    (
        "restart free of back-off",
        "restart",
        view(state=STREAK),
        False,
        ("acted", "acted", False, True, None),
    ),
    (
        "restart after giving up",
        "restart",
        view(state=ComponentState(gave_up=True)),
        False,
        ("acted", "acted", False, True, None),
    ),
    (
        "restart joins nothing running",
        "restart",
        view(waiting={"restart": KEY}),
        False,
        ("acted", "acted", False, True, None),
    ),
    (
        "restart while paused",
        "restart",
        view(state=ComponentState(paused=True)),
        False,
        ("skipped", "paused", False, False, None),
    ),
    ("restart in a dry run", "restart", view(), True, ("skipped", "dry_run", False, False, None)),
    (
        "restart while cleaning",
        "restart",
        view(busy="clean_cache", busy_action_id=4),
        False,
        ("skipped", "busy", True, False, None),
    ),
    (
        "restart not allowed",
        "restart",
        replace(view(), component=component(actions=["clean_cache"])),
        False,
        ("skipped", "action_not_allowed", True, False, None),
    ),
    (
        "pause",
        "pause",
        view(busy="restart"),
        False,
        ("acted", "operator", False, False, ComponentState(paused=True)),
    ),
    (
        "resume",
        "resume",
        view(state=ComponentState(paused=True)),
        True,
        ("acted", "operator", False, False, ComponentState()),
    ),
    (
        "reset",
        "reset",
        view(state=replace(STREAK, gave_up=True, failures=5)),
        False,
        ("acted", "operator", False, False, replace(STREAK, failures=0)),
    ),
]


@pytest.mark.parametrize(
    ("command", "seen_view", "dry_run", "expected"),
    [case[1:] for case in OPERATOR],
    ids=[case[0] for case in OPERATOR],
)
def test_operator_requests(
    command: str, seen_view: ComponentView, dry_run: bool, expected: tuple[Any, ...]
) -> None:
    got = judge_operator(seen_view, Context(B, dry_run, None, NOW), command)
    assert (got.verdict, got.reason, got.refused, got.launch, got.state) == expected


def test_operator_refusals_say_why() -> None:
    busy = judge_operator(
        view(busy="clean_cache", busy_action_id=4), Context(B, False, None, NOW), "restart"
    )
    assert busy.detail == "a clean_cache of api is running (action 4)"
    other = replace(view(), component=component(actions=["clean_cache"]))
    refused = judge_operator(other, Context(B, False, None, NOW), "restart")
    assert refused.detail == "component api does not allow the restart action"


# name, view, origin, recovered -> verdict, reason, launch, cancel, not_before
TURNS: list[tuple[str, ComponentView, Origin, bool, tuple[Any, ...]]] = [
    ("its turn acts", view(), "alert", False, ("acted", "acted", True, (), None)),
    (
        "a retry waits out the back-off",
        view(state=STREAK),
        "retry",
        False,
        ("deferred", "backoff", False, (), NOW - 3 + backoff_delay(B, 3)),
    ),
    (
        "paused meanwhile",
        view(state=ComponentState(paused=True)),
        "alert",
        False,
        ("skipped", "paused", False, ("restart",), None),
    ),
    (
        "healthy again",
        view(),
        "alert",
        True,
        ("skipped", "recovered", False, ("restart",), None),
    ),
]


@pytest.mark.parametrize(
    ("seen_view", "origin", "recovered", "expected"),
    [case[1:] for case in TURNS],
    ids=[case[0] for case in TURNS],
)
def test_a_waiting_action_on_its_turn(
    seen_view: ComponentView, origin: Origin, recovered: bool, expected: tuple[Any, ...]
) -> None:
    ctx = Context(B, False, None, NOW)
    got = judge_turn(seen_view, ctx, "restart", origin, NOW - 1, recovered=recovered)
    assert (got.verdict, got.reason, got.launch, got.cancel, got.not_before) == expected
