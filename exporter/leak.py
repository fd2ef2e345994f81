"""Streaming memory-leak detection for one memory series: is it growing steadily, and how fast."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from statistics import median

Point = tuple[float, float]
_HOUR = 3600.0


@dataclass(frozen=True)
class LeakSettings:
    """How LeakDetector judges a series; the defaults are the exporter's.

    window_seconds: the longest analysis window; scales - 1 more halve it (2 h, 1 h, 30 min).
    bin_seconds: samples are reduced to one median per bin, so any scrape interval works.
    history_seconds: how much of the segment is kept (bounds memory and cost).
    grace_seconds: nothing is suspected this soon after a start, restart or reset.
    warmup_seconds: the start of a segment is never analysed (loading, warm-up).
    min_rate_bytes_per_second: the absolute floor on a suspected leak's rate (100 MB/h).
    min_rise_bytes: the least growth over a window (a higher rate floor for short windows).
    min_sigmas: how many standard errors the slope must clear (white and batched noise).
    min_part_fraction: each half, and all but one block step, must grow at this fraction
        of the window's slope.
    blocks: blocks per window for the batch-means test and the block steps.
    restart_drop_fraction: a fall below this fraction of the recent median starts a segment.
    max_gap_seconds: a gap in the samples longer than this starts a new segment.
    max_points: the Theil-Sen slope is taken over at most this many bins.
    shift_sigmas: a change across one bin this many robust sigmas out is a level shift.
    spike_seconds: a shift undone within this time is a spike (or a dip), not a shift.
    max_level_shifts: more level shifts than this within window_seconds are a stair.
    min_stair_steps: level shifts at a steady pace, at least this many, are a stair leak.
    min_troughs: sawtooth floors needed in a window to judge the leak from them.
    """

    window_seconds: float = 2 * _HOUR
    scales: int = 3
    bin_seconds: float = 60.0
    history_seconds: float = 3 * _HOUR
    grace_seconds: float = _HOUR
    warmup_seconds: float = 0.5 * _HOUR
    min_rate_bytes_per_second: float = 100e6 / _HOUR
    min_rise_bytes: float = 150e6
    min_sigmas: float = 4.0
    min_part_fraction: float = 0.3
    blocks: int = 6
    restart_drop_fraction: float = 0.5
    max_gap_seconds: float = 0.5 * _HOUR
    max_points: int = 30
    shift_sigmas: float = 6.0
    spike_seconds: float = 600.0
    max_level_shifts: int = 2
    min_stair_steps: int = 3
    min_troughs: int = 5

    def __post_init__(self) -> None:
        positive = (
            self.window_seconds,
            self.bin_seconds,
            self.history_seconds,
            self.min_sigmas,
            self.max_gap_seconds,
            self.shift_sigmas,
            self.spike_seconds,
        )
        if min(positive) <= 0 or min(self.grace_seconds, self.warmup_seconds) < 0:
            raise ValueError("LeakSettings: durations and thresholds must be positive")
        if self.scales < 1 or self.blocks < 3 or self.max_points < 8 or self.min_troughs < 3:
            raise ValueError("LeakSettings: scales >= 1, blocks >= 3, max_points >= 8")
        if not 0 < self.restart_drop_fraction < 1 or not 0 <= self.min_part_fraction < 1:
            raise ValueError("LeakSettings: fractions must lie between 0 and 1")
        if self.history_seconds < self.window_seconds or self.window_seconds < 8 * self.bin_seconds:
            raise ValueError("LeakSettings: history >= window >= 8 bins")


@dataclass(frozen=True)
class LeakReading:
    """The detector's view after one sample; None where not (yet) defined."""

    slope_bytes_per_second: float | None
    suspected: bool
    seconds_until_exhausted: float | None
    segment_age_seconds: float


@dataclass(frozen=True)
class _Verdict:
    slope: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class _Shift:
    start: float  # last bin before the shift
    end: float  # first bin after it
    size: float


