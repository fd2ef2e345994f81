"""The exporter's section: its address, sampling intervals and leak detector tuning."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from glyph_guard.common.config.base import Frozen, Listen, parse_listen


class Intervals(Frozen):
    """How often each sampler runs, in seconds."""

    liveness: Annotated[float, Field(ge=0.1, le=3600)] = 1.0
    ports: Annotated[float, Field(ge=0.1, le=3600)] = 10.0
    probes: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    canary: Annotated[float, Field(ge=1, le=3600)] = 10.0
    engine: Annotated[float, Field(ge=0.1, le=3600)] = 1.0
    gpu: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    caches: Annotated[float, Field(ge=1, le=86400)] = 30.0


_HOUR = 3600.0
Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class LeakSettings(Frozen):
    """How the leak detector judges a series (exporter.leak); the defaults are the exporter's."""

    window_seconds: Positive = Field(
        default=2 * _HOUR, description="the longest window; the others are its 1/n, 2/n, ..."
    )
    windows: Annotated[int, Field(ge=1, le=12)] = Field(default=6, description="window lengths")
    min_window_seconds: Annotated[float, Field(ge=0)] = Field(
        default=1800.0,
        description="shorter windows are not judged: 20 min of floors take the last steps of a"
        " warm-up for a steady rise",
    )
    blocks: Annotated[int, Field(ge=4, le=24)] = Field(
        default=6, description="blocks per window, one floor each"
    )
    bin_seconds: Positive = Field(default=60.0, description="samples reduce to bins this long")
    history_seconds: Positive = Field(
        default=4 * _HOUR, description="how much of the segment is kept (memory and cost)"
    )
    cycle_seconds: Positive = Field(
        default=12 * _HOUR,
        description="how far back a fall of hour-long floors marks a load cycle, not a leak",
    )
    grace_seconds: Annotated[float, Field(ge=0)] = Field(
        default=_HOUR, description="nothing is suspected this soon after a (re)start"
    )
    warmup_seconds: Annotated[float, Field(ge=0)] = Field(
        default=1200.0, description="no window reaches back into a segment's first seconds"
    )
    min_history_seconds: Annotated[float, Field(ge=0)] = Field(
        default=1800.0, description="older floors a window's last one is compared with"
    )
    min_rate_bytes_per_second: Positive = Field(
        default=175e6 / _HOUR, description="the least floor slope suspected (175 MB/h)"
    )
    min_rise_bytes: Annotated[float, Field(ge=0)] = Field(
        default=300e6, description="the least rise over a window at its slope"
    )
    min_sigmas: Positive = Field(default=4.0, description="standard errors the slope must clear")
    min_reach_seconds: Annotated[float, Field(ge=0)] = Field(
        default=300.0, description="a floor is taken over at least this much of the past"
    )
    floor_quantile: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.2, description="quantile of a block's bin minima that is its floor"
    )
    history_quantile: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0, description="the older floors' level a leak must rise above"
    )
    min_late_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.5, description="the later half must rise at this fraction of the earlier's rate"
    )
    max_top_steps_share: Fraction = Field(
        default=0.75, description="the two largest block steps carry at most this of the rise"
    )
    max_fall_back_fraction: Annotated[float, Field(ge=0)] = Field(
        default=0.5, description="older floors may have fallen by at most this of the rise"
    )
    confirm_bins: Annotated[int, Field(ge=1, le=60)] = Field(
        default=3, description="a majority of this many latest bins must find a rising floor"
    )
    restart_drop_fraction: Fraction = Field(
        default=0.5, description="a fall by this fraction of the recent median is a restart"
    )
    max_gap_seconds: Positive = Field(
        default=0.5 * _HOUR, description="a longer gap in the samples starts a new segment"
    )

    @model_validator(mode="after")
    def _fits(self) -> LeakSettings:
        if self.history_seconds < self.window_seconds:
            raise ValueError("history_seconds must be >= window_seconds")
        if self.window_seconds / self.windows < 2 * self.blocks * self.bin_seconds:
            raise ValueError("the shortest window must hold two bins per block")
        if self.min_window_seconds > self.window_seconds:
            raise ValueError("min_window_seconds must be <= window_seconds")
        return self


class ExporterSettings(Frozen):
    """The exporter's own section."""

    listen: Listen = "127.0.0.1:9842"
    intervals: Intervals = Intervals()
    nvml: bool = Field(default=True, description="read GPUs through NVML when available")
    leak: LeakSettings = Field(default=LeakSettings(), description="leak detector tuning")

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)
