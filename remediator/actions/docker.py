"""The `docker` restart: the Docker API over its unix socket, container health, then the probes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from glyph_guard.common.config import Component, DockerRestart
from glyph_guard.remediator.actions.base import ActionResult, Outcome, Toolkit
from glyph_guard.remediator.actions.verify import verify

POLL_SECONDS = 0.25


def _docker_api(method: DockerRestart, timeout: float) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(method.socket))
    return httpx.Client(transport=transport, base_url="http://docker", timeout=timeout)


def _unreachable(path: Path) -> str | None:
    """Why the Docker daemon's socket takes no connection (None: it does).

    Connecting once here first also keeps a dead daemon's socket from leaking a file
    descriptor per attempt: httpx's unix transport does not close a socket whose connect failed.
    """
    if not path.is_socket():
        return "no socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _api_error(response: httpx.Response) -> str:
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {response.status_code}: {message or response.text[:200]}"


def _restart(
    method: DockerRestart, grace: float, startup: float
) -> tuple[Outcome | None, str, dict[str, Any]]:
    """Restart the container and wait for it to run (and be healthy, if it has a healthcheck).

    Returns (failed outcome or None, reason, details).
    """
    details: dict[str, Any] = {"container": method.container}
    path = f"/containers/{method.container}"
    unreachable = _unreachable(method.socket)
    if unreachable is not None:
        return "failed_to_start", f"cannot reach Docker at {method.socket}: {unreachable}", details
    try:
        with _docker_api(method, grace + 30.0) as docker:
            response = docker.post(f"{path}/restart", params={"t": int(grace)})
            if response.status_code != 204:
                return "failed_to_start", f"docker restart: {_api_error(response)}", details
            deadline = time.monotonic() + startup
            while True:
                response = docker.get(f"{path}/json")
                if response.status_code != 200:
                    return "failed_to_start", f"docker inspect: {_api_error(response)}", details
                state = response.json().get("State") or {}
                health = (state.get("Health") or {}).get("Status")
                details.update(running=bool(state.get("Running")), health=health)
                if state.get("Running") and health in (None, "healthy"):
                    return None, "container running" + (" and healthy" if health else ""), details
                if health == "unhealthy":
                    return (
                        "unhealthy_after_start",
                        "the container's healthcheck says unhealthy",
                        details,
                    )
                if time.monotonic() >= deadline:
                    if not state.get("Running"):
                        code = state.get("ExitCode")
                        return (
                            "failed_to_start",
                            f"container not running (exit code {code})",
                            details,
                        )
                    return "unhealthy_after_start", f"container health still {health!r}", details
                time.sleep(POLL_SECONDS)
    except httpx.HTTPError as exc:
        return "failed_to_start", f"cannot reach Docker at {method.socket}: {exc}", details
    except ValueError as exc:
        return "failed_to_start", f"Docker answered something unexpected: {exc}", details


def _exit_code(method: DockerRestart) -> int | None:
    """The container's exit code once it stopped running; None while it runs (or unknown)."""
    try:
        with _docker_api(method, 10.0) as docker:
            response = docker.get(f"/containers/{method.container}/json")
            state = (response.json().get("State") or {}) if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if state.get("Running", True):
        return None
    return int(state.get("ExitCode") or 0)


async def restart_docker(component: Component, method: DockerRestart, kit: Toolkit) -> ActionResult:
    """Restart the container (Docker stops its processes), then verify with the probes."""
    remediation = component.remediation
    started = time.monotonic()
    failed, reason, details = await asyncio.to_thread(
        _restart, method, remediation.stop_grace_seconds, remediation.startup_timeout_seconds
    )
    if failed is not None:
        return ActionResult(failed, reason, details)
    left = max(0.1, remediation.startup_timeout_seconds - (time.monotonic() - started))
    check = await verify(kit.client, component, left)
    details["verify_seconds"] = round(check.seconds, 3)
    if check.healthy:
        return ActionResult("succeeded", f"{reason}; {check.detail}", details)
    # A container that exits at once can still read as running right after the restart.
    exited = await asyncio.to_thread(_exit_code, method)
    if exited is not None:
        details["running"] = False
        return ActionResult(
            "failed_to_start", f"container not running (exit code {exited})", details
        )
    return ActionResult("unhealthy_after_start", f"{reason}; {check.detail}", details)