class LeakDetector:
    """Suspects a leak when one series grows in a sustained way; one detector per series.

    Samples are reduced to one-minute medians. Each window (2 h, 1 h and 30 min by default,
    always inside the current segment and after its warm-up) is judged on its own, and a
    leak is suspected when any window passes:

    * its Theil-Sen slope (median of pairwise slopes at least a third of the window apart,
      which averages out a sawtooth and ignores spikes) clears an absolute floor and a
      least rise, and clears four standard errors both as white noise and as batch means
      over blocks (so slow wander and oscillation must be beaten too);
    * the growth is sustained: both halves grow, all but one block-to-block step grows,
      and a straight line fits better than one level shift (two in windows of 2 h);
    * it is no sawtooth ramp: when recurring sharp drops (GC) are seen, the rise must beat
      their size unless the window spans several of them; and the level is above the
      95th percentile of the older history;
    * one-off level shifts (a model or cache loading), found as sharp rises that stay, are
      taken out, with slopes only taken within the stretches between them.

    Two more routes catch what a window slope hides: the floors after the sawtooth drops
    rising steadily (a leak under a sawtooth), and level shifts that keep coming at a
    steady pace (a stair-shaped leak). A large drop, a long gap or reset() starts a new
    segment. Memory and cost per series are bounded by history_seconds / bin_seconds bins.
    """

    def __init__(self, settings: LeakSettings | None = None) -> None:
        self.settings = settings or LeakSettings()
        self._max_bins = math.ceil(self.settings.history_seconds / self.settings.bin_seconds) + 2
        self.reset()

    def reset(self) -> None:
        """Forget the series: the next sample starts a new segment (e.g. a new process)."""
        self._segment_start: float | None = None
        self._last_t: float | None = None
        self._ts: list[float] = []
        self._ys: list[float] = []
        self._change: list[float] = []
        self._excess: list[float] = []
        self._open_index: int | None = None
        self._open_t: list[float] = []
        self._open_v: list[float] = []
        self._recent: deque[Point] = deque(maxlen=64)
        self._jumps: list[_Shift] = []
        self._drops: list[tuple[float, float, float]] = []  # (time, size, floor after it)
        self._floors: dict[tuple[float, float], float] = {}
        self._trough_noise: float | None = None
        self._slope: float | None = None
        self._suspected = False
        self._reading = LeakReading(None, False, None, 0.0)

    def update(
        self, timestamp_seconds: float, value_bytes: float, limit_bytes: float | None
    ) -> LeakReading:
        """Add one sample; samples that are not finite or not newer are ignored."""
        t, v = float(timestamp_seconds), float(value_bytes)
        s = self.settings
        if not (math.isfinite(t) and math.isfinite(v)) or (
            self._last_t is not None and t <= self._last_t
        ):
            return self._reading
        if self._last_t is None or t - self._last_t > s.max_gap_seconds or self._restarted(t, v):
            self.reset()
            self._segment_start = t
        self._last_t = t
        self._recent.append((t, v))
        index = math.floor(t / s.bin_seconds)
        if self._open_index is not None and index != self._open_index:
            self._close_bin()
        self._open_index = index
        self._open_t.append(t)
        self._open_v.append(v)
        assert self._segment_start is not None
        age = t - self._segment_start
        until = None
        slope = self._slope
        if slope is not None and slope > 0 and limit_bytes is not None and limit_bytes > 0:
            until = max(0.0, (limit_bytes - v) / slope)
        suspected = self._suspected and age >= s.grace_seconds
        self._reading = LeakReading(slope, suspected, until, age)
        return self._reading

    def _restarted(self, t: float, v: float) -> bool:
        while self._recent and self._recent[0][0] < t - 300.0:
            self._recent.popleft()
        if not self._recent:
            return False
        reference = median(x for _, x in self._recent)
        return reference > 0 and v < (1.0 - self.settings.restart_drop_fraction) * reference

    def _close_bin(self) -> None:
        self._ts.append(sum(self._open_t) / len(self._open_t))
        self._ys.append(median(self._open_v))
        self._open_t, self._open_v = [], []
        if len(self._ts) > self._max_bins + 32:
            cut = len(self._ts) - self._max_bins
            for seq in (self._ts, self._ys, self._change, self._excess):
                del seq[:cut]
        self._measure_change()
        self._find_shifts()
        self._slope, self._suspected = self._evaluate()

    def _measure_change(self) -> None:
        """How much the change across each bin stands out from the changes around it."""
        ys, change, excess = self._ys, self._change, self._excess
        n = len(ys)
        while len(change) < n:
            change.append(math.nan)
            excess.append(math.nan)
        # the change across a bin, not into it: a shift inside a bin leaves it half-way
        if n >= 3:
            change[n - 2] = ys[n - 1] - ys[n - 3]
        i = n - 7
        if i >= 5:
            excess[i] = change[i] - median(change[i - 5 : i - 1] + change[i + 2 : i + 6])

    def _find_shifts(self) -> None:
        """Level shifts (sharp rises that stay) and drops (sharp falls, as in a sawtooth)."""
        s = self.settings
        ts, ys, change, excess = self._ts, self._ys, self._change, self._excess
        n = len(ys)
        self._jumps, self._drops, self._trough_noise = [], [], None
        known = [(i, x) for i, x in enumerate(excess) if not math.isnan(x)]
        if len(known) < 8:
            return
        centre = median(x for _, x in known)
        # the lower quartile of the deviations ignores the bins next to real shifts
        deviations = sorted(abs(x - centre) for _, x in known)
        sigma = deviations[len(deviations) // 4] / 0.3186
        threshold = max(s.shift_sigmas * sigma, 1e-3 * abs(ys[-1]))  # and >= 0.1 % of the level
        size = [0.0 if math.isnan(x) else abs(x) for x in excess]
        peaks = [
            (i, x)
            for i, x in known
            if size[i] > threshold
            and size[i] > max(size[max(0, i - 5) : i], default=0.0)
            and size[i] >= max(size[i + 1 : i + 6], default=0.0)
        ]
        falls: list[tuple[int, float]] = []
        for k, (i, x) in enumerate(peaks):
            undone = any(
                y * x < 0 and abs(y) >= 0.5 * abs(x) and abs(ts[j] - ts[i]) <= s.spike_seconds
                for j, y in peaks[max(0, k - 3) : k] + peaks[k + 1 : k + 4]
            )
            if undone:
                continue
            if x < 0:
                falls.append((i, -x))
                continue
            rise = x
            before = ys[max(0, i - 10) : i]
            after = ys[i + 1 : i + 11]
            if len(after) > 5 and before:
                # settled levels on either side, less the local trend, average out a sawtooth
                trend = (change[i] - x) / 2 * (len(before) + len(after) + 2) / 2
                rise = median(after) - median(before) - trend
                if rise < max(0.5 * x, threshold):
                    continue
            self._jumps.append(_Shift(ts[i - 1], ts[i + 1], rise))
        for k, (i, fall) in enumerate(falls):
            end = falls[k + 1][0] if k + 1 < len(falls) else n
            if end - i > 4:
                key = (ts[i + 1], ts[end - 1])
                floor = self._floors.get(key)
                if floor is None:
                    floor = _intercept(list(zip(ts[i + 1 : end], ys[i + 1 : end], strict=True)))
                    if end < n:  # a tooth is final once the next drop is seen
                        self._floors[key] = floor
                self._drops.append((ts[i + 1], fall, floor))
        for key in [k for k in self._floors if k[0] < ts[0]]:
            del self._floors[key]
        cuts = [j.end for j in self._jumps]
        steps = [
            y1 - y0
            for (t0, _, y0), (t1, _, y1) in pairwise(self._drops)
            if not any(t0 < c <= t1 for c in cuts)
        ]
        if len(steps) >= 4:
            # floors have heavy tails: a root mean square keeps the test conservative
            centre = median(steps)
            self._trough_noise = math.sqrt(sum((x - centre) ** 2 for x in steps) / len(steps) / 2)

    def _evaluate(self) -> tuple[float | None, bool]:
        s = self.settings
        assert self._segment_start is not None
        now = self._ts[-1]
        settled = now - self._segment_start - s.warmup_seconds
        verdicts: list[_Verdict] = []
        for k in range(s.scales):
            span = s.window_seconds / 2**k
            if settled >= span:
                verdict = self._judge(now, span)
                if verdict is not None:
                    verdicts.append(verdict)
                    if verdict.passed:
                        return verdict.slope, True
        if settled >= 0:
            stair = self._stair(now)
            if stair is not None:
                verdicts.append(stair)
        passed = [v for v in verdicts if v.passed]
        if passed:
            return passed[0].slope, True
        if verdicts:
            return verdicts[0].slope, False
        if settled >= s.window_seconds / 2**s.scales:
            start = bisect_right(self._ts, now - settled)
            points = list(zip(self._ts[start:], self._ys[start:], strict=True))
            return _theil_sen(_thin(points, s.max_points), settled / 3), False
        return None, False

    def _judge(self, now: float, span: float) -> _Verdict | None:
        s = self.settings
        start = now - span
        first = bisect_right(self._ts, start)
        window = list(zip(self._ts[first:], self._ys[first:], strict=True))
        if len(window) < 8:
            return None
        # one-off level shifts are taken out; shifts that keep coming are a stair-shaped leak
        recent = [j for j in self._jumps if j.start > now - s.window_seconds]
        big = [j for j in recent if j.size >= max(j.size for j in recent) / 3] if recent else []
        jumps = [j for j in recent if j.start > start] if len(big) <= s.max_level_shifts else []
        if any(j.start > now - span / 2 for j in jumps):
            # too little is known yet about the growth after a recent level shift to take
            # it out: it stays in, and the level-shift fit below will judge it
            jumps = []
        cuts = [j.end for j in jumps]
        if jumps:
            window = [
                (t, y - sum(j.size for j in jumps if j.end <= t))
                for t, y in window
                if not any(j.start < t < j.end for j in jumps)
            ]
        thinned = _thin(window, s.max_points)
        slope = _theil_sen(thinned, span / 3, cuts)
        if slope is None:
            return None

        def fail(reason: str) -> _Verdict:
            return _Verdict(slope, False, reason)

        if slope < max(s.min_rate_bytes_per_second, s.min_rise_bytes / span):
            return fail("below the rate floor")
        if self._trough_noise is not None:
            troughs = self._troughs(start, span, self._trough_noise)
            if troughs is not None and troughs.passed:
                return troughs
        if len(self._drops) >= 2:
            amplitude = median(d[1] for d in self._drops)
            inside = sum(1 for d in self._drops if d[0] > start)
            rise = slope * span
            if rise < 2 * amplitude / (inside + 1) or (inside < 3 and rise < 2 * amplitude):
                return fail("a sawtooth ramp")
        half = start + span / 2
        limit = s.max_points // 2
        early = _theil_sen(_thin([p for p in window if p[0] < half], limit), span / 6, cuts)
        late = _theil_sen(_thin([p for p in window if p[0] >= half], limit), span / 6, cuts)
        if early is None or late is None:
            return fail("too few samples")
        if min(early, late) < s.min_part_fraction * slope:
            return fail("not growing in both halves")
        width = span / s.blocks
        groups: list[list[Point]] = [[] for _ in range(s.blocks)]
        for p in window:
            groups[min(s.blocks - 1, int((p[0] - start) / width))].append(p)
        blocks = [(sum(p[0] for p in g) / len(g), median(p[1] for p in g)) for g in groups if g]
        if len(blocks) < s.blocks - 1:
            return fail("too few samples")
        grown = sum(
            1
            for a, b in pairwise(blocks)
            if b[1] - a[1] >= s.min_part_fraction * slope * (b[0] - a[0])
        )
        if grown < len(blocks) - 2:
            return fail("not growing block after block")
        if _shifts_fit_better(window, max(1, int(span / _HOUR))):
            return fail("level shifts fit better")
        if not _beats_batches(blocks, s.min_sigmas) or not _beats_noise(
            window, thinned, cuts, slope, s.min_sigmas
        ):
            return fail("not significant")
        prior = sorted(self._ys[: bisect_left(self._ts, start)])
        if prior and blocks[-1][1] <= prior[int(0.95 * (len(prior) - 1))]:
            return fail("not above the older history")
        return _Verdict(slope, True, "sustained growth")

    def _troughs(self, start: float, span: float, noise: float) -> _Verdict | None:
        """The floor after each sawtooth drop rises when memory leaks under a sawtooth."""
        s = self.settings
        troughs = [(d[0], d[2]) for d in self._drops if d[0] > start]
        if len(troughs) < s.min_troughs:
            return None
        cuts = [j.end for j in self._jumps]
        pairs = [
            (a, b)
            for i, a in enumerate(troughs)
            for b in troughs[i + 1 :]
            if not any(a[0] < c <= b[0] for c in cuts)
        ]
        if len(pairs) < 4:
            return None
        slope = median((b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs)
        mean = sum(t for t, _ in troughs) / len(troughs)
        spread = math.sqrt(sum((t - mean) ** 2 for t, _ in troughs))
        if slope < max(s.min_rate_bytes_per_second, s.min_rise_bytes / span):
            return _Verdict(slope, False, "floors below the rate floor")
        if slope * spread < (s.min_sigmas + 1) * noise:
            return _Verdict(slope, False, "floors not significant")
        if sum(1 for a, b in pairs if b[1] > a[1]) < 0.8 * len(pairs):
            return _Verdict(slope, False, "floors not rising in order")
        if not any(start < c for c in cuts) and _shifts_fit_better(troughs, 1):
            return _Verdict(slope, False, "floors shifted once")
        return _Verdict(slope, True, "rising sawtooth floors")

    def _stair(self, now: float) -> _Verdict | None:
        """Level shifts that keep coming at a steady pace are a stair-shaped leak."""
        s = self.settings
        assert self._segment_start is not None
        begin = max(now - s.window_seconds, self._segment_start + s.warmup_seconds)
        jumps = [j for j in self._jumps if j.start > begin]
        if len(jumps) < s.min_stair_steps:
            return None
        gaps = [b.end - a.end for a, b in pairwise(jumps)]
        pace = median(gaps)
        rate = sum(j.size for j in jumps) / (jumps[-1].end - jumps[0].end + pace)
        if max(gaps) > 3 * min(gaps) or now - jumps[-1].end > 2 * pace:
            return _Verdict(rate, False, "shifts not at a steady pace")
        rise = rate * (now - jumps[0].end + pace)
        if rate < s.min_rate_bytes_per_second or rise < 2 * s.min_rise_bytes:
            return _Verdict(rate, False, "below the rate floor")
        first = bisect_right(self._ts, jumps[0].start)
        treads = _thin(list(zip(self._ts[first:], self._ys[first:], strict=True)), s.max_points)
        flat = _theil_sen(treads, pace / 2, [j.end for j in jumps])
        if flat is None or flat < -0.5 * rate:
            return _Verdict(rate, False, "falling between the shifts")
        return _Verdict(rate, True, "a stair of level shifts")


def _theil_sen(
    points: list[Point], min_lag: float, cuts: list[float] | None = None
) -> float | None:
    """Median of the pairwise slopes at least min_lag apart, never across a cut."""
    ts = [t for t, _ in points]
    ys = [y for _, y in points]
    slopes: list[float] = []
    for group in _split(points, cuts) if cuts else [points]:
        lo = bisect_left(ts, group[0][0]) if group else 0
        hi = lo + len(group)
        for i in range(lo, hi):
            ti, yi = ts[i], ys[i]
            first = bisect_left(ts, ti + min_lag, i + 1, hi)
            slopes += [(ys[j] - yi) / (ts[j] - ti) for j in range(first, hi)]
    return median(slopes) if slopes else None


def _thin(points: list[Point], limit: int) -> list[Point]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)]


