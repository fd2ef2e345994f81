"""The `systemd` restart: `systemctl restart UNIT` with a fixed argv, then the probes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Any

from glyph_guard.common.config import Component, SystemdRestart
from glyph_guard.remediator.actions.base import ActionResult, Outcome, Toolkit
from glyph_guard.remediator.actions.verify import verify

OUTPUT_TAIL_BYTES = 2048


def _systemctl(method: SystemdRestart, timeout: float) -> tuple[int | None, str]:
    executable = method.systemctl if "/" in method.systemctl else shutil.which(method.systemctl)
    if executable is None:
        return None, f"{method.systemctl!r} not found on PATH"
    try:
        done = subprocess.run(
            [executable, "restart", method.unit],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"systemctl restart {method.unit} did not finish within {timeout:g} s"
    except OSError as exc:
        return None, f"cannot run {executable!r}: {exc.strerror or exc}"
    output = (done.stderr or done.stdout)[-OUTPUT_TAIL_BYTES:].decode(errors="replace").strip()
    return done.returncode, output


async def restart_systemd(
    component: Component, method: SystemdRestart, kit: Toolkit
) -> ActionResult:
    """Let systemd stop and start the unit (its KillMode covers the tree), then verify."""
    remediation = component.remediation
    timeout = remediation.stop_grace_seconds + remediation.startup_timeout_seconds
    code, output = await asyncio.to_thread(_systemctl, method, timeout)
    details: dict[str, Any] = {"argv": ["systemctl", "restart", method.unit], "returncode": code}
    if output:
        details["output"] = output
    if code != 0:
        reason = output if code is None else f"systemctl restart exited with code {code}: {output}"
        return ActionResult("failed_to_start", reason, details)
    check = await verify(kit.client, component, remediation.startup_timeout_seconds)
    details["verify_seconds"] = round(check.seconds, 3)
    outcome: Outcome = "succeeded" if check.healthy else "unhealthy_after_start"
    return ActionResult(outcome, f"unit {method.unit} restarted; {check.detail}", details)
