"""Labelled memory series of healthy and leaking services, seeded, and the rule that judges them.

Shared by the leak detector's tests and bench/leak_eval.py. Every series is one process's
memory sampled every 15-60 s with jitter, on a background of white noise, slow wander and,
at random, a warm-up, a small allocator sawtooth and (in RESTART_SHARE of them) one or two
restarts: memory drops, the new process warms up and grows again, a leak's hold is freed and
the leak starts over. Healthy families never raise the floor
the service returns to for longer than a leak of the same rate may go unflagged: cycles
turn back, plateaus decelerate and stop, steps are few, creep stays under 120 MB/h.
"""

from __future__ import annotations

import csv
import json
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MB = 1e6
GB = 1e9
HOUR = 3600.0
GRACE = HOUR  # the judging rule: the first hour after a start or a restart is not judged

Shape = Callable[[float], float]


@dataclass(frozen=True)
class Series:
    """One labelled memory series; onset and rate are None on a healthy one."""

    name: str
    family: str
    samples: list[tuple[float, float]]
    healthy: bool
    onset: float | None
    rate_per_hour: float | None
    restarts: tuple[float, ...]
    limit: float


@dataclass(frozen=True)
class Outcome:
    """How a detector's flags on one series are judged."""

    false_samples: int  # judged samples flagged on a healthy series or before the onset
    delay_seconds: float | None  # from the (judged) onset to the first flag; None: never
    deadline_seconds: float | None  # None on a healthy series

    @property
    def in_time(self) -> bool:
        return (
            self.deadline_seconds is not None
            and self.delay_seconds is not None
            and self.delay_seconds <= self.deadline_seconds
            and not self.false_samples
        )


def last_start(series: Series, t: float) -> float:
    """When the process that was running at t started."""
    return max((s for s in (series.samples[0][0], *series.restarts) if s <= t), default=0.0)


def deadline_for(rate_per_hour: float) -> float:
    """How soon a leak this fast must be flagged."""
    return 45 * 60 if rate_per_hour >= 1 * GB else 2 * HOUR


def restarted(series: Series, k: int) -> bool:
    """Whether sample k is the first of a new process (a restart since sample k - 1): where
    the exporter sees a new process start time and resets the series' detector."""
    return k > 0 and last_start(series, series.samples[k][0]) > series.samples[k - 1][0]


def score_flags(series: Series, flags: Sequence[bool]) -> Outcome:
    """The judging rule of ../shared/traces/README.md, per incarnation of the process.

    A restart frees what the leak held, and the new process leaks again: each incarnation the
    leak runs in is judged from its onset or the end of its first hour, whichever is later.
    The delay is the worst over them; one that ends (restarts) before its deadline unflagged
    is not judged, one that lives past its deadline unflagged is a miss (delay None).
    """
    onset = series.onset
    deadline = None
    if not series.healthy and onset is not None:
        deadline = deadline_for(series.rate_per_hour or 0)
    starts = (series.samples[0][0], *series.restarts)
    false = 0
    first: dict[float, float] = {}  # incarnation start: its first flag after the onset
    for (t, _), flagged in zip(series.samples, flags, strict=True):
        start = last_start(series, t)
        if not flagged or t - start < GRACE:
            continue
        if onset is None or t < onset:
            false += 1
        else:
            first.setdefault(start, t)
    if onset is None or deadline is None:
        return Outcome(false, None, None)
    delays = []
    for start, end in zip(starts, (*starts[1:], series.samples[-1][0]), strict=True):
        judged = max(onset, start + GRACE)
        if judged >= end:
            continue
        if start in first:
            delays.append(max(0.0, first[start] - judged))
        elif end - judged > deadline:
            return Outcome(false, None, deadline)
    return Outcome(false, max(delays) if delays else None, deadline)


