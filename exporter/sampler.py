"""The sampling loops: each source on its own thread and interval, off the scrape path."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import httpx

from glyph_guard.common.config import Component, Deployment, Probe
from glyph_guard.common.health import CANARY_STRIKES, ServedModels, canary_strikes
from glyph_guard.common.lineage import LineageBook
from glyph_guard.common.probes import ProbeResult, run_probe
from glyph_guard.common.processes import ProcessTable
from glyph_guard.exporter.cacheusage import measure_caches
from glyph_guard.exporter.gpu_memory import attribute_gpu_memory
from glyph_guard.exporter.leak_tracking import LeakTracker
from glyph_guard.exporter.liveness import sample_liveness, sample_ports
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.exporter.probestats import ProbeAccumulator
from glyph_guard.exporter.progress import EngineWatch
from glyph_guard.exporter.snapshot import (
    CacheUsage,
    CollectorRun,
    ComponentLimits,
    ComponentLiveness,
    EngineProgress,
    GpuSnapshot,
    GpuUnclaimed,
    GpuUsage,
    PortReading,
    ProbeKind,
    ProbeStats,
    Readings,
)

log = logging.getLogger(__name__)
SETTLED_PORTS_FACTOR = 6


class Sampler:
    """Runs each sampler on its own thread; snapshot() never waits on any of them."""

    def __init__(
        self,
        config: Deployment,
        nvml: NvmlReader | None,
        clock: Callable[[], float] = time.time,
        leaks: LeakTracker | None = None,
    ) -> None:
        self._config = config
        self._components = config.components
        self._nvml = nvml
        self._clock = clock
        self._table = ProcessTable()
        self._lineages = LineageBook()
        self.leaks = leaks or LeakTracker(self._components, config.exporter.leak)
        probes = [(c, p) for c in self._components for p in c.probes if p.enabled]
        self._http_probes = [(c, p) for c, p in probes if p.kind != "canary"]
        self._canaries = [(c, p) for c, p in probes if p.kind == "canary"]
        self._accumulators = {(c.name, p.name): ProbeAccumulator(c.name, p.name) for c, p in probes}
        # The engine loop reads every engine endpoint at once, on its own event loop.
        self._engine_loop = asyncio.new_event_loop()
        self._engine_client: httpx.AsyncClient | None = None
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
        self._caches: tuple[CacheUsage, ...] = ()
        self._runs: dict[str, CollectorRun] = {}
        self._watches = {c.name: EngineWatch(c) for c in self._components if c.engine is not None}
        self._engines: tuple[EngineProgress, ...] = tuple(w.latest for w in self._watches.values())
        self._engines_lock = threading.Lock()  # the engine loop and failed canaries publish
        self._models = ServedModels()
        self._probe_kinds = tuple(ProbeKind(c.name, p.name, p.kind) for c, p in probes)
        self._limits = tuple(_limits(c) for c in self._components if c.probes or c.engine)

    def snapshot(self) -> Readings:
        """The latest readings of every sampler."""
        return Readings(
            liveness=self._liveness,
            ports=self._ports,
            gpu=self._gpu,
            gpu_memory=self._gpu_memory,
            gpu_orphans=self._gpu_orphans,
            probes=tuple(self._probes.values()),
            caches=self._caches,
            leaks=self.leaks.readings(),
            collectors=tuple(self._runs.values()),
            engines=self._engines,
            probe_kinds=self._probe_kinds,
            limits=self._limits,
        )

    def start(self) -> None:
        intervals = self._config.exporter.intervals
        loops: list[tuple[str, float, Callable[[], None]]] = [
            ("processes", intervals.liveness, self._sample_liveness)
        ]
        if self._watches:
            loops.append(("engine", intervals.engine, self._sample_engines))
        if self._nvml is not None:
            loops.append(("gpu", intervals.gpu, self._sample_gpu))
            self._nvml.start()  # XID events: waited for on a thread of their own
        if any(c.caches for c in self._components):
            loops.append(("caches", intervals.caches, self._sample_caches))
        probers = [("probes", self._http_probes), ("canary", self._canaries)]
        for name in [name for name, _, _ in loops] + [n for n, probes in probers if probes]:
            self._runs[name] = CollectorRun(name)  # every key exists before scrapes iterate
        if self._http_probes or self._canaries:
            thread = threading.Thread(target=self._probe_forever, name="probes", daemon=True)
            self._threads.append(thread)
            thread.start()
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
        if not any(t.is_alive() for t in self._threads):  # else the engine loop still runs
            if self._engine_client is not None:
                self._engine_loop.run_until_complete(self._engine_client.aclose())
            self._engine_loop.close()
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
        readings = sample_liveness(self._table, self._components, self._lineages)
        if time.monotonic() - self._ports_checked >= self._ports_interval(readings):
            self._ports_checked = time.monotonic()
            ports = sample_ports(self._components, readings)
            if any(p.conflict for p in ports):
                # The holder may be the component itself, started since its tree was read.
                readings = sample_liveness(self._table, self._components, self._lineages)
                ports = sample_ports(self._components, readings)
            self._ports = ports
        self._liveness = readings
        now = self._clock()
        for reading in readings:
            self.leaks.observe_rss(reading, now)

    def _ports_interval(self, readings: tuple[ComponentLiveness, ...]) -> float:
        """Reading sockets costs the more, the busier the host: while every component runs
        and answers its probes, the port is plainly its own, and a look now and then will do;
        not while the last look still says otherwise (it was taken before the service listened)."""
        interval = self._config.exporter.intervals.ports
        settled = (
            all(r.up for r in readings)
            and all(s.success for s in self._probes.values())
            and all(p.listening and not p.conflict for p in self._ports)
        )
        return interval * SETTLED_PORTS_FACTOR if settled else interval

    def _sample_gpu(self) -> None:
        assert self._nvml is not None
        gpu = self._nvml.read()
        liveness = self._liveness
        usage, orphans = attribute_gpu_memory(gpu, liveness)
        self._gpu, self._gpu_memory, self._gpu_orphans = gpu, usage, orphans
        self.leaks.observe_gpu(gpu, usage, liveness, self._clock())

    def _sample_caches(self) -> None:
        self._caches = measure_caches(self._components)
        self.leaks.observe_caches(self._caches, self._clock())

    def _probe_forever(self) -> None:
        asyncio.run(self._probe_all())  # every probe on its own schedule, on one thread

    async def _probe_all(self) -> None:
        intervals = self._config.exporter.intervals
        # A fresh connection per probe, as a new client would need.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            tasks = [
                asyncio.create_task(self._probe_every(client, "probes", intervals.probes, c, p))
                for c, p in self._http_probes
            ] + [
                asyncio.create_task(self._probe_every(client, "canary", intervals.canary, c, p))
                for c, p in self._canaries
            ]
            await asyncio.get_running_loop().run_in_executor(None, self._stopping.wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe_every(
        self,
        client: httpx.AsyncClient,
        collector: str,
        interval: float,
        component: Component,
        probe: Probe,
    ) -> None:
        """One probe on its own schedule: a slow target delays nobody else's results."""
        while True:
            started = time.perf_counter()
            try:
                await self._probe(client, collector, component, probe)
            except Exception:
                run = self._runs[collector]
                self._runs[collector] = CollectorRun(
                    collector, run.duration_seconds, run.errors + 1, run.last_timestamp
                )
                log.exception("probe %s of %s failed", probe.name, component.name)
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    async def _probe(
        self, client: httpx.AsyncClient, collector: str, component: Component, probe: Probe
    ) -> None:
        """One probe; a canary round is published attempt by attempt, up to its strikes."""
        if probe.kind != "canary":
            self._publish(collector, await run_probe(client, component, probe))
            return
        watch = self._watches.get(component.name)
        if watch is not None and watch.latest.asleep:
            return  # a canary is not asked while the engine sleeps on purpose

        async def asleep() -> bool:
            """Refused because the engine was just put to sleep? Then it says nothing of a hang."""
            if watch is None:
                return False
            progress = await watch.read(client, self._clock())
            self._publish_engines()
            return bool(progress.asleep)

        async for result in canary_strikes(client, component, probe, self._models, asleep):
            self._publish(collector, result)
            if self._stopping.is_set():
                return

    def _sample_engines(self) -> None:
        self._engine_loop.run_until_complete(self._read_engines(self._clock()))
        self._publish_engines()

    async def _read_engines(self, now: float) -> None:
        if self._engine_client is None:  # made on the engine loop, which it is bound to
            limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
            self._engine_client = httpx.AsyncClient(limits=limits, trust_env=False)
        client = self._engine_client
        await asyncio.gather(*(w.read(client, now) for w in self._watches.values()))

    def _publish_engines(self) -> None:
        with self._engines_lock:
            self._engines = tuple(w.latest for w in self._watches.values())

    def _publish(self, collector: str, result: ProbeResult) -> None:
        now = self._clock()
        key = (result.component, result.probe)
        self._probes = {**self._probes, key: self._accumulators[key].add(result, now)}
        errors = self._runs[collector].errors
        self._runs[collector] = CollectorRun(collector, result.duration_seconds, errors, now)


def _limits(component: Component) -> ComponentLimits:
    """The start-up allowance is the remediator's own start-up timeout: set once."""
    return ComponentLimits(
        component.name,
        component.engine.stall_seconds if component.engine else None,
        component.remediation.startup_timeout_seconds if component.probes else None,
        CANARY_STRIKES if any(p.kind == "canary" and p.enabled for p in component.probes) else None,
    )