def _intercept(points: list[Point]) -> float:
    """Robust value at the first point of a line fitted through the points."""
    sample = _thin(points, 12)
    slope = _theil_sen(sample, 0.0) or 0.0
    t0 = points[0][0]
    return median(y - slope * (t - t0) for t, y in sample)


def _shifts_fit_better(points: list[Point], shifts: int, grid: int = 12) -> bool:
    """Whether up to `shifts` level shifts explain the points as well as a straight line."""
    n = len(points)
    ct = sum(t for t, _ in points) / n
    cy = sum(y for _, y in points) / n
    sxx = sum((t - ct) ** 2 for t, _ in points)
    sxy = sum((t - ct) * (y - cy) for t, y in points)
    sums, squares = [0.0], [0.0]
    for _, y in points:
        sums.append(sums[-1] + y - cy)
        squares.append(squares[-1] + (y - cy) ** 2)
    line = squares[n] - sxy * sxy / sxx if sxx > 0 else squares[n]

    def ssr(a: int, b: int) -> float:
        total = sums[b] - sums[a]
        return squares[b] - squares[a] - total * total / (b - a)

    cuts = sorted({round(k * n / grid) for k in range(1, grid)} - {0, n})
    best = ssr(0, n)
    for i, a in enumerate(cuts):
        best = min(best, ssr(0, a) + ssr(a, n))
        for b in cuts[i + 1 :] if shifts > 1 else ():
            best = min(best, ssr(0, a) + ssr(a, b) + ssr(b, n))
    return best <= line