def load_traces(directory: Path) -> list[Series]:
    """The labelled CSV traces of a directory with a manifest.json."""
    manifest = json.loads((directory / "manifest.json").read_text())
    traces = []
    for entry in manifest:
        with (directory / entry["file"]).open() as handle:
            rows = list(csv.reader(handle))[1:]
        traces.append(
            Series(
                entry["file"],
                entry["shape"],
                [(float(t), float(v)) for t, v in rows],
                bool(entry["healthy"]),
                entry["leak_onset_seconds"],
                entry["leak_rate_bytes_per_hour"],
                tuple(entry["restarts_seconds"]),
                float(entry["limit_bytes"]),
            )
        )
    return traces


# ------------------------------------------------------------------------------------------
# Building blocks.


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def sawtooth(rng: random.Random, amplitude: float, period: float, hours: float) -> Shape:
    """Allocator/GC sawtooth: a ramp up then a sharp drop, each period jittered."""
    edges = [-rng.uniform(0, period)]
    while edges[-1] < hours * HOUR + period:
        edges.append(edges[-1] + period * rng.uniform(0.8, 1.2))

    def value(t: float) -> float:
        i = bisect_right(edges, t) - 1
        return amplitude * ((t - edges[i]) / (edges[i + 1] - edges[i]) - 0.5)

    return value


def _warmup(rng: random.Random, depth: float) -> Callable[[float], float]:
    """Memory below its level by `depth` at a (re)start, loading back within 5-30 min."""
    seconds = rng.uniform(5, 30) * 60
    power = rng.uniform(1, 3)
    return lambda age: -depth * (1 - age / seconds) ** power if 0 <= age < seconds else 0.0


def _noise(rng: random.Random, level: float, fraction: float) -> Callable[[float], float]:
    """White noise plus a slow Ornstein-Uhlenbeck wander, both a fraction of the level."""
    white = level * fraction
    wander = level * fraction * rng.uniform(0, 0.5)
    tau = rng.uniform(2, 15) * 60
    state = {"t": 0.0, "x": 0.0}

    def value(t: float) -> float:
        keep = math.exp(-(t - state["t"]) / tau)
        state["x"] = state["x"] * keep + rng.gauss(0, wander * math.sqrt(1 - keep * keep))
        state["t"] = t
        return state["x"] + rng.gauss(0, white)

    return value


@dataclass
class _Draft:
    """A series being drawn: its level, shape parts and labels."""

    rng: random.Random
    family: str
    hours: float
    base: float
    noise: float  # as a fraction of the base
    interval: float  # between samples, before jitter
    parts: list[Shape]  # of the time: traffic, cycles, sawtooth
    aged: list[Shape] = field(default_factory=list)  # of the process's age: warm-up, growth
    leaks: list[Shape] = field(default_factory=list)  # of the time, freed by a restart
    white: float = 0.0  # extra white noise, as a fraction of the base
    restarts: tuple[float, ...] = ()
    gaps: tuple[tuple[float, float], ...] = ()
    onset: float | None = None
    rate_per_hour: float | None = None
    leak_end: float = math.inf  # when the leak stops

    def add(self, part: Shape) -> None:
        self.parts.append(part)

    def add_aged(self, part: Shape) -> None:
        """A part that starts over with each process: its argument is the process's age."""
        self.aged.append(part)

    def add_leak(self, part: Shape) -> None:
        """A leak: what it holds is freed at a restart, and the new process leaks again."""
        self.leaks.append(part)

    def build(self, seed: int) -> Series:
        rng = self.rng
        interval = self.interval
        noise = _noise(rng, self.base, self.noise)
        white = self.base * self.white
        restarts = self.restarts
        warm = [_warmup(rng, rng.uniform(0.5, 0.9) * self.base) for _ in restarts]
        samples: list[tuple[float, float]] = []
        t = 0.0
        while t <= self.hours * HOUR:
            if not any(a <= t < b for a, b in self.gaps):
                start = max((r for r in restarts if r <= t), default=0.0)
                value = self.base + sum(part(t) for part in self.parts) + noise(t)
                value += sum(part(t - start) for part in self.aged)
                value += sum(part(t) - part(start) for part in self.leaks)
                value += rng.gauss(0, white) if white else 0.0
                value += sum(w(t - r) for w, r in zip(warm, restarts, strict=True))
                samples.append((round(t, 1), max(value, 0.05 * self.base)))
            t += interval * rng.uniform(0.85, 1.15)
        limit = max(v for _, v in samples) * rng.uniform(1.3, 3.0)
        name = f"{self.family} #{seed} ({interval:.0f} s)"
        return Series(
            name,
            self.family,
            samples,
            self.onset is None,
            self.onset,
            self.rate_per_hour,
            restarts,
            limit,
        )


