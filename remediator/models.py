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
