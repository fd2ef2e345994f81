"""Whether an alert's restart still concerns the component now: its incarnation, its health."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ABOUT_LABEL = "about"  # a rule's label saying what its alert is about
HEALTH = "health"  # about the component's health: healthy now (the shared model) clears it
RECHECK_SECONDS = 1.0  # how often a new incarnation still starting is looked at again
# startsAt is when the rule fired (Prometheus sends its FiredAt); what it saw is older by up to
# an exporter sample, a scrape and an evaluation (1 s each as shipped): a process started this
# long before startsAt may be one the rule never saw. Every alert the remediator acts on is
# about a process that ran longer than this (an engine hang, a leak; a death needs none).
STARTS_AT_LAG_SECONDS = 3.0
GLANCE_SECONDS = 1.0  # the incarnation an alert is about clears it only by answering this fast
HealthLook = Literal["none", "glance", "full"]


@dataclass(frozen=True)
class Standing:
    """What to do about an alert's restart, given what is true now, and why."""

    verdict: Literal["act", "wait", "recovered"]
    detail: str
    not_before: float | None = None  # for "wait": when to look again


def about_health(labels: Mapping[str, str]) -> bool:
    """Whether an alert is about the component's health (down, unhealthy, hung, stuck starting);
    others (a leak, a cache) are not cleared by the component answering its probes."""
    return labels.get(ABOUT_LABEL) == HEALTH


def new_incarnation(started_at: float | None, failed_at: float) -> bool:
    """Whether the processes running now started after what the alert saw (failed_at: its
    startsAt)."""
    return started_at is not None and started_at > failed_at - STARTS_AT_LAG_SECONDS


def health_look(*, about_health: bool, started_at: float | None, failed_at: float) -> HealthLook:
    """How much of the component's health judging needs now: none (no probe round), a glance
    at the incarnation the alert is about (one attempt per probe, GLANCE_SECONDS at most: a
    slower answer leaves the alert standing, as it stood without the look), or a full round for
    a new incarnation (healthy, or still starting: a slow answer must not count as a failure)."""
    if started_at is None:
        return "none"
    if new_incarnation(started_at, failed_at):
        return "full"
    return "glance" if about_health else "none"


def judge_now(
    *,
    about_health: bool,
    failed_at: float,
    started_at: float | None,
    healthy: bool,
    allowance: float,
    now: float,
) -> Standing:
    """Judge an alert's restart against the component now (times on one monotonic timeline).

    failed_at: when the alert's failure began (startsAt); started_at: when the oldest main
    process running now started (None: none runs); healthy: by the shared health model (the
    canary included), asked only as health_look says; allowance: the component's start-up
    allowance (remediation.startup_timeout_seconds).
    """
    if started_at is None:
        return Standing("act", "no process of the component runs now")
    if new_incarnation(started_at, failed_at):
        after = f"started {started_at - failed_at:+.1f} s from the alert's startsAt"
        if healthy:
            return Standing("recovered", f"a new incarnation ({after}) is healthy now")
        age = max(0.0, now - started_at)
        if age < allowance:
            again = min(now + RECHECK_SECONDS, started_at + allowance)
            detail = f"a new incarnation ({after}) is starting: {age:.0f} s of its {allowance:g} s"
            return Standing("wait", detail, again)
        detail = f"a new incarnation ({after}) is still unhealthy after its {allowance:g} s"
        return Standing("act", detail + " start-up allowance")
    if not about_health:
        return Standing("act", "the incarnation the alert is about still runs")
    if healthy:
        return Standing("recovered", "the incarnation the alert is about is healthy now")
    return Standing("act", "the incarnation the alert is about is unhealthy now")
