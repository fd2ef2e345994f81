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

from glyph_guard.common.xid import action_for
from glyph_guard.exporter import __version__
from glyph_guard.exporter.leak_forecast import IMMINENT_SECONDS
from glyph_guard.exporter.probestats import PROBE_BUCKETS
from glyph_guard.exporter.snapshot import (
    CacheUsage,
    CollectorRun,
    ComponentLimits,
    ComponentLiveness,
    EngineProgress,
    GpuDevice,
    GpuSnapshot,
    GpuUnclaimed,
    GpuUsage,
    LeakTrend,
    PortReading,
    ProbeKind,
    ProbeStats,
    Readings,
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
    memory_utilization = _gauge(
        "gpu_memory_utilization_ratio",
        "Share of the last period the device memory was read or written (NVML utilization).",
        labels,
    )
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
            (memory_utilization, device.memory_utilization_ratio),
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
    yield from (info, readable, total, used, reserved, utilization, memory_utilization)
    yield from (temperature, power, per_component, orphan)


def gpu_health_families(gpu: GpuSnapshot) -> Iterator[Metric]:
    """What NVIDIA's health tooling watches; a family the device does not support is absent.

    Reads of each device only what _health_readings names (the scrape re-encodes these
    families when those change)."""
    labels = ["gpu", "uuid", "name"]
    power_limit = _gauge(
        "gpu_power_limit_watts", "Power limit the driver enforces (NVML enforced limit).", labels
    )
    ecc = CounterMetricFamily(
        f"{PREFIX}_gpu_ecc_errors",
        "ECC memory errors (NVML total ECC errors): scope volatile counts since the last "
        "driver load or GPU reset, aggregate over the device's life.",
        labels=[*labels, "scope", "type"],
    )
    retired = _gauge(
        "gpu_retired_pages_pending",
        "1 when a page retirement waits for the next GPU reset or reboot (NVML, pre-A100).",
        labels,
    )
    remap_pending = _gauge(
        "gpu_remapped_rows_pending",
        "1 when a row remapping waits for the next GPU reset to take effect (NVML).",
        labels,
    )
    remap_failed = _gauge(
        "gpu_remapped_rows_failed",
        "1 when a row remapping failed: the GPU needs service (NVML).",
        labels,
    )
    clock_event = _gauge(
        "gpu_clock_event_active",
        "1 while the clocks are held back for the reason (NVML current clocks event reasons, "
        "formerly throttle reasons): thermal and power by software or hardware; hw_slowdown "
        "is the hardware's own (too hot, or a power brake).",
        [*labels, "reason"],
    )
    replays = CounterMetricFamily(
        f"{PREFIX}_gpu_pcie_replays",
        "PCIe replays (NVML PCIe replay counter): retransmissions on a flaky link.",
        labels=labels,
    )
    xids = CounterMetricFamily(
        f"{PREFIX}_gpu_xid_errors",
        "XID errors the driver reported since the exporter started (NVML XID events), with "
        "the action NVIDIA's XID catalog gives for each (common/xid_actions.yaml).",
        labels=[*labels, "xid", "xid_action"],
    )
    last = _gauge(
        "gpu_last_xid",
        "The code of the last XID the driver reported (NVML XID events), with its action.",
        [*labels, "xid_action"],
    )
    last_at = _gauge(
        "gpu_last_xid_timestamp_seconds", "Unix time of the last XID (NVML XID events).", labels
    )
    required = _gauge(
        "gpu_xid_required_action",
        "1 for the most demanding action NVIDIA's XID catalog gives for the XIDs since the GPU "
        "was last reset or the exporter started: reset_gpu and reboot mean restarts cannot help.",
        [*labels, "xid_action"],
    )
    for device in gpu.devices:
        values = [str(device.index), device.uuid, device.name]
        for family, value in (
            (power_limit, device.power_limit_watts),
            (retired, _flag(device.retired_pages_pending)),
            (replays, device.pcie_replays),
        ):
            if value is not None:
                family.add_metric(values, value)
        for count in device.ecc_errors:
            ecc.add_metric([*values, count.counter, count.error], count.count)
        if device.remapped_rows is not None:
            rows = device.remapped_rows
            remap_pending.add_metric(values, float(rows.pending))
            remap_failed.add_metric(values, float(rows.failed))
        for reason, active in device.clock_events or ():
            clock_event.add_metric([*values, reason], float(active))
        seen = device.xids
        for xid, times in sorted(seen.counts.items()):
            xids.add_metric([*values, str(xid), action_for(xid)], times)
        if seen.last is not None and seen.last_at is not None:
            last.add_metric([*values, action_for(seen.last)], seen.last)
            last_at.add_metric(values, seen.last_at)
        if seen.required is not None:
            required.add_metric([*values, seen.required], 1.0)
    yield from (power_limit, ecc, retired, remap_pending)
    yield from (remap_failed, clock_event, replays, xids, last, last_at, required)


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


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
    tokens = CounterMetricFamily(
        f"{PREFIX}_engine_generation_tokens",
        "Tokens the engine generated (vllm:generation_tokens_total), under the component's "
        "name from the deployment config, so that rules need no label on vLLM's own scrape.",
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
            (tokens, e.generation_tokens),
            (stalled, e.stalled_seconds),
            (asleep, None if e.asleep is None else float(e.asleep)),
        ):
            if value is not None:
                family.add_metric(name, value)
    yield from (readable, errors, waiting, running, steps, tokens, stalled, asleep)


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
    strikes = _gauge(
        "canary_strike_limit",
        "Failed canary attempts in a row that say the engine is hung: a failed canary is asked "
        "again at once, up to this many times (glyph_guard.common.health.CANARY_STRIKES).",
        ["component"],
    )
    for limit in limits:
        for family, value in (
            (stall, limit.stall_seconds),
            (startup, limit.startup_allowance_seconds),
            (strikes, limit.canary_strikes),
        ):
            if value is not None:
                family.add_metric([limit.component], value)
    yield from (stall, startup, strikes)


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
        "current slope, from the highest sample of the last 30 min; absent when not "
        f"growing. {LEAK_METHOD}",
        labels,
    )
    age = _gauge("leak_segment_age_seconds", f"Age of the current segment. {LEAK_METHOD}", labels)
    lower = _gauge(
        "leak_exhaustion_lower_bound_seconds",
        "Earliest plausible seconds until the limit is reached: the headroom above the highest "
        "sample of the last 30 min over the slope plus two standard errors; absent "
        f"when not growing. {LEAK_METHOD}",
        labels,
    )
    upper = _gauge(
        "leak_exhaustion_upper_bound_seconds",
        "Latest plausible seconds until the limit is reached: the same headroom over the slope "
        "less two standard errors; absent when not growing or when that slope is not above 0. "
        f"{LEAK_METHOD}",
        labels,
    )
    urgency = _gauge(
        "leak_urgency",
        "What a leak asks of the remediator: 0 none suspected; 1 planned (more than "
        f"{IMMINENT_SECONDS:.0f} s left at the lower bound: restart when the engine is idle); 2 "
        f"immediate (the lower bound is within {IMMINENT_SECONDS:.0f} s: restart now). "
        f"{LEAK_METHOD}",
        labels,
    )
    for t in trends:
        values = [t.component, t.resource]
        if t.slope_bytes_per_second is not None:
            slope.add_metric(values, t.slope_bytes_per_second)
        suspected.add_metric(values, 1.0 if t.suspected else 0.0)
        forecast = t.forecast
        if forecast.seconds is not None:
            until.add_metric(values, forecast.seconds)
        if forecast.lower_seconds is not None:
            lower.add_metric(values, forecast.lower_seconds)
        if forecast.upper_seconds is not None:
            upper.add_metric(values, forecast.upper_seconds)
        urgency.add_metric(values, float(forecast.urgency))
        age.add_metric(values, t.segment_age_seconds)
    yield from (slope, suspected, until, age, lower, upper, urgency)


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


