"""The optional reset_gpu action: `nvidia-smi --gpu-reset -i N` on the GPUs a component's config
names, only when no process holds them, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from glyph_guard.common.config import Component, GpuReset
from glyph_guard.common.processes import ProcessTable
from glyph_guard.remediator.actions.base import ActionResult
from glyph_guard.remediator.actions.gpu import GpuUsers

log = logging.getLogger("glyph_remediator")
OUTPUT_TAIL_CHARS = 2048
GPU_COMPONENT = "gpu"  # the `component` label of the GPU alerts (rules.yml, glyph-gpu-health)


def gpu_lane(labels: Mapping[str, str], components: Sequence[Component]) -> str | None:
    """The component a GPU alert's reset_gpu is for: the one that allows reset_gpu and whose
    config names the GPU of the alert's `gpu` label. The label is only compared with the
    configured indices; what is reset is always the component's configured GPUs."""
    if labels.get("component") != GPU_COMPONENT or labels.get("action") != "reset_gpu":
        return None
    gpu = labels.get("gpu")
    return next(
        (
            c.name
            for c in components
            if "reset_gpu" in c.remediation.actions and gpu in {str(i) for i in c.gpus}
        ),
        None,
    )


@dataclass(frozen=True)
class Refusal:
    """Why a GPU may not be reset now: a reason of its own, and a sentence."""

    reason: str  # needs_reboot, gpu_unreadable, gpu_in_use, component_running
    detail: str


def refusal(
    index: int,
    holders: frozenset[int] | None,
    running: Mapping[str, frozenset[int]],
    required: str | None = None,
) -> Refusal | None:
    """Whether GPU index may be reset, from what its XIDs asked for (required) and what holds
    it: NVML's compute and graphics processes (None: unreadable) and our components configured
    on it that run (name -> PIDs)."""
    if required == "reboot":
        why = f"an XID on GPU {index} asks for a reboot of the node: a reset cannot help"
        return Refusal("needs_reboot", why)
    if holders is None:
        why = f"NVML cannot list the processes of GPU {index}, so it cannot be shown to be free"
        return Refusal("gpu_unreadable", why)
    if holders:
        pids = ", ".join(str(p) for p in sorted(holders))
        return Refusal("gpu_in_use", f"GPU {index} is held by PID {pids}")
    if running := {name: pids for name, pids in running.items() if pids}:
        names = ", ".join(sorted(running))
        why = f"component(s) {names} configured on GPU {index} run: stop them first"
        return Refusal("component_running", why)
    return None


def reset_argv(executable: str, index: int) -> list[str]:
    return [executable, "--gpu-reset", "-i", str(index)]


def resolve(name: str) -> tuple[str | None, str]:
    """The executable to run (None when there is none) and, then, why not."""
    if name.startswith("/"):
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return name, ""
        return None, f"{name} is not an executable file"
    found = shutil.which(name)
    return (found, "") if found else (None, f"{name!r} not found on PATH")


class GpuWatch(Protocol):
    """What watches the GPUs' health (gpu_health.GpuHealth)."""

    def released(self) -> contextlib.AbstractContextManager[None]: ...

    def reset_done(self, index: int) -> None: ...

    def required(self, index: int) -> str | None: ...


class GpuResetter:
    """Resets a component's configured GPUs once nothing holds them; nvidia-smi is resolved once."""

    def __init__(
        self,
        settings: GpuReset,
        components: Callable[[], Sequence[Component]],
        users: GpuUsers,
        watch: GpuWatch,
    ) -> None:
        self.executable, self.missing = resolve(settings.nvidia_smi)
        self.timeout = settings.timeout_seconds
        if self.executable is None and any(
            "reset_gpu" in c.remediation.actions for c in components()
        ):
            log.warning("reset_gpu is enabled but cannot run: %s", self.missing)
        self._components = components
        self._users = users
        self._watch = watch

    def _running_on(self, index: int) -> dict[str, frozenset[int]]:
        """Our components configured on GPU index, and the PIDs of those that run."""
        on_it = [c for c in self._components() if index in c.gpus]
        table = ProcessTable()
        table.refresh()
        return {name: frozenset(tree.pids) for name, tree in table.find(on_it).items()}

    async def reset(self, component: Component) -> ActionResult:
        """Check every GPU of the component, then reset each in turn (stopping at a failure)."""
        details: dict[str, Any] = {"gpus": list(component.gpus)}
        for index in component.gpus:
            holders = await asyncio.to_thread(self._users.on, index)
            running = await asyncio.to_thread(self._running_on, index)
            required = self._watch.required(index)
            if (refused := refusal(index, holders, running, required)) is not None:
                details["refused"] = refused.reason
                return ActionResult("refused", refused.detail, details)
        if self.executable is None:
            return ActionResult("failed", f"cannot reset: {self.missing}", details)
        runs: list[dict[str, Any]] = []
        details["runs"] = runs
        with contextlib.ExitStack() as nvml_closed:  # nvidia-smi refuses while we hold NVML
            await asyncio.to_thread(nvml_closed.enter_context, self._watch.released())
            await asyncio.to_thread(nvml_closed.enter_context, self._users.released())
            for index in component.gpus:
                run = await self._run(reset_argv(self.executable, index))
                runs.append(run)
                if run.get("exit_code") != 0:
                    why = run.get("error") or f"exited {run['exit_code']}"
                    return ActionResult("failed", f"resetting GPU {index}: {why}", details)
                self._watch.reset_done(index)
        return ActionResult("succeeded", f"GPU {_list(component.gpus)} reset", details)

    async def _run(self, argv: list[str]) -> dict[str, Any]:
        """Run one argv (no shell) within the timeout; what it said and how it ended."""
        run: dict[str, Any] = {"argv": argv}
        began = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            run["error"] = f"cannot run {argv[0]}: {exc.strerror or exc}"
            return run
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except (TimeoutError, asyncio.TimeoutError):
            proc.kill()  # the process we started, by its PID
            output, _ = await proc.communicate()
            run["error"] = f"did not finish within {self.timeout:g} s; killed"
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        run["exit_code"] = proc.returncode
        run["output"] = output.decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:]
        run["seconds"] = round(time.monotonic() - began, 3)
        return run


def _list(indices: Sequence[int]) -> str:
    return ", ".join(str(i) for i in indices)
