"""Evaluate the leak detector against the usual PromQL leak rules on labelled memory series.

The detector (exporter.leak_detector.LeakDetector, default settings) and two common Prometheus
alert rules, evaluated the way Prometheus computes them at every sample time, see the same
samples:

* deriv(x[1h]) > T: the least-squares slope of the samples in the last hour, with
  T = 200 MB/h (55 556 B/s), a typical operator threshold: the smallest leak we must catch;
* predict_linear(x[1h], 4 * 3600) > limit: the least-squares line over the last hour,
  valued at the evaluation time and extrapolated 4 h ahead, against the series' limit.

Both rules are taken raw (no `for:` clause), as the detector's own verdict is. Judging rule
(../shared/traces/README.md, tests/leak_series.py): the first hour after a start or a restart
is not judged; a flag outside it on a healthy series, or before the onset on a leaking one,
is a false alarm; the delay runs from the onset (or the end of that first hour) to the first
flag and must be at most 45 min for leaks of 1 GB/h or more and 2 h for 200 MB/h or more, in
each incarnation of the process the leak runs in (a restart frees the leak's memory and the
new process leaks again) that lives past its deadline.

Two sections: the recorded traces, trace by trace, and a split of generated series
(tests/leak_series.py: families drawn at random per seed). Seeds 0.. are the train split
the detector was tuned on; seeds 1 000 000.. the test split it never saw.

Each leak that does not stop is also taken to exhaust its memory at its peak (the limit is
set there): the forecast 2 h and 30 min before is compared with the time really left.

Usage: python bench/leak_eval.py [--traces DIR] [--split train|test] [--count N] [--jobs N]
                                  [--family NAME]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glyph_guard.exporter.leak_detector import LeakDetector
from glyph_guard.exporter.leak_forecast import ExhaustionForecast
from glyph_guard_demo.testkit.leak_series import (
    GB,
    HEALTHY,
    LEAKS,
    MB,
    Outcome,
    Series,
    generate,
    load_traces,
    restarted,
    score_flags,
)

HOUR = 3600.0
DERIV_THRESHOLD = 200 * MB / HOUR  # bytes per second
RANGE = HOUR  # the [1h] range of both rules
HORIZON = 4 * HOUR  # predict_linear's look-ahead
METHODS = ("detector", "deriv", "predict_linear")
FORECAST_AT = (2 * HOUR, 0.5 * HOUR)  # before exhaustion
UNFORECASTABLE = {"stopping"}  # its peak is where the leak stopped, not an exhaustion
SPLITS = {"train": 0, "test": 1_000_000}


def exhaustion(series: Series) -> tuple[float, float]:
    """The known exhaustion of a series: its limit is its peak, reached at the peak's time."""
    t, peak = max(series.samples, key=lambda s: (s[1], -s[0]))
    return t, peak


def run_detector(
    series: Series, limit: float, runs: int = 2
) -> tuple[list[bool], list[ExhaustionForecast], list[float]]:
    """Flags and forecasts at each sample, and each update's cost in CPU time of this thread
    (a shared machine's other work is not counted), the least over `runs` identical runs.
    At a restart the detector starts over, as the exporter's does on a new process start time."""
    flags: list[bool] = []
    forecasts: list[ExhaustionForecast] = []
    costs = [math.inf] * len(series.samples)
    for _ in range(runs):
        detector = LeakDetector()
        flags, forecasts = [], []
        for k, (t, value) in enumerate(series.samples):
            if restarted(series, k):
                detector.reset()
            start = time.thread_time()
            reading = detector.update(t, value, limit)
            costs[k] = min(costs[k], time.thread_time() - start)
            flags.append(reading.suspected)
            forecasts.append(reading.forecast)
    return flags, forecasts, costs


def run_promql(series: Series) -> tuple[list[bool], list[bool]]:
    """deriv(x[1h]) > T and predict_linear(x[1h], 4h) > limit at every sample time, as
    Prometheus' linearRegression computes them (prefix sums keep it linear in time)."""
    t0, y0 = series.samples[0]
    ts = [t - t0 for t, _ in series.samples]
    sums = [(0.0, 0.0, 0.0, 0.0)]
    for x, (_, v) in zip(ts, series.samples, strict=True):
        sx, sy, sxx, sxy = sums[-1]
        y = v - y0
        sums.append((sx + x, sy + y, sxx + x * x, sxy + x * y))
    deriv: list[bool] = []
    predict: list[bool] = []
    for i, now in enumerate(ts):
        first = bisect_right(ts, now - RANGE, 0, i + 1)  # the samples in (now - 1h, now]
        n = i + 1 - first
        a, b = sums[first], sums[i + 1]
        sx, sy, sxx, sxy = (b[k] - a[k] for k in range(4))
        var = sxx - sx * sx / n if n >= 2 else 0.0
        if var <= 0:
            deriv.append(False)
            predict.append(False)
            continue
        slope = (sxy - sx * sy / n) / var
        level = y0 + sy / n + slope * (now - sx / n)
        deriv.append(slope > DERIV_THRESHOLD)
        predict.append(level + slope * HORIZON > series.limit)
    return deriv, predict


