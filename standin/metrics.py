"""The stand-in API's Prometheus metrics, named and labelled like vLLM's (`vllm:` prefix)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from standin.names import MODEL_NAME

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class VllmMetrics:
    """One registry per API process: request queue gauges, token counters, latency."""

    def __init__(self, waiting: Callable[[], int], running: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name"]
        r = self.registry
        running_gauge = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels,
            registry=r,
        )
        waiting_gauge = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels,
            registry=r,
        )
        kv_gauge = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            labels,
            registry=r,
        )
        running_gauge.labels(MODEL_NAME).set_function(running)
        waiting_gauge.labels(MODEL_NAME).set_function(waiting)
        kv_gauge.labels(MODEL_NAME).set_function(lambda: min(1.0, 0.1 * running()))
        self.generation_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=r,
        ).labels(MODEL_NAME)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        ).labels(MODEL_NAME)
        self.request_success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self.e2e_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(MODEL_NAME)
        ProcessCollector(registry=r)

    def finished(self, prompt: int, generated: int, reason: str, seconds: float) -> None:
        self.prompt_tokens.inc(prompt)
        self.generation_tokens.inc(generated)
        self.request_success.labels(MODEL_NAME, reason).inc()
        self.e2e_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