Section = tuple[str, object, Callable[[], Iterator[Metric]]]


def sections(s: Readings) -> tuple[Section, ...]:
    """The families of one snapshot in parts: a name, the readings the part is a pure
    function of (equal readings, equal families), and the part's families."""
    gpu, devices = s.gpu, s.gpu.devices
    return (
        ("liveness", (s.liveness, s.ports), lambda: liveness_families(s.liveness, s.ports)),
        (
            "gpu",
            (gpu.available, gpu.driver_version, devices, s.gpu_memory, s.gpu_orphans),
            lambda: gpu_families(gpu, s.gpu_memory, s.gpu_orphans),
        ),
        ("gpu_health", tuple(map(_health_readings, devices)), lambda: gpu_health_families(gpu)),
        ("probes", s.probes, lambda: probe_families(s.probes)),
        ("probe_info", s.probe_kinds, lambda: probe_info_families(s.probe_kinds)),
        ("engines", s.engines, lambda: engine_families(s.engines)),
        ("limits", s.limits, lambda: limit_families(s.limits)),
        ("caches", s.caches, lambda: cache_families(s.caches)),
        ("leaks", s.leaks, lambda: leak_families(s.leaks)),
        ("self", (s.collectors, gpu.available), lambda: self_families(s.collectors, gpu)),
    )


def _health_readings(d: GpuDevice) -> object:
    """What gpu_health_families reads of a device (these change seldom, unlike its load)."""
    return (
        d.index,
        d.uuid,
        d.name,
        d.power_limit_watts,
        d.retired_pages_pending,
        d.pcie_replays,
        d.ecc_errors,
        d.remapped_rows,
        d.clock_events,
        d.xids,
    )


def families(snapshot: Readings) -> Iterator[Metric]:
    """Every family of one snapshot."""
    for _, _, make in sections(snapshot):
        yield from make()


class SnapshotCollector(Collector):
    """A registry collector that serialises whatever snapshot its source returns."""

    def __init__(self, source: Callable[[], Readings]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return families(self._source())


def _bound(value: float) -> str:
    return repr(float(value))
