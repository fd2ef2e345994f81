"""Evaluate the leak detector against the usual PromQL leak rules on labelled memory traces.

For every trace in the traces directory (manifest.json labels, README.md judging rule) this
replays the samples through exporter.leak.LeakDetector with its default settings and, on
the same samples and at every sample time, evaluates two common Prometheus alert rules the
way Prometheus computes them:

* deriv(x[1h]) > T: the least-squares slope of the samples in the last hour, with
  T = 200 MB/h (55 556 B/s), a typical operator threshold: the smallest leak we must catch;
* predict_linear(x[1h], 4 * 3600) > limit: the least-squares line over the last hour,
  valued at the evaluation time and extrapolated 4 h ahead, against the trace's limit_bytes.

Both rules are taken raw (no `for:` clause), as the detector's own verdict is. Judging
rule (README.md): the first hour after a start or a restart is not judged; a flag outside
it on a healthy trace, or before the onset on a leaking one, is a false alarm; the delay
runs from the onset to the first flag and must be at most 45 min for leaks of 1 GB/h or
more and 2 h for leaks of 200 MB/h or more.

Three sections: the traces as recorded, the same traces resampled to about 60 s, and
seeded synthetic traces of the same kinds at other sizes, rates, noise levels and
intervals (30 s and 60 s), to check that nothing is tuned to the recorded files.

Usage: python bench/leak_eval.py [--traces DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.leak import LeakDetector, LeakSettings

MB = 1e6
GB = 1e9
HOUR = 3600.0
DERIV_THRESHOLD = 200 * MB / HOUR  # bytes per second
RANGE = HOUR  # the [1h] range of both rules
HORIZON = 4 * HOUR  # predict_linear's look-ahead
METHODS = ("detector", "deriv", "predict_linear")


@dataclass(frozen=True)
class Trace:
    name: str
    samples: list[tuple[float, float]]
    healthy: bool
    onset: float | None
    rate_per_hour: float | None
    restarts: tuple[float, ...]
    limit: float
    shape: str


@dataclass(frozen=True)
class Outcome:
    false_samples: int
    delay_seconds: float | None  # None: never flagged after the onset (or healthy)

    def missed(self, trace: Trace) -> bool:
        if trace.healthy:
            return False
        return self.delay_seconds is None or self.delay_seconds > _deadline(trace)


def _deadline(trace: Trace) -> float:
    rate = trace.rate_per_hour or 0.0
    return 45 * 60 if rate >= 1 * GB else 2 * HOUR


def _judged(trace: Trace, t: float) -> bool:
    start = max((s for s in (0.0, *trace.restarts) if s <= t), default=0.0)
    return t - start >= HOUR


def judge(trace: Trace, flags: Sequence[bool]) -> Outcome:
    false = 0
    first: float | None = None
    for (t, _), flagged in zip(trace.samples, flags, strict=True):
        if not flagged or not _judged(trace, t):
            continue
        if trace.healthy or (trace.onset is not None and t < trace.onset):
            false += 1
        elif first is None:
            first = t
    delay = None if first is None or trace.onset is None else first - trace.onset
    return Outcome(false, delay)


def run_detector(trace: Trace, runs: int = 2) -> tuple[list[bool], list[float]]:
    """Flags at each sample, and each update's cost: the least over `runs` identical runs,
    so that a pause of the machine (another process, the garbage collector) is not taken
    for the detector's own cost."""
    flags: list[bool] = []
    costs = [math.inf] * len(trace.samples)
    for _ in range(runs):
        detector = LeakDetector(LeakSettings())
        flags = []
        for k, (t, value) in enumerate(trace.samples):
            start = time.perf_counter()
            reading = detector.update(t, value, trace.limit)
            costs[k] = min(costs[k], time.perf_counter() - start)
            flags.append(reading.suspected)
    return flags, costs


def _regression(ts: Sequence[float], ys: Sequence[float], at: float) -> tuple[float, float]:
    """Prometheus' linearRegression: (slope, value of the line at `at`)."""
    n = len(ts)
    xs = [t - at for t in ts]
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def run_promql(trace: Trace) -> tuple[list[bool], list[bool]]:
    """deriv(x[1h]) > T and predict_linear(x[1h], 4h) > limit at every sample time."""
    ts = [t for t, _ in trace.samples]
    ys = [v for _, v in trace.samples]
    deriv: list[bool] = []
    predict: list[bool] = []
    for i, now in enumerate(ts):
        # a range selector holds the samples in (now - 1h, now]
        first = bisect_right(ts, now - RANGE, 0, i + 1)
        if i + 1 - first < 2:
            deriv.append(False)
            predict.append(False)
            continue
        slope, level = _regression(ts[first : i + 1], ys[first : i + 1], now)
        deriv.append(slope > DERIV_THRESHOLD)
        predict.append(level + slope * HORIZON > trace.limit)
    return deriv, predict