def _draft(rng: random.Random, family: str, *, small: bool = False) -> _Draft:
    base = _log_uniform(rng, 0.2, 1.0) * GB if small else _log_uniform(rng, 0.5, 40) * GB
    noise = _log_uniform(rng, 0.0005, 0.004)
    draft = _Draft(rng, family, rng.uniform(8, 12), base, noise, rng.uniform(15, 60), [])
    if rng.random() < 0.5:
        draft.add_aged(_warmup(rng, rng.uniform(0.1, 0.5) * base))
    if rng.random() < 0.5:
        amplitude = rng.uniform(0.002, 0.02) * base
        draft.add(sawtooth(rng, amplitude, rng.uniform(1, 15) * 60, draft.hours))
    return draft


def _ramp_rate_cap(period: float) -> float:
    """The fastest a healthy cycle may rise. One that peaks within the first hour may be fast;
    a slower one rises on average at under 0.64 of this for half its period, which must stay
    below the 150-200 MB/h a leak may have: 200 MB/h, and 120 MB/h for day-long ones."""
    if period <= HOUR:
        return 2 * GB
    if period <= 4 * HOUR:
        return 200 * MB
    return 120 * MB


# ------------------------------------------------------------------------------------------
# Healthy families.


def _cycle(d: _Draft, periods: tuple[float, float]) -> None:
    rng = d.rng
    period = _log_uniform(rng, *periods) * HOUR
    rate = rng.uniform(0.3, 1.0) * _ramp_rate_cap(period)
    phase, second = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.3)
    # the second harmonic adds up to 2 * second of the fundamental's fastest rise
    amplitude = min(rate * period / HOUR / (2 * math.pi) / (1 + 2 * second), 0.4 * d.base)
    w = 2 * math.pi / period
    d.add(lambda t: amplitude * (math.sin(w * t + phase) + second * math.sin(2 * w * t + phase)))


def load_cycle(d: _Draft) -> None:
    """Load cycles of 1-4 h rising and falling by up to a GB or more."""
    _cycle(d, (1.0, 4.0))


def diurnal(d: _Draft) -> None:
    """Day-long cycles of up to a GB or more, rising slowly."""
    _cycle(d, (12.0, 30.0))


def plateau_log(d: _Draft) -> None:
    """Allocator/arena growth that decelerates (log-like) and stops within 0.7-1.5 h, at most
    400 MB/h by the end of the first hour."""
    rng = d.rng
    tau, stop = rng.uniform(3, 20) * 60, rng.uniform(0.7, 1.5) * HOUR
    norm = math.log1p(stop / tau)
    most = rng.uniform(100, 400) * MB / HOUR * (tau + HOUR) * norm  # growth that gives it
    growth = min(rng.uniform(0.05, 0.3) * d.base, 3 * GB, most)
    d.add_aged(lambda t: growth * math.log1p(min(t, stop) / tau) / norm)


def plateau_steps(d: _Draft) -> None:
    """A few large allocation steps (caches, pools) that stop: at most two after 1 h."""
    rng = d.rng
    times = sorted(rng.uniform(0.1, 1.0) * HOUR for _ in range(rng.randint(1, 3)))
    times += sorted(rng.uniform(1.0, d.hours) * HOUR for _ in range(rng.randint(0, 2)))
    sizes = [min(rng.uniform(0.02, 0.15) * d.base, 1.5 * GB) for _ in times]
    d.add_aged(lambda t: sum(s for at, s in zip(times, sizes, strict=True) if t >= at))


