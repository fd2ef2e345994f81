"""Write a labelled set of memory traces drawn apart from the project's own leak-series generator.

It writes the kinds of traces named in issue 23, each as `trace_NNN.csv` (shuffled numbers, so a
name does not reveal the kind) with its labels in `manifest.json`. Healthy: small steps that
plateau, a log arena, GC sawtooth, request bursts, a load cycle, restarts. Leaking: a big-chunk
stair, a leak under bursts, sparse samples with gaps, a deep sawtooth, a linear leak with
restarts, small steps. The generator was written apart from
demo/glyph_guard_demo/testkit/leak_series.py and has its own conventions (a stair's onset is its
first chunk, paces jittered +-20 %, single-sample spikes up and down, load cycles of 3-24 h up
to 10 % of the level), so the detector can be judged on draws it was not shaped around.

Model per sample: level + slow + fast + leak + white noise + rare single-sample spikes. The
level drops to 0.4-0.8 of the base at a start or restart and warms up over 5-20 min; a leak
starts again from 0 leaked bytes after a restart. Every value stays below 0.95 * limit (the
trace is shortened, else the rate lowered, else redrawn). MB = 1e6 bytes, GB = 1e9 bytes.

Usage: python bench/independent_traces.py [--seed-base N] [--per-kind N] --out DIR
       python bench/leak_eval.py --traces DIR --count 0
"""

import argparse
import json
import math
import random
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate, pairwise
from pathlib import Path

MB, GB, MINUTE, HOUR = 1e6, 1e9, 60.0, 3600.0
KINDS = (  # drawn in this order, per_kind of each, from seeds seed_base, seed_base + 1, ...
    "small_steps_plateau",
    "log_arena",
    "gc_sawtooth",
    "request_bursts",
    "load_cycle",
    "restarts_healthy",
    "big_chunk_stair",
    "leak_under_bursts",
    "sparse_gaps_leak",
    "deep_sawtooth_leak",
    "linear_leak_restart",
    "small_steps_leak",
)
TRACE_NAME = re.compile(r"trace_\d+\.csv")  # the only files it deletes, with manifest.json

Rng = random.Random
Signal = Callable[[float], float]  # bytes at a time (seconds since the first sample)
LeakMaker = Callable[[float], Signal]  # the leaked bytes for a leak rate (bytes/h)


class Retry(Exception):
    """The draw does not fit its kind: draw again from the same generator."""


@dataclass
class Trace:
    kind: str
    base: float
    limit: int
    duration: float
    interval: float
    restarts: list[float] = field(default_factory=list)  # a leak's closure holds this list
    onset: float | None = None
    rate: float | None = None
    make_leak: LeakMaker | None = None
    slow: list[Signal] = field(default_factory=list)
    fast: list[Signal] = field(default_factory=list)
    level: Signal | None = None  # drawn once the kind has drawn its restarts
    times: list[float] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    gap_fraction: float = 0.0

    def slow_total(self, t: float) -> float:
        """The level and the slow (non-transient) parts at t."""
        assert self.level is not None
        return self.level(t) + sum(part(t) for part in self.slow)


