"""Alertmanager webhook (version 4) payloads and the remediator's answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["firing", "resolved"]
Text = Annotated[str, Field(max_length=4096)]


class _Incoming(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Alert(_Incoming):
    """One alert of a delivery; its own status counts, not the group's."""

    status: Status
    labels: dict[Text, Text]
    annotations: dict[Text, Text] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: Text = ""
    fingerprint: Annotated[str, Field(min_length=1, max_length=128)]


class WebhookPayload(_Incoming):
    """A notification as Alertmanager's webhook receiver sends it; unknown fields are ignored."""

    version: Literal["4"]
    groupKey: Text = ""
    truncatedAlerts: Annotated[int, Field(ge=0)] = 0
    status: Status
    receiver: Text = ""
    groupLabels: dict[Text, Text] = Field(default_factory=dict)
    commonLabels: dict[Text, Text] = Field(default_factory=dict)
    commonAnnotations: dict[Text, Text] = Field(default_factory=dict)
    externalURL: Text = ""
    alerts: list[Alert]


Disposition = Literal["acted", "deferred", "skipped"]


class AlertVerdict(BaseModel):
    """What became of one alert of a delivery."""

    fingerprint: str
    verdict: Disposition
    reason: str


class Accepted(BaseModel):
    """The answer to a delivery: it was recorded; acting happens in the background."""

    alerts: list[AlertVerdict]


class ComponentStatus(BaseModel):
    """A component's remediation state, as operators see it."""

    component: str
    paused: bool
    gave_up: bool
    budget_remaining: int
    busy: str | None
    waiting: list[str]
    dry_run: bool


class OperatorRestart(BaseModel):
    """The answer to a manual restart."""

    component: str
    verdict: Disposition
    reason: str
    action_id: int | None


class ActionRecord(BaseModel):
    """One action the remediator took (or started), with timings and outcome."""

    id: int
    component: str
    action: str
    origin: str
    started_at: float
    finished_at: float | None
    duration_seconds: float | None
    outcome: str | None
    reason: str | None
    details: dict[str, object]


class DecisionRecord(BaseModel):
    """One judgement of an alert or an operator request."""

    id: int
    at: float
    origin: str
    fingerprint: str | None
    starts_at: str | None
    alert_status: str | None
    alertname: str | None
    component: str | None
    action: str | None
    verdict: str
    reason: str
    detail: str | None
    action_id: int | None


# -- operator views (glyph-remediator status, explain, history); times are wall-clock seconds --

Health = Literal["healthy", "unhealthy"]


class WaitingAction(BaseModel):
    """An action waiting for its turn, and when that comes."""

    action: str
    origin: str
    reason: str  # what holds it: cooldown, backoff, busy, waiting_for_idle, paused, gave_up, ready
    until: float | None  # when it may start (None: when what holds it ends)


class ComponentReport(ComponentStatus):
    """A component's status with what an operator asks next: why waiting, until when, health."""

    paused_until: float | None = None
    pause_reason: str | None = None
    failed_restarts: int = 0
    backoff_seconds: float = 0.0  # what the next restart waits after the last one
    next_restart_at: float | None = None  # the earliest an alert's restart may start
    waiting_for: list[WaitingAction] = Field(default_factory=list)
    health: Health | None = None  # probed on request (?probe=true): process present, probes pass
    last_action: ActionRecord | None = None


class Explanation(BaseModel):
    """Why the last alert on a component did or did not act, and when one would act next."""

    component: str
    last_alert: list[DecisionRecord]  # the last alert's decisions, oldest first (empty: none)
    action: ActionRecord | None  # the action that alert started or joined
    why: str
    next: str
    next_at: float | None  # when an alert arriving now would act (None: now, or never)


class Incident(BaseModel):
    """One alert (or operator request) and everything it led to, oldest first."""

    component: str | None
    origin: str
    alertname: str | None
    fingerprint: str | None
    starts_at: str | None
    first_at: float
    last_at: float
    decisions: list[DecisionRecord]
    actions: list[ActionRecord]
