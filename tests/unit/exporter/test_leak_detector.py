"""Tests of the streaming leak detector and the replay command on generated and recorded series."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from glyph_guard.exporter.leak_detector import LeakDetector, LeakReading, LeakSettings
from glyph_guard.exporter.leak_forecast import NO_FORECAST, Urgency
from glyph_guard_demo.testkit.leak_series import (
    GB,
    HEALTHY,
    HOUR,
    LEAKS,
    MB,
    Series,
    deadline_for,
    generate,
    load_traces,
    restarted,
    sawtooth,
    score_flags,
)
from glyph_guard_demo.testkit.support import REPO

LIMIT = 64 * GB
BENCH = REPO / "bench"
TRACES = Path(os.environ.get("GLYPH_LEAK_TRACES", REPO.parent / "shared" / "traces"))
SEEDS = range(500_000, 500_003)  # neither the bench's train split nor its test split


def _flags(series: Series) -> list[bool]:
    """As the exporter sees it: a new process start time resets the detector."""
    detector = LeakDetector()
    flags = []
    for k, (t, v) in enumerate(series.samples):
        if restarted(series, k):
            detector.reset()
        flags.append(detector.update(t, v, series.limit).suspected)
    return flags


def _where(series: Series, flags: list[bool]) -> str:
    hours = [round(t / HOUR, 2) for (t, _), f in zip(series.samples, flags, strict=True) if f]
    return f"{series.name}: flagged at hours {hours[:5]}"


@pytest.mark.parametrize("family", sorted(HEALTHY))
def test_healthy_series_raise_no_alarm(family: str) -> None:
    for seed in SEEDS:
        series = generate(seed, family)
        flags = _flags(series)
        assert score_flags(series, flags).false_samples == 0, _where(series, flags)


# Known gap (README, "What no detector can tell apart in time"): a leak under a sawtooth whose
# teeth are as long as the window's blocks is still flagged late by some seeds.
LATE_SOMETIMES = {"deep_sawtooth"}


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(f, marks=pytest.mark.xfail(reason="known gap: teeth as long as the blocks"))
        if f in LATE_SOMETIMES
        else f
        for f in sorted(LEAKS)
    ],
)
def test_leaks_are_caught_in_time(family: str) -> None:
    for seed in SEEDS:
        series = generate(seed, family)
        flags = _flags(series)
        outcome = score_flags(series, flags)
        assert outcome.false_samples == 0, _where(series, flags)
        assert outcome.delay_seconds is not None, f"{series.name}: never flagged"
        assert outcome.in_time, f"{series.name}: {outcome.delay_seconds / 60:.0f} min late"


def _recorded() -> list[Series]:
    if not (TRACES / "manifest.json").is_file():
        pytest.skip(f"no labelled traces in {TRACES} (set GLYPH_LEAK_TRACES)")
    return load_traces(TRACES)


def test_recorded_traces_are_judged_right() -> None:
    for trace in _recorded():
        flags = _flags(trace)
        outcome = score_flags(trace, flags)
        assert outcome.false_samples == 0, _where(trace, flags)
        assert trace.healthy or outcome.in_time, f"{trace.name}: {outcome}"


def _without_restarts(family: str, count: int = 3) -> list[Series]:
    found = (generate(seed, family) for seed in range(SEEDS.start, SEEDS.start + 100))
    return [s for s in found if not s.restarts][:count]


def test_slope_matches_a_linear_leak() -> None:
    for series in _without_restarts("linear"):
        assert series.onset is not None and series.rate_per_hour is not None
        detector = LeakDetector()
        late = []
        for t, v in series.samples:
            reading = detector.update(t, v, series.limit)
            if t >= series.onset + 2.5 * HOUR:
                late.append(reading.slope_bytes_per_second)
        assert late
        true_rate = series.rate_per_hour / HOUR
        assert all(x is not None and x == pytest.approx(true_rate, rel=0.3) for x in late)


def _line(hours: float, rate_per_hour: float, interval: float = 30.0) -> list[tuple[float, float]]:
    rng = random.Random(7)
    return [
        (k * interval, 5 * GB + rate_per_hour * k * interval / HOUR + rng.gauss(0, 5 * MB))
        for k in range(int(hours * HOUR / interval))
    ]


def test_growth_under_the_rate_floor_is_no_leak_and_the_slowest_leak_is() -> None:
    # 175 MB/h: halfway between growth a healthy service may keep for hours (a plateau of small
    # steps, a load cycle's rising half) and the slowest leak to catch in 2 h (200 MB/h)
    def flagged(rate_per_hour: float) -> bool:
        detector = LeakDetector()
        return any(detector.update(t, v, LIMIT).suspected for t, v in _line(6, rate_per_hour))

    assert not flagged(165 * MB)
    assert flagged(200 * MB)


def _warm_up(minutes: float, rate_per_hour: float) -> list[tuple[float, float]]:
    """A service allocating in 25 MB steps at this rate for its first minutes, then flat."""
    rng = random.Random(5)
    samples = []
    for k in range(6 * 120):
        grown = rate_per_hour * min(30.0 * k, minutes * 60) / HOUR
        samples.append((30.0 * k, 4 * GB + 25 * MB * (grown // (25 * MB)) + rng.gauss(0, 5 * MB)))
    return samples


def test_a_warm_up_still_growing_just_after_the_grace_hour_is_no_leak() -> None:
    # 1.2 GB/h until 75 min: a 20 min window would see steady floors 12 min after the grace
    # hour; the shortest window judged (40 min) sees them level off. The same growth kept up
    # is flagged within the 45 min a leak of 1 GB/h or more is given.
    def first_flag(minutes: float) -> float | None:
        detector = LeakDetector()
        return next(
            (t for t, v in _warm_up(minutes, 1.2 * GB) if detector.update(t, v, LIMIT).suspected),
            None,
        )

    assert first_flag(75) is None
    kept_up = first_flag(6 * 60)
    assert kept_up is not None and kept_up <= HOUR + 45 * 60


def test_scrape_gaps_in_the_older_history_do_not_delay_a_slow_leak() -> None:
    # a 260 MB/h leak scraped every 60 s; two 25-min gaps in its first hour and a half
    def first_flag(gaps: list[tuple[float, float]]) -> float | None:
        detector = LeakDetector()
        for t, v in _line(5, 260 * MB, interval=60.0):
            scraped = not any(a * 60 <= t < b * 60 for a, b in gaps)
            if scraped and detector.update(t, v, LIMIT).suspected:
                return t
        return None

    plain = first_flag([])
    assert plain is not None and first_flag([(25, 50), (52, 77)]) == plain


def test_a_slow_leak_is_seen_through_scrape_gaps_that_cut_most_blocks_short() -> None:
    # 70 min of scrape gaps in the two hours after the onset (as train seed 143 of sparse_gaps):
    # most blocks of the 2 h window keep under a third of their bins; up to 154 min late when
    # each floor needed a third
    holes = [(12, 21), (36, 62), (68, 87), (90, 106)]  # minutes after the onset at 3 h

    def first_flag(rate_per_hour: float, seed: int) -> float | None:
        rng, detector, t = random.Random(seed), LeakDetector(), 0.0
        while t < 6 * HOUR:
            since = t - 3 * HOUR
            if not any(a * 60 <= since < b * 60 for a, b in holes):
                v = 8 * GB + max(0.0, since) * rate_per_hour / HOUR + rng.gauss(0, 10 * MB)
                if detector.update(t, v, LIMIT).suspected:
                    return since
            t += 60 + rng.uniform(-5, 5)
        return None

    for rate in (250 * MB, 300 * MB):
        for seed in range(5):
            flagged = first_flag(rate, seed)
            assert flagged is not None and 0 < flagged <= deadline_for(rate), (rate, seed)
    assert first_flag(0.0, 0) is None


def test_a_floor_on_the_few_bins_before_a_scrape_gap_is_no_leak() -> None:
    # train seed 455 of the gaps family (a flat 26 GB process, 40 s scrapes, gaps of 28 and 38
    # min): floors taken on the few bins before a gap but dated at their blocks' ends read
    # 177 MB/h over two hours
    series = generate(455, "gaps")
    flags = _flags(series)
    assert score_flags(series, flags).false_samples == 0, _where(series, flags)


def test_suspicion_carries_the_evidence_that_tipped_it() -> None:
    detector = LeakDetector()
    readings = [detector.update(t, v, LIMIT) for t, v in _line(4, 1 * GB)]
    reading = next(r for r in readings if r.suspected)
    evidence = reading.evidence
    assert evidence is not None and evidence.verdict == "rising floor"
    assert evidence.slope_bytes_per_second == reading.slope_bytes_per_second
    settings = LeakSettings()
    windows = [
        settings.window_seconds * k / settings.windows for k in range(1, settings.windows + 1)
    ]
    assert evidence.window_seconds in windows
    assert evidence.floor_rise_bytes > LeakSettings().min_rise_bytes / 2
    assert evidence.sigmas >= LeakSettings().min_sigmas
    assert evidence.above_history_bytes is not None and evidence.above_history_bytes > 0
    assert evidence.top_steps_share <= LeakSettings().max_top_steps_share


def test_exhaustion_time_follows_the_slope_from_the_recent_high() -> None:
    samples = _line(6, 1 * GB)
    detector = LeakDetector()
    checked = 0
    recent: list[tuple[float, float]] = []
    for t, value in samples:
        reading = detector.update(t, value, LIMIT)
        recent = [(u, v) for u, v in [*recent, (t, value)] if u > t - 2400]
        slope = reading.slope_bytes_per_second
        forecast = reading.forecast
        if slope is None or slope <= 0:
            assert forecast == NO_FORECAST
        else:
            # from a level between the current sample and the highest of the last 40 min
            assert forecast.seconds is not None
            assert (LIMIT - max(v for _, v in recent)) / slope <= forecast.seconds
            assert forecast.seconds <= (LIMIT - value) / slope
            assert forecast.lower_seconds is not None and forecast.upper_seconds is not None
            assert forecast.lower_seconds < forecast.seconds < forecast.upper_seconds
            assert forecast.urgency == (Urgency.PLANNED if reading.suspected else Urgency.NONE)
            checked += 1
    assert checked > 100
    # no limit, or memory already past it
    assert detector.update(samples[-1][0] + 30, 7 * GB, None).forecast == NO_FORECAST
    past = detector.update(samples[-1][0] + 60, 7 * GB, 1 * GB).forecast
    assert past.seconds == past.lower_seconds == 0.0
    assert past.upper_seconds in (0.0, None)
    assert past.urgency == Urgency.IMMEDIATE


def test_the_forecast_starts_from_the_highest_sample_a_spike_reaches() -> None:
    # a 1 GB/h leak with a one-sample spike of 2 GB every 10 min: memory runs out at a spike
    samples = [(t, v + (2 * GB if round(t) % 600 == 0 else 0.0)) for t, v in _line(5, 1 * GB)]
    detector = LeakDetector()
    checked = 0
    for k, (t, value) in enumerate(samples):
        reading = detector.update(t, value, LIMIT)
        if reading.suspected:
            assert reading.slope_bytes_per_second is not None
            assert reading.forecast.seconds is not None
            spike = max(v for _, v in samples[max(0, k - 50) : k + 1])  # the last 25 min
            assert reading.forecast.seconds <= (LIMIT - spike) / reading.slope_bytes_per_second
            checked += 1
    assert checked > 100


def test_a_leak_speeding_up_is_forecast_at_its_recent_pace() -> None:
    # the leak's rate grows by 400 MB/h every hour: the 2 h window's slope is its rate an hour
    # ago; a shorter window rising faster by more than the forecast's interval is taken instead
    rng = random.Random(11)
    detector = LeakDetector()
    lags = []
    for k in range(6 * 120):
        t = 30.0 * k
        hours = t / HOUR
        value = 4 * GB + 100 * MB * hours + 400 * MB * hours * hours / 2 + rng.gauss(0, 5 * MB)
        reading = detector.update(t, value, LIMIT)
        if reading.suspected and hours >= 3:
            assert reading.slope_bytes_per_second is not None
            rate = (100 * MB + 400 * MB * hours) / HOUR
            lags.append((rate - reading.slope_bytes_per_second) * HOUR)
    assert len(lags) > 300
    assert sorted(lags)[len(lags) // 2] < 200 * MB  # half an hour's growth of the rate


def test_exhaustion_time_is_none_when_not_growing() -> None:
    # a slow decline: the slope is negative, so memory is never exhausted
    detector = LeakDetector()
    rng = random.Random(3)
    reading = None
    for k in range(4 * 60):
        t = 60.0 * k
        reading = detector.update(t, 8 * GB - 200 * MB * t / HOUR + rng.gauss(0, 5 * MB), LIMIT)
    assert reading is not None
    assert reading.slope_bytes_per_second is not None
    assert reading.slope_bytes_per_second < 0
    assert reading.forecast == NO_FORECAST
    assert not reading.suspected


def test_slope_is_none_until_enough_samples() -> None:
    detector = LeakDetector()
    first = detector.update(0.0, 5 * GB, LIMIT)
    assert first == LeakReading(None, False, 0.0)
    for k in range(1, 20):
        assert detector.update(60.0 * k, 5 * GB + k * MB, LIMIT).slope_bytes_per_second is None


def test_segment_age_resets_on_a_restart_drop() -> None:
    series = next(s for s in map(generate, range(100)) if s.restarts)
    restart = series.restarts[0]
    detector = LeakDetector()
    ages = [(t, detector.update(t, v, LIMIT).segment_age_seconds) for t, v in series.samples]
    before = [a for t, a in ages if t < restart]
    after = [(t, a) for t, a in ages if t >= restart]
    assert before[-1] == pytest.approx(restart, abs=70)
    # the first sample of the fall waits for the next, which confirms it: the segment starts there
    assert after[0][1] == before[-1]
    assert after[1][1] == after[1][0] - after[0][0]
    assert after[-1][1] == after[-1][0] - after[0][0]


def test_one_sample_misread_far_below_is_no_restart() -> None:
    # an exporter or NVML read of 0 for one scrape: the segment, and a leak's verdict, go on
    samples = _on_4gb(300 * MB, 2)
    samples[200] = (samples[200][0], 0.0)  # 50 min after the onset
    detector = LeakDetector()
    readings = [detector.update(t, v, LIMIT) for t, v in samples]
    assert [r.segment_age_seconds for r in readings][-1] == samples[-1][0] - samples[0][0]
    flagged = [t for (t, _), r in zip(samples, readings, strict=True) if r.suspected]
    assert flagged and flagged[0] <= 4.5 * HOUR


def test_a_restart_whose_warm_up_climbs_fast_still_starts_a_segment() -> None:
    # 40 % of the level at the restart and 62 % a minute later: well below the floor still, no
    # misread (one that comes back is within the floor's reach)
    rng = random.Random(5)
    level = [4 * GB] * 120 + [
        1.6 * GB + 2.4 * GB * (1 - (1 - min(1, j / 5)) ** 2) for j in range(60)
    ]
    detector = LeakDetector()
    for k, v in enumerate(level):
        reading = detector.update(60.0 * k, v + rng.gauss(0, 4 * MB), LIMIT)
    assert reading.segment_age_seconds == 60.0 * 59


def test_sawtooth_drops_do_not_restart_the_segment() -> None:
    series = _without_restarts("gc_sawtooth", 1)[0]
    detector = LeakDetector()
    for t, v in series.samples:
        reading = detector.update(t, v, LIMIT)
    assert reading.segment_age_seconds == series.samples[-1][0]


def test_stacked_bursts_ending_do_not_restart_the_segment() -> None:
    # the service doubles for 8 min (bursts on top of each other), then falls back to its floor
    rng = random.Random(11)
    detector = LeakDetector()
    for k in range(3 * 120):
        t = 30.0 * k
        burst = 1 * GB if 2 * HOUR <= t < 2 * HOUR + 480 else 0.0
        reading = detector.update(t, 1 * GB + burst + rng.gauss(0, 2 * MB), LIMIT)
    assert reading.segment_age_seconds == t


def _stair(
    chunk_every: float,
    amplitude: float = 0.0,
    period: float = 840.0,
    noise: float = 2 * MB,
    chunks: list[float] | None = None,
    spikes: dict[int, float] | None = None,
) -> tuple[list[tuple[float, float]], list[float]]:
    """Chunks of 500 MB every `chunk_every` seconds from 1.5 h (or at the times given), under
    an optional sawtooth of this amplitude, with lone spikes added to the samples numbered."""
    rng = random.Random(5)
    chunks = chunks or [1.5 * HOUR + k * chunk_every for k in range(8)]
    samples = []
    for k in range(int(6 * HOUR / 45)):
        t = 45.0 * k
        held = 500 * MB * sum(1 for c in chunks if t >= c)
        tooth = amplitude * ((t % period) / period - 0.5)
        spike = (spikes or {}).get(k, 0.0)
        samples.append((t, 2 * GB + held + tooth + spike + rng.gauss(0, noise)))
    return samples, chunks


@pytest.mark.parametrize("amplitude", [0.0, 40 * MB], ids=["plain", "shallow sawtooth"])
def test_a_stair_is_flagged_soon_after_its_third_chunk(amplitude: float) -> None:
    # chunks 55 min apart leave 10 min between the third and the 2 h deadline; a shallow
    # sawtooth (far less than a chunk) must not widen the floors and slow the verdict
    samples, chunks = _stair(55 * 60, amplitude)
    detector = LeakDetector()
    flagged = [t for t, v in samples if detector.update(t, v, LIMIT).suspected]
    assert flagged and chunks[2] < flagged[0] <= chunks[2] + 4 * 60, flagged[:1]


def test_a_burst_soon_after_two_close_steps_is_no_third_chunk() -> None:
    # steps of 500 MB 10 min apart, then a 500 MB burst held 3 min: a chunk shows on the block
    # under way two bins after it, so one so close to the others may be a burst
    chunks = [1.5 * HOUR, 1.5 * HOUR + 600]
    samples, _ = _stair(0, chunks=chunks)
    start = chunks[1] + 720
    bursty = [(t, v + 500 * MB * (start <= t < start + 180)) for t, v in samples]
    detector = LeakDetector()
    assert not any(detector.update(t, v, LIMIT).suspected for t, v in bursty)


def _deep_sawtooth(rate_per_hour: float, period: float, seed: int) -> list[tuple[float, float]]:
    """7 h sampled every 60 s: a 6 GB sawtooth on 20 GB, and a leak from 2 h."""
    rng = random.Random(seed)
    tooth = sawtooth(rng, 6 * GB, period, 7)
    return [
        (
            t,
            20 * GB
            + tooth(t)
            + max(0.0, t - 2 * HOUR) * rate_per_hour / HOUR
            + rng.gauss(0, 5 * MB),
        )
        for t in (60.0 * k for k in range(7 * 60))
    ]


@pytest.mark.parametrize(("period", "seed"), [(20 * 60, 1), (25 * 60, 1)])
def test_a_slow_leak_under_teeth_as_long_as_the_blocks_is_seen_in_the_troughs(
    period: float, seed: int
) -> None:
    # a floor over 1.5 teeth climbs in tooth-sized steps; one trough a tooth climbs steadily
    detector = LeakDetector()
    samples = _deep_sawtooth(300 * MB, period, seed)
    flagged = [t for t, v in samples if detector.update(t, v, LIMIT).suspected]
    assert flagged and 2 * HOUR < flagged[0] <= 4 * HOUR, flagged[:1]
    healthy = LeakDetector()
    assert not any(
        healthy.update(t, v, LIMIT).suspected for t, v in _deep_sawtooth(0, period, seed)
    )


def _coarse_sawtooth(rate_per_hour: float, seed: int) -> list[tuple[float, float]]:
    """8 h on 12 GB sampled about every 55 s: a 1.6 GB sawtooth of 3.2 min teeth, each sample
    catching a tooth at a random height, and a 130 MB one of 11.4 min; a leak from 3 h."""
    rng = random.Random(seed)
    fast, slow = sawtooth(rng, 1.6 * GB, 192, 8), sawtooth(rng, 130 * MB, 684, 8)
    samples, t = [], 0.0
    while t < 8 * HOUR:
        leak = max(0.0, t - 3 * HOUR) * rate_per_hour / HOUR
        samples.append((t, 12 * GB + fast(t) + slow(t) + leak + rng.gauss(0, 25 * MB)))
        t += 55 * rng.uniform(0.85, 1.15)
    return samples


def test_floors_wandering_with_the_troughs_caught_are_no_leak() -> None:
    # the floors, the lowest troughs' envelope, rise by chance now and then (seed 27: by
    # 246 MB over 100 min at 183 MB/h), the bulk of the troughs does not; a leak lifts them all
    for seed in range(25, 30):
        healthy = LeakDetector()
        samples = _coarse_sawtooth(0, seed)
        assert not any(healthy.update(t, v, LIMIT).suspected for t, v in samples), seed
        detector = LeakDetector()
        flagged = [
            t for t, v in _coarse_sawtooth(300 * MB, seed) if detector.update(t, v, LIMIT).suspected
        ]
        assert flagged and 3 * HOUR < flagged[0] <= 5 * HOUR, (seed, flagged[:1])


def _caught_in_time_and_quiet(
    leaking: list[tuple[float, float]], healthy: list[tuple[float, float]]
) -> None:
    """A leak from 2.5 h is flagged within its 2 h deadline; its healthy twin never is."""
    detector = LeakDetector()
    flagged = [t for t, v in leaking if detector.update(t, v, LIMIT).suspected]
    assert flagged and 2.5 * HOUR < flagged[0] <= 4.5 * HOUR, flagged[:1]
    quiet = LeakDetector()
    assert not any(quiet.update(t, v, LIMIT).suspected for t, v in healthy)


def _riding_sawtooth(rate_per_hour: float, seed: int) -> list[tuple[float, float]]:
    """8 h sampled every 20 s on 20 GB: a 3 GB sawtooth of 20 min teeth with an 800 MB one of
    11 min riding it, so each trough lands anywhere on the shallow one; a leak from 2.5 h."""
    rng = random.Random(seed)
    deep, shallow = sawtooth(rng, 3 * GB, 20 * 60, 8), sawtooth(rng, 800 * MB, 11 * 60, 8)
    samples = []
    for t in (20.0 * k for k in range(8 * 180)):
        leak = max(0.0, t - 2.5 * HOUR) * rate_per_hour / HOUR
        samples.append((t, 20 * GB + deep(t) + shallow(t) + leak + rng.gauss(0, 20 * MB)))
    return samples


@pytest.mark.parametrize("seed", [13, 14])
def test_a_slow_leak_under_a_sawtooth_riding_a_deep_one_is_seen_in_its_teeth(seed: int) -> None:
    # the troughs scatter by the shallow sawtooth's height; a tooth's mean level averages it
    _caught_in_time_and_quiet(_riding_sawtooth(220 * MB, seed), _riding_sawtooth(0, seed))


@pytest.mark.parametrize("seed", [562, 1515, 1565])
def test_floors_climbing_as_sawtooths_beat_while_the_level_stays_are_no_leak(seed: int) -> None:
    # GC sawtooths beating (deep teeth of 10-21 min): the floors climbed 300-520 MB/h over
    # 80-120 min windows, past 4 standard errors, as the teeth fell into step; over whole
    # teeth the level (median) stayed, which a leak lifts as much as the floors
    series = generate(seed, "gc_sawtooth")  # train seeds flagged before
    flags = _flags(series)
    assert score_flags(series, flags).false_samples == 0, _where(series, flags)


@pytest.mark.parametrize("seed", [2161, 2291, 2387, 2606, 3148, 3724])
def test_floors_climbing_as_the_ceilings_fall_are_sawtooths_beating(seed: int) -> None:
    # GC sawtooths beating (two or three, 5-40 min teeth): as their drops fall out of step the
    # troughs' lower envelope climbed 230-2070 MB/h over 40-120 min windows, past 4 standard
    # errors, and the peaks' upper envelope fell by 0.49-0.95 of that, while the level stayed
    # below half the climb; a leak lifts all three
    series = generate(seed, "gc_sawtooth")  # train seeds flagged before
    flags = _flags(series)
    assert score_flags(series, flags).false_samples == 0, _where(series, flags)


def test_the_level_under_bursts_with_recurring_drops_is_no_mean_and_may_fall() -> None:
    # where a leak's bursts end in sharp drops often enough to pass for a sawtooth's, fewer of
    # them in a window's later teeth lower the mean and not the median (train seeds, late
    # 1-39 min with the mean)
    for seed in (33, 35, 54, 125):
        series = generate(seed, "under_bursts")
        outcome = score_flags(series, _flags(series))
        assert outcome.in_time, f"{series.name}: {outcome}"
    # drawn apart, 328 MB/h on 15 GB under stacked bursts covering most of a window's first
    # teeth: their median stood 2.5-3.5 GB above the last teeth's, a level falling by seven
    # times the floors' climb, no beat; flagged after 185 min when any level below half of
    # the climb vetoed the floors
    _flagged_in_time(_drawn_apart("leak_under_bursts", 23151))


@pytest.mark.parametrize("seed", [70, 74, 118])
def test_a_cache_loaded_inside_a_tooth_does_not_lift_the_teeth(seed: int) -> None:
    # the tooth a step lands in has a mean between the two levels: two teeth look like a ramp
    series = generate(seed, "plateau_steps")  # train seeds that a step inside a tooth misled
    flags = _flags(series)
    assert score_flags(series, flags).false_samples == 0, _where(series, flags)


@pytest.mark.parametrize("seed", [1200, 1214, 1692])
def test_floors_rising_under_teeth_whose_means_do_not_are_no_leak(seed: int) -> None:
    # two GC sawtooths: the floors, the troughs' lower envelope, climb as they beat, the teeth's
    # means stay level; a leak lifts both
    series = generate(seed, "gc_sawtooth")  # train seeds that floors alone misled
    flags = _flags(series)
    assert score_flags(series, flags).false_samples == 0, _where(series, flags)


def _drawn_apart(kind: str, seed: int) -> Any:
    """One trace of bench/independent_traces.py, the generator kept apart from the detector's:
    its times, values and, for a leak, onset and rate."""
    spec = importlib.util.spec_from_file_location(
        "independent_traces", BENCH / "independent_traces.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    rng = random.Random(seed)
    for _ in range(100):
        with contextlib.suppress(module.Retry):
            return module.attempt(rng, kind)
    raise AssertionError(f"no {kind} trace drawn from seed {seed}")


def _flagged(trace: Any) -> list[float]:
    """The times a detector fed a drawn-apart trace (it has no restarts) suspects a leak."""
    detector = LeakDetector()
    samples = zip(trace.times, trace.values, strict=True)
    return [t for t, v in samples if detector.update(t, v, trace.limit).suspected]


def _flagged_in_time(trace: Any) -> None:
    """A drawn-apart leak is first flagged after its onset and within its deadline."""
    flagged = _flagged(trace)
    assert flagged and trace.onset < flagged[0] <= trace.onset + deadline_for(trace.rate)


def _deep_sawtooth_in_time(*seeds: int) -> None:
    """These train seeds of the deep_sawtooth family are flagged in time."""
    for seed in seeds:
        series = generate(seed, "deep_sawtooth")
        outcome = score_flags(series, _flags(series))
        assert outcome.in_time, f"{series.name}: {outcome}"


def test_teeth_whose_means_wander_with_two_sawtooths_beating_are_no_leak() -> None:
    # two GC sawtooths of close periods: the teeth between the deeper drops change shape for
    # hours, their means climbed 320 MB over 2 h, the troughs did not
    assert not _flagged(_drawn_apart("gc_sawtooth", 12041))


def test_troughs_rising_under_teeth_whose_means_do_not_are_no_leak() -> None:
    # drawn apart, two GC sawtooths: where the deep drops fall the troughs jumped 450 MB for
    # half an hour and stayed (five troughs, 394 MB/h over 100 min); the teeth's means did not
    assert not _flagged(_drawn_apart("gc_sawtooth", 18050))
    series = generate(1795, "gc_sawtooth")  # a train seed the troughs alone misled
    flags = _flags(series)
    assert score_flags(series, flags).false_samples == 0, _where(series, flags)


def test_a_slow_leak_under_teeth_too_long_for_five_in_a_window_is_seen_in_four() -> None:
    # teeth of 24-29 min: the longest window holds four troughs, and the block floors step
    # only where a trough falls (one or two steps); drawn apart, 242 MB/h, was never flagged
    _flagged_in_time(_drawn_apart("deep_sawtooth_leak", 17195))
    _deep_sawtooth_in_time(537, 549, 663)  # train seeds, 20-26 min late before


def test_a_leak_under_teeth_too_long_for_six_means_in_a_window_is_seen_in_four() -> None:
    # teeth of 21-32 min: the troughs scatter by 300 MB where the means rise a tooth at a
    # time; six means span over 2 h, four fit the window. Drawn apart, 1.99 GB/h under 23.5
    # min teeth, flagged after 69 min before (45 due)
    _flagged_in_time(_drawn_apart("deep_sawtooth_leak", 21194))
    _deep_sawtooth_in_time(348, 363, 455)  # train seeds, 19-51 min late before
    # three older means do not measure how they wander: over them four means rose at 340
    # MB/h half an hour before the onset of train seed 179; four older do
    _deep_sawtooth_in_time(179)


def test_a_fast_leak_under_long_teeth_is_seen_in_three_troughs_and_three_means() -> None:
    # drawn apart, 1.41 GB/h under deep teeth of 20 min: 45 min hold two or three, and four
    # or more were judged; flagged after 60 and 46 min before (45 due)
    _flagged_in_time(_drawn_apart("deep_sawtooth_leak", 14198))
    _flagged_in_time(_drawn_apart("deep_sawtooth_leak", 20195))
    # three means alone climbed 1.3-1.5 GB/h 12 min before the onset of these train seeds;
    # the troughs did not
    _deep_sawtooth_in_time(408, 1430)


def test_three_troughs_climbing_fast_where_the_means_do_not_are_no_fast_leak() -> None:
    # drawn apart, GC sawtooths of 18 and 33 min beating: three troughs of the deeper teeth
    # climbed fast, their teeth's means did not
    assert not _flagged(_drawn_apart("gc_sawtooth", 26052))


def test_a_load_cycle_whose_floors_fell_as_far_hours_before_is_no_leak() -> None:
    # drawn apart, load cycles of hours climbing again, each rise well over the rate floor:
    # the fall before it lay beyond the older history, 4-12 h back
    assert not _flagged(_drawn_apart("load_cycle", 10091))
    assert not _flagged(_drawn_apart("load_cycle", 12083))


def test_bursts_holding_blocks_up_hours_before_a_leak_are_no_cycle() -> None:
    # drawn apart, 418 MB/h under bursts on 40 GB: the floors of blocks the bursts held up
    # fell by more than half the window's rise hours before; floors an hour long did not
    _flagged_in_time(_drawn_apart("leak_under_bursts", 8159))


def test_older_floors_count_the_past_they_reach_back_over() -> None:
    # under 15-29 min teeth a floor reaches back over a tooth (1.1 of it): counted from the
    # first older floor's time, the older history the window needs came after the deadline
    # (seeds 74 and 1140: a leak living on in a process started after its onset; 1165: one
    # started 17 min before it), 3-5 min late before, now 3-26 min in time
    _deep_sawtooth_in_time(74, 1140, 1165)  # train seeds


def test_a_leak_under_four_teeth_a_window_is_seen_on_floors_stepping_once_a_tooth() -> None:
    # four teeth a window (10-11 min in the 40 min window, 32 min in the 2 h one): the floors
    # step where a trough falls, so two steps of four carry over 0.75 of a steady rise
    _deep_sawtooth_in_time(517, 543, 331)  # train seeds, 3-13 min late before


def test_floors_stepping_up_under_four_teeth_whose_troughs_do_not_are_no_leak() -> None:
    # drawn apart, two GC sawtooths beating: under 26 min teeth, 3.8 in 100 min, the floors
    # climbed 360 MB in three steps, two carrying 0.78 of it; the deep troughs did not climb
    assert not _flagged(_drawn_apart("gc_sawtooth", 20044))


def test_a_floor_under_teeth_longer_than_two_blocks_reaches_back_to_a_trough() -> None:
    # drawn apart, a leak under 20.5 min teeth: an hour's window's last floor, over two 10 min
    # blocks, missed a trough and stood 300 MB high, a rise 47 min before the leak's onset
    trace = _drawn_apart("deep_sawtooth_leak", 11185)
    flagged = _flagged(trace)
    assert flagged and flagged[0] > trace.onset, (flagged[:1], trace.onset)


def _under_bursts(rate_per_hour: float, bursts: float = 1.2 * HOUR) -> list[tuple[float, float]]:
    """7 h sampled every 30 s on 4 GB: for 42 min from `bursts` on, bursts of 1.5 GB stacked
    on each other, back at the floor for one sample 6, 27 and 35 min in; a leak from 2.5 h."""
    rng = random.Random(3)
    samples = []
    for t in (30.0 * k for k in range(7 * 120)):
        age = t - bursts
        held = 0 <= age < 0.7 * HOUR and age not in (360, 1620, 2100)
        leak = max(0.0, t - 2.5 * HOUR) * rate_per_hour / HOUR
        samples.append((t, 4 * GB + 1.5 * GB * held + leak + rng.gauss(0, 2 * MB)))
    return samples


@pytest.mark.parametrize("bursts", [1.2 * HOUR, 2.8 * HOUR], ids=["before", "during"])
def test_bursts_that_held_a_block_up_do_not_hide_a_slow_leak(bursts: float) -> None:
    # the service fell to its floor between the bursts: that block's floor was not a level it
    # rose to, returned to or fell back from, before the leak or while it grows
    _caught_in_time_and_quiet(_under_bursts(300 * MB, bursts), _under_bursts(0, bursts))


def _under_heavy_bursts(rate_per_hour: float, seed: int) -> list[tuple[float, float]]:
    """8 h sampled every 30 s on 4 GB: clusters of one to three stacked bursts of 0.2-1 GB, held
    3-15 min, five clusters an hour, so the service is seldom at its floor; a leak from 2.5 h."""
    rng = random.Random(seed)
    bursts, t = [], rng.expovariate(5 / HOUR)
    while t < 8 * HOUR:
        for k in range(rng.choice([1, 2, 3])):
            start = t + (rng.uniform(0, 240) if k else 0.0)
            bursts.append((start, start + rng.uniform(3, 15) * 60, rng.uniform(0.2, 1.0) * GB))
        t += rng.expovariate(5 / HOUR)
    samples = []
    for t in (30.0 * k for k in range(8 * 120)):
        held = sum(height for start, end, height in bursts if start <= t <= end)
        leak = max(0.0, t - 2.5 * HOUR) * rate_per_hour / HOUR
        samples.append((t, 4 * GB + held + leak + rng.gauss(0, 3 * MB)))
    return samples


@pytest.mark.parametrize("seed", [3, 7])
def test_a_slow_leak_under_bursts_most_of_the_time_is_caught_in_time(seed: int) -> None:
    # a block's low quantile of bin minima is often a burst's level: the busy series' floor
    # is the second-lowest bin minimum, the few moments between bursts
    _caught_in_time_and_quiet(_under_heavy_bursts(300 * MB, seed), _under_heavy_bursts(0, seed))


def test_bursts_holding_up_a_block_of_a_short_older_history_do_not_hide_a_leak() -> None:
    # drawn apart: a 533 MB/h leak under stacked bursts of up to the base again; one block of
    # the older history they held up 4.7 GB (in the middle of five floors, later the first)
    # stood as the high to rise above for hours: its own two steps were half the few steps
    # between the older floors, so they set the noise it was judged far against
    _flagged_in_time(_drawn_apart("leak_under_bursts", 11159))


def _on_4gb(
    rate_per_hour: float, seed: int, misread: dict[int, float] | None = None
) -> list[tuple[float, float]]:
    """7 h sampled every 60 s on 4 GB, white noise of 4 MB, a leak from 2.5 h; sample k read
    off by misread[k]."""
    rng = random.Random(seed)
    samples = []
    for k in range(7 * 60):
        leak = max(0.0, 60 * k - 2.5 * HOUR) * rate_per_hour / HOUR
        off = (misread or {}).get(k, 0.0)
        samples.append((60.0 * k, 4 * GB + leak + rng.gauss(0, 4 * MB) + off))
    return samples


def _with_glitches(rate_per_hour: float, seed: int) -> list[tuple[float, float]]:
    """_on_4gb with one sample in about 30 misread by 240 MB, up or down (half each), 18-42
    min apart."""
    rng = random.Random(seed)
    glitches, t = {}, rng.uniform(5, 30) * 60
    while t < 7 * HOUR:
        glitches[round(t / 60)] = rng.choice([1, -1]) * 240 * MB
        t += rng.uniform(18, 42) * 60
    return _on_4gb(rate_per_hour, seed, glitches)


@pytest.mark.parametrize("seed", [1, 4])
def test_one_sample_glitches_are_no_sawtooth_hiding_a_slow_leak(seed: int) -> None:
    # taken for a sawtooth's drops, a few glitches made each floor a block's lowest bin (a
    # glitch down) reaching two blocks back: a 250 MB/h leak was flagged 2.4 h after its onset
    # (seed 1), or not at all in 4.5 h (seed 4)
    _caught_in_time_and_quiet(_with_glitches(250 * MB, seed), _with_glitches(0, seed))


def test_a_low_misread_does_not_hide_a_stair() -> None:
    # one sample 0.8 GB low 20 min after the first chunk, on a flat floor: it is neither a
    # fall back (a burst's) nor a chunk
    spikes = {round((1.5 * HOUR + 20 * 60) / 45): -0.8 * GB}
    samples, chunks = _stair(55 * 60, spikes=spikes)
    detector = LeakDetector()
    flagged = [t for t, v in samples if detector.update(t, v, LIMIT).suspected]
    assert flagged and chunks[2] < flagged[0] <= chunks[2] + 10 * 60, (flagged[:1], chunks[2])


def test_a_low_misread_just_after_a_chunk_does_not_hide_a_stair() -> None:
    # one sample 0.8 GB low 3 min after the second chunk, before the floor was flat again: a
    # stair's floor is the second-lowest bin of its reach, so one sample does not move it
    spikes = {round((1.5 * HOUR + 55 * 60 + 3 * 60) / 45): -0.8 * GB}
    samples, chunks = _stair(55 * 60, spikes=spikes)
    detector = LeakDetector()
    flagged = [t for t, v in samples if detector.update(t, v, LIMIT).suspected]
    assert flagged and chunks[2] < flagged[0] <= chunks[2] + 8 * 60, (flagged[:1], chunks[2])


def test_a_burst_that_falls_back_over_two_floors_is_no_stair() -> None:
    # a 1 GB step, a 0.9 GB burst (6 min up, 10 min held, 10 min down) and a 1.2 GB step, 48
    # min apart: the burst's fall splits over two floors, each under half a chunk, as its
    # rise does; together they are a fall back
    rng = random.Random(5)
    samples = []
    for k in range(int(5 * HOUR / 45)):
        t, start = 45.0 * k, 2.3 * HOUR
        burst = min(1.0, max(0.0, (t - start) / 360), max(0.0, (start + 1560 - t) / 600))
        steps = 1.0 * GB * (t >= 1.5 * HOUR) + 1.2 * GB * (t >= 3.1 * HOUR)
        samples.append((t, 2 * GB + steps + 0.9 * GB * burst + rng.gauss(0, 2 * MB)))
    detector = LeakDetector()
    assert not any(detector.update(t, v, LIMIT).suspected for t, v in samples)


def test_a_noisy_stair_is_not_taken_for_a_burst() -> None:
    # white noise of 90 MB: floors fall back by ~80 MB now and then, far less than a chunk
    samples, chunks = _stair(55 * 60, noise=90 * MB)
    detector = LeakDetector()
    flagged = [t for t, v in samples if detector.update(t, v, LIMIT).suspected]
    assert flagged and chunks[0] < flagged[0] <= chunks[0] + 2 * HOUR, flagged[:1]


def test_a_stair_under_way_in_the_first_hour_is_flagged_on_its_second_chunk_after() -> None:
    # a process restarted into a leak of a chunk every 50 min: the first hour is not judged,
    # and a third chunk after it would come 10 min past the 2 h deadline
    chunks = [(30 + 50 * k) * 60.0 for k in range(6)]
    samples, _ = _stair(0, chunks=chunks)
    detector = LeakDetector()
    flagged = [t for t, v in samples if detector.update(t, v, LIMIT).suspected]
    assert flagged and chunks[2] < flagged[0] <= chunks[2] + 9 * 60, flagged[:1]


def test_a_warm_up_longer_than_warmup_seconds_is_not_taken_for_the_stairs_first_chunk() -> None:
    # a process loads for 28 min (warmup_seconds is 20) and then leaks a chunk every 50 min:
    # the first hour is not judged, so the stair needs one chunk from before it
    chunks = [(50 + 50 * k) * 60.0 for k in range(5)]
    samples, _ = _stair(0, chunks=chunks)
    warm = [(t, v - 3 * GB * max(0.0, 1 - t / (28 * 60))) for t, v in samples]
    detector = LeakDetector()
    flagged = [t for t, v in warm if detector.update(t, v, LIMIT).suspected]
    assert flagged and chunks[2] < flagged[0] <= chunks[2] + 9 * 60, flagged[:1]


def test_a_cache_filling_in_quick_steps_then_two_more_is_no_stair() -> None:
    # steps of one size, those of the first hour twice as close as the two after it
    samples, _ = _stair(0, chunks=[m * 60.0 for m in (30, 55, 100, 150)])
    detector = LeakDetector()
    assert not any(detector.update(t, v, LIMIT).suspected for t, v in samples)


def test_reset_starts_a_new_segment() -> None:
    samples = _line(5, 1 * GB)
    detector = LeakDetector()
    for t, v in samples:
        reading = detector.update(t, v, LIMIT)
    assert reading.suspected
    detector.reset()
    t, v = samples[-1]
    reading = detector.update(t + 30, v, LIMIT)
    assert reading == LeakReading(None, False, 0.0)
    # the new process is in its grace period: the old growth is forgotten
    for k in range(1, 120):
        reading = detector.update(t + 30 + 30 * k, v + k * 10 * MB, LIMIT)
        assert not reading.suspected
    assert reading.segment_age_seconds == pytest.approx(119 * 30)


def test_a_short_gap_keeps_the_segment_and_a_long_one_starts_anew() -> None:
    detector = LeakDetector()
    for k in range(180):
        detector.update(60.0 * k, 5 * GB, LIMIT)
    short = detector.update(179 * 60.0 + 1200, 5 * GB, LIMIT)  # 20 min later
    assert short.segment_age_seconds == pytest.approx(179 * 60.0 + 1200)
    long = detector.update(179 * 60.0 + 1200 + 2 * HOUR, 5 * GB, LIMIT)
    assert long.segment_age_seconds == 0.0


def test_bad_samples_are_ignored() -> None:
    detector = LeakDetector()
    for k in range(100):
        reading = detector.update(60.0 * k, 5 * GB, LIMIT)
    assert detector.update(math.nan, 5 * GB, LIMIT) == reading
    assert detector.update(6000.0, math.inf, LIMIT) == reading
    assert detector.update(60.0, 5 * GB, LIMIT) == reading  # older than the last sample
    assert detector.update(99 * 60.0, 5 * GB, LIMIT) == reading  # not newer either


def test_memory_stays_bounded() -> None:
    detector = LeakDetector()
    rng = random.Random(1)
    for k in range(24 * 60 * 4):  # one day at 15 s
        detector.update(15.0 * k, 5 * GB + rng.gauss(0, 10 * MB), LIMIT)
    settings = LeakSettings()
    limit = max(settings.history_seconds, settings.cycle_seconds) / settings.bin_seconds + 40
    assert len(detector._ts) <= limit
    assert len(detector._recent) <= 64
    grids = 2 * settings.windows + 1  # each window's floors and hour floors, and the stair's
    # a window's floors and its blocks' lowest bins
    assert len(detector._floor_cache) <= 2 * grids * (limit + LeakSettings().blocks)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window_seconds": 0}, "window_seconds"),
        ({"windows": 0}, "windows"),
        ({"restart_drop_fraction": 1.5}, "restart_drop_fraction"),
        ({"history_seconds": 3600.0, "window_seconds": 7200.0}, "history_seconds"),
        ({"cycle_seconds": 0}, "cycle_seconds"),
        ({"window_seconds": 600.0}, "two bins per block"),
        ({"min_window_seconds": 9000.0}, "min_window_seconds must be <= window_seconds"),
    ],
)
def test_settings_are_checked(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeakSettings(**settings)


def _run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glyph_guard.exporter.replay", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_replay_prints_one_json_object_per_sample_with_evidence(tmp_path: Path) -> None:
    samples = [(t, float(f"{v:.0f}")) for t, v in generate(2, "under_sawtooth").samples]
    csv = tmp_path / "trace.csv"
    csv.write_text("timestamp_seconds,bytes\n" + "".join(f"{t},{v:.0f}\n" for t, v in samples))
    done = _run_replay(str(csv), "--limit-bytes", str(int(LIMIT)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(samples)
    assert [line["t"] for line in lines] == [t for t, _ in samples]
    assert lines[0] == {
        "t": samples[0][0],
        "slope_bytes_per_second": None,
        "suspected": False,
        "seconds_until_exhausted": None,
        "exhaustion_lower_bound_seconds": None,
        "exhaustion_upper_bound_seconds": None,
        "urgency": "none",
    }
    # the same default settings as the exporter's, and the evidence only where suspected
    detector = LeakDetector()
    expected = [detector.update(t, v, LIMIT) for t, v in samples]
    assert [line["suspected"] for line in lines] == [r.suspected for r in expected]
    assert any(r.suspected for r in expected)
    for line, reading in zip(lines, expected, strict=True):
        assert ("evidence" in line) == reading.suspected
        if reading.suspected:
            assert reading.evidence is not None
            assert line["evidence"]["verdict"] == reading.evidence.verdict
            assert line["evidence"]["window_seconds"] == reading.evidence.window_seconds
            assert line["evidence"]["sigmas"] == pytest.approx(reading.evidence.sigmas)
            assert set(line["evidence"]) >= {"slope_bytes_per_second", "floor_rise_bytes"}
    assert lines[-1]["slope_bytes_per_second"] == pytest.approx(expected[-1].slope_bytes_per_second)


@pytest.mark.parametrize(
    ("content", "limit", "message"),
    [
        (None, "1000", "no such file"),
        ("time,bytes\n0,1\n", "1000", ":1: expected the header"),
        ("timestamp_seconds,bytes\n0,100\n15,1e9\n30,lots\n", "1000", ":4: expected two numbers"),
        ("timestamp_seconds,bytes\n0,100\n15\n", "1000", ":3: expected two numbers"),
        ("timestamp_seconds,bytes\n0,100\n", "-5", "--limit-bytes must be"),
        ("timestamp_seconds,bytes\n0,100\n", "many", "--limit-bytes must be"),
        ("timestamp_seconds,bytes\n30,100\n15,100\n", "1000", ":3: timestamps must increase"),
    ],
)
def test_replay_rejects_bad_input(
    tmp_path: Path, content: str | None, limit: str, message: str
) -> None:
    csv = tmp_path / "trace.csv"
    if content is not None:
        csv.write_text(content)
    done = _run_replay(str(csv), "--limit-bytes", limit)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_a_leak_is_caught_again_in_each_process_after_a_restart() -> None:
    series = generate(500_023, "linear")  # restarts 14 min after the onset and 3.6 h later
    assert series.onset is not None and len(series.restarts) == 2
    assert series.onset < series.restarts[0]
    flags = _flags(series)
    outcome = score_flags(series, flags)
    assert outcome.in_time, f"{series.name}: {outcome}"
    for start, end in pairwise((*series.restarts, series.samples[-1][0])):
        flagged = [t for (t, _), f in zip(series.samples, flags, strict=True) if f]
        assert any(start + HOUR <= t < end for t in flagged), f"not flagged after {start}"


def _stepped(restarts: tuple[float, ...]) -> Series:
    samples = [(k * 60.0, 5 * GB) for k in range(int(8 * HOUR / 60))]
    return Series("made", "linear", samples, False, 1.5 * HOUR, 1 * GB, restarts, 64 * GB)


def _flagged_in(series: Series, spans: list[tuple[float, float]]) -> list[bool]:
    return [any(a <= t < b for a, b in spans) for t, _ in series.samples]


def test_each_incarnation_the_leak_lives_past_its_deadline_in_must_be_flagged() -> None:
    series = _stepped((3 * HOUR,))
    first_only = _flagged_in(series, [(2 * HOUR, 3 * HOUR)])
    assert score_flags(series, first_only).delay_seconds is None  # the second one was missed
    both = _flagged_in(series, [(2 * HOUR, 3 * HOUR), (4.5 * HOUR, 8 * HOUR)])
    assert score_flags(series, both).delay_seconds == pytest.approx(0.5 * HOUR)
    # a process restarted before its deadline came, unflagged, is not judged
    short = _stepped((2 * HOUR,))
    late = _flagged_in(short, [(3.25 * HOUR, 8 * HOUR)])
    assert score_flags(short, late).delay_seconds == pytest.approx(0.25 * HOUR)
