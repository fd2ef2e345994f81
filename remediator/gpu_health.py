"""Whether restarting can help, by the state of the host's GPUs (XIDs and lost GPUs, via NVML)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable
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
    index: int | None = None  # nvidia-smi's index, when NVML named the GPU


def restart_hold(gpus: Iterable[GpuState], used: Collection[int] = ()) -> str | None:
    """Why a restart cannot help now (a GPU needs a reset or a reboot), or None when it can.

    used: the GPUs the component uses (config `gpus`); only those count, and a GPU whose index
    is unknown. Empty: every GPU of the host counts (a component's processes are gone when its
    restart is asked for, so which GPU it used cannot be read then)."""
    counted = [g for g in gpus if not used or g.index is None or g.index in used]
    for gpu in sorted(counted, key=lambda g: g.uuid):
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
        xids, lost, indices = self.watch.xids, self.watch.lost, self.watch.indices
        return [
            GpuState(
                uuid, uuid in lost, xids[uuid].required if uuid in xids else None, indices.get(uuid)
            )
            for uuid in sorted(set(xids) | lost)
        ]

    def hold(self, used: Collection[int] = ()) -> str | None:
        return restart_hold(self.states(), used)

    def required(self, index: int) -> XidAction | None:
        """The most demanding action the XIDs of GPU index asked for (None: none seen)."""
        return next((g.required for g in self.states() if g.index == index), None)

    def released(self) -> contextlib.AbstractContextManager[None]:
        """The watch leaves NVML closed while the body runs (a GPU reset needs that)."""
        return self.watch.released()

    def reset_done(self, index: int) -> None:
        """GPU index was reset (the reset_gpu action): restarts on it may help again."""
        self.watch.reacquired(frozenset(u for u, i in self.watch.indices.items() if i == index))
