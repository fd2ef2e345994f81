"""The JSON-lines protocol between the API process and its engine child (stdin / stdout pipes)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """What the engine needs at start; sent as the first line on its stdin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pages_dir: str
    keep_pages: int = Field(default=200, ge=1)
    startup_delay: float = Field(default=0.0, ge=0)
    hang: bool = False
    slow_seconds: float = Field(default=0.0, ge=0)
    rss_mb_per_request: float = Field(default=0.0, ge=0)
    rss_mb_per_minute: float = Field(default=0.0, ge=0)
    gpu_memory_mb: float = Field(default=0.0, ge=0)
    gpu_leak_mb_per_request: float = Field(default=0.0, ge=0)
    orphan_on_parent_death: bool = False
    death_after_seconds: float | None = Field(default=None, ge=0)
    step_seconds: float = Field(default=0.02, ge=0, le=10)
    max_running: int = Field(default=16, ge=1, le=1024)
    slow_prefill_seconds: float = Field(default=0.0, ge=0)


# Message types. API -> engine: config (first line), request, control, shutdown.
# Engine -> API: ready, fatal, started, step, done, failed, ack.
REQUEST = "request"
CONTROL = "control"
SHUTDOWN = "shutdown"
READY = "ready"
FATAL = "fatal"
STARTED = "started"
STEP = "step"  # one engine step, with the tokens it scheduled (vllm:iteration_tokens_total)
DONE = "done"
FAILED = "failed"
ACK = "ack"


def encode(kind: str, **fields: Any) -> bytes:
    """One message as a JSON line."""
    return (json.dumps({"type": kind, **fields}, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    """One JSON line back into a message; a message always has a string 'type'."""
    message = json.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError(f"not a protocol message: {line[:200]!r}")
    return message
