"""Tests of the streaming leak detector and the replay command on seeded synthetic traces."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter.leak_detector import LeakDetector, LeakReading, LeakSettings

MB = 1e6
GB = 1e9
HOUR = 3600.0
LIMIT = 64 * GB
GRACE = LeakSettings().grace_seconds
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Trace:
    samples: list[tuple[float, float]]
    healthy: bool
    onset: float | None = None
    rate_per_hour: float = 0.0
    starts: tuple[float, ...] = (0.0,)
    gaps: tuple[tuple[float, float], ...] = field(default=())


@dataclass(frozen=True)
class Size:
    name: str
    base: float
    noise: float  # standard deviation, as a fraction of the base


SIZES = (Size("6GB-quiet", 6 * GB, 0.003), Size("20GB-noisy", 20 * GB, 0.004))
INTERVALS = (15.0, 60.0)


def _times(rng: random.Random, hours: float, interval: float) -> list[float]:
    t, out = 0.0, []
    while t <= hours * HOUR:
        out.append(round(t, 1))
        t += interval * rng.uniform(0.95, 1.05)
    return out


def _sawtooth(rng: random.Random, amplitude: float, period: float) -> Callable[[float], float]:
    """Allocator/GC sawtooth: a ramp up then a sharp drop, with jittered periods."""
    edges = [-rng.uniform(0, period)]
    while edges[-1] < 48 * HOUR:
        edges.append(edges[-1] + period * rng.uniform(0.85, 1.15))

    def value(t: float) -> float:
        i = bisect_right(edges, t) - 1
        a, b = edges[i], edges[i + 1]
        return amplitude * ((t - a) / (b - a) - 0.5)

    return value


def _warmup(age: float, depth: float, seconds: float) -> float:
    """Concave warm-up from base - depth to base that levels off after `seconds`."""
    return -depth * (1 - age / seconds) ** 2 if 0 <= age < seconds else 0.0


def _build(
    rng: random.Random,
    size: Size,
    interval: float,
    hours: float,
    shape: Callable[[float], float],
    *,
    healthy: bool,
    onset: float | None = None,
    rate_per_hour: float = 0.0,
    starts: tuple[float, ...] = (0.0,),
    gaps: tuple[tuple[float, float], ...] = (),
) -> Trace:
    samples = [
        (t, shape(t) + size.base + rng.gauss(0, size.noise * size.base))
        for t in _times(rng, hours, interval)
        if not any(a <= t < b for a, b in gaps)
    ]
    return Trace(samples, healthy, onset, rate_per_hour, starts, gaps)


def _linear(onset: float, rate_per_hour: float) -> Callable[[float], float]:
    return lambda t: max(0.0, t - onset) * rate_per_hour / HOUR


def _restart_shape(size: Size, restart: float) -> Callable[[float], float]:
    """A process restart: memory falls to a fifth of the base and warms up in 15 min."""
    return lambda t: _warmup(t - restart, 0.8 * size.base, 900.0) if t >= restart else 0.0


def flat(rng: random.Random, size: Size, interval: float) -> Trace:
    return _build(rng, size, interval, 8, lambda t: 0.0, healthy=True)


def gc_sawtooth(rng: random.Random, size: Size, interval: float) -> Trace:
    saw = _sawtooth(rng, 0.08 * size.base, 15 * 60)
    return _build(rng, size, interval, 8, saw, healthy=True)


def steps(rng: random.Random, size: Size, interval: float) -> Trace:
    """Two model/cache loads 1.5 h apart on a small sawtooth: level shifts, no leak."""
    saw = _sawtooth(rng, 0.02 * size.base, 10 * 60)

    def shape(t: float) -> float:
        return saw(t) + 0.15 * size.base * (t >= 3 * HOUR) + 0.12 * size.base * (t >= 4.5 * HOUR)

    return _build(rng, size, interval, 8, shape, healthy=True)


def restart(rng: random.Random, size: Size, interval: float) -> Trace:
    shape = _restart_shape(size, 4 * HOUR)
    return _build(rng, size, interval, 8, shape, healthy=True, starts=(0.0, 4 * HOUR))


def warmup(rng: random.Random, size: Size, interval: float) -> Trace:
    def shape(t: float) -> float:
        return _warmup(t, 0.4 * size.base, 25 * 60)

    return _build(rng, size, interval, 8, shape, healthy=True)


def spikes(rng: random.Random, size: Size, interval: float) -> Trace:
    """Short load spikes (90 s, +12 %) every 2.5 h."""

    def shape(t: float) -> float:
        return 0.12 * size.base if (t % (2.5 * HOUR)) > 2.5 * HOUR - 90 else 0.0

    return _build(rng, size, interval, 8, shape, healthy=True)


def gap(rng: random.Random, size: Size, interval: float) -> Trace:
    """The exporter was down for 20 minutes."""
    gaps = ((3 * HOUR, 3 * HOUR + 1200),)
    return _build(rng, size, interval, 8, lambda t: 0.0, healthy=True, gaps=gaps)


def linear_300mb(rng: random.Random, size: Size, interval: float) -> Trace:
    onset, rate = 3 * HOUR, 300 * MB
    return _build(
        rng, size, interval, 7, _linear(onset, rate), healthy=False, onset=onset, rate_per_hour=rate
    )


def linear_1gb(rng: random.Random, size: Size, interval: float) -> Trace:
    onset, rate = 2.5 * HOUR, 1 * GB
    return _build(
        rng, size, interval, 6, _linear(onset, rate), healthy=False, onset=onset, rate_per_hour=rate
    )


def stair_400mb(rng: random.Random, size: Size, interval: float) -> Trace:
    """Cached images: a step every 10 minutes that keeps coming."""
    onset, rate, every = 2.5 * HOUR, 400 * MB, 600.0

    def shape(t: float) -> float:
        return max(0.0, math.floor((t - onset) / every)) * rate * every / HOUR

    return _build(rng, size, interval, 7, shape, healthy=False, onset=onset, rate_per_hour=rate)


def leak_under_sawtooth(rng: random.Random, size: Size, interval: float) -> Trace:
    onset, rate = 2.5 * HOUR, 600 * MB
    saw = _sawtooth(rng, 0.08 * size.base, 15 * 60)
    leak = _linear(onset, rate)
    return _build(
        rng,
        size,
        interval,
        7,
        lambda t: saw(t) + leak(t),
        healthy=False,
        onset=onset,
        rate_per_hour=rate,
    )


def leak_from_start(rng: random.Random, size: Size, interval: float) -> Trace:
    rate = 250 * MB
    leak = _linear(0.0, rate)

    def shape(t: float) -> float:
        return _warmup(t, 0.2 * size.base, 20 * 60) + leak(t)

    return _build(rng, size, interval, 5, shape, healthy=False, onset=0.0, rate_per_hour=rate)


def leak_after_restart(rng: random.Random, size: Size, interval: float) -> Trace:
    restart_at, rate = 3 * HOUR, 500 * MB
    onset = restart_at + HOUR
    warm = _restart_shape(size, restart_at)
    leak = _linear(onset, rate)
    return _build(
        rng,
        size,
        interval,
        7.5,
        lambda t: warm(t) + leak(t),
        healthy=False,
        onset=onset,
        rate_per_hour=rate,
        starts=(0.0, restart_at),
    )


def leak_across_gap(rng: random.Random, size: Size, interval: float) -> Trace:
    """The exporter is down for 20 minutes half an hour into a 500 MB/h leak."""
    onset, rate = 2.5 * HOUR, 500 * MB
    gaps = ((onset + 1800, onset + 3000),)
    return _build(
        rng,
        size,
        interval,
        6.5,
        _linear(onset, rate),
        healthy=False,
        onset=onset,
        rate_per_hour=rate,
        gaps=gaps,
    )


HEALTHY = (flat, gc_sawtooth, steps, restart, warmup, spikes, gap)
LEAKS = (
    linear_300mb,
    linear_1gb,
    stair_400mb,
    leak_under_sawtooth,
    leak_from_start,
    leak_after_restart,
    leak_across_gap,
)
LINEAR = (linear_300mb, linear_1gb)


def _cases(
    scenarios: tuple[Callable[[random.Random, Size, float], Trace], ...],
) -> list[object]:
    return [
        pytest.param(scenario, size, interval, id=f"{scenario.__name__}-{size.name}-{interval:g}s")
        for scenario in scenarios
        for size in SIZES
        for interval in INTERVALS
    ]


def _replay(trace: Trace, limit: float | None = LIMIT) -> list[LeakReading]:
    detector = LeakDetector()
    return [detector.update(t, v, limit) for t, v in trace.samples]


def _judged(trace: Trace, t: float) -> bool:
    """The judging rule: the first hour after a start or a restart is not judged."""
    return t - max(s for s in trace.starts if s <= t) >= GRACE


def _seed(name: str, size: Size, interval: float) -> int:
    return sum(map(ord, f"{name}/{size.name}/{interval}"))


@pytest.mark.parametrize(("scenario", "size", "interval"), _cases(HEALTHY))
def test_healthy_traces_raise_no_alarm(
    scenario: Callable[[random.Random, Size, float], Trace], size: Size, interval: float
) -> None:
    trace = scenario(random.Random(_seed(scenario.__name__, size, interval)), size, interval)
    readings = _replay(trace)
    false = [
        round(t / HOUR, 2)
        for (t, _), r in zip(trace.samples, readings, strict=True)
        if r.suspected and _judged(trace, t)
    ]
    assert not false, f"suspected at hours {false[:5]}"
    assert any(r.slope_bytes_per_second is not None for r in readings)


@pytest.mark.parametrize(("scenario", "size", "interval"), _cases(LEAKS))
def test_leaks_are_caught_in_time(
    scenario: Callable[[random.Random, Size, float], Trace], size: Size, interval: float
) -> None:
    trace = scenario(random.Random(_seed(scenario.__name__, size, interval)), size, interval)
    assert trace.onset is not None
    readings = _replay(trace)
    early = [
        round(t / HOUR, 2)
        for (t, _), r in zip(trace.samples, readings, strict=True)
        if r.suspected and _judged(trace, t) and t < trace.onset
    ]
    assert not early, f"suspected before the onset at hours {early[:5]}"
    caught = next(
        (t for (t, _), r in zip(trace.samples, readings, strict=True) if r.suspected), None
    )
    assert caught is not None, "leak never suspected"
    # a leak that starts in the grace period can only be flagged once it is over
    start = max(s for s in trace.starts if s <= trace.onset)
    judged_from = max(trace.onset, start + GRACE)
    deadline = 45 * 60 if trace.rate_per_hour >= 1 * GB else 2 * HOUR
    delay = caught - judged_from
    assert delay <= deadline, f"caught {delay / 60:.0f} min after the onset"


@pytest.mark.parametrize(("scenario", "size", "interval"), _cases(LINEAR))
def test_slope_matches_a_linear_leak(
    scenario: Callable[[random.Random, Size, float], Trace], size: Size, interval: float
) -> None:
    trace = scenario(random.Random(_seed(scenario.__name__, size, interval)), size, interval)
    readings = _replay(trace)
    true_rate = trace.rate_per_hour / HOUR
    late = [
        r.slope_bytes_per_second
        for (t, _), r in zip(trace.samples, readings, strict=True)
        if trace.onset is not None and t >= trace.onset + 2.5 * HOUR
    ]
    assert late
    for slope in late:
        assert slope is not None
        assert slope == pytest.approx(true_rate, rel=0.25)


def test_exhaustion_time_follows_the_slope() -> None:
    trace = linear_1gb(random.Random(7), SIZES[0], 30.0)
    detector = LeakDetector()
    checked = 0
    for t, value in trace.samples:
        reading = detector.update(t, value, LIMIT)
        slope = reading.slope_bytes_per_second
        if slope is None or slope <= 0:
            assert reading.seconds_until_exhausted is None
        else:
            assert reading.seconds_until_exhausted == pytest.approx((LIMIT - value) / slope)
            checked += 1
    assert checked > 100
    # no limit, or memory already past it
    assert detector.update(trace.samples[-1][0] + 30, 7 * GB, None).seconds_until_exhausted is None
    past = detector.update(trace.samples[-1][0] + 60, 7 * GB, 1 * GB)
    assert past.seconds_until_exhausted == 0.0


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
    assert reading.seconds_until_exhausted is None
    assert not reading.suspected


def test_slope_is_none_until_enough_samples() -> None:
    detector = LeakDetector()
    first = detector.update(0.0, 5 * GB, LIMIT)
    assert first == LeakReading(None, False, None, 0.0)
    for k in range(1, 20):
        assert detector.update(60.0 * k, 5 * GB + k * MB, LIMIT).slope_bytes_per_second is None


def test_segment_age_resets_on_a_restart_drop() -> None:
    trace = restart(random.Random(11), SIZES[1], 15.0)
    detector = LeakDetector()
    ages = [(t, detector.update(t, v, LIMIT).segment_age_seconds) for t, v in trace.samples]
    before = [a for t, a in ages if t < 4 * HOUR]
    after = [(t, a) for t, a in ages if t >= 4 * HOUR]
    assert before[-1] == pytest.approx(4 * HOUR, abs=30)
    assert after[0][1] == 0.0
    assert after[-1][1] == pytest.approx(after[-1][0] - after[0][0])


def test_sawtooth_drops_do_not_restart_the_segment() -> None:
    trace = gc_sawtooth(random.Random(5), SIZES[1], 15.0)
    detector = LeakDetector()
    for t, v in trace.samples:
        reading = detector.update(t, v, LIMIT)
    assert reading.segment_age_seconds == trace.samples[-1][0]


def test_reset_starts_a_new_segment() -> None:
    trace = linear_1gb(random.Random(9), SIZES[0], 30.0)
    detector = LeakDetector()
    for t, v in trace.samples:
        reading = detector.update(t, v, LIMIT)
    assert reading.suspected
    detector.reset()
    t, v = trace.samples[-1]
    reading = detector.update(t + 30, v, LIMIT)
    assert reading == LeakReading(None, False, None, 0.0)
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
    limit = LeakSettings().history_seconds / LeakSettings().bin_seconds + 40
    assert len(detector._ts) <= limit
    assert len(detector._recent) <= 64


@pytest.mark.parametrize(
    "settings",
    [
        {"window_seconds": 0},
        {"scales": 0},
        {"restart_drop_fraction": 1.5},
        {"history_seconds": 3600.0, "window_seconds": 7200.0},
    ],
)
def test_settings_are_checked(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="LeakSettings"):
        LeakSettings(**settings)  # type: ignore[arg-type]


def _run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.replay", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_replay_prints_one_json_object_per_sample(tmp_path: Path) -> None:
    trace = linear_1gb(random.Random(2), SIZES[0], 60.0)
    csv = tmp_path / "trace.csv"
    csv.write_text(
        "timestamp_seconds,bytes\n" + "".join(f"{t},{v:.0f}\n" for t, v in trace.samples)
    )
    done = _run_replay(str(csv), "--limit-bytes", str(int(LIMIT)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(trace.samples)
    assert all(
        set(line) == {"t", "slope_bytes_per_second", "suspected", "seconds_until_exhausted"}
        for line in lines
    )
    assert [line["t"] for line in lines] == [t for t, _ in trace.samples]
    assert lines[0]["slope_bytes_per_second"] is None
    assert lines[0]["seconds_until_exhausted"] is None
    assert lines[0]["suspected"] is False
    assert lines[-1]["suspected"] is True
    # the same default settings as the exporter's
    expected = _replay(Trace([(t, float(f"{v:.0f}")) for t, v in trace.samples], False))
    assert [line["suspected"] for line in lines] == [r.suspected for r in expected]
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
