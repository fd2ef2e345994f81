"""The judgement of an alert's restart against the component now, as a table."""

from __future__ import annotations

import pytest

from glyph_guard.remediator.incarnation import (
    STARTS_AT_LAG_SECONDS,
    about_health,
    health_look,
    judge_now,
)

FAILED_AT = 1000.0  # the alert's startsAt (monotonic)
ALLOWANCE = 60.0  # the component's start-up allowance
NOW = 1100.0

OLD = 500.0  # an incarnation that ran before the failure began
SEEN = FAILED_AT - STARTS_AT_LAG_SECONDS  # one that ran when the rule's data was sampled
NEW = 1080.0  # one started 80 s after it: 20 s ago at NOW
FRESH = 1090.0  # 10 s ago at NOW: inside its allowance
LONG_AGO = NOW - ALLOWANCE - 1  # a new incarnation past its allowance


@pytest.mark.parametrize(
    ("about", "started", "healthy", "now", "verdict", "not_before"),
    [
        # nothing runs: whatever the alert is about, act
        (True, None, False, NOW, "act", None),
        (False, None, False, NOW, "act", None),
        # the incarnation the alert is about: healthy now clears only an alert about health
        (True, OLD, True, NOW, "recovered", None),
        (True, OLD, False, NOW, "act", None),
        (False, OLD, True, NOW, "act", None),
        (False, OLD, False, NOW, "act", None),
        (True, SEEN, True, NOW, "recovered", None),
        (False, SEEN, True, NOW, "act", None),  # it ran when the rule looked: the one it is about
        # a new incarnation (restarted by someone else): healthy is recovered, whatever the alert
        (True, NEW, True, NOW, "recovered", None),
        (False, NEW, True, NOW, "recovered", None),
        (False, FAILED_AT - 1, True, NOW, "recovered", None),  # after the data the rule saw
        # still starting: left alone, looked at again a second later
        (True, FRESH, False, NOW, "wait", NOW + 1),
        (False, FRESH, False, NOW, "wait", NOW + 1),
        # ... but never past its allowance
        (False, FRESH, False, FRESH + ALLOWANCE - 0.5, "wait", FRESH + ALLOWANCE),
        (True, FRESH, False, FRESH + ALLOWANCE, "act", None),
        (False, LONG_AGO, False, NOW, "act", None),
        # a clock that went back: a start after now is as old as now
        (False, NOW + 5, False, NOW, "wait", NOW + 1),
    ],
)
def test_judge_now(
    about: bool,
    started: float | None,
    healthy: bool,
    now: float,
    verdict: str,
    not_before: float | None,
) -> None:
    got = judge_now(
        about_health=about,
        failed_at=FAILED_AT,
        started_at=started,
        healthy=healthy,
        allowance=ALLOWANCE,
        now=now,
    )
    assert (got.verdict, got.not_before) == (verdict, not_before), got.detail
    assert got.detail


@pytest.mark.parametrize(
    ("about", "started", "look"),
    [
        (True, None, "none"),  # no process: nothing to probe
        (False, None, "none"),
        (True, OLD, "glance"),  # the incarnation it is about: cleared only by a quick answer
        (False, OLD, "none"),  # not about health, the incarnation it is about: acts unprobed
        (False, NEW, "full"),  # a new incarnation: healthy, or still starting
        (True, NEW, "full"),
    ],
)
def test_health_is_asked_only_when_it_decides(
    about: bool, started: float | None, look: str
) -> None:
    assert health_look(about_health=about, started_at=started, failed_at=FAILED_AT) == look


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"about": "health"}, True),
        ({"about": "leak"}, False),
        ({"alertname": "GlyphComponentDown"}, False),  # a rule that does not say
        ({}, False),
    ],
)
def test_about_health_is_what_the_rule_says(labels: dict[str, str], expected: bool) -> None:
    assert about_health(labels) is expected
