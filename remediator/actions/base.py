"""What every action shares: the result it reports, what it started, and the tools it is lent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from glyph_guard.common.lineage import LineageBook
from glyph_guard.remediator.actions.gpu import GpuHolders

if TYPE_CHECKING:
    from glyph_guard.remediator.actions.reset_gpu import GpuResetter

Outcome = Literal[
    "succeeded",
    "failed_to_stop",
    "failed_to_start",
    "unhealthy_after_start",
    "failed",
    "interrupted",
    "refused",  # not tried: what it would act on is not safe to act on now (details say why)
]


@dataclass(frozen=True)
class Started:
    """A process the remediator started; its session is the component's to sweep next time."""

    pid: int
    token: str  # put in the started process's environment; its descendants inherit it
    # when it was created (psutil create time): a session member created since, while the
    # leader is gone or still this very process, is the start's even without the token
    # (vLLM's EngineCore and Worker overwrite their environment when they retitle themselves)
    created: float | None = None


@dataclass
class ActionResult:
    """An outcome, a reason a person can read, and the facts behind it (JSON-serialisable)."""

    outcome: Outcome
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"


async def _forget(component: str, started: Started) -> None:
    return None


@dataclass(frozen=True)
class Toolkit:
    """What backends need from the running remediator."""

    client: httpx.AsyncClient
    log_dir: Path
    gpu: GpuHolders
    # told about a process as soon as it is started, before it is verified (it records it)
    record_start: Callable[[str, Started], Awaitable[None]] = _forget
    # the sessions and groups each component's processes led while alive, whoever started them
    lineages: LineageBook = field(default_factory=LineageBook)
    gpu_reset: GpuResetter | None = None  # the reset_gpu action (None: not available)