def load_traces(directory: Path) -> list[Trace]:
    manifest = json.loads((directory / "manifest.json").read_text())
    traces = []
    for entry in manifest:
        with (directory / entry["file"]).open() as handle:
            rows = list(csv.reader(handle))
        samples = [(float(t), float(v)) for t, v in rows[1:]]
        traces.append(
            Trace(
                entry["file"],
                samples,
                bool(entry["healthy"]),
                entry["leak_onset_seconds"],
                entry["leak_rate_bytes_per_hour"],
                tuple(entry["restarts_seconds"]),
                float(entry["limit_bytes"]),
                entry["shape"],
            )
        )
    return traces


def resample(trace: Trace, interval: float) -> Trace:
    """Every k-th sample, so that the trace is scraped about every `interval` seconds."""
    span = trace.samples[-1][0] - trace.samples[0][0]
    step = max(1, round(interval / (span / (len(trace.samples) - 1))))
    return Trace(
        trace.name,
        trace.samples[::step],
        trace.healthy,
        trace.onset,
        trace.rate_per_hour,
        trace.restarts,
        trace.limit,
        trace.shape,
    )


# ----------------------------------------------------------------------------------------
# Synthetic traces of the same kinds, at other sizes, rates, noise levels and intervals.


def _sawtooth(rng: random.Random, amplitude: float, period: float) -> Callable[[float], float]:
    edges = [-rng.uniform(0, period)]
    while edges[-1] < 48 * HOUR:
        edges.append(edges[-1] + period * rng.uniform(0.85, 1.15))

    def value(t: float) -> float:
        i = bisect_right(edges, t) - 1
        return amplitude * ((t - edges[i]) / (edges[i + 1] - edges[i]) - 0.5)

    return value


def _warm(age: float, depth: float, seconds: float) -> float:
    return -depth * (1 - age / seconds) ** 2 if 0 <= age < seconds else 0.0


def synthetic(kind: str, interval: float, seed: int) -> Trace:
    """One seeded trace of a kind; sizes, noise, periods and rates are drawn per seed."""
    rng = random.Random(seed)
    base = rng.uniform(3, 24) * GB
    noise = base * rng.uniform(0.002, 0.006)
    hours = 9.0
    onset: float | None = None
    rate = 0.0
    restarts: tuple[float, ...] = ()
    gaps: tuple[tuple[float, float], ...] = ()
    small = _sawtooth(rng, rng.uniform(0, 0.03) * base, rng.uniform(6, 14) * 60)
    parts: list[Callable[[float], float]] = [small]
    if kind.startswith("leak"):
        rate = rng.choice((rng.uniform(200, 500), rng.uniform(500, 900), rng.uniform(1000, 2000)))
        rate *= MB
        onset = rng.uniform(2, 4) * HOUR
    if kind in ("sawtooth", "leak_sawtooth"):
        parts.append(_sawtooth(rng, rng.uniform(0.04, 0.12) * base, rng.uniform(10, 20) * 60))
    if kind == "steps":
        first = rng.uniform(2, 3) * HOUR
        second = first + rng.uniform(1.2, 2.5) * HOUR
        sizes = (rng.uniform(0.05, 0.25) * base, rng.uniform(0.05, 0.25) * base)
        parts.append(lambda t: sizes[0] * (t >= first) + sizes[1] * (t >= second))
    if kind == "spikes":
        every, height = rng.uniform(1.5, 3) * HOUR, rng.uniform(0.05, 0.2) * base
        parts.append(lambda t: height if t % every > every - 120 else 0.0)
    if kind in ("restart", "leak_restart"):
        at = rng.uniform(2.5, 4) * HOUR
        restarts = (at,)
        warm = rng.uniform(10, 25) * 60
        parts.append(lambda t: _warm(t - at, 0.8 * base, warm) if t >= at else 0.0)
        if onset is not None:
            onset = at + rng.uniform(1, 1.5) * HOUR
    if kind in ("warmup", "leak_start"):
        depth, warm = rng.uniform(0.1, 0.4) * base, rng.uniform(10, 25) * 60
        parts.append(lambda t: _warm(t, depth, warm))
        if onset is not None:
            onset = 0.0
            rate = rng.uniform(200, 500) * MB
    if kind == "gap":
        at = rng.uniform(2, 6) * HOUR
        gaps = ((at, at + 20 * 60),)
    if onset is not None:
        start = onset
        if kind == "leak_stair":
            every = rng.uniform(5, 12) * 60
            parts.append(lambda t: max(0.0, math.floor((t - start) / every)) * every * rate / HOUR)
        else:
            parts.append(lambda t: max(0.0, t - start) * rate / HOUR)
    samples = []
    t = 0.0
    while t <= hours * HOUR:
        if not any(a <= t < b for a, b in gaps):
            value = base + sum(part(t) for part in parts) + rng.gauss(0, noise)
            samples.append((round(t, 1), value))
        t += interval * rng.uniform(0.95, 1.05)
    label = f"{kind} {interval:g}s #{seed}"
    return Trace(label, samples, onset is None, onset, rate or None, restarts, 64 * GB, kind)


