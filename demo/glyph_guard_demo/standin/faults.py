"""The faults the stand-in can play and the admin request bodies that switch them at run time."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

CRASH_EXIT_CODE = 70  # EX_SOFTWARE: an abrupt, non-zero exit like an unhandled crash


class _Fault(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EngineDeath(_Fault):
    """The engine child exits; /health answers 500; the API exits ~5 s later."""

    fault: Literal["engine_death"]
    exit_code: int = Field(default=1, ge=0, le=255)


class Hang(_Fault):
    """The engine stops taking requests: /health stays 200, completions never answer."""

    fault: Literal["hang"]
    enabled: bool = True


class Crash(_Fault):
    """The process exits abruptly (no clean-up); orphan_engine overrides the start flag."""

    fault: Literal["crash"]
    orphan_engine: bool | None = None


class Slow(_Fault):
    """Every completion (or UI predict) takes this many extra seconds."""

    fault: Literal["slow"]
    seconds: float = Field(ge=0, le=3600)


class SlowPrefill(_Fault):
    """Each prefill step takes this many seconds: the engine makes no step meanwhile, then
    goes on (one long prefill of a large multimodal request)."""

    fault: Literal["slow_prefill"]
    seconds: float = Field(ge=0, le=3600)


class RssLeak(_Fault):
    """Host memory leaked per request and/or per minute, in the engine or the API process."""

    fault: Literal["rss_leak"]
    mb_per_request: float = Field(default=0.0, ge=0, le=65536)
    mb_per_minute: float = Field(default=0.0, ge=0, le=65536)
    where: Literal["engine", "api"] = "engine"


class GpuLeak(_Fault):
    """GPU memory leaked per request, and/or allocated at once (needs torch or cupy and a GPU)."""

    fault: Literal["gpu_leak"]
    mb_per_request: float = Field(default=0.0, ge=0, le=1 << 20)
    allocate_mb: float = Field(default=0.0, ge=0, le=1 << 20)


class CacheGrowth(_Fault):
    """The UI writes this many KB of files per minute into its cache directory."""

    fault: Literal["cache_growth"]
    kb_per_minute: float = Field(ge=0, le=1 << 24)


class Clear(_Fault):
    """Stop the ongoing faults (hang, slow, leak rates, cache growth); leaked memory stays held."""

    fault: Literal["clear"]


ApiFault = Annotated[
    EngineDeath | Hang | Crash | Slow | SlowPrefill | RssLeak | GpuLeak | Clear,
    Field(discriminator="fault"),
]
UiFault = Annotated[Crash | Slow | CacheGrowth | Clear, Field(discriminator="fault")]

API_FAULTS: TypeAdapter[ApiFault] = TypeAdapter(ApiFault)
UI_FAULTS: TypeAdapter[UiFault] = TypeAdapter(UiFault)