def log_uniform(rng: Rng, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def sample_times(rng: Rng, duration: float, interval: float) -> list[float]:
    times = [0.0]
    while True:
        t = times[-1] + interval * rng.uniform(0.9, 1.1)
        if t > duration:
            return times
        times.append(t)


def place(rng: Rng, count: int, low: float, high: float, gap: float) -> list[float] | None:
    """`count` sorted times in [low, high], pairwise at least `gap` apart, or None."""
    if high <= low:
        return None
    for _ in range(300):
        times = sorted(rng.uniform(low, high) for _ in range(count))
        if all(b - a >= gap for a, b in pairwise(times)):
            return times
    return None


def step_function(events: list[tuple[float, float]]) -> Signal:
    """Cumulative step function of [(time, size)]: the sizes of the events at or before t."""
    events = sorted(events)
    times = [time for time, _ in events]
    totals = list(accumulate(size for _, size in events))
    return lambda t: totals[bisect_right(times, t) - 1] if times and t >= times[0] else 0.0


def sawtooth(amplitude: float, period: float, phase: float) -> Signal:
    return lambda t: amplitude * (((t + phase) / period) % 1.0)  # linear ramp, sharp drop


def bursts(rng: Rng, duration: float, base: float) -> Signal:
    """Poisson clusters of 1-3 stacked bursts (trapezoids of 1-15 min, 5-50 % of the base)."""
    spans, clusters_per_second = [], rng.uniform(1.0, 6.0) / HOUR
    t = rng.expovariate(clusters_per_second)
    while t < duration:
        for j in range(rng.choice([1, 1, 1, 2, 2, 3])):
            start = t + (rng.uniform(0, 4 * MINUTE) if j else 0.0)
            spans.append((start, rng.uniform(1, 15) * MINUTE, rng.uniform(0.05, 0.5) * base))
        t += rng.expovariate(clusters_per_second)

    def load(x: float) -> float:
        total = 0.0
        for start, length, height in spans:
            if start <= x <= start + length:
                edge = 0.15 * length
                total += height * min(1.0, (x - start) / edge, (start + length - x) / edge)
        return total

    return load


def linear_leak(onset: float, restarts: list[float], rate: float) -> Signal:
    """Linear from the onset; a restart frees it and the new process leaks again from 0."""

    def leaked(t: float) -> float:
        if t < onset:
            return 0.0
        return rate * (t - max([onset, *(r for r in restarts if r <= t)])) / HOUR

    return leaked


def chunk_stair(rng: Rng, onset: float, end: float, rate: float) -> Signal:
    """Equal chunks of 200-900 MB from the onset on, 30-60 min apart, paces jittered +-20 %."""
    shortest = max(30 * MINUTE, 200 * MB / rate * HOUR)
    longest = min(60 * MINUTE, 900 * MB / rate * HOUR)
    pace = rng.uniform(shortest, longest)
    chunk, events, t = rate * pace / HOUR, [], onset
    while t <= end:
        events.append((t, chunk))
        t += pace * rng.uniform(0.8, 1.2)
    return step_function(events)


def small_step_stair(rng: Rng, onset: float, end: float, rate: float) -> Signal:
    """Steps of 10-50 MB (each up to 30 % off their mean) from the onset, paces jittered +-50 %."""
    low, high = max(10 * MB, rate * MINUTE / HOUR), min(50 * MB, rate * 8 * MINUTE / HOUR)
    step = rng.uniform(low, high)
    spread, pace = min(0.3 * step, step - 10 * MB, 50 * MB - step), step / rate * HOUR
    events, t = [], onset
    while t <= end:
        events.append((t, rng.uniform(step - spread, step + spread)))
        t += pace * rng.uniform(0.5, 1.5)
    return step_function(events)


def plateau_steps(rng: Rng) -> Signal:
    """20-150 steps of 10-80 MB, front-loaded, over 2-5 h, at most 100-195 MB in any judged hour."""
    span, count, skew = rng.uniform(2, 5) * HOUR, rng.randint(20, 150), rng.uniform(1.0, 2.5)
    cap = rng.uniform(100, 195) * MB  # most bytes in any 1 h window starting at 1 h or later
    positions = sorted(rng.random() ** skew for _ in range(count))
    kept: list[tuple[float, float]] = []
    for t in (span * x / positions[-1] for x in positions):  # the last step at `span`
        size = rng.uniform(10, 80) * MB
        if t >= HOUR:
            size = min(size, cap - sum(s for when, s in kept if when >= max(HOUR, t - HOUR)))
            if size < 10 * MB:
                continue
        kept.append((t, size))
    if len(kept) < 20:
        raise Retry
    return step_function(kept)


def start_leak(rng: Rng, trace: Trace, low_mb_h: float, high_mb_h: float) -> float:
    """Draw the onset and rate of a linear leak; returns the onset."""
    onset = trace.onset = rng.uniform(0.5, 5) * HOUR
    trace.rate = log_uniform(rng, low_mb_h * MB, high_mb_h * MB)
    trace.make_leak = partial(linear_leak, onset, trace.restarts)
    return onset


def draw_kind(rng: Rng, trace: Trace) -> None:
    """Draw the parts of the trace's kind into it; raises Retry when they do not fit."""
    base, duration = trace.base, trace.duration
    match trace.kind:
        case "small_steps_plateau":
            trace.slow.append(plateau_steps(rng))
        case "log_arena":
            tau, rate_at_1h = rng.uniform(10, 60) * MINUTE, rng.uniform(60, 190) * MB
            flat_after = rng.uniform(2, 3) * HOUR
            scale = rate_at_1h * (tau + HOUR) / HOUR  # d/dt scale*ln(1+t/tau) = rate_at_1h at 1 h
            trace.slow.append(lambda t: scale * math.log(1 + min(t, flat_after) / tau))
        case "gc_sawtooth":
            for _ in range(rng.choice([1, 2])):
                period, amplitude = rng.uniform(2, 40) * MINUTE, rng.uniform(0.02, 0.15) * base
                trace.fast.append(sawtooth(amplitude, period, rng.uniform(0, period)))
        case "request_bursts":
            trace.fast.append(bursts(rng, duration, base))
        case "load_cycle":
            amplitude, period = rng.uniform(0.01, 0.10) * base, rng.uniform(3, 24) * HOUR
            phase = rng.uniform(0, 2 * math.pi)
            trace.slow.append(lambda t: amplitude * math.sin(2 * math.pi * t / period + phase))
        case "restarts_healthy":
            restarts = place(rng, rng.randint(1, 3), HOUR, duration - HOUR, HOUR)
            if restarts is None:
                raise Retry
            trace.restarts[:] = restarts
        case "big_chunk_stair":
            onset = start_leak(rng, trace, 200, 1800)
            trace.make_leak = partial(chunk_stair, rng, onset, duration)
        case "leak_under_bursts":
            start_leak(rng, trace, 200, 600)
            trace.fast.append(bursts(rng, duration, base))
        case "sparse_gaps_leak":
            start_leak(rng, trace, 200, 600)  # the gaps are cut once the values are drawn
        case "deep_sawtooth_leak":
            start_leak(rng, trace, 200, 3000)
            period, amplitude = rng.uniform(5, 30) * MINUTE, rng.uniform(0.10, 0.30) * base
            trace.fast.append(sawtooth(amplitude, period, rng.uniform(0, period)))
        case "linear_leak_restart":
            earliest = max(start_leak(rng, trace, 200, 3000), HOUR)  # it shows before a restart
            for count in (rng.randint(1, 2), 1):
                restarts = place(
                    rng, count, earliest + 2.5 * HOUR, duration - 1.5 * HOUR, 2.5 * HOUR
                )
                if restarts:
                    break
            if not restarts:
                raise Retry
            trace.restarts[:] = restarts  # in place: the leak's closure holds this list
        case "small_steps_leak":
            onset = start_leak(rng, trace, 200, 3000)
            trace.make_leak = partial(small_step_stair, rng, onset, duration)
        case _:
            raise ValueError(f"unknown kind {trace.kind}")


def process_level(rng: Rng, base: float, restarts: list[float]) -> Signal:
    """Drops to 0.4-0.8 of the base at each start and warms up to it over 5-20 min."""
    segments = [(r, rng.uniform(0.4, 0.8), rng.uniform(5, 20) * MINUTE) for r in [0.0, *restarts]]

    def level(t: float) -> float:
        start, drop, warmup = next(seg for seg in reversed(segments) if seg[0] <= t)
        x = min(1.0, (t - start) / warmup)
        return base * (drop + (1 - drop) * (1 - (1 - x) ** 2))

    return level


def add_gaps(rng: Rng, trace: Trace, values: list[float]) -> list[float]:
    """Drop the samples in gaps of 2-20 min until 15-40 % are gone; returns the values kept."""
    times = trace.times
    end, target = times[-1], rng.uniform(0.15, 0.40)
    gaps: list[tuple[float, float]] = []
    keep = [True] * len(times)
    for _ in range(20000):
        if keep.count(False) >= target * len(times):
            break
        length = rng.uniform(2, 20) * MINUTE
        start = rng.uniform(5 * MINUTE, end - length - 5 * MINUTE)
        margin = 3 * trace.interval
        if any(start < gap[1] + margin and start + length + margin > gap[0] for gap in gaps):
            continue  # too close to a gap already cut
        gaps.append((start, start + length))
        for i, t in enumerate(times):
            if start < t < start + length:
                keep[i] = False
    trace.times = [t for t, kept in zip(times, keep, strict=True) if kept]
    assert max(b - a for a, b in pairwise(trace.times)) <= 25 * MINUTE
    trace.gap_fraction = 1 - len(trace.times) / len(times)
    return [value for value, kept in zip(values, keep, strict=True) if kept]


def attempt(rng: Rng, kind: str) -> Trace:
    """One draw of a trace of this kind; raises Retry when it does not fit."""
    base = log_uniform(rng, 1 * GB, 40 * GB)
    limit = int(base * rng.uniform(1.5, 3.0))
    duration = rng.uniform(8 * HOUR + 2 * MINUTE, 12 * HOUR)
    interval = rng.uniform(50, 60) if kind == "sparse_gaps_leak" else rng.uniform(15, 60)
    trace = Trace(kind, base, limit, duration, interval)
    draw_kind(rng, trace)
    times = trace.times = sample_times(rng, duration, interval)
    sigma = rng.uniform(0.001, 0.005) * base
    noise = [rng.gauss(0, sigma) for _ in times]
    for _ in range(rng.randint(2, 12)):  # single-sample spikes, up or down
        index = rng.randrange(1, len(times))
        noise[index] += (1 if rng.random() < 0.75 else -1) * rng.uniform(0.01, 0.08) * base
    trace.level = process_level(rng, base, trace.restarts)
    fixed = [
        trace.slow_total(t) + sum(part(t) for part in trace.fast) + noise_at
        for t, noise_at in zip(times, noise, strict=True)
    ]
    cap = 0.95 * limit
    if trace.make_leak is None or trace.rate is None:
        if max(fixed) >= cap:
            raise Retry
        values = fixed
    else:
        rate = trace.rate
        while True:
            leak = trace.make_leak(rate)
            values = [value + leak(t) for value, t in zip(fixed, times, strict=True)]
            over = next((i for i, value in enumerate(values) if value >= cap), None)
            if over is None:
                break
            judged_from = max([8 * HOUR, *(r + 1.5 * HOUR for r in trace.restarts)])
            if over > 0 and times[over - 1] >= judged_from:
                trace.times, values = times[:over], values[:over]  # shorten the trace
                break
            rate *= 0.8  # else lower the rate
            if rate < 200 * MB:
                raise Retry
        trace.rate = rate
    if kind == "sparse_gaps_leak":
        values = add_gaps(rng, trace, values)
    trace.values = [max(0, round(value)) for value in values]
    return trace


def drift_mb_h(trace: Trace) -> float:
    """Largest rise of the slow healthy parts over a judged 1 h window (minute steps), in MB."""
    end, starts, largest, t = trace.times[-1], [0.0, *trace.restarts], -1e30, 0.0
    while t + HOUR <= end:
        start = max(r for r in starts if r <= t)
        if t >= start + HOUR and not any(t < r <= t + HOUR for r in starts):
            largest = max(largest, trace.slow_total(t + HOUR) - trace.slow_total(t))
        t += MINUTE
    return largest / MB


def write(out: Path, name: str, trace: Trace) -> dict[str, object]:
    """Write one trace; returns its manifest entry."""
    with (out / name).open("w", encoding="utf-8") as csv:
        csv.write("timestamp_seconds,bytes\n")
        csv.writelines(
            f"{t:.3f},{value}\n" for t, value in zip(trace.times, trace.values, strict=True)
        )
    onset, rate = trace.onset, trace.rate
    return {
        "file": name,
        "healthy": onset is None,
        "leak_onset_seconds": None if onset is None else round(onset, 3),
        "leak_rate_bytes_per_hour": None if rate is None else round(rate, 1),
        "restarts_seconds": [round(r, 3) for r in trace.restarts if r < trace.times[-1]],
        "limit_bytes": trace.limit,
        "interval_seconds": round(trace.interval, 3),
        "shape": trace.kind,
    }


def summary(traces: list[Trace]) -> None:
    print(
        f"{'shape':<20} {'n':>3} {'healthy':>7} {'rate MB/h':>15} "
        f"{'base GB':>13} {'hours':>11} extra"
    )
    for kind in KINDS:
        of_kind = [trace for trace in traces if trace.kind == kind]
        healthy = [trace for trace in of_kind if trace.onset is None]
        rates = [trace.rate / MB for trace in of_kind if trace.rate]
        bases = [trace.base / GB for trace in of_kind]
        hours = [trace.times[-1] / HOUR for trace in of_kind]
        extra = ""
        if of_kind[0].onset is None:
            extra = f"max judged 1h drift {max(drift_mb_h(trace) for trace in healthy):.0f} MB/h"
        if kind == "sparse_gaps_leak":
            fractions = [trace.gap_fraction for trace in of_kind]
            extra = f"gap frac {min(fractions):.2f}-{max(fractions):.2f}"
        rate_range = f"{min(rates):.0f}-{max(rates):.0f}" if rates else "-"
        print(
            f"{kind:<20} {len(of_kind):3d} {len(healthy):7d} {rate_range:>15} "
            f"{min(bases):6.1f}-{max(bases):<6.1f} {min(hours):5.1f}-{max(hours):<5.1f} {extra}"
        )
    rates = [trace.rate / MB for trace in traces if trace.rate]
    print(
        f"total {len(traces)} traces, healthy {sum(trace.onset is None for trace in traces)}, "
        f"leaking {len(rates)}, leak rate {min(rates):.0f}-{max(rates):.0f} MB/h "
        f"(>=1 GB/h: {sum(rate >= 1000 for rate in rates)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-base", type=int, default=7000)
    parser.add_argument("--per-kind", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True, help="folder for the traces")
    args = parser.parse_args()
    if args.per_kind < 1:
        parser.error("--per-kind must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("trace_*.csv"):
        if TRACE_NAME.fullmatch(stale.name) and stale.is_file():
            stale.unlink()
    total = len(KINDS) * args.per_kind
    numbers = list(range(total))
    random.Random(args.seed_base).shuffle(numbers)  # file names do not reveal the kind
    manifest, traces = [], []
    for index in range(total):
        kind, seed = KINDS[index // args.per_kind], args.seed_base + index
        rng = random.Random(seed)
        for _ in range(5000):
            try:
                trace = attempt(rng, kind)
                break
            except Retry:
                continue
        else:
            raise SystemExit(f"could not generate {kind} seed {seed}")
        manifest.append(write(args.out, f"trace_{numbers[index]:03d}.csv", trace))
        traces.append(trace)
    manifest.sort(key=lambda entry: str(entry["file"]))
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    summary(traces)


if __name__ == "__main__":
    main()