def _beats_batches(blocks: list[Point], sigmas: float) -> bool:
    """Least-squares slope of the block medians over its standard error (batch means)."""
    n = len(blocks)
    ct = sum(t for t, _ in blocks) / n
    cy = sum(y for _, y in blocks) / n
    sxx = sum((t - ct) ** 2 for t, _ in blocks)
    beta = sum((t - ct) * (y - cy) for t, y in blocks) / sxx
    ssr = sum((y - cy - beta * (t - ct)) ** 2 for t, y in blocks)
    return beta * math.sqrt(sxx * (n - 2)) >= sigmas * math.sqrt(ssr)


def _beats_noise(
    window: list[Point], thinned: list[Point], cuts: list[float], slope: float, sigmas: float
) -> bool:
    """The slope over its white-noise standard error, within the stretches between cuts."""
    resid: list[float] = []
    jitter: list[float] = []
    for g in _split(window, cuts):
        if len(g) >= 2:
            mt = sum(t for t, _ in g) / len(g)
            r = [y - slope * (t - mt) for t, y in g]
            centre = median(r)
            resid.extend(x - centre for x in r)
            jitter.extend(b - a for a, b in pairwise(r))
    spread = 0.0
    for g in _split(thinned, cuts):
        if len(g) >= 2:
            mt = sum(t for t, _ in g) / len(g)
            spread += sum((t - mt) ** 2 for t, _ in g)
    if not resid or not jitter:
        return False
    centre = median(jitter)
    # the larger of the residual scale and the sample-to-sample scale: both must be beaten
    sigma = 1.4826 * max(
        median(abs(x) for x in resid), median(abs(x - centre) for x in jitter) / math.sqrt(2)
    )
    return slope * math.sqrt(spread) >= sigmas * sigma


def _split(points: list[Point], cuts: list[float]) -> list[list[Point]]:
    """The points in runs separated by the cut times."""
    groups: list[list[Point]] = [[] for _ in range(len(cuts) + 1)]
    for p in points:
        groups[bisect_right(cuts, p[0])].append(p)
    return groups
