"""The remediator's own Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from glyph_guard.remediator.actions.base import ActionResult
from glyph_guard.remediator.reasons import DEFERRED, SKIPPED

PREFIX = "glyph_remediator_"
OUTCOMES = (
    "succeeded",
    "failed_to_stop",
    "failed_to_start",
    "unhealthy_after_start",
    "interrupted",
)
STORE_OPERATIONS = ("read", "write")
RESTART_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)


@dataclass(frozen=True)
class ComponentGauges:
    """One component's state at scrape time."""

    component: str
    budget_remaining: int
    failed_restarts: int
    gave_up: bool
    paused: bool
    busy: bool
    last_action_timestamp: float | None


class _StateCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Sequence[ComponentGauges]],
        dry_run: bool,
        pending_writes: Callable[[], int],
    ) -> None:
        self._snapshot = snapshot
        self._dry_run = dry_run
        self._pending_writes = pending_writes

    def collect(self) -> Iterable[Metric]:
        gauges = self._snapshot()
        families = {
            "budget": GaugeMetricFamily(
                PREFIX + "restart_budget_remaining",
                "Failed restarts still allowed before the remediator gives up.",
                labels=["component"],
            ),
            "failed": GaugeMetricFamily(
                PREFIX + "failed_restarts",
                "Consecutive restarts that gave no lasting healthy service (toward giving up).",
                labels=["component"],
            ),
            "gave_up": GaugeMetricFamily(
                PREFIX + "gave_up",
                "1 when the remediator gave up on the component until an operator resets it.",
                labels=["component"],
            ),
            "paused": GaugeMetricFamily(
                PREFIX + "paused",
                "1 when an operator paused remediation of the component.",
                labels=["component"],
            ),
            "busy": GaugeMetricFamily(
                PREFIX + "action_in_progress",
                "1 while an action on the component runs.",
                labels=["component"],
            ),
            "last": GaugeMetricFamily(
                PREFIX + "last_action_timestamp_seconds",
                "When the last action on the component finished (0: never).",
                labels=["component"],
            ),
        }
        for g in gauges:
            families["budget"].add_metric([g.component], g.budget_remaining)
            families["failed"].add_metric([g.component], g.failed_restarts)
            families["gave_up"].add_metric([g.component], float(g.gave_up))
            families["paused"].add_metric([g.component], float(g.paused))
            families["busy"].add_metric([g.component], float(g.busy))
            families["last"].add_metric([g.component], g.last_action_timestamp or 0.0)
        yield from families.values()
        yield GaugeMetricFamily(
            PREFIX + "dry_run",
            "1 when the remediator only records what it would do.",
            self._dry_run,
        )
        yield GaugeMetricFamily(
            PREFIX + "store_pending_writes",
            "Record batches not yet written to the state database (kept in memory, retried).",
            self._pending_writes(),
        )


class Metrics:
    """Counters the remediator updates as it goes, plus its state read at scrape time."""

    def __init__(
        self,
        components: Sequence[str],
        snapshot: Callable[[], Sequence[ComponentGauges]],
        dry_run: bool,
        pending_writes: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            PREFIX + "alerts_received", "Alerts received in webhook deliveries.", registry=r
        )
        self.deliveries = Counter(
            PREFIX + "webhook_deliveries", "Webhook deliveries accepted.", registry=r
        )
        self.acted = Counter(
            PREFIX + "alerts_acted",
            "Alerts (and operator requests) that started an action.",
            ["component", "action"],
            registry=r,
        )
        self.skipped = Counter(
            PREFIX + "alerts_skipped", "Alerts that did not act, by reason.", ["reason"], registry=r
        )
        self.deferred = Counter(
            PREFIX + "alerts_deferred",
            "Alerts that wait for their turn (cooldown, back-off, another action), by reason.",
            ["reason"],
            registry=r,
        )
        self.store_errors = Counter(
            PREFIX + "store_errors",
            "State database operations that failed or timed out (each is logged at once).",
            ["operation"],
            registry=r,
        )
        self.truncated = Counter(
            PREFIX + "alerts_truncated",
            "Alerts of deliveries beyond max_alerts_per_delivery, or truncated by Alertmanager.",
            registry=r,
        )
        self.restarts = Counter(
            PREFIX + "restarts",
            "Restarts finished, by outcome.",
            ["component", "outcome"],
            registry=r,
        )
        self.restart_duration = Histogram(
            PREFIX + "restart_duration_seconds",
            "How long restarts took, from stopping to verified healthy (or failing).",
            ["component"],
            buckets=RESTART_BUCKETS,
            registry=r,
        )
        self.cache_files = Counter(
            PREFIX + "cache_files_deleted",
            "Cache files deleted by clean_cache.",
            ["component"],
            registry=r,
        )
        self.cache_bytes = Counter(
            PREFIX + "cache_freed_bytes",
            "Bytes freed by clean_cache.",
            ["component"],
            registry=r,
        )
        self.gpu_resets = Counter(
            PREFIX + "gpu_resets",
            "reset_gpu actions finished, by outcome (refused: a process held the GPU).",
            ["component", "outcome"],
            registry=r,
        )
        for reason in sorted(SKIPPED):
            self.skipped.labels(reason)
        for reason in sorted(DEFERRED):
            self.deferred.labels(reason)
        for operation in STORE_OPERATIONS:
            self.store_errors.labels(operation)
        for name in components:
            for outcome in OUTCOMES:
                self.restarts.labels(name, outcome)
            self.restart_duration.labels(name)
            self.cache_files.labels(name)
            self.cache_bytes.labels(name)
        r.register(_StateCollector(snapshot, dry_run, pending_writes))

    def ended(self, component: str, action: str, result: ActionResult, took: float) -> None:
        """Count an action that ended: a restart's outcome and time, a cleaning's files."""
        if action == "restart":
            self.restarts.labels(component, result.outcome).inc()
            self.restart_duration.labels(component).observe(took)
        elif action == "reset_gpu":
            self.gpu_resets.labels(component, result.outcome).inc()
        else:
            self.cache_files.labels(component).inc(result.details.get("files_deleted", 0))
            self.cache_bytes.labels(component).inc(result.details.get("bytes_freed", 0))
