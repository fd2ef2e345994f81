"""Streaming memory-leak detection for one memory series: does its floor keep rising, how fast."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import combinations, pairwise
from statistics import fmean, median

from glyph_guard.common.config import LeakSettings
from glyph_guard.exporter.leak_forecast import (
    NO_FORECAST,
    ExhaustionForecast,
    Z,
    forecast_exhaustion,
)

__all__ = ["LeakDetector", "LeakEvidence", "LeakReading", "LeakSettings"]


@dataclass(frozen=True)
class LeakEvidence:
    """What a window measured: the floors of its blocks and the tests they passed or failed."""

    window_seconds: float
    slope_bytes_per_second: float  # Theil-Sen slope of the block floors
    slope_stderr_bytes_per_second: float  # its standard error
    floor_rise_bytes: float  # last block's floor less the first's
    sigmas: float  # the slope over its standard error
    above_history_bytes: float | None  # last floor less the high floor of the older history
    top_steps_share: float  # share of the rise carried by the two largest block steps
    verdict: str  # "rising floor", or the first test it failed


@dataclass(frozen=True)
class LeakReading:
    """The detector's view after one sample; None where not (yet) defined."""

    slope_bytes_per_second: float | None
    suspected: bool
    segment_age_seconds: float
    forecast: ExhaustionForecast = NO_FORECAST  # from the recent high level at this slope
    evidence: LeakEvidence | None = None  # what tipped it and says how fast, else judged


