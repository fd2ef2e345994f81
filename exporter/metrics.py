"""Turning a snapshot into Prometheus metric families (pure: no I/O, no clocks)."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from glyph_guard.exporter import __version__
from glyph_guard.exporter.probestats import PROBE_BUCKETS
from glyph_guard.exporter.snapshot import (
    CacheUsage,
    CollectorRun,
    ComponentLimits,
    ComponentLiveness,
    EngineProgress,
    GpuSnapshot,
    GpuUnclaimed,
    GpuUsage,
    LeakTrend,
    PortReading,
    ProbeKind,
    ProbeStats,
    Snapshot,
)

PREFIX = "glyph"
LEAK_METHOD = (
    "Robust slope of the current segment (the exporter keeps a window of samples per series; "
    "a large drop or a process restart starts a new segment)."
)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def liveness_families(
    readings: Iterable[ComponentLiveness], ports: Iterable[PortReading]
) -> Iterator[Metric]:
    up = _gauge("component_up", "1 when the component has at least one process.", ["component"])
    count = _gauge("component_processes", "Processes in the component's tree.", ["component"])
    rss = _gauge(
        "component_resident_memory_bytes",
        "Resident memory summed over the component's process tree.",
        ["component"],
    )
    cpu = CounterMetricFamily(
        f"{PREFIX}_component_cpu_seconds",
        "User and system CPU time of the processes now in the component's tree.",
        labels=["component"],
    )
    start = _gauge(
        "component_start_time_seconds",
        "Unix time the component's main process started.",
        ["component"],
    )
    fds = _gauge("component_open_fds", "Open file descriptors of the tree.", ["component"])
    threads = _gauge("component_threads", "Threads of the tree.", ["component"])
    listening = _gauge(
        "component_port_listening", "1 when something listens on the port.", ["component", "port"]
    )
    conflict = _gauge(
        "component_port_conflict",
        "1 when the port is held by a process outside the component's tree.",
        ["component", "port"],
    )
    left = _gauge(
        "component_leftover_processes",
        "Processes an earlier incarnation of the component left behind: still in a session or "
        "process group its processes led, created while it ran, no longer in its tree "
        "(e.g. vLLM's EngineCore and Worker after the API died).",
        ["component"],
    )
    left_rss = _gauge(
        "component_leftover_resident_memory_bytes",
        "Resident memory of the processes an earlier incarnation of the component left behind.",
        ["component"],
    )
    for r in readings:
        name = [r.component]
        up.add_metric(name, 1.0 if r.up else 0.0)
        left.add_metric(name, r.leftover_processes)
        left_rss.add_metric(name, r.leftover_rss_bytes)
        count.add_metric(name, r.processes)
        rss.add_metric(name, r.rss_bytes)
        cpu.add_metric(name, r.cpu_seconds)
        threads.add_metric(name, r.threads)
        if r.start_time is not None:
            start.add_metric(name, r.start_time)
        if r.open_fds is not None:
            fds.add_metric(name, r.open_fds)
    for p in ports:
        port = [p.component, str(p.port)]
        listening.add_metric(port, 1.0 if p.listening else 0.0)
        conflict.add_metric(port, 1.0 if p.conflict else 0.0)
    yield from (up, count, rss, cpu, start, fds, threads, listening, conflict, left, left_rss)


def gpu_families(
    gpu: GpuSnapshot, usage: Iterable[GpuUsage], orphans: Iterable[GpuUnclaimed]
) -> Iterator[Metric]:
    labels = ["gpu", "uuid", "name"]
    info = _gauge("gpu_info", "Static device information; always 1.", [*labels, "driver_version"])
    readable = _gauge("gpu_readable", "1 when the device answered this cycle.", labels)
    total = _gauge("gpu_memory_total_bytes", "Device memory (NVML memory info).", labels)
    used = _gauge("gpu_memory_used_bytes", "Device memory in use.", labels)
    reserved = _gauge(
        "gpu_memory_reserved_bytes", "Device memory reserved by the driver and firmware.", labels
    )
    utilization = _gauge("gpu_utilization_ratio", "GPU busy share of the last period.", labels)
    temperature = _gauge("gpu_temperature_celsius", "GPU core temperature.", labels)
    power = _gauge("gpu_power_watts", "Power draw.", labels)
    per_component = _gauge(
        "component_gpu_memory_bytes",
        "GPU memory used by the component's processes on the device.",
        ["component", "gpu"],
    )
    orphan = _gauge(
        "gpu_orphan_memory_bytes",
        "GPU memory used by processes that belong to no component (e.g. an engine left behind "
        "by a crash).",
        labels,
    )
    for device in gpu.devices:
        values = [str(device.index), device.uuid, device.name]
        info.add_metric([*values, gpu.driver_version], 1.0)
        readable.add_metric(values, 1.0 if device.readable else 0.0)
        for family, value in (
            (total, device.memory_total_bytes),
            (used, device.memory_used_bytes),
            (reserved, device.memory_reserved_bytes),
            (utilization, device.utilization_ratio),
            (temperature, device.temperature_celsius),
            (power, device.power_watts),
        ):
            if value is not None:
                family.add_metric(values, value)
    for u in usage:
        if u.used_bytes is not None:
            per_component.add_metric([u.component, str(u.gpu)], u.used_bytes)
    devices = {d.index: [str(d.index), d.uuid, d.name] for d in gpu.devices}
    for o in orphans:
        if o.used_bytes is not None and o.gpu in devices:
            orphan.add_metric(devices[o.gpu], o.used_bytes)
    yield from (info, readable, total, used, reserved, utilization, temperature, power)
    yield from (per_component, orphan)


def probe_families(stats: Iterable[ProbeStats]) -> Iterator[Metric]:
    labels = ["component", "probe"]
    success = _gauge("probe_success", "1 when the last attempt succeeded.", labels)
    duration = HistogramMetricFamily(
        f"{PREFIX}_probe_duration_seconds", "Time each probe attempt took.", labels=labels
    )
    status = _gauge(
        "probe_http_status", "HTTP status of the last attempt; 0 when none came back.", labels
    )
    last_success = _gauge(
        "probe_last_success_timestamp_seconds", "Unix time of the last success.", labels
    )
    failures = _gauge(
        "probe_consecutive_failures", "Failed attempts since the last success.", labels
    )
    for s in stats:
        values = [s.component, s.probe]
        success.add_metric(values, 1.0 if s.success else 0.0)
        buckets = [
            (_bound(b), float(c)) for b, c in zip(PROBE_BUCKETS, s.bucket_counts, strict=True)
        ]
        duration.add_metric(values, [*buckets, ("+Inf", float(s.count))], s.duration_sum)
        status.add_metric(values, s.http_status or 0)
        if s.last_success_timestamp is not None:
            last_success.add_metric(values, s.last_success_timestamp)
        failures.add_metric(values, s.consecutive_failures)
    yield from (success, duration, status, last_success, failures)


def probe_info_families(kinds: Iterable[ProbeKind]) -> Iterator[Metric]:
    info = _gauge(
        "probe_info",
        "A configured probe and its kind (http or canary); always 1. Rules select probes by kind.",
        ["component", "probe", "kind"],
    )
    for k in kinds:
        info.add_metric([k.component, k.probe, k.kind], 1.0)
    yield info


def engine_families(engines: Iterable[EngineProgress]) -> Iterator[Metric]:
    """The engine's own metrics, summed over its label sets (model_name, engine)."""
    labels = ["component"]
    readable = _gauge(
        "engine_metrics_readable", "1 when the last read of the engine's metrics worked.", labels
    )
    errors = CounterMetricFamily(
        f"{PREFIX}_engine_metrics_read_errors",
        "Reads of the engine's metrics that failed (refused, timed out, not 200, malformed).",
        labels=labels,
    )
    waiting = _gauge("engine_requests_waiting", "Requests the engine has queued.", labels)
    running = _gauge("engine_requests_running", "Requests the engine is running.", labels)
    steps = CounterMetricFamily(
        f"{PREFIX}_engine_steps",
        "Engine steps (vllm:iteration_tokens_total's count, which advances once per step).",
        labels=labels,
    )
    stalled = _gauge(
        "engine_stalled_seconds",
        "How long the engine has had requests waiting or running without making a step; 0 "
        "while idle, asleep or progressing. The exporter compares the step count between its "
        "reads of the engine's metrics (exporter.intervals.engine), so this lags by up to one "
        "read.",
        labels,
    )
    asleep = _gauge("engine_asleep", "1 while the engine sleeps on purpose (vLLM /sleep).", labels)
    for e in engines:
        name = [e.component]
        readable.add_metric(name, 1.0 if e.readable else 0.0)
        errors.add_metric(name, e.read_errors)
        for family, value in (
            (waiting, e.waiting),
            (running, e.running),
            (steps, e.steps),
            (stalled, e.stalled_seconds),
            (asleep, None if e.asleep is None else float(e.asleep)),
        ):
            if value is not None:
                family.add_metric(name, value)
    yield from (readable, errors, waiting, running, steps, stalled, asleep)