@dataclass(frozen=True)
class ForecastCheck:
    """The forecast some time before a known exhaustion against the time really left."""

    before_seconds: float
    forecast: ExhaustionForecast

    @property
    def error_seconds(self) -> float | None:
        seconds = self.forecast.seconds
        return None if seconds is None else seconds - self.before_seconds

    @property
    def covered(self) -> bool:
        lower, upper = self.forecast.lower_seconds, self.forecast.upper_seconds
        return lower is not None and lower <= self.before_seconds <= (upper or math.inf)


def evaluate(series: Series) -> tuple[dict[str, Outcome], list[float], list[ForecastCheck]]:
    """Judged flags of the three methods, the detector's costs, and on a leak that does not
    stop, its forecasts FORECAST_AT before the series reaches its peak, taken as its limit."""
    when, peak = exhaustion(series)
    forecasted = not series.healthy and series.family not in UNFORECASTABLE
    flags, forecasts, costs = run_detector(series, peak if forecasted else series.limit)
    deriv, predict = run_promql(series)
    judged = (score_flags(series, f) for f in (flags, deriv, predict))
    checks = []
    if forecasted:
        times = [t for t, _ in series.samples]
        for before in FORECAST_AT:
            k = bisect_right(times, when - before) - 1
            if k >= 0 and when - before >= series.samples[0][0]:
                checks.append(ForecastCheck(when - times[k], forecasts[k]))
    return dict(zip(METHODS, judged, strict=True)), costs, checks


def _cell(series: Series, outcome: Outcome) -> str:
    if series.healthy:
        return "ok" if outcome.false_samples == 0 else f"FA x{outcome.false_samples}"
    if outcome.delay_seconds is None:
        text = "MISSED"
    else:
        late = (
            outcome.deadline_seconds is not None
            and outcome.delay_seconds > outcome.deadline_seconds
        )
        text = f"{outcome.delay_seconds / 60:.0f} min" + (" LATE" if late else "")
    if outcome.false_samples:
        text += f", FA x{outcome.false_samples}"
    return text


def _label(series: Series) -> str:
    if series.healthy:
        return f"healthy {series.family}"
    return f"leak {(series.rate_per_hour or 0) / MB:.0f} MB/h"


def recorded(traces: list[Series]) -> None:
    print("\n== recorded traces")
    print(f"{'trace':34} {'label':18} " + " ".join(f"{m:16}" for m in METHODS))
    tallies = {m: Tally() for m in METHODS}
    for trace in traces:
        outcomes, _, _ = evaluate(trace)
        for m in METHODS:
            tallies[m].add(trace, outcomes[m])
        cells = " ".join(f"{_cell(trace, outcomes[m]):16}" for m in METHODS)
        print(f"{trace.name:34} {_label(trace):18} {cells}")
    for m in METHODS:
        print(f"  {m:15} {tallies[m].summary()}")


@dataclass
class Tally:
    healthy: int = 0
    false_alarms: int = 0  # healthy series with a false alarm
    leaks: int = 0
    caught: int = 0  # leaks flagged in time without a false alarm before the onset
    early_alarms: int = 0  # leaking series flagged before the onset
    delays: list[float] = field(default_factory=list)

    def add(self, series: Series, outcome: Outcome) -> None:
        if series.healthy:
            self.healthy += 1
            self.false_alarms += outcome.false_samples > 0
            return
        self.leaks += 1
        self.caught += outcome.in_time
        self.early_alarms += outcome.false_samples > 0
        if outcome.delay_seconds is not None:
            self.delays.append(outcome.delay_seconds)

    def summary(self) -> str:
        return (
            f"false alarms {self.false_alarms}/{self.healthy} healthy"
            f" (+{self.early_alarms} leaking series flagged before the onset),"
            f" leaks caught in time {self.caught}/{self.leaks}"
        )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def generated(split: str, count: int, jobs: int, family: str | None = None) -> None:
    first = SPLITS[split]
    drawn = f"all of family {family}" if family else "families drawn per seed"
    print(f"\n== generated series, {split} split: seeds {first}..{first + count - 1}, {drawn}")
    per_family: dict[str, dict[str, Tally]] = defaultdict(lambda: {m: Tally() for m in METHODS})
    by_rate: dict[str, dict[str, Tally]] = defaultdict(lambda: {m: Tally() for m in METHODS})
    costs: list[float] = []
    checks: dict[str, list[ForecastCheck]] = defaultdict(list)
    with multiprocessing.Pool(jobs) as pool:
        seeds = [(seed, family) for seed in range(first, first + count)]
        results = pool.imap(_evaluate_seed, seeds, chunksize=4)
        for series, (outcomes, cost, forecast) in results:
            costs.extend(cost)
            checks[series.family].extend(forecast)
            _add(series, outcomes, per_family, by_rate)
    _table(per_family, by_rate)
    _forecasts(checks)
    ordered = sorted(costs)
    print(
        "detector CPU time per update (least of 2 runs):"
        f" mean {1e6 * sum(costs) / len(costs):.0f} us,"
        f" p50 {1e6 * _quantile(ordered, 0.5):.0f} us,"
        f" p99 {1e6 * _quantile(ordered, 0.99):.0f} us,"
        f" p99.9 {1e6 * _quantile(ordered, 0.999):.0f} us,"
        f" max {1e6 * ordered[-1]:.0f} us over {len(costs)} updates"
    )