SYNTHETIC_KINDS = (
    "flat",
    "sawtooth",
    "steps",
    "restart",
    "warmup",
    "spikes",
    "gap",
    "leak_linear",
    "leak_stair",
    "leak_sawtooth",
    "leak_start",
    "leak_restart",
)


# ----------------------------------------------------------------------------------------
# Report.


def _cell(trace: Trace, outcome: Outcome) -> str:
    if trace.healthy:
        return "ok" if outcome.false_samples == 0 else f"FA x{outcome.false_samples}"
    if outcome.delay_seconds is None:
        text = "MISSED"
    else:
        minutes = outcome.delay_seconds / 60
        text = f"{minutes:.0f} min" + (" LATE" if outcome.missed(trace) else "")
    if outcome.false_samples:
        text += f", FA x{outcome.false_samples}"
    return text


def _label(trace: Trace) -> str:
    if trace.healthy:
        return f"healthy {trace.shape}"
    rate = (trace.rate_per_hour or 0) / MB
    return f"leak {rate:.0f} MB/h"


@dataclass
class Tally:
    false_traces: int = 0
    healthy_false: int = 0
    caught: int = 0
    leaks: int = 0
    healthy: int = 0

    def add(self, trace: Trace, outcome: Outcome) -> None:
        if outcome.false_samples:
            self.false_traces += 1
        if trace.healthy:
            self.healthy += 1
            self.healthy_false += outcome.false_samples > 0
        else:
            self.leaks += 1
            self.caught += not outcome.missed(trace) and outcome.false_samples == 0


def section(title: str, traces: list[Trace], width: int = 34) -> dict[str, Tally]:
    print(f"\n== {title}")
    header = f"{'trace':{width}} {'label':18} {'detector':16} {'deriv>200MB/h':16}"
    print(f"{header} {'predict_linear':16} {'cost us mean/max':>16}")
    tallies = {m: Tally() for m in METHODS}
    costs: list[float] = []
    for trace in traces:
        flags, cost = run_detector(trace)
        deriv, predict = run_promql(trace)
        costs.extend(cost)
        outcomes = dict(
            zip(METHODS, (judge(trace, f) for f in (flags, deriv, predict)), strict=True)
        )
        for method, outcome in outcomes.items():
            tallies[method].add(trace, outcome)
        cells = " ".join(f"{_cell(trace, outcomes[m]):16}" for m in METHODS)
        mean, worst = 1e6 * sum(cost) / len(cost), 1e6 * max(cost)
        print(f"{trace.name:{width}} {_label(trace):18} {cells} {mean:7.0f}/{worst:<8.0f}")
    for method in METHODS:
        t = tallies[method]
        print(
            f"  {method:15} traces with false alarms {t.false_traces:2d}/{len(traces)}"
            f" (healthy {t.healthy_false}/{t.healthy}),"
            f" leaks caught in time {t.caught}/{t.leaks}"
        )
    ordered = sorted(costs)
    print(
        "  detector cost per update (least of 2 runs):"
        f" mean {1e6 * sum(costs) / len(costs):.0f} us,"
        f" p99 {1e6 * ordered[int(0.99 * (len(ordered) - 1))]:.0f} us,"
        f" max {1e6 * ordered[-1]:.0f} us over {len(costs)} updates"
    )
    return tallies


def main(argv: list[str] | None = None) -> int:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default, help=f"(default: {default})")
    parser.add_argument("--seeds", type=int, default=3, help="synthetic traces per kind")
    args = parser.parse_args(argv)
    if not (args.traces / "manifest.json").is_file():
        print(f"leak_eval: no manifest.json in {args.traces}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    traces = load_traces(args.traces)
    print(
        f"Leak detector vs PromQL rules; deriv threshold {DERIV_THRESHOLD:.0f} B/s"
        f" (200 MB/h), predict_linear 4 h ahead against limit_bytes."
    )
    print(
        "Cells: healthy 'ok' or 'FA xN' (N samples flagged after the first hour);"
        " leaks: delay from the onset, MISSED, LATE (past the deadline), FA xN before it."
    )
    section("recorded traces", traces)
    section("recorded traces resampled to ~60 s", [resample(t, 60.0) for t in traces])
    generated = [
        synthetic(kind, interval, 1000 * seed + index)
        for seed in range(args.seeds)
        for index, kind in enumerate(SYNTHETIC_KINDS)
        for interval in (30.0, 60.0)
    ]
    section("synthetic traces of the same kinds (other sizes, rates, noise, intervals)", generated)
    print(f"\n{time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
