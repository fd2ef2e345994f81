"""Time until a growing resource reaches its limit, with an interval and an urgency (pure math)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["IMMINENT_SECONDS", "ExhaustionForecast", "Urgency", "Z", "forecast_exhaustion"]

IMMINENT_SECONDS = 1800.0  # a leak that may exhaust its resource this soon is acted on at once
Z = 2.0  # standard errors of the slope either side: the interval's width


class Urgency(IntEnum):
    """What a suspected leak asks of the remediator; the gauge exports the number."""

    NONE = 0  # no leak suspected
    PLANNED = 1  # a leak with more than IMMINENT_SECONDS left: restart when the engine is idle
    IMMEDIATE = 2  # the resource may run out within IMMINENT_SECONDS: restart now


@dataclass(frozen=True)
class ExhaustionForecast:
    """Seconds until the limit is reached at the growth rate; None where not growing."""

    seconds: float | None  # at the estimated slope
    lower_seconds: float | None  # at the slope plus Z standard errors: the earliest plausible
    upper_seconds: float | None  # at the slope less Z standard errors; None: maybe never
    urgency: Urgency


NO_FORECAST = ExhaustionForecast(None, None, None, Urgency.NONE)


def forecast_exhaustion(
    *,
    level_bytes: float,
    limit_bytes: float | None,
    slope_bytes_per_second: float | None,
    slope_stderr_bytes_per_second: float,
    suspected: bool,
) -> ExhaustionForecast:
    """The headroom (limit less the recent high level) over the slope and its interval.

    The urgency is IMMEDIATE when a suspected leak may run out within IMMINENT_SECONDS at the
    earliest plausible time, PLANNED for any other suspected leak, NONE otherwise.
    """
    slope = slope_bytes_per_second
    if (
        slope is None
        or not math.isfinite(slope)
        or slope <= 0
        or limit_bytes is None
        or limit_bytes <= 0
        or not math.isfinite(level_bytes)
    ):
        return NO_FORECAST
    headroom = max(0.0, limit_bytes - level_bytes)
    spread = Z * max(0.0, slope_stderr_bytes_per_second)
    seconds = headroom / slope
    lower = headroom / (slope + spread)
    upper = headroom / (slope - spread) if slope > spread else None
    if not suspected:
        urgency = Urgency.NONE
    elif lower <= IMMINENT_SECONDS:
        urgency = Urgency.IMMEDIATE
    else:
        urgency = Urgency.PLANNED
    return ExhaustionForecast(seconds, lower, upper, urgency)