def creep(d: _Draft) -> None:
    """Fragmentation creep that levels off after hours, under 120 MB/h once judged."""
    rng = d.rng
    tau = rng.uniform(1, 3) * HOUR
    rate = rng.uniform(30, 120) * MB / HOUR * math.exp(HOUR / tau)  # rate at t = 1 h
    d.add_aged(lambda t: rate * tau * (1 - math.exp(-t / tau)))


def bursts(d: _Draft) -> None:
    """Traffic bursts: plateaus of minutes, up by 5-40 % (at most 4 GB), then back."""
    rng = d.rng
    events = []
    t = rng.expovariate(rng.uniform(0.3, 2) / HOUR)
    while t < d.hours * HOUR:
        events.append(
            (t, t + rng.uniform(2, 20) * 60, min(rng.uniform(0.05, 0.4) * d.base, 4 * GB))
        )
        t += rng.expovariate(rng.uniform(0.3, 2) / HOUR)
    d.add(lambda t: sum(h for a, b, h in events if a <= t < b))


def heavy_noise(d: _Draft) -> None:
    """White noise of 1-4 % of the level."""
    d.white = d.rng.uniform(0.01, 0.04)


def gc_sawtooth(d: _Draft) -> None:
    """GC sawtooth of one or two periods between 1 and 40 min, 2-15 % of the level."""
    rng = d.rng
    for _ in range(rng.randint(1, 2)):
        amplitude = rng.uniform(0.02, 0.15) * d.base
        d.add(sawtooth(rng, amplitude, _log_uniform(rng, 1, 40) * 60, d.hours))


def restarts(d: _Draft) -> None:
    """One to three restarts at least 1.5 h apart, each warming up again."""
    _restart(d, d.rng.randint(1, 3))


def _restart(d: _Draft, count: int) -> None:
    """Restarts 1.5-3.5 h apart: memory drops, the new process warms up again, what a leak
    held is freed. On a leak, each leaves the new process time to be judged: its first hour
    and the deadline before the series (or the leak) ends."""
    rng = d.rng
    at = [rng.uniform(1.5, 3.5) * HOUR]
    for _ in range(count - 1):
        at.append(at[-1] + rng.uniform(1.5, 3.5) * HOUR)
    last = (d.hours - 0.5) * HOUR
    if d.rate_per_hour is not None:
        last = min(d.hours * HOUR, d.leak_end) - GRACE - deadline_for(d.rate_per_hour)
    d.restarts = tuple(a for a in at if a < last)


def gaps(d: _Draft) -> None:
    """The exporter is down one to three times, for 5-45 min."""
    rng = d.rng
    starts = sorted(rng.uniform(1, d.hours - 1) * HOUR for _ in range(rng.randint(1, 3)))
    d.gaps = tuple((s, s + rng.uniform(5, 45) * 60) for s in starts)


def small_steps(d: _Draft) -> None:
    """Many small allocation steps (an allocator or a cache warming up in small increments),
    ever rarer, that stop after 2-5 h: 60-200 MB/h at the end of the first hour, then slowing
    down within 0.4-1 h."""
    rng = d.rng
    stop = rng.uniform(2, 5) * HOUR
    tau = rng.uniform(0.4, 1.0) * HOUR
    late = rng.uniform(60, 200) * MB / HOUR  # the rate at t = 1 h
    size = rng.uniform(2, 25) * MB
    steps, t = [], rng.uniform(0, 60)
    while t < stop:
        steps.append(t)
        rate = late * math.exp(-(t - HOUR) / tau)
        t += rng.expovariate(rate / size)
    d.add_aged(lambda t: size * bisect_right(steps, t))


def log_arena(d: _Draft) -> None:
    """An arena that grows like a logarithm for 2-3 h, then flattens: 60-200 MB/h at the end
    of the first hour, slowing down as 1 / (tau + t)."""
    rng = d.rng
    tau, stop = rng.uniform(5, 40) * 60, rng.uniform(2, 3) * HOUR
    late = rng.uniform(60, 200) * MB / HOUR
    growth = late * (tau + HOUR)  # growth * d/dt log1p(t / tau) at t = 1 h
    d.add_aged(lambda t: growth * math.log1p(min(t, stop) / tau))


# ------------------------------------------------------------------------------------------
# Leak families.


