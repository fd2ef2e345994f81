"""The remediator's section: its address, credentials, state, crash-loop budget and retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from glyph_guard.common.config.base import Frozen, Listen, parse_listen


class BasicAuth(Frozen):
    username: Annotated[str, Field(min_length=1)]
    password_file: Path


# Budget keys whose meaning changed: rejected, with what replaced them.
_REPLACED_BUDGET_KEYS = {
    "max_restarts": "replaced by max_failed_restarts, which counts only consecutive restarts"
    " that did not give a lasting healthy service (restarts that stay healthy for"
    " min_healthy_seconds never spend it)",
    "window_seconds": "removed: failed restarts no longer expire with a window; a restart that"
    " stays healthy for min_healthy_seconds clears them (see max_failed_restarts)",
    "backoff_reset_seconds": "removed: the back-off grows only with restarts that did not give"
    " a lasting recovery, and a restart that stays healthy for min_healthy_seconds resets it"
    " with the failure count",
}


class Budget(Frozen):
    """Crash-loop safety: cooldown, back-off, and how many failed restarts in a row give up."""

    cooldown_seconds: Annotated[float, Field(ge=0)] = Field(
        default=30.0,
        description="how long an alert that began before the last restart finished waits",
    )
    backoff_initial_seconds: Annotated[float, Field(ge=0)] = 1.0  # as Kubernetes (KEP-4603)
    backoff_max_seconds: Annotated[float, Field(ge=0)] = 60.0
    min_healthy_seconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="a restart verified healthy that stays up this long is a lasting recovery",
    )
    max_failed_restarts: Annotated[int, Field(ge=1)] = Field(
        default=5,
        description="consecutive restarts without a lasting recovery before giving up",
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, replacement in _REPLACED_BUDGET_KEYS.items():
                if key in data:
                    raise ValueError(f"{key} is no longer supported: {replacement}")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Budget:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_initial_seconds")
        return self


class PlannedRestarts(Frozen):
    """Restarts an alert labelled `urgency: planned` asks for: at an idle engine, by a deadline."""

    max_wait_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=3600.0,
        description="the longest a planned restart waits for an idle engine (the alert's"
        " forecast may shorten it)",
    )
    poll_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        default=2.0, description="how often a planned restart reads whether the engine is idle"
    )


class Retention(Frozen):
    """How long the remediator keeps payloads, decisions and seen alerts (actions stay)."""

    max_age_seconds: Annotated[float, Field(gt=0)] = 30 * 86400.0
    max_rows: Annotated[int, Field(ge=100)] = 100_000


class GpuReset(Frozen):
    """How the optional reset_gpu action runs nvidia-smi (components enable it in their actions)."""

    nvidia_smi: Annotated[str, Field(min_length=1, pattern=r"^[^\x00]+$")] = Field(
        default="nvidia-smi",
        description="the nvidia-smi executable: an absolute path, or a name looked up on PATH"
        " once at start",
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = Field(
        default=120.0,
        description="how long one `nvidia-smi --gpu-reset` may take before it is killed",
    )

    @model_validator(mode="after")
    def _path_or_name(self) -> GpuReset:
        if "/" in self.nvidia_smi and not self.nvidia_smi.startswith("/"):
            raise ValueError("nvidia_smi: an absolute path, or a bare name looked up on PATH")
        return self


class RemediatorSettings(Frozen):
    """The remediator's own section."""

    listen: Listen = "127.0.0.1:9843"
    allowed_hosts: tuple[str, ...] = Field(
        default=(), description="host names clients may call the remediator by (IPs always)"
    )
    token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    state_db: Path = Path("/var/lib/glyph-guard/remediator.sqlite")
    log_dir: Path = Path("/var/log/glyph-guard")
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    budget: Budget = Budget()
    planned_restarts: PlannedRestarts = PlannedRestarts()
    dry_run: bool = False
    store_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0, description="longest wait for one SQLite operation before acting without it"
    )
    retention: Retention = Retention()
    max_alerts_per_delivery: Annotated[int, Field(ge=1, le=100_000)] = 1000
    gpu_reset: GpuReset = GpuReset()

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)
