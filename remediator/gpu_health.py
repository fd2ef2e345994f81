"""Whether restarting can help, by the state of the host's GPUs (XIDs and lost GPUs, via NVML)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from glyph_guard.common.nvml import load_pynvml
from glyph_guard.common.xid import NEEDS_RESET, XidAction
from glyph_guard.common.xid_watch import XidWatch


@dataclass(frozen=True)
class GpuState:
    """One GPU as the remediator knows it."""

    uuid: str
    lost: bool = False  # NVML cannot reach it (fallen off the bus, reset required)
    required: XidAction | None = None  # the most demanding action its XIDs asked for


def restart_hold(gpus: Iterable[GpuState]) -> str | None:
    """Why a restart cannot help now (a GPU needs a reset or a reboot), or None when it can.

    Every GPU of the host counts: a component's processes are gone when its restart is asked
    for, so which GPU it used cannot be read then."""
    for gpu in sorted(gpus, key=lambda g: g.uuid):
        name = gpu.uuid or "(unnamed)"
        if gpu.lost:
            return f"GPU {name} is lost: it needs a reset or a reboot before restarts can help"
        if gpu.required in NEEDS_RESET:
            return f"GPU {name} needs a {gpu.required} after an XID before restarts can help"
    return None


class GpuHealth:
    """The host's GPUs, watched through NVML on a thread of their own; asking never waits."""

    def __init__(self, watch: XidWatch | None = None) -> None:
        self.watch = watch if watch is not None else XidWatch(load_pynvml())

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def states(self) -> list[GpuState]:
        xids, lost = self.watch.xids, self.watch.lost
        return [
            GpuState(uuid, uuid in lost, xids[uuid].required if uuid in xids else None)
            for uuid in sorted(set(xids) | lost)
        ]

    def hold(self) -> str | None:
        return restart_hold(self.states())
