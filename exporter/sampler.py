"""The sampling loops: each source on its own interval, off the scrape path, latest result kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import httpx

from exporter.caches import measure_caches
from exporter.leaks import LeakTracker
from exporter.liveness import sample_liveness
from exporter.nvml import NvmlReader
from exporter.probestats import ProbeAccumulator
from exporter.snapshot import (
    CacheUsage,
    CollectorRun,
    ComponentLiveness,
    GpuSnapshot,
    ProbeStats,
    Snapshot,
)
from glyph_common.config import Component, Deployment, Probe
from glyph_common.probes import run_probe
from glyph_common.processes import ProcessTable

log = logging.getLogger(__name__)


class Sampler:
    """Runs the samplers in a background thread; snapshot() never waits on any of them."""

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
        self._leaks = LeakTracker(self._components)
        self._accumulators = {
            (c.name, p.name): ProbeAccumulator(c.name, p.name)
            for c in self._components
            for p in c.probes
            if p.enabled
        }
        # Each attribute below is replaced whole by one loop and read whole by scrapes.
        self._liveness: tuple[ComponentLiveness, ...] = tuple(
            ComponentLiveness(c.name, port=c.port) for c in self._components
        )
        self._gpu = GpuSnapshot()
        self._probes: dict[tuple[str, str], ProbeStats] = {}
        self._caches: tuple[CacheUsage, ...] = ()
        self._runs: dict[str, CollectorRun] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()

    def snapshot(self) -> Snapshot:
        """The latest readings of every sampler."""
        return Snapshot(
            liveness=self._liveness,
            gpu=self._gpu,
            probes=tuple(self._probes.values()),
            caches=self._caches,
            leaks=self._leaks.readings(),
            collectors=tuple(self._runs.values()),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._nvml is not None:
            self._nvml.close()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._started.set()
        intervals = self._config.exporter.intervals
        http_probes = [(c, p) for c in self._components for p in c.probes if p.enabled]
        canaries = [(c, p) for c, p in http_probes if p.kind == "canary"]
        http_probes = [(c, p) for c, p in http_probes if p.kind != "canary"]
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            loops = [self._every("processes", intervals.liveness, self._sample_liveness)]
            if http_probes:
                loops.append(
                    self._every("probes", intervals.probes, self._prober(client, http_probes))
                )
            if canaries:
                loops.append(
                    self._every("canary", intervals.canary, self._prober(client, canaries))
                )
            if self._nvml is not None:
                loops.append(self._every("gpu", intervals.gpu, self._sample_gpu))
            if any(c.caches for c in self._components):
                loops.append(self._every("caches", intervals.caches, self._sample_caches))
            await asyncio.gather(*loops)

    async def _every(
        self, name: str, interval: float, sample: Callable[[], Awaitable[None]]
    ) -> None:
        assert self._stopping is not None
        errors = 0
        while not self._stopping.is_set():
            started = time.perf_counter()
            try:
                await sample()
            except Exception:
                errors += 1
                log.exception("sampler %s failed", name)
            elapsed = time.perf_counter() - started
            self._runs[name] = CollectorRun(name, elapsed, errors, self._clock())
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, interval - elapsed))

    async def _sample_liveness(self) -> None:
        readings = await asyncio.to_thread(sample_liveness, self._table, self._components)
        self._liveness = readings
        now = self._clock()
        for reading in readings:
            self._leaks.observe_rss(reading, now)

    async def _sample_gpu(self) -> None:
        assert self._nvml is not None
        self._gpu = await asyncio.to_thread(self._nvml.read)
        self._leaks.observe_gpu(self._gpu, self._liveness, self._clock())

    async def _sample_caches(self) -> None:
        self._caches = await asyncio.to_thread(measure_caches, self._components)
        self._leaks.observe_caches(self._caches, self._clock())

    def _prober(
        self, client: httpx.AsyncClient, probes: list[tuple[Component, Probe]]
    ) -> Callable[[], Awaitable[None]]:
        async def sample() -> None:
            results = await asyncio.gather(*(run_probe(client, c, p) for c, p in probes))
            now = self._clock()
            updated = dict(self._probes)
            for result in results:
                key = (result.component, result.probe)
                updated[key] = self._accumulators[key].add(result, now)
            self._probes = updated

        return sample
