"""What helps after an XID (NVIDIA's catalog, shipped as xid_actions.yaml) and the XIDs per GPU."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from typing import Literal, cast, get_args

import yaml

XidAction = Literal["restart_app", "unknown", "contact_support", "reset_gpu", "reboot"]
ACTIONS: tuple[XidAction, ...] = get_args(XidAction)  # least to most demanding
NEEDS_RESET: frozenset[XidAction] = frozenset({"reset_gpu", "reboot"})  # a restart cannot help


@cache
def catalog() -> dict[int, XidAction]:
    """XID code -> action, as shipped in xid_actions.yaml."""
    text = files("glyph_guard.common").joinpath("xid_actions.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)["actions"]
    table = {int(code): cast(XidAction, action) for code, action in raw.items()}
    bad = {code: action for code, action in table.items() if action not in ACTIONS}
    if bad:
        raise ValueError(f"xid_actions.yaml: actions {bad} are not among {list(ACTIONS)}")
    return table


def action_for(xid: int) -> XidAction:
    return catalog().get(xid, "unknown")


def more_demanding(a: XidAction | None, b: XidAction) -> XidAction:
    return b if a is None or ACTIONS.index(b) > ACTIONS.index(a) else a


@dataclass(frozen=True)
class GpuXids:
    """The XIDs one GPU reported while watched: counts by code, the last, and the most
    demanding action asked for since the GPU was (re)acquired (a reset or a reboot clears it)."""

    counts: dict[int, int] = field(default_factory=dict)
    last: int | None = None
    last_at: float | None = None
    required: XidAction | None = None

    def add(self, xid: int, at: float) -> GpuXids:
        counts = {**self.counts, xid: self.counts.get(xid, 0) + 1}
        return GpuXids(counts, xid, at, more_demanding(self.required, action_for(xid)))

    def reacquired(self) -> GpuXids:
        """The GPU came back after a loss (reset, driver reload): what it asked for is done."""
        return replace(self, required=None)
