"""Running a stand-in FastAPI app: early port bind, start-up faults, signals, uvicorn serving."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from glyph_guard.common.config import is_loopback

T = TypeVar("T")


class PortInUse(Exception):
    """The port is taken by another process."""


def bind(host: str, port: int) -> socket.socket:
    """Bind (not yet listen) so a taken port fails at once; the port opens when serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"[Errno {exc.errno}] Address already in use: {host}:{port}") from None
        raise
    sock.set_inheritable(False)
    return sock


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loopback_client(host: str | None) -> bool:
    return host is not None and is_loopback(host)


class Lifecycle:
    """When to stop and with which exit code; the first reason to stop wins."""

    def __init__(self) -> None:
        self.exit_code = 0
        self.stopping = asyncio.Event()
        self.server: uvicorn.Server | None = None

    def stop(self, code: int = 0) -> None:
        if self.stopping.is_set():
            if self.server is not None:
                self.server.force_exit = True  # a second signal: stop waiting for requests
            return
        self.exit_code = code
        self.stopping.set()

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, 0)

    def fail_after(self, seconds: float | None, what: str) -> asyncio.Task[None] | None:
        """The --fail-start-after fault: exit 1 after this many seconds, started or not."""
        if seconds is None:
            return None

        async def fail() -> None:
            await asyncio.sleep(seconds)
            say(f"ERROR: {what} failed to start (stand-in fault --fail-start-after {seconds})")
            self.stop(1)

        return asyncio.create_task(fail(), name="fail-start")

    async def unless_stopped(self, work: Awaitable[T]) -> tuple[bool, T | None]:
        """Await work unless a stop comes first; (True, result) or (False, None)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False, None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the Lifecycle decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    app: FastAPI,
    sock: socket.socket,
    lifecycle: Lifecycle,
    log_level: str,
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve app on the bound socket until the lifecycle stops (PortInUse if listen fails)."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level=log_level,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    server = _Server(config)
    lifecycle.server = server

    async def watch() -> None:
        await lifecycle.stopping.wait()
        on_stop()
        server.should_exit = True

    watcher = asyncio.create_task(watch(), name="stop-watch")
    try:
        await server.serve(sockets=[sock])
    except OSError as exc:
        raise PortInUse(str(exc)) from None
    finally:
        watcher.cancel()