def limit_families(limits: Iterable[ComponentLimits]) -> Iterator[Metric]:
    stall = _gauge(
        "engine_stall_limit_seconds",
        "Work without a step for this long is a hung engine (components.*.engine.stall_seconds).",
        ["component"],
    )
    startup = _gauge(
        "component_startup_allowance_seconds",
        "Up this long without a single probe success is a wedged start-up "
        "(components.*.remediation.startup_timeout_seconds).",
        ["component"],
    )
    for limit in limits:
        if limit.stall_seconds is not None:
            stall.add_metric([limit.component], limit.stall_seconds)
        if limit.startup_allowance_seconds is not None:
            startup.add_metric([limit.component], limit.startup_allowance_seconds)
    yield from (stall, startup)


def cache_families(usages: Iterable[CacheUsage]) -> Iterator[Metric]:
    files = _gauge("cache_files", "Regular files matching the cache glob.", ["component", "glob"])
    size = _gauge(
        "cache_bytes", "Size of the files matching the cache glob.", ["component", "glob"]
    )
    for u in usages:
        files.add_metric([u.component, u.glob], u.files)
        size.add_metric([u.component, u.glob], u.bytes)
    yield from (files, size)


def leak_families(trends: Iterable[LeakTrend]) -> Iterator[Metric]:
    labels = ["component", "resource"]
    slope = _gauge(
        "leak_slope_bytes_per_second",
        f"Growth rate of the resource. {LEAK_METHOD}",
        labels,
    )
    suspected = _gauge(
        "leak_suspected",
        "1 when growth is sustained, significant against the series' own noise and above the "
        f"rate floor, after the start-up grace period. {LEAK_METHOD}",
        labels,
    )
    until = _gauge(
        "leak_seconds_until_exhausted",
        "Seconds until the limit (host memory, device memory or free disk) is reached at the "
        f"current slope; absent when not growing. {LEAK_METHOD}",
        labels,
    )
    age = _gauge("leak_segment_age_seconds", f"Age of the current segment. {LEAK_METHOD}", labels)
    for t in trends:
        values = [t.component, t.resource]
        if t.slope_bytes_per_second is not None:
            slope.add_metric(values, t.slope_bytes_per_second)
        suspected.add_metric(values, 1.0 if t.suspected else 0.0)
        if t.seconds_until_exhausted is not None:
            until.add_metric(values, t.seconds_until_exhausted)
        age.add_metric(values, t.segment_age_seconds)
    yield from (slope, suspected, until, age)


