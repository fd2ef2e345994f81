"""Parsing a vLLM engine's own /metrics: queue, steps, tokens and sleep state, engines folded."""

from __future__ import annotations

import json
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
STEPS = "vllm:iteration_tokens_total"  # a histogram: its _count advances once per engine step
SLEEP = "vllm:engine_sleep_state"
GENERATED = "vllm:generation_tokens_total"  # a counter: tokens generated since the start
FAMILIES = (WAITING, RUNNING, STEPS, SLEEP, GENERATED)


@dataclass(frozen=True)
class EngineReading:
    """One read of the engine's metrics, summed over its label sets (model_name, engine)."""

    waiting: float = 0.0
    running: float = 0.0
    steps: float | None = None  # None when the engine does not publish the step histogram
    asleep: bool = False
    generation_tokens: float | None = None  # None when the engine does not publish the counter
    # requests the API holds (vLLM's GET /load with --enable-server-load-tracking); None when
    # it does not say. vLLM's gauges never show a request sent to an engine already hung.
    held: float | None = None

    @property
    def has_work(self) -> bool:
        return self.waiting + self.running + (self.held or 0.0) > 0


def _wanted(line: str) -> bool:
    name = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
    return name.startswith(FAMILIES)


def parse_server_load(body: bytes) -> float | None:
    """vLLM's /load answer ({"server_load": N}); None when it is not one."""
    try:
        load = json.loads(body).get("server_load")
    except (ValueError, AttributeError):
        return None
    return float(load) if isinstance(load, int | float) and not isinstance(load, bool) else None


def parse_engine_metrics(text: str) -> EngineReading:
    """Only the families needed are handed to prometheus-client's parser (vLLM publishes
    hundreds of histogram lines); ValueError when the exposition is malformed."""
    wanted = "\n".join(line for line in text.splitlines() if _wanted(line)) + "\n"
    sums = {WAITING: 0.0, RUNNING: 0.0}
    steps: float | None = None
    tokens: float | None = None
    awake: list[float] = []
    for family in text_string_to_metric_families(wanted):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
            elif sample.name == f"{STEPS}_count":
                steps = (steps or 0.0) + sample.value
            elif sample.name == GENERATED:
                tokens = (tokens or 0.0) + sample.value
            elif sample.name == SLEEP and sample.labels.get("sleep_state") == "awake":
                awake.append(sample.value)
    # Asleep when every engine says it is not awake (vLLM sleeps all engines together).
    asleep = bool(awake) and not any(awake)
    return EngineReading(sums[WAITING], sums[RUNNING], steps, asleep, tokens)
