"""Why an alert or a request did what it did: the one list of reasons recorded and counted."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """The reason recorded with every decision (and the `reason` label of the counters)."""

    def __str__(self) -> str:
        return self.value

    ACTED = "acted"  # an action started
    OPERATOR = "operator"  # an operator's switch (pause, resume, reset), recorded
    COOLDOWN = "cooldown"  # deferred: a restart just finished; looked at again when it ends
    BACKOFF = "backoff"  # deferred: consecutive restarts wait longer and longer
    BUSY = "busy"  # deferred: another action on the component runs
    STARTING = "starting"  # deferred: a new incarnation starts (incarnation); acts if it fails to
    COALESCED = "coalesced"  # joins the same action, running or waiting
    DUPLICATE = "duplicate"  # this alert (fingerprint and startsAt) was judged before
    RESOLVED = "resolved"  # resolved alerts never act (they cancel what they left waiting)
    WRONG_HOST = "wrong_host"  # the alert's host label names another host
    UNKNOWN_COMPONENT = "unknown_component"
    ACTION_NOT_ALLOWED = "action_not_allowed"
    PAUSED = "paused"
    GAVE_UP = "gave_up"
    DRY_RUN = "dry_run"
    RECOVERED = "recovered"  # healthy again when its turn came: nothing to do
    TRUNCATED = "truncated"  # beyond the delivery bound (max_alerts_per_delivery)
    GPU_NEEDS_RESET = "gpu_needs_reset"  # a restart cannot help until a GPU is reset (gpu_health)
    GPU_RESET_OFF = "gpu_reset_off"  # a GPU alert's reset_gpu: no component allows it on that GPU
    WAITING_FOR_IDLE = "waiting_for_idle"  # deferred: a planned restart waits for an idle engine


DEFERRED = frozenset(
    {Reason.COOLDOWN, Reason.BACKOFF, Reason.BUSY, Reason.WAITING_FOR_IDLE, Reason.STARTING}
)
SKIPPED = frozenset(Reason) - DEFERRED - {Reason.ACTED, Reason.OPERATOR}
