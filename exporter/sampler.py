"""The sampling loops: each source on its own thread and interval, off the scrape path."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from exporter.caches import measure_caches
from exporter.gpu_memory import attribute_gpu_memory
from exporter.leak_tracking import LeakTracker
from exporter.liveness import sample_liveness, sample_ports
from exporter.nvml import NvmlReader
from exporter.probestats import ProbeAccumulator
from exporter.snapshot import (
    CacheUsage,
    CollectorRun,
    ComponentLiveness,
    GpuSnapshot,
    GpuUnclaimed,
    GpuUsage,
    PortReading,
    ProbeStats,
    Snapshot,
)
from glyph_common.config import Component, Deployment, Probe
from glyph_common.probes import probe_once
from glyph_common.processes import ProcessTable

log = logging.getLogger(__name__)
SETTLED_PORTS_FACTOR = 6


class Sampler:
    """Runs each sampler on its own thread; snapshot() never waits on any of them."""

    def __init__(
        self,
        config: Deployment,
        nvml: NvmlReader | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._components = config.components
        self._nvml = nvml
        self._clock = clock
        self._table = ProcessTable()
        self._leaks = LeakTracker(self._components, config.exporter.leak)
        probes = [(c, p) for c in self._components for p in c.probes if p.enabled]
        self._http_probes = [(c, p) for c, p in probes if p.kind != "canary"]
        self._canaries = [(c, p) for c, p in probes if p.kind == "canary"]
        self._accumulators = {(c.name, p.name): ProbeAccumulator(c.name, p.name) for c, p in probes}
        # A fresh connection per probe, as a new client would need. Sync httpx in a pool costs
        # far less CPU per probe than its async client on an event loop.
        self._client = httpx.Client(
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=0), trust_env=False
        )
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self._stopping = threading.Event()
        self._ports_checked = float("-inf")
        self._threads: list[threading.Thread] = []
        # Each attribute below is replaced whole by one thread and read whole by scrapes.
        self._liveness: tuple[ComponentLiveness, ...] = tuple(
            ComponentLiveness(c.name) for c in self._components
        )
        self._ports: tuple[PortReading, ...] = ()
        self._gpu = GpuSnapshot()
        self._gpu_memory: tuple[GpuUsage, ...] = ()
        self._gpu_orphans: tuple[GpuUnclaimed, ...] = ()
        self._probes: dict[tuple[str, str], ProbeStats] = {}
        self._probes_lock = threading.Lock()  # the probe and the canary loops both update it
        self._caches: tuple[CacheUsage, ...] = ()
        self._runs: dict[str, CollectorRun] = {}

    def snapshot(self) -> Snapshot:
        """The latest readings of every sampler."""
        return Snapshot(
            liveness=self._liveness,
            ports=self._ports,
            gpu=self._gpu,
            gpu_memory=self._gpu_memory,
            gpu_orphans=self._gpu_orphans,
            probes=tuple(self._probes.values()),
            caches=self._caches,
            leaks=self._leaks.readings(),
            collectors=tuple(self._runs.values()),
        )

    def start(self) -> None:
        intervals = self._config.exporter.intervals
        loops: list[tuple[str, float, Callable[[], None]]] = [
            ("processes", intervals.liveness, self._sample_liveness)
        ]
        if self._http_probes:
            loops.append(("probes", intervals.probes, self._prober(self._http_probes)))
        if self._canaries:
            loops.append(("canary", intervals.canary, self._prober(self._canaries)))
        if self._nvml is not None:
            loops.append(("gpu", intervals.gpu, self._sample_gpu))
        if any(c.caches for c in self._components):
            loops.append(("caches", intervals.caches, self._sample_caches))
        for name, _, _ in loops:  # every key exists before scrapes iterate the dict
            self._runs[name] = CollectorRun(name)
        for name, interval, sample in loops:
            thread = threading.Thread(
                target=self._every, args=(name, interval, sample), name=name, daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        if self._nvml is not None:
            self._nvml.close()

    def _every(self, name: str, interval: float, sample: Callable[[], None]) -> None:
        errors = 0
        while not self._stopping.is_set():
            started = time.perf_counter()
            try:
                sample()
            except Exception:
                errors += 1
                log.exception("sampler %s failed", name)
            elapsed = time.perf_counter() - started
            self._runs[name] = CollectorRun(name, elapsed, errors, self._clock())
            self._stopping.wait(max(0.0, interval - elapsed))

    def _sample_liveness(self) -> None:
        readings = sample_liveness(self._table, self._components)
        if time.monotonic() - self._ports_checked >= self._ports_interval(readings):
            self._ports_checked = time.monotonic()
            ports = sample_ports(self._components, readings)
            if any(p.conflict for p in ports):
                # The holder may be the component itself, started since its tree was read.
                readings = sample_liveness(self._table, self._components)
                ports = sample_ports(self._components, readings)
            self._ports = ports
        self._liveness = readings
        now = self._clock()
        for reading in readings:
            self._leaks.observe_rss(reading, now)

    def _ports_interval(self, readings: tuple[ComponentLiveness, ...]) -> float:
        """Reading sockets costs the more, the busier the host: while every component runs
        and answers its probes, the port is plainly its own, and a look now and then will do."""
        interval = self._config.exporter.intervals.ports
        settled = all(r.up for r in readings) and all(s.success for s in self._probes.values())
        return interval * SETTLED_PORTS_FACTOR if settled else interval

    def _sample_gpu(self) -> None:
        assert self._nvml is not None
        gpu = self._nvml.read()
        liveness = self._liveness
        usage, orphans = attribute_gpu_memory(gpu, liveness)
        self._gpu, self._gpu_memory, self._gpu_orphans = gpu, usage, orphans
        self._leaks.observe_gpu(gpu, usage, liveness, self._clock())

    def _sample_caches(self) -> None:
        self._caches = measure_caches(self._components)
        self._leaks.observe_caches(self._caches, self._clock())

    def _prober(self, probes: list[tuple[Component, Probe]]) -> Callable[[], None]:
        def sample() -> None:
            futures = [self._pool.submit(probe_once, self._client, c, p) for c, p in probes]
            results = [future.result() for future in futures]
            now = self._clock()
            with self._probes_lock:
                updated = dict(self._probes)
                for result in results:
                    key = (result.component, result.probe)
                    updated[key] = self._accumulators[key].add(result, now)
                self._probes = updated

        return sample
