"""The stand-in API's Prometheus metrics, named and labelled like vLLM's (`vllm:` prefix,
`model_name` and `engine` labels)."""

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

from glyph_guard_demo.standin.names import ENGINE_INDEX, MODEL_NAME

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STEP_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")  # sleep level 0, 1, 2


def _is_level(sleep_level: Callable[[], int], level: int) -> Callable[[], float]:
    return lambda: 1.0 if sleep_level() == level else 0.0


class VllmMetrics:
    """One registry per API process: queue gauges, step histogram, token counters, latency."""

    def __init__(
        self,
        waiting: Callable[[], int],
        running: Callable[[], int],
        sleep_level: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name", "engine"]
        engine = (MODEL_NAME, ENGINE_INDEX)
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
        running_gauge.labels(*engine).set_function(running)
        waiting_gauge.labels(*engine).set_function(waiting)
        kv_gauge.labels(*engine).set_function(lambda: min(1.0, 0.1 * running()))
        sleep_gauge = Gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
            "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep "
            "level 2.",
            [*labels, "sleep_state"],
            registry=r,
        )
        for level, state in enumerate(SLEEP_STATES):
            sleep_gauge.labels(*engine, state).set_function(_is_level(sleep_level, level))
        self.iteration_tokens = Histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            labels,
            buckets=_STEP_TOKEN_BUCKETS,
            registry=r,
        ).labels(*engine)
        self.generation_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=r,
        ).labels(*engine)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        ).labels(*engine)
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
        ).labels(*engine)
        ProcessCollector(registry=r)

    def step(self, tokens: int) -> None:
        self.iteration_tokens.observe(tokens)

    def finished(self, prompt: int, generated: int, reason: str, seconds: float) -> None:
        self.prompt_tokens.inc(prompt)
        self.generation_tokens.inc(generated)
        self.request_success.labels(MODEL_NAME, ENGINE_INDEX, reason).inc()
        self.e2e_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
