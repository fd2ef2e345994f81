"""The `command` restart: stop the whole tree, wait for the port and GPU, start detached, verify."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from glyph_guard.common.config import CommandRestart, Component
from glyph_guard.common.ports import port_state
from glyph_guard.common.processes import ProcessTable, read_pidfile
from glyph_guard.common.stopping import collect, stop_processes
from glyph_guard.remediator.actions.base import ActionResult, Started, Toolkit
from glyph_guard.remediator.actions.gpu import GpuHolders
from glyph_guard.remediator.actions.output import Output, open_output, reaped
from glyph_guard.remediator.actions.tree import START_ENV, leftovers, session_members
from glyph_guard.remediator.actions.verify import verify

POLL_SECONDS = 0.05
LOG_TAIL_BYTES = 2048


def describe(pids: frozenset[int] | set[int] | tuple[int, ...]) -> list[dict[str, Any]]:
    """PIDs with their names and command lines, for a record a person reads."""
    out: list[dict[str, Any]] = []
    for pid in sorted(pids):
        try:
            proc = psutil.Process(pid)
            out.append({"pid": pid, "name": proc.name(), "cmdline": proc.cmdline()[:8]})
        except psutil.Error:
            out.append({"pid": pid})
    return out


def _pid_list(pids: frozenset[int] | set[int]) -> str:
    return ", ".join(str(p) for p in sorted(pids))


def _unproven(table: ProcessTable, component: Component) -> str:
    """Why no process of the component was found, for a restart that stops nothing."""
    note = f"no process proven to be component {component.name}'s; nothing stopped"
    pidfile = component.match.pidfile
    if pidfile is None:
        return note
    pid = read_pidfile(pidfile)
    if pid is None:
        return f"{note} ({pidfile} holds no PID, or is not a regular file)"
    return f"{note} ({pidfile} names PID {pid}: {table.rejection(component.match, pid)})"


def _stop(
    component: Component,
    method: CommandRestart,
    previous: Started | None,
    kit: Toolkit,
    details: dict[str, Any],
) -> str | None:
    """Stop everything of the component; the reason it failed, or None once all is released."""
    remediation = component.remediation
    started = time.monotonic()
    table = ProcessTable()
    table.refresh()
    tree = table.find([component])[component.name]
    if not tree.roots:
        details["nothing_stopped"] = _unproven(table, component)
    left = leftovers(component, kit.lineages, tree.pids)
    handles = collect(tree.pids | session_members(previous, tree.roots) | left)
    details["tree_pids"] = sorted(handles)
    if left - tree.pids:
        details["leftovers"] = describe(left - tree.pids)
    holders: dict[int, psutil.Process] = {}
    if component.port is not None:
        state = port_state(component.port, handles)
        foreign = state.holders - set(handles) if state.conflict else frozenset()
        if foreign:
            details["port_holders"] = describe(foreign)
            if not remediation.kill_port_holders:
                return (
                    f"port {component.port} is held by PID {_pid_list(foreign)}, which is not"
                    f" part of component {component.name}; left alone"
                    " (kill_port_holders is off)"
                )
            holders = collect(foreign, descendants=False)  # the holder only, not its children
    if method.stop is not None:
        details["stop_command"] = _run_stop(method, remediation.stop_grace_seconds)
    report = stop_processes(handles, remediation.stop_grace_seconds, first=tree.roots)
    stopped, killed, survivors = set(report.targeted), set(report.killed), set(report.survivors)
    if holders:
        held = stop_processes(holders, remediation.stop_grace_seconds, descendants=False)
        stopped |= set(held.targeted)
        killed |= set(held.killed)
        survivors |= set(held.survivors)
    details.update(stopped_pids=sorted(stopped), killed_pids=sorted(killed))
    details["stop_seconds"] = round(time.monotonic() - started, 3)
    if survivors:
        details["survivors"] = describe(survivors)
        return f"PID {_pid_list(survivors)} survived SIGKILL"
    failure = _wait_released(component, frozenset(stopped), kit.gpu, details)
    details["release_seconds"] = round(time.monotonic() - started - details["stop_seconds"], 3)
    return failure


def _run_stop(method: CommandRestart, grace: float) -> dict[str, Any]:
    assert method.stop is not None
    argv = _resolve(method.stop, _environment(method))
    if argv is None:
        return {"error": f"{method.stop[0]!r} not found on PATH"}
    try:
        done = subprocess.run(
            argv,
            cwd=method.cwd,
            env=_environment(method),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=max(grace, 5.0),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    return {
        "returncode": done.returncode,
        "stderr": done.stderr[-LOG_TAIL_BYTES:].decode(errors="replace"),
    }


def _wait_released(
    component: Component, old: frozenset[int], gpu: GpuHolders, details: dict[str, Any]
) -> str | None:
    """Wait until nobody listens on the port and no old PID holds GPU memory."""
    timeout = component.remediation.release_timeout_seconds
    deadline = time.monotonic() + timeout
    while True:
        port = port_state(component.port, ()) if component.port is not None else None
        gpu_pids = gpu()
        gpu_held = (gpu_pids & old) if gpu_pids is not None else frozenset()
        if not (port and port.listening) and not gpu_held:
            details["nvml"] = gpu_pids is not None
            return None
        if time.monotonic() >= deadline:
            if port and port.listening:
                details["port_holders"] = describe(port.holders)
                # holders stay unknown when the listener's /proc entries are not ours to read
                who = f"PID {_pid_list(port.holders)}" if port.holders else "a process not visible"
                return f"port {component.port} still held by {who} after {timeout:g} s"
            details["gpu_holders"] = sorted(gpu_held)
            return f"GPU memory still held by PID {_pid_list(gpu_held)} after {timeout:g} s"
        time.sleep(POLL_SECONDS)


def _environment(method: CommandRestart) -> dict[str, str]:
    return {**os.environ, **method.env}


def _resolve(argv: tuple[str, ...], env: dict[str, str]) -> list[str] | None:
    """argv with argv[0] found on PATH (a path with a slash is taken as it is)."""
    if "/" in argv[0]:
        return list(argv)
    found = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    return [found, *argv[1:]] if found else None


def log_path(component: Component, method: CommandRestart, log_dir: Path) -> Path:
    return method.log_file or log_dir / f"{component.name}.log"


class _Launched:
    """A started process, reaped by a thread of its own so it never lingers as a zombie."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = reaped(proc)

    def exit_code(self) -> int | None:
        return self.proc.returncode