class LeakDetector:
    """Suspects a leak when the floor a series returns to keeps rising; one per series.

    Samples are reduced to one-minute bins. Each window (40 min to 2 h by default, 20 min
    apart, inside the current segment and after its warm-up) is cut into blocks; the floor at
    the end of a block is a low quantile of the bin minima over the block (when sharp drops
    recur, over two blocks and over a tooth, and a stair's over 1.5 sawtooth periods, else
    at least its second-lowest bin: one low misread does not move it; where bursts hold the
    series well above it much of the time, the second-lowest bin): what the service returns
    to between bursts, GC teeth and noise. A window's floor far above both neighbours' level,
    whose block fell to that level in a bin or two, is taken at that level: stacked bursts
    held it up (in the older history also one at its edge, and far against the other floors'
    steps).
    A leak is suspected when, in some window, the floors rise

    * fast enough: their Theil-Sen slope clears the rate floor and the least rise;
    * steadily: at most one block falls back, the later half still rises (a plateau or a
      load cycle turning over does not), and no two block steps carry most of the rise
      (a one-off step or a burst does not; a stair of three or more chunks does; under four
      sawtooth teeth or fewer, where the floors step once a tooth, two may carry more of it
      if the troughs rise too);
    * significantly: the slope clears min_sigmas standard errors against both the scatter
      of the floors about their line and the block-to-block noise of the floors;
    * with the level: where each half of the window holds two whole sawtooth teeth or more,
      the median of its last whole teeth stands above that of as many at its start by half of
      what the floors climb between them (where two sawtooths beat, the floors, the troughs'
      lower envelope, climb and the level does not; the median, as crowding bursts lift a mean),
      or falls by more than twice that (bursts whose drops recur thinning out);
    * with the ceilings: under a sawtooth, the blocks' ceilings (a high quantile of the bin
      maxima they reach) do not fall by 0.3 of the floors' climb or more while their median
      level climbs under half of it (and falls by less than twice it): as two sawtooths' drops
      fall out of step, the peaks' upper envelope falls as the troughs' lower one climbs;
    * to a new high: above every older floor kept (history_seconds), which must not have
      fallen back by as much within a window before, nor hour-long floors since the warm-up
      (cycle_seconds back): a cycle or a sawtooth coming back is not a leak, and a load cycle
      of hours shows its fall on floors an hour long, which bursts do not hold up;

    and when a majority of the latest confirm_bins bins agree. Under a sawtooth whose deep
    drops recur, the troughs they fall to are judged alike, one a tooth (five or more, four
    where the teeth are too long for five in the longest window), and so are the teeth's mean
    levels, six or more (four, over four older, where the teeth are too long for six), which
    average out a shallower sawtooth that scatters the troughs (a tooth a step lands in is
    left out: its mean lies between the two levels); where as many teeth as the means need
    outlast a fast leak's deadline (45 min for 1 GB/h), three troughs and three means that
    both climb at 0.6 GB/h or faster will do;
    rising floors, troughs or means must lift both troughs and means (the median of the
    window's later half above the top decile of the older ones: where two sawtooths beat,
    the floors, the troughs or the means can climb alone); sharp drops that mostly end or
    start a one-bin glitch are no sawtooth; a stair of big chunks is judged on its own. A
    window thinned by scrape gaps is judged on four floors of six (a block they cut short on a
    sixth of its bins, where these reach its end), its older history on the time it spans. A
    fall far below the recent floor that the next sample confirms, a long gap or reset()
    starts a new segment; nothing is suspected within grace_seconds of its start.
    Memory and cost are bounded by the longer of history_seconds and cycle_seconds, in bins.
    """

    def __init__(self, settings: LeakSettings | None = None) -> None:
        self.settings = settings or LeakSettings()
        s = self.settings
        self._history_bins = math.ceil(s.history_seconds / s.bin_seconds) + 2
        self._max_bins = max(self._history_bins, math.ceil(s.cycle_seconds / s.bin_seconds) + 2)
        spans = (s.window_seconds * k / s.windows for k in range(1, s.windows + 1))
        self._windows = [span for span in spans if span >= s.min_window_seconds]
        self.reset()

    def reset(self) -> None:
        """Forget the series: the next sample starts a new segment (e.g. a new process)."""
        self._segment_start: float | None = None
        self._last_t: float | None = None
        self._fallen: tuple[float, float] | None = None  # a sample far below, held back
        self._ts: list[float] = []
        self._ys: list[float] = []
        self._lows: list[float] = []
        self._highs: list[float] = []
        self._bins: list[int] = []  # the index of each closed bin
        self._shapes_from = -(1 << 62)  # the first bin the shapes are judged on: none yet
        self._floor_cache: dict[tuple[int, int, float], float | None] = {}
        self._busy_shares: dict[int, float | None] = {}
        self._histories: dict[tuple[float, bool], tuple[tuple[int, int, int, float], _History]] = {}
        self._stair_steps: (
            tuple[tuple[int, int, int, float, int], list[tuple[float, float]], float] | None
        ) = None
        self._open_index: int | None = None
        self._open_t: list[float] = []
        self._open_v: list[float] = []
        self._recent: deque[tuple[float, float]] = deque(maxlen=64)
        self._slope: float | None = None
        self._level = 0.0  # the highest sample of the last LEVEL_SECONDS
        self._recent_floor: float | None = None  # of the last RESTART_REFERENCE_SECONDS
        self._suspected = False
        self._verdicts: deque[bool] = deque(maxlen=self.settings.confirm_bins)
        self._evidence: LeakEvidence | None = None
        self._reading = LeakReading(None, False, 0.0)

    def update(
        self, timestamp_seconds: float, value_bytes: float, limit_bytes: float | None
    ) -> LeakReading:
        """Add one sample; samples that are not finite or not newer are ignored, and one far
        below the recent floor waits for the next: a restart if that stays well below it (a
        warm-up may climb half way back within a sample), else a misread."""
        t, v = float(timestamp_seconds), float(value_bytes)
        fallen, self._fallen = self._fallen, None
        newest = fallen[0] if fallen else self._last_t
        if not (math.isfinite(t) and math.isfinite(v)) or (newest is not None and t <= newest):
            self._fallen = fallen
            return self._reading
        if self._last_t is None or t - self._last_t > self.settings.max_gap_seconds:
            self.reset()
            self._segment_start = t
        elif self._restarted(t, v, 0.5 if fallen else 1.0):
            if fallen is None:
                self._fallen = (t, v)
                return self._reading
            self.reset()
            self._segment_start = fallen[0]
            self._add(*fallen, limit_bytes)
        return self._add(t, v, limit_bytes)

    def _add(self, t: float, v: float, limit_bytes: float | None) -> LeakReading:
        """Fold a sample into the open bin (closing the one before) and read the verdict."""
        s = self.settings
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
        suspected = self._suspected and age >= s.grace_seconds
        evidence = self._evidence
        forecast = forecast_exhaustion(
            level_bytes=max(self._level, *self._open_v),
            limit_bytes=limit_bytes,
            slope_bytes_per_second=self._slope,
            slope_stderr_bytes_per_second=evidence.slope_stderr_bytes_per_second
            if evidence
            else 0.0,
            suspected=suspected,
        )
        self._reading = LeakReading(self._slope, suspected, age, forecast, evidence)
        return self._reading

    def _restarted(self, t: float, v: float, share: float = 1.0) -> bool:
        """A fall far below what the service returns to (its floor over the last half hour,
        else its recent median), by `share` of restart_drop_fraction: a burst or a sawtooth
        ending falls to its floor, not below."""
        while self._recent and self._recent[0][0] < t - 300.0:
            self._recent.popleft()
        if not self._recent:
            return False
        reference = self._recent_floor
        if reference is None:
            reference = median(x for _, x in self._recent)
        return reference > 0 and v < (1.0 - share * self.settings.restart_drop_fraction) * reference

    def _close_bin(self) -> None:
        self._ts.append(sum(self._open_t) / len(self._open_t))
        self._ys.append(median(self._open_v))
        self._lows.append(min(self._open_v))
        self._highs.append(max(self._open_v))
        assert self._open_index is not None
        self._bins.append(self._open_index)
        self._open_t, self._open_v = [], []
        level_bins = LEVEL_SECONDS / self.settings.bin_seconds
        recent = bisect_right(self._bins, self._bins[-1] - level_bins)
        self._level = max(self._highs[recent:])
        since = self._bins[-1] - RESTART_REFERENCE_SECONDS / self.settings.bin_seconds
        lows = self._lows[bisect_right(self._bins, since) :]
        self._recent_floor = _quantile(lows, 0.2) if len(lows) >= 5 else None
        if len(self._bins) - bisect_left(self._bins, self._shapes_from) > self._history_bins + 32:
            self._shapes_from = self._bins[-self._history_bins]
        if len(self._ts) > self._max_bins + 32:
            cut = len(self._ts) - self._max_bins
            for seq in (self._ts, self._ys, self._lows, self._highs, self._bins):
                del seq[:cut]
            first = self._bins[0]
            self._floor_cache = {k: v for k, v in self._floor_cache.items() if k[0] >= first}
            self._busy_shares = {k: v for k, v in self._busy_shares.items() if k >= first}
        self._evaluate()

    def _evaluate(self) -> None:
        s = self.settings
        assert self._segment_start is not None
        now = self._ts[-1]
        settled = now - self._segment_start - s.warmup_seconds
        judged: list[LeakEvidence] = []  # the longest window first
        noise, period, troughs, means = self._bin_noise_and_period()
        settled_at = self._segment_start + s.warmup_seconds
        troughs = [p for p in troughs if p[0] >= settled_at]
        means = [p for p in means if p[0] >= settled_at]
        busy = not period and self._busy()
        for span in reversed(self._windows):
            if settled >= span + s.min_history_seconds:
                evidence = self._window_evidence(
                    now,
                    span,
                    noise,
                    period,
                    troughs=troughs,
                    means=means,
                    busy=busy,
                    whole=not judged,
                )
                judged += [evidence] if evidence else []
        rising = [e for e in judged if e.verdict == RISING]
        if settled >= s.min_history_seconds:
            stair = self._stair(noise, period)
            rising += [stair] if stair else []
        if troughs:
            # teeth so long that the longest window cannot hold five troughs or six means:
            # four must do; means scatter more (with the bins a ramp holds): four older
            gaps = [b[0] - a[0] for a, b in pairwise(troughs)]
            tooth = median(gaps) if gaps else 0.0
            least = 4 if 5 * tooth > self._windows[-1] else 5
            means_least = 4 if s.blocks * tooth > self._windows[-1] else s.blocks
            teeth = self._teeth(
                now,
                troughs,
                TROUGHS,
                least=least,
                least_older=least - 1,
                troughs=troughs,
                means=means,
            ) or self._teeth(
                now, means, TEETH, least=means_least, least_older=4, troughs=troughs, means=means
            )
            if not teeth and means_least * tooth > FAST_DEADLINE_SECONDS:
                # teeth too long for as many within a fast leak's deadline: three troughs
                # and three means, both climbing at 0.6 of its pace or faster, will do
                pace = FAST_PACE_SHARE * FAST_RATE_BYTES_PER_SECOND
                fast = [
                    self._teeth(
                        now,
                        points,
                        kind,
                        least=3,
                        least_older=4,
                        troughs=troughs,
                        means=means,
                        pace=pace,
                    )
                    for points, kind in ((troughs, TROUGHS), (means, TEETH))
                ]
                teeth = fast[0] if all(fast) else None
            rising += [teeth] if teeth else []
        self._verdicts.append(bool(rising))
        # a majority of the latest verdicts must agree: one odd bin does not tip it
        self._suspected = bool(rising) and 2 * sum(self._verdicts) > self.settings.confirm_bins
        self._evidence = _pace(rising) if rising else (judged[0] if judged else None)
        self._slope = self._evidence.slope_bytes_per_second if self._evidence else None

    def _bin_noise_and_period(
        self,
    ) -> tuple[float, float | None, list[tuple[float, float]], list[tuple[float, float]]]:
        """The robust scatter of the one-minute medians, the period of sharp drops (a
        sawtooth's) when they recur, the trough after each deep one and the mean level of
        each tooth between two deep ones."""
        ts, ys = self._ts, self._ys
        diffs = [b - a for a, b in pairwise(ys[-240:])]
        if len(diffs) < 8:
            return 0.0, None, [], []
        centre = median(diffs)
        sigma = 1.4826 * median(abs(x - centre) for x in diffs) / math.sqrt(2)
        sharp = max(6 * sigma, 0.005 * abs(ys[-1]))
        offset = len(ts) - len(diffs)
        # a drop inside a bin splits over two bin steps: count the run once
        drops = [
            (offset + i, x + min(0.0, diffs[i + 1] if i + 1 < len(diffs) else 0.0))
            for i, x in enumerate(diffs)
            if x < -sharp and (i == 0 or diffs[i - 1] >= -sharp)
        ]
        # a one-bin excursion that comes straight back is a glitch (a sample misread up or
        # down) or a one-minute burst: where such make most of the drops they are glitches,
        # left out (a few would pass for a sawtooth's period); among bursts' they stay
        kept = [(i, x) for i, x in drops if not _glitch(diffs, i - offset, sharp)]
        if 2 * len(kept) < len(drops):
            drops = kept
        least = self.settings.min_rise_bytes / self.settings.blocks
        if len(drops) < 4 or -median(x for _, x in drops) < least:
            return sigma, None, [], []  # none, or too shallow to hide what the least leak adds
        period = _period([ts[i] for i, _ in drops])
        # a second, shallower sawtooth's drops are not the troughs the service returns to
        deep = [i for i, x in drops if x <= _quantile([x for _, x in drops], 0.25) / 2]
        teeth = _period([ts[i] for i in deep]) if len(deep) >= 4 else None
        if not teeth:
            return sigma, period, [], []
        troughs = [(ts[i], min(self._lows[i : i + 2])) for i in deep]
        # the bins wholly inside a tooth: its ramp averages out a shallower sawtooth and noise
        means = [
            ((ts[a] + ts[b - 1]) / 2, sum(tooth) / len(tooth))
            for a, b in pairwise(deep)
            if len(tooth := ys[a + 1 : b - 1]) >= 3 and _smooth_ramp(tooth, sharp)
        ]
        return sigma, period, troughs, means

    def _first_bin(self) -> int:
        """The oldest bin the shapes are judged on: some history_seconds back (only a load
        cycle's fall is looked for further back, cycle_seconds)."""
        return max(self._bins[0], self._shapes_from)

    def _busy(self) -> bool:
        """Whether requests hold the series well above its floor much of the time (heavy
        bursts): a floor is then the second-lowest bin minimum of its reach, not a quantile."""
        g = BUSY_GROUP_BINS
        shares = []
        for start in range(g * (self._first_bin() // g + 1), self._bins[-1] - 2 * g + 2, g):
            if start not in self._busy_shares:
                self._busy_shares[start] = self._busy_share(start)
            share = self._busy_shares[start]
            shares += [share] if share is not None else []
        return len(shares) >= 4 and median(shares) > BUSY_SHARE

    def _busy_share(self, start: int) -> float | None:
        """The share of the bin minima of a group well above its floor: the higher of its
        second-lowest and the next group's (a rising series is not busy); None when sparse."""
        g = BUSY_GROUP_BINS
        lo, mid, hi = (bisect_right(self._bins, start + k * g - 1) for k in range(3))
        group, after = self._lows[lo:mid], self._lows[mid:hi]
        if 2 * len(group) < g or 2 * len(after) < g:
            return None
        floor = max(sorted(group)[1], sorted(after)[1])
        return sum(1 for x in group if x > floor + BUSY_MARGIN * abs(floor)) / len(group)

    def _floor(self, end: int, reach: int, quantile: float) -> float | None:
        """A low quantile of the bin minima in the `reach` bins up to bin `end`; None with
        under a third of them there (a sixth up to its end). Closed bins never change, so
        floors are kept."""
        key = (end, reach, quantile)
        if key not in self._floor_cache:
            lo, hi = bisect_right(self._bins, end - reach), bisect_right(self._bins, end)
            floor, n = None, hi - lo
            # a reach a scrape gap cut short: a sixth of its bins will do where the newest lies
            # in its last sixth (a floor is dated at its end; bins before a gap would misdate it)
            if (3 * n >= reach and n >= 2) or (
                6 * n >= reach and n >= 3 and 6 * (end - self._bins[hi - 1]) <= reach
            ):
                block = sorted(self._lows[lo:hi])
                floor = block[int(quantile * (len(block) - 1))]
            self._floor_cache[key] = floor
        return self._floor_cache[key]

    def _floors(self, ends: range, reach: int, quantile: float) -> list[tuple[float, float]]:
        """(time, floor) at each of the block ends (bin indices) that has one."""
        out = []
        for end in ends:
            floor = self._floor(end, reach, quantile)
            if floor is not None:
                out.append(((end + 1) * self.settings.bin_seconds, floor))
        return out

    def _quantile(self, period: float | None) -> float:
        """The quantile of bin minima that is a floor; under a sawtooth, the troughs' level
        (about one bin a tooth is that low, not a fifth of them)."""
        s = self.settings
        if not period:
            return s.floor_quantile
        return min(s.floor_quantile, 0.5 / max(1, round(period / s.bin_seconds)))

    def _stair(self, bin_noise: float, period: float | None) -> LeakEvidence | None:
        """Three or more big chunks since the grace period (or since the warm-up, less a
        first step that may be its tail, two of them after the grace period and all of one
        pace and size), flat between them, of like size
        and pace, the latest no longer ago than 1.5 widest paces: a leak too coarse for a
        window's blocks to see as steady (one chunk an hour, cached images). A chunk shows on
        the block under way two bins after it, unless chunks come closer together than a block
        of the longest window (it may be a burst; the windows judge chunks that close)."""
        s = self.settings
        assert self._segment_start is not None
        reach = max(1, round(s.min_reach_seconds / s.bin_seconds))
        if period:
            reach = max(reach, math.ceil(1.5 * period / s.bin_seconds))
        quantile = self._quantile(period)
        if not period:  # at least the second-lowest bin: one low misread does not move it
            quantile = max(quantile, _second_lowest(reach))
        last = self._bins[-1]
        begin = math.ceil((self._segment_start + s.warmup_seconds) / s.bin_seconds)
        begin = max(begin, self._first_bin()) + reach
        first = reach * math.ceil(begin / reach)  # on a fixed grid: each floor is taken once
        # the floors change once a block (or as the history moves on): keep their steps
        key = (first, reach * (last // reach), reach, quantile, self._first_bin())
        if self._stair_steps is None or self._stair_steps[0] != key:
            floors = self._floors(range(first, key[1] + 1, reach), reach, quantile)
            found = [(t, b - a) for (_, a), (t, b) in pairwise(floors)]
            self._stair_steps = (key, found, _step_noise([x for _, x in found]))
        _, steps, step_noise = self._stair_steps
        if last > key[1] and steps:  # the floor so far of the block under way
            # the second-lowest of its last three bins: a chunk shows two bins after it
            tail = (
                self._floor(last, 3, _second_lowest(3))
                if not period
                else self._floor(last, reach, quantile)
            )
            grid = self._floor(key[1], reach, quantile)
            if tail is not None and grid is not None:
                steps = [*steps, ((last + 1) * s.bin_seconds, tail - grid)]
        if len(steps) < 4:
            return None
        noise = max(step_noise, 1.43 * bin_noise / math.sqrt(reach))
        least = max(s.min_sigmas * noise, s.min_rise_bytes / 3)
        chunks: list[tuple[float, float]] = []  # (time, size) of runs of big rises
        run = 0
        for t, x in steps:
            if x >= least / 2 and run and run < 2:
                chunks[-1] = (t, chunks[-1][1] + x)  # a chunk split over two floors
                run += 1
            elif x >= least:
                chunks.append((t, x))
                run = 1
            else:
                run = 0
        chunks = [c for c in chunks if c[1] >= least]
        # a chunk's step shows within two reaches of it
        judged = self._segment_start + s.grace_seconds + 2 * reach * s.bin_seconds
        late = sum(1 for t, _ in chunks if t >= judged)
        if late < 2:
            return None
        # a warm-up allocates in steps too: when chunks before the grace period are needed,
        # all of them must keep one pace and size, as a stair does and a cache filling does not
        early = late < 3
        chunks = chunks if early else chunks[len(chunks) - late :]
        if early and len(chunks) > 3 and steps[0][1] >= least:
            chunks = chunks[1:]  # a warm-up that outlasts warmup_seconds ends in a step
        if len(chunks) < 3:
            return None
        sizes = [x for _, x in chunks]
        now = (last + 1) * s.bin_seconds
        falls = [x + min(0.0, y) for (_, x), (_, y) in pairwise([*steps, (now, 0.0)]) if x < 0]
        if min(falls, default=0.0) < -max(least, median(sizes)) / 2:
            return None  # it came back down (over one floor or two): a burst or a cycle
        paces = [b[0] - a[0] for a, b in pairwise(chunks)]
        if (
            not period
            and chunks[-1][0] > (key[1] + 1) * s.bin_seconds
            and min(paces) < s.window_seconds / s.blocks
        ):
            return None  # seen on the block under way only, it may be a burst
        size_ratio, pace_ratio = (1.5, 1.5) if early else (4, 3)
        if max(sizes) > size_ratio * min(sizes) or max(paces) > pace_ratio * min(paces):
            return None
        if now - chunks[-1][0] > 1.5 * max(paces):
            return None  # it has stopped
        rate = sum(sizes[1:]) / (chunks[-1][0] - chunks[0][0])
        if rate < s.min_rate_bytes_per_second:
            return None
        rise = sum(sizes)
        return LeakEvidence(
            chunks[-1][0] - chunks[0][0] + max(paces),
            rate,
            rate / len(chunks),
            rise,
            min(sizes) / max(noise, 1e-9),
            rise,
            2 / len(chunks),
            STAIR,
        )

    def _teeth(
        self,
        now: float,
        points: list[tuple[float, float]],
        verdict: str,
        *,
        least: int,
        least_older: int,
        troughs: list[tuple[float, float]],
        means: list[tuple[float, float]],
        pace: float = 0.0,
    ) -> LeakEvidence | None:
        """Under a sawtooth, one point a tooth (its trough, or its mean level): at least
        `least` in some window and `least_older` before it, rising over the rate floor (and at
        `pace` or faster) steadily enough that the slope clears min_sigmas standard errors
        against their scatter, to above every older one, which did not fall back as much
        before, and both the troughs and the means lifting (where two sawtooths beat, either
        may wander for hours while the other stays; a leak lifts both)."""
        s = self.settings
        for span in reversed(self._windows):
            inside = [p for p in points if p[0] > now - span]
            older = [p for p in points if p[0] <= now - span]
            if (
                len(inside) < least
                or len(older) < least_older
                or now - span - older[0][0] < s.min_history_seconds
            ):
                continue
            gaps = [b[0] - a[0] for a, b in pairwise(inside)]
            if max(gaps) > 2 * min(gaps):
                continue  # not one tooth after another: drops of bursts, or teeth missed
            slope = _theil_sen(inside)
            if slope < max(pace, s.min_rate_bytes_per_second) or slope * span < s.min_rise_bytes:
                continue
            mean = sum(t for t, _ in inside) / len(inside)
            spread = math.sqrt(sum((t - mean) ** 2 for t, _ in inside))
            centre, scatter = _line_scatter(inside, slope)
            # they wander (a second sawtooth beating with the first): as much as they did
            noise = max(scatter, _line_scatter(older, _theil_sen(older))[1], 1e-9)
            stderr = noise / spread
            level = centre + slope * (inside[-1][0] - mean)
            high = max(y for _, y in older)
            smooth = _smoothed(older)
            rise = slope * span
            jump = max(b - a for (_, a), (_, b) in pairwise(inside))
            if (
                slope / stderr < s.min_sigmas
                or _stay_within(troughs, now - span, now - span / 2)
                or _stay_within(means, now - span, now - span / 2)
                or jump > 0.6 * rise  # a burst staying up, not a floor creeping
                or level - high < s.min_sigmas / 2 * noise
                or _fall_back(smooth, span) > s.max_fall_back_fraction * rise
            ):
                continue
            return LeakEvidence(
                span, slope, stderr, rise, slope / stderr, level - high, 0.0, verdict
            )
        return None

    def _level_lift(self, now: float, span: float, teeth: float) -> tuple[float, float]:
        """How much higher the median of the one-minute medians stands over a window's last
        `teeth` seconds than over as long at its start, and how far apart their times lie."""
        first = bisect_right(self._ts, now - span)
        early = slice(first, bisect_right(self._ts, now - span + teeth, first))
        late = slice(bisect_right(self._ts, now - teeth, first), len(self._ts))
        if not self._ys[early] or not self._ys[late]:
            return 0.0, 0.0
        lift = median(self._ys[late]) - median(self._ys[early])
        return lift, fmean(self._ts[late]) - fmean(self._ts[early])

    def _ceilings_and_levels(
        self, ends: range, reach: int, quantile: float
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(time, ceiling) and (time, level) at each block end: the quantile of the bin maxima
        over its reach as high as the floor's is low (the peaks the series climbs to) and the
        median of its one-minute medians."""
        ceilings, levels = [], []
        for end in ends:
            lo, hi = bisect_right(self._bins, end - reach), bisect_right(self._bins, end)
            if hi - lo >= 2:
                t = (end + 1) * self.settings.bin_seconds
                ceilings.append((t, _quantile(self._highs[lo:hi], 1 - quantile)))
                levels.append((t, median(self._ys[lo:hi])))
        return ceilings, levels

    def _history(
        self,
        span: float,
        *,
        begin: float,
        start: int,
        width: int,
        reach: int,
        quantile: float,
        cycle: bool = False,
    ) -> _History:
        """The floors older than a window (ending at its start), on a grid of fixed block
        ends: they change once a block, so what is measured on them is kept until then (the
        hour-long `cycle` history is kept apart)."""
        first = width * math.ceil((begin / self.settings.bin_seconds + reach) / width)
        key = (first, width * math.floor(start / width), reach, quantile)
        kept = self._histories.get((span, cycle))
        if kept is None or kept[0] != key:
            ends = range(first, key[1] + 1, width)
            floors = self._floors(ends, reach, quantile)
            ys = [y for _, y in floors]
            levels = self._levels(ends, reach, floors, older=True)
            high = _quantile([y for _, y in levels], self.settings.history_quantile) if ys else None
            history = _History(
                floors, levels, [b - a for a, b in pairwise(ys)], high, _fall_back(levels, span)
            )
            kept = self._histories[span, cycle] = (key, history)
        return kept[1]

    def _levels(
        self, ends: range, reach: int, floors: list[tuple[float, float]], *, older: bool = False
    ) -> list[tuple[float, float]]:
        """The floors, but one far above its neighbours' whose block fell to their level in a
        bin or two at that level: bursts held it up, the service had not risen (a cycle's high
        block stays high; noise is not far above). In a window, where taking it down removes a
        fall back, it needs two neighbours and is far against every step between the floors.
        In the `older` history, where it only hides a leak (a high to rise above, a fall back),
        one at an edge is judged on its one neighbour, and far is against the steps between
        the others: its own two would pass for the noise among a few."""
        steps = [b - a for (_, a), (_, b) in pairwise(floors)]
        far = self.settings.min_sigmas * _step_noise(steps)
        lows = self._floors(ends, reach, 0.0)
        levels = []
        for i, ((t, y), (_, low)) in enumerate(zip(floors, lows, strict=True)):
            near = [floors[j][1] for j in (i - 1, i + 1) if 0 <= j < len(floors)]
            if len(near) < (1 if older else 2):
                levels.append((t, y))
                continue
            if older:
                others = steps[: max(0, i - 1)] + steps[i + 1 :]
                far = self.settings.min_sigmas * _step_noise(others)
            level = max(low, *near)
            levels.append((t, level if y - level > far else y))
        return levels

    def _window_evidence(
        self,
        now: float,
        span: float,
        bin_noise: float,
        period: float | None,
        *,
        troughs: list[tuple[float, float]],
        means: list[tuple[float, float]],
        busy: bool,
        whole: bool,
    ) -> LeakEvidence | None:
        """The window's evidence; unless `whole`, None as soon as the floors' shape fails
        (before the costlier comparison with the older history)."""
        s = self.settings
        assert self._segment_start is not None
        width = max(1, round(span / s.blocks / s.bin_seconds))  # in bins
        reach = max(width, round(s.min_reach_seconds / s.bin_seconds))
        if period:  # a floor must reach back to a trough: over two blocks and over a tooth
            reach = max(reach, 2 * width, math.ceil(1.1 * period / s.bin_seconds))
        quantile = _second_lowest(reach) if busy else self._quantile(period)
        last = self._bins[-1]
        start = last - s.blocks * width
        ends = range(start + width, last + 1, width)
        floors = self._levels(ends, reach, self._floors(ends, reach, quantile))
        if len(floors) < s.blocks - 2:
            return None
        slope = _theil_sen(floors)
        values = [y for _, y in floors]
        rise = values[-1] - values[0]
        steps = [b - a for a, b in pairwise(values)]
        block = width * s.bin_seconds  # a rise across a missing block is spread over both
        rises = sorted(
            ((b[1] - a[1]) * block / (b[0] - a[0]) for a, b in pairwise(floors) if b[1] > a[1]),
            reverse=True,
        )
        top = sum(rises[:2]) / sum(rises) if rises and sum(rises) > 0 else 1.0
        (t0, y0), (th, yh), (t1, y1) = floors[0], floors[len(floors) // 2], floors[-1]
        shape = None
        if slope < s.min_rate_bytes_per_second or slope * span < s.min_rise_bytes:
            shape = "below the rate floor"
        elif sum(1 for x in steps if x < 0) > 1 or -sum(x for x in steps if x < 0) > 0.25 * rise:
            shape = "floors fall back"
        elif (y1 - yh) / (t1 - th) < s.min_late_fraction * (yh - y0) / (th - t0):
            shape = "levelling off"
        elif top > s.max_top_steps_share and not (
            # four teeth or fewer: the floors step where a trough falls, two steps of four
            # carry half a steady rise; so they may carry more where the troughs rise too
            top <= FEW_TEETH_TOP_STEPS_SHARE
            and period
            and span <= FEW_TEETH * period
            and _rising(troughs, now - span, slope / 2)
        ):
            shape = "one or two steps"
        if shape and not whole:
            return None
        begin = max(self._segment_start, now - s.history_seconds)
        history = self._history(
            span, begin=begin, start=start, width=width, reach=reach, quantile=quantile
        )
        older = history.floors
        joint = [values[0] - older[-1][1]] if older else []
        noise = max(
            _step_noise(history.steps + joint + steps),
            1.43 * bin_noise / math.sqrt(reach),  # a low quantile of white noise
        )
        mean = sum(t for t, _ in floors) / len(floors)
        spread = math.sqrt(sum((t - mean) ** 2 for t, _ in floors))
        resid = [y - slope * (t - mean) for t, y in floors]
        centre = median(resid)
        scatter = 1.4826 * median(abs(r - centre) for r in resid)
        stderr = max(scatter, noise, 1e-9) / spread
        sigmas = slope / stderr
        above = None if history.high is None else values[-1] - history.high

        def verdict(reason: str) -> LeakEvidence:
            return LeakEvidence(span, slope, stderr, rise, sigmas, above, top, reason)

        if shape:
            return verdict(shape)
        if sigmas < s.min_sigmas:
            return verdict("not significant")
        if period and span / 2 >= LEVEL_TEETH * period:
            lift, apart = self._level_lift(now, span, span / 2 // period * period)
            if _lags(lift, slope * apart):
                return verdict("level lags the floors")
        # each older floor sums up the reach before it, but not the warm-up's
        covered = (
            t0 - max(older[0][0] - reach * s.bin_seconds, self._segment_start + s.warmup_seconds)
            if older
            else 0.0
        )
        if above is None or covered < s.min_history_seconds:
            return verdict("too little older history")
        if above < s.min_sigmas / 2 * noise:
            return verdict("not above the older history")
        if _stay_within(troughs, now - span, now - span / 2):
            return verdict("troughs within the older ones")
        if _stay_within(means, now - span, now - span / 2):
            return verdict("teeth within the older ones")
        fall = max((y - y0 for t, y in reversed(history.levels) if t >= t0 - span), default=0.0)
        if max(history.fall, fall) > s.max_fall_back_fraction * rise:
            return verdict("fell back as much before")
        cycle = self._history(
            span,
            begin=max(self._segment_start + s.warmup_seconds, now - s.cycle_seconds),
            start=start,
            width=width,
            reach=max(reach, round(CYCLE_REACH_SECONDS / s.bin_seconds)),
            quantile=quantile,
            cycle=True,
        )
        if cycle.fall > s.max_fall_back_fraction * rise:
            return verdict("fell back as far before")
        if period:
            ceilings, levels = self._ceilings_and_levels(ends, reach, quantile)
            if (
                len(ceilings) >= s.blocks - 2
                and _theil_sen(ceilings) < -CEILING_FALL * slope
                and _lags(_theil_sen(levels), slope)
            ):
                return verdict("ceilings fall as the floors climb")
        return verdict(RISING)


@dataclass(frozen=True)
class _History:
    """What a window compares its floors with: the older floors of the segment."""

    floors: list[tuple[float, float]]
    levels: list[tuple[float, float]]  # the floors, those bursts held up at their neighbours'
    steps: list[float]  # between neighbouring older floors
    high: float | None  # the history_quantile of their levels
    fall: float  # the largest fall of their levels within the window's span


RISING = "rising floor"
STAIR = "stair of chunks"
TROUGHS = "rising troughs"
TEETH = "rising teeth"
BUSY_GROUP_BINS = 20  # the bins whose minima are judged busy together
BUSY_MARGIN = 0.02  # a bin minimum this far above the floor, as a fraction of it, is busy
BUSY_SHARE = 0.3  # the median share of busy bins in a group that makes a series busy
RESTART_REFERENCE_SECONDS = 1800.0  # the floor a restart falls far below is this recent
CYCLE_REACH_SECONDS = 3600.0  # a cycle's floors span an hour: bursts do not hold one up
LEVEL_SECONDS = 1800.0  # the level a forecast starts from: the recent high, as bursts reach it
FEW_TEETH = 4.5  # a window holding this many sawtooth teeth or fewer has floors one a tooth
FEW_TEETH_TOP_STEPS_SHARE = 0.85  # the most two of its block steps may carry of the rise
LEVEL_TEETH = 2  # whole teeth a window's half must hold for its level to be compared
LEVEL_LIFT = 0.5  # the least share of the floors' climb the level must climb too
LEVEL_FALL = 2.0  # a level falling by more of it is bursts thinning, not sawtooths beating
CEILING_FALL = 0.3  # ceilings falling by this share of the floors' climb: sawtooths beating
FAST_RATE_BYTES_PER_SECOND = 1e9 / 3600  # a leak this fast (1 GB/h) is due sooner,
FAST_DEADLINE_SECONDS = 2700.0  # within 45 min of its onset (the labelled traces' rule)
FAST_PACE_SHARE = 0.6  # three teeth that straddle its onset climb at over half its pace


def _lags(lift: float, climb: float) -> bool:
    """Whether a level lifted by `lift` lags floors that climb by `climb`: under LEVEL_LIFT of
    it, but not fallen by over LEVEL_FALL of it."""
    return -LEVEL_FALL * climb <= lift < LEVEL_LIFT * climb


def _pace(rising: list[LeakEvidence]) -> LeakEvidence:
    """The evidence that says how fast it grows: the longest window (else a stair), unless a
    shorter window's floors rise faster by more than the forecast's interval (Z standard errors
    of the difference): a leak speeding up is forecast at its recent pace."""
    longest = rising[0]
    if longest.verdict != RISING:
        return longest
    slope, stderr = longest.slope_bytes_per_second, longest.slope_stderr_bytes_per_second
    faster = [
        e
        for e in rising
        if e.verdict == RISING
        and e.slope_bytes_per_second - slope
        > Z * math.hypot(e.slope_stderr_bytes_per_second, stderr)
    ]
    return max(faster, key=lambda e: e.slope_bytes_per_second, default=longest)


def _theil_sen(points: list[tuple[float, float]]) -> float:
    """Median of the pairwise slopes."""
    return median((b[1] - a[1]) / (b[0] - a[0]) for a, b in combinations(points, 2))


def _line_scatter(points: list[tuple[float, float]], slope: float) -> tuple[float, float]:
    """The median and the standard deviation of the points about a line of this slope
    through their mean time (not a robust one: a few points lining up by chance would hide
    the scatter of the rest)."""
    mean = sum(t for t, _ in points) / len(points)
    resid = [y - slope * (t - mean) for t, y in points]
    centre = median(resid)
    return centre, math.sqrt(sum((r - centre) ** 2 for r in resid) / max(1, len(resid) - 2))


def _period(times: list[float]) -> float | None:
    """The typical time between events, when it is regular."""
    gaps = sorted(b - a for a, b in pairwise(times))
    typical = median(gaps)
    regular = gaps[3 * len(gaps) // 4] - gaps[len(gaps) // 4] <= typical
    return typical if regular else None


def _rising(points: list[tuple[float, float]], start: float, slope: float) -> bool:
    """Whether the points after `start`, three or more, rise at `slope` or faster."""
    inside = [p for p in points if p[0] > start]
    return len(inside) >= 3 and _theil_sen(inside) >= slope


def _glitch(diffs: list[float], i: int, sharp: float) -> bool:
    """Whether the sharp drop at step i ends or starts a one-bin excursion that comes straight
    back between calm steps (a burst or a tooth holds for bins, or ramps before it drops)."""

    def calm(k: int) -> bool:
        return not 0 <= k < len(diffs) or abs(diffs[k]) <= sharp

    if i >= 1 and diffs[i - 1] > sharp and abs(diffs[i - 1] + diffs[i]) <= sharp:
        return calm(i - 2) and calm(i + 1)  # the end of one high sample
    if i + 1 < len(diffs) and diffs[i + 1] > sharp and abs(diffs[i] + diffs[i + 1]) <= sharp:
        return calm(i - 1) and calm(i + 2)  # one low sample
    return False


def _stay_within(points: list[tuple[float, float]], start: float, middle: float) -> bool:
    """Whether the troughs (or teeth's means) after `middle` stay, in the median, below the
    top decile of those before `start`: floors can rise as the troughs' lower envelope wanders
    (two sawtooths beating, a trough's height sampled at random), where a leak lifts every
    trough and every tooth."""
    later = [y for t, y in points if t > middle]
    older = [y for t, y in points if t <= start]
    return len(later) >= 2 and len(older) >= 4 and median(later) < _quantile(older, 0.9)


def _fall_back(floors: list[tuple[float, float]], span: float) -> float:
    """The largest fall of the floors within `span`: how far the service has come back down."""
    times = [t for t, _ in floors]
    ys = [y for _, y in floors]
    worst = 0.0
    for i, (t, y) in enumerate(floors):
        within = ys[i + 1 : bisect_right(times, t + span, i + 1)]
        if within:
            worst = max(worst, y - min(within))
    return worst


def _smoothed(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Each point's value the median of it and its neighbours: one odd point drops out."""
    return [
        (t, median(y for _, y in points[max(0, i - 1) : i + 2])) for i, (t, _) in enumerate(points)
    ]


def _smooth_ramp(ys: list[float], sharp: float) -> bool:
    """Whether a tooth rises without a step: no bin step sharply above its typical one."""
    steps = [b - a for a, b in pairwise(ys)]
    return max(steps) - median(steps) <= sharp


def _second_lowest(reach: int) -> float:
    """The quantile that picks the second-lowest of `reach` bins (the lowest of one)."""
    return 1 / max(1, reach - 1)


def _step_noise(steps: list[float]) -> float:
    """Robust standard deviation of one floor, from the steps between neighbouring floors."""
    if len(steps) < 3:
        return 0.0
    centre = median(steps)
    return 1.4826 * median(abs(x - centre) for x in steps) / math.sqrt(2)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]
