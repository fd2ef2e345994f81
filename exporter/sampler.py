"""The sampling loops: each source on its own thread and interval, off the scrape path."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from glyph_guard.common.config import Component, Deployment, Probe
from glyph_guard.common.health import discover_model, with_model
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
    Snapshot,
)

log = logging.getLogger(__name__)
SETTLED_PORTS_FACTOR = 6
# A canary that fails is asked again at once: the hang rule wants two failures in a row, so
# one slow answer (a busy host, a GC pause) never restarts anything, and a hang is still
# reported one canary timeout later rather than one canary interval later.
CANARY_STRIKES = 2


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
        self._lineages = LineageBook()
        self._leaks = LeakTracker(self._components, config.exporter.leak)
        probes = [(c, p) for c in self._components for p in c.probes if p.enabled]
        self._http_probes = [(c, p) for c, p in probes if p.kind != "canary"]
        self._canaries = [(c, p) for c, p in probes if p.kind == "canary"]
        self._accumulators = {(c.name, p.name): ProbeAccumulator(c.name, p.name) for c, p in probes}
        # The engine loop reads every engine endpoint at once, blocking, on a small pool.
        self._client = httpx.Client(
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=0), trust_env=False
        )
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="engine")
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
        self._models: dict[str, str] = {}  # the served model, per component, for canaries
        self._probe_kinds = tuple(ProbeKind(c.name, p.name, p.kind) for c, p in probes)
        self._limits = tuple(_limits(c) for c in self._components if c.probes or c.engine)

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
            self._leaks.observe_rss(reading, now)

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
        self._leaks.observe_gpu(gpu, usage, liveness, self._clock())

    def _sample_caches(self) -> None:
        self._caches = measure_caches(self._components)
        self._leaks.observe_caches(self._caches, self._clock())

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
        """One probe; a failed canary is asked again at once, up to CANARY_STRIKES times."""
        strikes = CANARY_STRIKES if probe.kind == "canary" else 1
        for _ in range(strikes):
            if probe.kind == "canary":
                result = await self._ask_canary(client, component, probe)
            else:
                result = await run_probe(client, component, probe)
            if result is None:
                return
            self._publish(collector, result)
            if result.success or self._stopping.is_set():
                return

    async def _ask_canary(
        self, client: httpx.AsyncClient, component: Component, probe: Probe
    ) -> ProbeResult | None:
        """A canary asks for the model served when the config names none. None: no
        observation, as a canary is not asked (or not counted) while the engine sleeps."""
        watch = self._watches.get(component.name)
        if watch is not None and watch.latest.asleep:
            return None
        model = probe.model or self._models.get(component.name)
        if model is None:
            model = await discover_model(client, component)
        result = await run_probe(client, component, with_model(probe, model))
        if result.success and model is not None:
            self._models[component.name] = model
        else:  # a restart may serve another name: ask again next time
            self._models.pop(component.name, None)
        if not result.success and watch is not None:
            # Refused because the engine was just put to sleep? Then it says nothing of a hang.
            progress = await asyncio.to_thread(watch.read, self._client, self._clock())
            self._publish_engines()
            if progress.asleep:
                return None
        return result

    def _sample_engines(self) -> None:
        now = self._clock()
        futures = [self._pool.submit(w.read, self._client, now) for w in self._watches.values()]
        for future in futures:
            future.result()
        self._publish_engines()

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
    )
