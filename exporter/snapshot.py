"""The immutable readings the samplers produce and the scrape serialises."""

from __future__ import annotations

from dataclasses import dataclass, field

from glyph_guard.common.xid import GpuXids
from glyph_guard.exporter.leak_forecast import NO_FORECAST, ExhaustionForecast


@dataclass(frozen=True)
class ComponentLiveness:
    """A component's process tree, summed."""

    component: str
    processes: int = 0
    rss_bytes: int = 0
    cpu_seconds: float = 0.0
    threads: int = 0
    open_fds: int | None = 0
    start_time: float | None = None
    pids: frozenset[int] = frozenset()
    leftover_processes: int = 0  # left behind by an earlier incarnation (orphans)
    leftover_rss_bytes: int = 0

    @property
    def up(self) -> bool:
        return self.processes > 0


@dataclass(frozen=True)
class PortReading:
    """Who listens on a component's port."""

    component: str
    port: int
    listening: bool
    conflict: bool


@dataclass(frozen=True)
class GpuProcess:
    """A process using a GPU; memory is None when the driver does not say."""

    pid: int
    used_bytes: int | None


@dataclass(frozen=True)
class EccCount:
    """One of NVML's ECC error counters: volatile (since the last reset) or aggregate
    (lifetime), corrected or uncorrected."""

    counter: str
    error: str
    count: int


@dataclass(frozen=True)
class RemappedRows:
    """The row remapper's state (A100 and later)."""

    pending: bool  # a remap waits for the next GPU reset
    failed: bool  # a remap failed: the GPU needs service


@dataclass(frozen=True)
class GpuDevice:
    """One device as read in one cycle; a field is None when not supported or not permitted."""

    index: int
    uuid: str
    name: str
    readable: bool
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    processes: tuple[GpuProcess, ...] | None = None  # None when the process list is unreadable
    memory_utilization_ratio: float | None = None
    power_limit_watts: float | None = None
    ecc_errors: tuple[EccCount, ...] = ()  # those the device supports
    retired_pages_pending: bool | None = None
    remapped_rows: RemappedRows | None = None
    clock_events: tuple[tuple[str, bool], ...] | None = None  # (reason, active)
    pcie_replays: int | None = None
    xids: GpuXids = field(default_factory=GpuXids)


@dataclass(frozen=True)
class GpuSnapshot:
    """All devices; available is False when NVML is missing or failed to initialise."""

    available: bool = False
    devices: tuple[GpuDevice, ...] = ()
    driver_version: str = ""
    error: str = ""


@dataclass(frozen=True)
class GpuUsage:
    """GPU memory of a component's processes on one device; None when the driver does not
    give a figure for one of them."""

    component: str
    gpu: int  # the device's index
    processes: int
    used_bytes: int | None


@dataclass(frozen=True)
class GpuUnclaimed:
    """GPU memory of the processes on one device that belong to no component."""

    gpu: int
    used_bytes: int | None


@dataclass(frozen=True)
class ProbeStats:
    """Accumulated results of one probe; bucket counts are cumulative, as exposed."""

    component: str
    probe: str
    success: bool
    http_status: int | None
    duration_seconds: float
    last_success_timestamp: float | None
    consecutive_failures: int
    bucket_counts: tuple[int, ...]
    count: int
    duration_sum: float


@dataclass(frozen=True)
class CacheUsage:
    """Files matching one cache glob."""

    component: str
    glob: str
    files: int
    bytes: int


@dataclass(frozen=True)
class LeakTrend:
    """The leak detector's latest reading for one component and resource."""

    component: str
    resource: str
    slope_bytes_per_second: float | None
    suspected: bool
    segment_age_seconds: float
    forecast: ExhaustionForecast = NO_FORECAST


@dataclass(frozen=True)
class CollectorRun:
    """How the last run of one sampler went."""

    collector: str
    duration_seconds: float = 0.0
    errors: int = 0
    last_timestamp: float | None = None


@dataclass(frozen=True)
class Readings:
    """Everything a scrape serialises."""

    liveness: tuple[ComponentLiveness, ...] = ()
    ports: tuple[PortReading, ...] = ()
    gpu: GpuSnapshot = GpuSnapshot()
    gpu_memory: tuple[GpuUsage, ...] = ()
    gpu_orphans: tuple[GpuUnclaimed, ...] = ()
    probes: tuple[ProbeStats, ...] = ()
    caches: tuple[CacheUsage, ...] = ()
    leaks: tuple[LeakTrend, ...] = ()
    collectors: tuple[CollectorRun, ...] = ()
    engines: tuple[EngineProgress, ...] = ()
    probe_kinds: tuple[ProbeKind, ...] = ()
    limits: tuple[ComponentLimits, ...] = ()


@dataclass(frozen=True)
class EngineProgress:
    """A component's engine as its own metrics show it; the readings are None while the
    endpoint cannot be read (then nothing about progress is claimed)."""

    component: str
    readable: bool = False
    read_errors: int = 0
    waiting: float | None = None
    running: float | None = None
    steps: float | None = None
    generation_tokens: float | None = None
    stalled_seconds: float | None = None
    asleep: bool | None = None


@dataclass(frozen=True)
class ProbeKind:
    """A configured probe's kind, published so that rules select the canary by kind."""

    component: str
    probe: str
    kind: str


@dataclass(frozen=True)
class ComponentLimits:
    """Per-component limits from the config that the rules compare readings against."""

    component: str
    stall_seconds: float | None
    startup_allowance_seconds: float | None
    canary_strikes: int | None = None
