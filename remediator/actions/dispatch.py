"""Running one named action on a component with the backend its config names."""

from __future__ import annotations

import asyncio
import time

from glyph_guard.common.config import CommandRestart, Component, DockerRestart, SystemdRestart
from glyph_guard.remediator.actions.base import ActionResult, Started, Toolkit
from glyph_guard.remediator.actions.cache import clean_cache
from glyph_guard.remediator.actions.command import restart_command
from glyph_guard.remediator.actions.docker import restart_docker
from glyph_guard.remediator.actions.systemd import restart_systemd


async def perform(
    component: Component, action: str, previous: Started | None, kit: Toolkit
) -> tuple[ActionResult, Started | None]:
    """Do the action; also return the process started, for the next restart to sweep."""
    if action == "clean_cache":
        return await asyncio.to_thread(clean_cache, component, time.time()), previous
    if action == "reset_gpu":
        if kit.gpu_reset is None:
            return ActionResult("failed", "reset_gpu is not available here"), previous
        return await kit.gpu_reset.reset(component), previous
    method = component.remediation.restart
    if isinstance(method, CommandRestart):
        result, started = await restart_command(component, method, previous, kit)
        return result, started or previous
    if isinstance(method, SystemdRestart):
        return await restart_systemd(component, method, kit), None
    if isinstance(method, DockerRestart):
        return await restart_docker(component, method, kit), None
    return ActionResult("failed", "the component has no restart method"), previous