def _leak(d: _Draft, rate: float, onset: float | None = None) -> float:
    d.rate_per_hour = rate
    d.onset = onset if onset is not None else d.rng.uniform(1.5, d.hours - 3.5) * HOUR
    return d.onset


def linear(d: _Draft) -> None:
    """A steady leak of 200 MB/h to 3 GB/h."""
    rate = _log_uniform(d.rng, 200 * MB, 3 * GB)
    onset = _leak(d, rate)
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


def staircase(d: _Draft) -> None:
    """Large chunks far apart (cached images), 200 MB/h to 1.5 GB/h: three or more before the
    deadline (one every 5-15 min at 1 GB/h or more, else every 10-45 min)."""
    rng = d.rng
    rate = _log_uniform(rng, 200 * MB, 1.5 * GB)
    every = (rng.uniform(5, 15) if rate >= GB else rng.uniform(10, 45)) * 60
    onset = _leak(d, rate)
    d.add_leak(
        lambda t: (math.floor((t - onset) / every) + 1) * every * rate / HOUR if t >= onset else 0
    )


def under_sawtooth(d: _Draft) -> None:
    """A leak of 200 MB/h to 2 GB/h under a GC sawtooth of 3-15 % of the level. The leak
    grows by at least half a tooth before its deadline, which leaves six teeth or more, each
    sampled six times or more."""
    rng = d.rng
    linear_rate = _log_uniform(rng, 200 * MB, 2 * GB)
    deadline = deadline_for(linear_rate)
    shortest = max(180.0, 6 * d.interval)
    period = rng.uniform(shortest, max(shortest, deadline / 6))
    amplitude = min(rng.uniform(0.03, 0.15) * d.base, 2 * linear_rate * deadline / HOUR)
    d.add(sawtooth(rng, amplitude, period, d.hours))
    onset = _leak(d, linear_rate)
    d.add_leak(lambda t: max(0.0, t - onset) * linear_rate / HOUR)


def accelerating(d: _Draft) -> None:
    """A leak that starts slow and speeds up; labelled with its mean rate over 2 h."""
    rng = d.rng
    start, growth = _log_uniform(rng, 100 * MB, 300 * MB), rng.uniform(100, 600) * MB
    onset = _leak(d, start + growth)  # rate(t) = start + growth * hours: mean over 2 h

    def shape(t: float) -> float:
        hours = max(0.0, t - onset) / HOUR
        return start * hours + growth * hours * hours / 2

    d.add_leak(shape)


def slow(d: _Draft) -> None:
    """A leak near the 200 MB/h threshold."""
    rate = d.rng.uniform(200, 260) * MB
    onset = _leak(d, rate)
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


def small_base(d: _Draft) -> None:
    """A fast leak (1-4 GB/h) from a small base (0.2-1 GB)."""
    rate = _log_uniform(d.rng, 1 * GB, 4 * GB)
    onset = _leak(d, rate)
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


def early(d: _Draft) -> None:
    """A leak of 200 MB/h to 2 GB/h that starts inside the first hour."""
    rate = _log_uniform(d.rng, 200 * MB, 2 * GB)
    onset = _leak(d, rate, d.rng.uniform(0, HOUR))
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


def stopping(d: _Draft) -> None:
    """A leak of 200 MB/h to 2 GB/h that stops 0.5-2 h after its deadline."""
    rng = d.rng
    rate = _log_uniform(rng, 200 * MB, 2 * GB)
    onset = _leak(d, rate)
    end = onset + deadline_for(rate) + rng.uniform(0.5, 2) * HOUR
    d.leak_end = end
    d.add_leak(lambda t: max(0.0, min(t, end) - onset) * rate / HOUR)


def big_chunks(d: _Draft) -> None:
    """A staircase of rare big chunks: one step of 200-800 MB every 30-55 min (under 1 GB/h),
    so three steps or more before the deadline, the third at least 10 min before it."""
    rng = d.rng
    every = rng.uniform(30, 55) * 60
    size = rng.uniform(200 * MB, min(800 * MB, 0.95 * GB * every / HOUR))
    onset = _leak(d, size * HOUR / every)
    d.add_leak(lambda t: (math.floor((t - onset) / every) + 1) * size if t >= onset else 0.0)


