"""What every action shares: the result it reports and the tools the remediator lends it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from remediator.actions.gpu import GpuHolders

Outcome = Literal[
    "succeeded", "failed_to_stop", "failed_to_start", "unhealthy_after_start", "failed"
]


@dataclass
class ActionResult:
    """An outcome, a reason a person can read, and the facts behind it (JSON-serialisable)."""

    outcome: Outcome
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"


@dataclass(frozen=True)
class Toolkit:
    """What backends need from the running remediator."""

    client: httpx.AsyncClient
    log_dir: Path
    gpu: GpuHolders