def self_families(runs: Iterable[CollectorRun], gpu: GpuSnapshot) -> Iterator[Metric]:
    build = _gauge(
        "exporter_build_info", "glyph-exporter's version; always 1.", ["version", "python"]
    )
    build.add_metric([__version__, platform.python_version()], 1.0)
    nvml = _gauge("exporter_nvml_available", "1 when NVML answered this cycle.")
    nvml.add_metric([], 1.0 if gpu.available else 0.0)
    duration = _gauge(
        "exporter_collector_duration_seconds",
        "How long the sampler's last run took.",
        ["collector"],
    )
    errors = CounterMetricFamily(
        f"{PREFIX}_exporter_collector_errors",
        "Sampler runs that failed with an unexpected error.",
        labels=["collector"],
    )
    last = _gauge(
        "exporter_last_sample_timestamp_seconds",
        "Unix time the sampler last finished; scrapes serve this sample.",
        ["collector"],
    )
    for run in runs:
        duration.add_metric([run.collector], run.duration_seconds)
        errors.add_metric([run.collector], run.errors)
        if run.last_timestamp is not None:
            last.add_metric([run.collector], run.last_timestamp)
    yield from (build, nvml, duration, errors, last)


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """Every family of one snapshot."""
    yield from liveness_families(snapshot.liveness, snapshot.ports)
    yield from gpu_families(snapshot.gpu, snapshot.gpu_memory, snapshot.gpu_orphans)
    yield from probe_families(snapshot.probes)
    yield from probe_info_families(snapshot.probe_kinds)
    yield from engine_families(snapshot.engines)
    yield from limit_families(snapshot.limits)
    yield from cache_families(snapshot.caches)
    yield from leak_families(snapshot.leaks)
    yield from self_families(snapshot.collectors, snapshot.gpu)


class SnapshotCollector(Collector):
    """A registry collector that serialises whatever snapshot its source returns."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return families(self._source())


def _bound(value: float) -> str:
    return repr(float(value))