def under_bursts(d: _Draft) -> None:
    """A slow leak (200-500 MB/h) under heavy request bursts: 2-6 an hour, each up by 10-50 %
    of the level (at most 8 GB) for 1-10 min; the service is back at its floor for about half
    of the time or more."""
    rng = d.rng
    per_hour = rng.uniform(2, 6)
    events = []
    t = rng.expovariate(per_hour / HOUR)
    while t < d.hours * HOUR:
        height = min(rng.uniform(0.1, 0.5) * d.base, 8 * GB)
        events.append((t, t + rng.uniform(1, 10) * 60, height))
        t += rng.expovariate(per_hour / HOUR)
    d.add(lambda t: sum(h for a, b, h in events if a <= t < b))
    rate = rng.uniform(200, 500) * MB
    onset = _leak(d, rate)
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


def sparse_gaps(d: _Draft) -> None:
    """A slow leak (200-600 MB/h) scraped every 60 s, with two to eight scrape gaps of 2-25 min,
    at least a scrape apart (two that run together would be one gap of up to 50 min)."""
    rng = d.rng
    d.interval = rng.uniform(55, 65)
    starts = sorted(rng.uniform(1, d.hours - 0.5) * HOUR for _ in range(rng.randint(2, 8)))
    gaps: list[tuple[float, float]] = []
    for start in starts:
        begin = max(start, gaps[-1][1] + 2 * d.interval if gaps else start)
        gaps.append((begin, begin + rng.uniform(2, 25) * 60))
    d.gaps = tuple(gaps)
    rate = rng.uniform(200, 600) * MB
    onset = _leak(d, rate)
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


def deep_sawtooth(d: _Draft) -> None:
    """A leak of 200 MB/h to 1.5 GB/h under a deep sawtooth (15-50 % of the level, periods of
    5-30 min, four teeth or more before the deadline). A tooth rises by at most a quarter of
    what the leak adds before the deadline between two samples, so that its trough is seen to
    within that."""
    rng = d.rng
    rate = _log_uniform(rng, 200 * MB, 1.5 * GB)
    deadline = deadline_for(rate)
    period = rng.uniform(5 * 60, min(30 * 60, deadline / 4))
    finest = 0.25 * rate * deadline / HOUR * period / (1.15 * d.interval)
    amplitude = min(rng.uniform(0.15, 0.5) * d.base, finest)
    d.add(sawtooth(rng, amplitude, period, d.hours))
    onset = _leak(d, rate)
    d.add_leak(lambda t: max(0.0, t - onset) * rate / HOUR)


HEALTHY: dict[str, Callable[[_Draft], None]] = {
    f.__name__: f
    for f in (
        load_cycle,
        diurnal,
        plateau_log,
        plateau_steps,
        creep,
        bursts,
        heavy_noise,
        gc_sawtooth,
        restarts,
        gaps,
        small_steps,
        log_arena,
    )
}
LEAKS: dict[str, Callable[[_Draft], None]] = {
    f.__name__: f
    for f in (
        linear,
        staircase,
        under_sawtooth,
        accelerating,
        slow,
        small_base,
        early,
        stopping,
        big_chunks,
        under_bursts,
        sparse_gaps,
        deep_sawtooth,
    )
}
FAMILIES = {**HEALTHY, **LEAKS}
RESTART_SHARE = 0.3  # of the series of every family that also restart now and then


def generate(seed: int, family: str | None = None) -> Series:
    """One series; the family is drawn from the seed unless given (half healthy, half leaks)."""
    rng = random.Random(seed)
    if family is None:
        names = list(HEALTHY) if rng.random() < 0.55 else list(LEAKS)
        family = rng.choice(names)
    draft = _draft(rng, family, small=family == "small_base")
    FAMILIES[family](draft)
    if family != "restarts" and rng.random() < RESTART_SHARE:
        _restart(draft, rng.randint(1, 2))
    return draft.build(seed)