def _evaluate_seed(
    seed_family: tuple[int, str | None],
) -> tuple[Series, tuple[dict[str, Outcome], list[float], list[ForecastCheck]]]:
    series = generate(*seed_family)
    return series, evaluate(series)


def _forecasts(checks: dict[str, list[ForecastCheck]]) -> None:
    print(
        "\ntime-to-exhaustion forecast on leaks that reach their limit (the series' peak):"
        " error = forecast - time left, minutes (median, p90 of |error|);"
        " in interval = the time left lies within [lower, upper]; none = no forecast yet"
    )
    header = "  ".join(f"{f'{b / 60:.0f} min before':>44}" for b in FORECAST_AT)
    print(f"{'family':20} {header}")
    everything = [c for group in checks.values() for c in group]
    for name, group in [*sorted(checks.items()), ("ALL", everything)]:
        cells = []
        for before in FORECAST_AT:
            at = [c for c in group if abs(c.before_seconds - before) < 120]
            errors = [abs(e) / 60 for c in at if (e := c.error_seconds) is not None]
            covered = sum(c.covered for c in at)
            cells.append(
                f"n {len(at):>3} |err| {_quantile(errors, 0.5):5.1f} {_quantile(errors, 0.9):6.1f}"
                f" in {covered:>3} none {len(at) - len(errors):>3}"
            )
        print(f"{name:20} " + "  ".join(f"{c:>44}" for c in cells))


def _add(
    series: Series,
    outcomes: dict[str, Outcome],
    per_family: dict[str, dict[str, Tally]],
    by_rate: dict[str, dict[str, Tally]],
) -> None:
    groups = [
        per_family[series.family],
        per_family["ALL healthy" if series.healthy else "ALL leaks"],
    ]
    if not series.healthy:
        band = ">= 1 GB/h" if (series.rate_per_hour or 0) >= GB else "200 MB/h - 1 GB/h"
        groups.append(by_rate[band])
    for group in groups:
        for m in METHODS:
            group[m].add(series, outcomes[m])


def _table(per_family: dict[str, dict[str, Tally]], by_rate: dict[str, dict[str, Tally]]) -> None:
    print(f"{'family':20} {'n':>5}  " + "  ".join(f"{m:>22}" for m in METHODS))

    def row(name: str, tallies: dict[str, Tally]) -> None:
        cells = []
        for m in METHODS:
            t = tallies[m]
            if not t.healthy and not t.leaks:
                return  # no series of this family in the split
            if t.healthy:
                cells.append(f"{t.false_alarms:>4} FA ({100 * t.false_alarms / t.healthy:5.1f} %)")
            else:
                cells.append(
                    f"{t.caught:>4} in time ({100 * t.caught / t.leaks:5.1f} %)"
                    + (f" +{t.early_alarms}FA" if t.early_alarms else "")
                )
        n = tallies[METHODS[0]].healthy + tallies[METHODS[0]].leaks
        print(f"{name:20} {n:>5}  " + "  ".join(f"{c:>22}" for c in cells))

    for name in HEALTHY:
        row(name, per_family[name])
    row("ALL healthy", per_family["ALL healthy"])
    for name in LEAKS:
        row(name, per_family[name])
    for band in (">= 1 GB/h", "200 MB/h - 1 GB/h"):
        row(f"leaks {band}", by_rate[band])
    row("ALL leaks", per_family["ALL leaks"])
    print("\ndetection delay over the leaks flagged after their onset, minutes:")
    for m in METHODS:
        delays = [d / 60 for d in per_family["ALL leaks"][m].delays]
        q = "  ".join(f"p{int(100 * p)} {_quantile(delays, p):5.1f}" for p in (0.5, 0.9, 0.99))
        print(f"  {m:15} {q}  max {max(delays, default=math.nan):5.1f}  (n={len(delays)})")


def main(argv: list[str] | None = None) -> int:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default, help=f"(default: {default})")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--count", type=int, default=1000, help="generated series (default 1000)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes judging series side by side (default 1)"
    )
    parser.add_argument(
        "--family",
        choices=sorted([*HEALTHY, *LEAKS]),
        help="every generated series of this family (default: drawn per seed)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    print(
        f"Leak detector vs PromQL rules; deriv threshold {DERIV_THRESHOLD:.0f} B/s"
        " (200 MB/h), predict_linear 4 h ahead against the series' limit."
    )
    if (args.traces / "manifest.json").is_file():
        recorded(load_traces(args.traces))
    else:
        print(f"(no manifest.json in {args.traces}: recorded traces skipped)")
    if args.count > 0:
        generated(args.split, args.count, args.jobs, args.family)
    print(f"\n{time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
