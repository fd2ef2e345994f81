"""Time-to-exhaustion forecasts as a table: headroom, slope and its error in, a forecast out."""

from __future__ import annotations

import math

import pytest

from glyph_guard.exporter.leak_forecast import (
    IMMINENT_SECONDS,
    NO_FORECAST,
    ExhaustionForecast,
    Urgency,
    forecast_exhaustion,
)

GB = 1e9
MB_H = 1e6 / 3600  # 1 MB/h in bytes per second


@pytest.mark.parametrize(
    ("level", "limit", "slope", "stderr", "suspected", "expected"),
    [
        # 8 GB of headroom at 1 GB/h, +-0.25 GB/h: 8 h, between 8/1.5 and 8/0.5 h
        (
            2 * GB,
            10 * GB,
            1000 * MB_H,
            250 * MB_H,
            True,
            ExhaustionForecast(8 * 3600, 8 / 1.5 * 3600, 16 * 3600, Urgency.PLANNED),
        ),
        # the same, not suspected: the numbers stay, nothing is asked of the remediator
        (
            2 * GB,
            10 * GB,
            1000 * MB_H,
            250 * MB_H,
            False,
            ExhaustionForecast(8 * 3600, 8 / 1.5 * 3600, 16 * 3600, Urgency.NONE),
        ),
        # an exact slope: a point interval
        (0, 1 * GB, 1000 * MB_H, 0, True, ExhaustionForecast(3600, 3600, 3600, Urgency.PLANNED)),
        # 42 min at the slope, but 28 min at the slope plus two errors: act now
        (
            9.3 * GB,
            10 * GB,
            1000 * MB_H,
            250 * MB_H,
            True,
            ExhaustionForecast(2520, 1680, 5040, Urgency.IMMEDIATE),
        ),
        # a slope within two errors of zero: no upper bound
        (
            2 * GB,
            10 * GB,
            1000 * MB_H,
            600 * MB_H,
            True,
            ExhaustionForecast(8 * 3600, 8 / 2.2 * 3600, None, Urgency.PLANNED),
        ),
        # already past the limit
        (11 * GB, 10 * GB, 1000 * MB_H, 0, True, ExhaustionForecast(0, 0, 0, Urgency.IMMEDIATE)),
        # nothing to forecast: not growing, no slope, no limit, a level that is not a number
        (2 * GB, 10 * GB, 0.0, 0, True, NO_FORECAST),
        (2 * GB, 10 * GB, -100 * MB_H, 0, True, NO_FORECAST),
        (2 * GB, 10 * GB, None, 0, True, NO_FORECAST),
        (2 * GB, None, 1000 * MB_H, 0, True, NO_FORECAST),
        (2 * GB, 0, 1000 * MB_H, 0, True, NO_FORECAST),
        (math.nan, 10 * GB, 1000 * MB_H, 0, True, NO_FORECAST),
    ],
)
def test_forecast(
    level: float,
    limit: float | None,
    slope: float | None,
    stderr: float,
    suspected: bool,
    expected: ExhaustionForecast,
) -> None:
    got = forecast_exhaustion(
        level_bytes=level,
        limit_bytes=limit,
        slope_bytes_per_second=slope,
        slope_stderr_bytes_per_second=stderr,
        suspected=suspected,
    )
    assert got.urgency == expected.urgency
    for name in ("seconds", "lower_seconds", "upper_seconds"):
        want = getattr(expected, name)
        assert getattr(got, name) == (None if want is None else pytest.approx(want)), name


def test_the_urgency_turns_at_the_imminent_bound() -> None:
    def urgency(headroom: float) -> Urgency:
        return forecast_exhaustion(
            level_bytes=0,
            limit_bytes=headroom,
            slope_bytes_per_second=1.0,
            slope_stderr_bytes_per_second=0.0,
            suspected=True,
        ).urgency

    assert urgency(IMMINENT_SECONDS) == Urgency.IMMEDIATE
    assert urgency(IMMINENT_SECONDS + 1) == Urgency.PLANNED