def _start(
    component: Component, method: CommandRestart, log: Path
) -> tuple[_Launched | str, Started | None, Output | None]:
    token = secrets.token_hex(16)
    env = {**_environment(method), START_ENV: token}
    argv = _resolve(method.start, env)
    if argv is None:
        return f"start command {method.start[0]!r} not found on PATH", None, None
    output = open_output(component.name, method, log)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=method.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output.fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return f"cannot start {argv[0]!r}: {exc.strerror or exc}", None, output
    finally:
        output.started()
    try:
        created: float | None = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        created = None
    return _Launched(proc), Started(proc.pid, token, created), output


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


async def restart_command(
    component: Component, method: CommandRestart, previous: Started | None, kit: Toolkit
) -> tuple[ActionResult, Started | None]:
    """Restart one component with its argv lists; returns the result and what was started."""
    details: dict[str, Any] = {}
    failure = await asyncio.to_thread(_stop, component, method, previous, kit, details)
    if failure is not None:
        return ActionResult("failed_to_stop", failure, details), None
    log = log_path(component, method, kit.log_dir)
    starting = asyncio.ensure_future(asyncio.to_thread(_start, component, method, log))
    try:
        launched, started, output = await asyncio.shield(starting)
    except asyncio.CancelledError:  # a start begun is finished and recorded, then we stop
        launched, started, _ = await starting
        if started is not None:
            await kit.record_start(component.name, started)
        raise
    if output is not None:
        details.update(output.details)
    if started is not None:
        await kit.record_start(component.name, started)
    if isinstance(launched, str):
        return ActionResult("failed_to_start", launched, details), None
    assert started is not None
    details["started_pid"] = started.pid
    check = await verify(
        kit.client, component, component.remediation.startup_timeout_seconds, launched.exit_code
    )
    details["verify_seconds"] = round(check.seconds, 3)
    if check.healthy:
        stopped = details.get("nothing_stopped")
        summary = f"started PID {started.pid}; {check.detail}"
        return ActionResult(
            "succeeded", f"{stopped}; {summary}" if stopped else summary, details
        ), started
    if check.exit_code is not None:
        if output is not None and output.pipe is not None:  # its last words are in the file
            await asyncio.to_thread(output.drained)
            details["log_tail"] = _log_tail(log)
        reason = f"{check.detail} before becoming healthy"
        return ActionResult("failed_to_start", reason, details), started
    return ActionResult("unhealthy_after_start", check.detail, details), started
