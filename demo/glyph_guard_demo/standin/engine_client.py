"""The API process's side of the engine: spawns the child, sends requests, tracks their state."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from glyph_guard_demo.standin import protocol
from glyph_guard_demo.standin.names import ENGINE_TITLE

_LINE_LIMIT = 16 * 1024 * 1024
_CONTROL_TIMEOUT = 5.0
# What vLLM's EngineCore and Worker still show in /proc/PID/environ after setproctitle
# overwrote their environment area (14 variables of 48): the stand-in's engine gets only these.
_ENGINE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LD_LIBRARY_PATH")
_ENGINE_ENV_PREFIXES = ("PYTHON", "VLLM_", "CUDA_", "NVIDIA_", "VIRTUAL_ENV")


def engine_environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key in _ENGINE_ENV or key.startswith(_ENGINE_ENV_PREFIXES)
    }


class EngineDead(Exception):
    """The engine process has exited; no request can be served."""


class ShuttingDown(EngineDead):
    """The API process is stopping; requests in flight get 503."""


class EngineStartError(Exception):
    """The engine failed while loading; carries the exit code the API should use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class RequestFailed(Exception):
    """The engine reported an error for one request."""


class ControlError(Exception):
    """The engine refused a fault switch (e.g. no GPU for a GPU leak)."""


@dataclass(frozen=True)
class Completion:
    """What the engine produced for one request."""

    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    pages: list[str]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


class EngineClient:
    """Owns the engine child process and the requests in flight to it."""

    def __init__(self, config: protocol.EngineConfig) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None
        self._exited = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Completion]] = {}
        self._states: dict[str, Literal["waiting", "running"]] = {}
        # what the engine last published: vLLM's engine sends its queue with its step stats,
        # so a request sent to a hung engine never shows in the gauges
        self._published = {"waiting": 0, "running": 0}
        self._acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seq = itertools.count(1)
        self._fatal: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.on_step: Callable[[int], None] = lambda tokens: None  # once per engine step

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self._exited.is_set()

    @property
    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def count(self, state: Literal["waiting", "running"]) -> int:
        """Requests waiting or running, as the engine last published them."""
        return self._published[state]

    def _publish(self) -> None:
        for state in self._published:
            self._published[state] = sum(1 for value in self._states.values() if value == state)

    async def start(self) -> None:
        """Spawn the engine child and send it its config; wait_ready() tells when it loaded."""
        self._ready = asyncio.get_running_loop().create_future()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "glyph_guard_demo.standin.engine",
            f"--name={ENGINE_TITLE}",
            f"--api-pid={os.getpid()}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            env=engine_environment(),
        )
        await self._write(self.config.model_dump_json().encode() + b"\n")
        self._reader = asyncio.create_task(self._read(), name="engine-reader")

    async def wait_ready(self) -> None:
        assert self._ready is not None, "start() first"
        await asyncio.shield(self._ready)

    async def wait_exit(self) -> int:
        await self._exited.wait()
        return self.exit_code if self.exit_code is not None else -1

    async def complete(
        self, text: str, max_tokens: int | None, ignore_eos: bool = False
    ) -> Completion:
        """Queue one request at the engine and wait for its answer (EngineDead if it dies)."""
        if not self.alive:
            raise EngineDead("the engine process is dead")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._states[request_id] = "waiting"
        try:
            await self._write(
                protocol.encode(
                    protocol.REQUEST,
                    id=request_id,
                    text=text,
                    max_tokens=max_tokens,
                    ignore_eos=ignore_eos,
                )
            )
        except EngineDead:
            self._forget(request_id)
            raise
        # A client that gives up does not un-queue the request: a hung engine keeps it waiting.
        return await future

    async def control(self, fault: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        """Send a fault switch; return the engine's state after it (ControlError if refused)."""
        seq = next(self._seq)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if wait:
            self._acks[seq] = future
        await self._write(protocol.encode(protocol.CONTROL, seq=seq, fault=fault))
        if not wait:
            return {}
        try:
            return await asyncio.wait_for(future, _CONTROL_TIMEOUT)
        finally:
            self._acks.pop(seq, None)

    def fail_all(self, exc: Exception) -> None:
        """Answer every request in flight with this error (engine death, shutdown)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a client that left must not log a warning
        self._pending.clear()
        self._states.clear()
        self._publish()

    async def stop(self, grace: float = 3.0) -> None:
        """Ask the engine to shut down; terminate, then kill it if it does not."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            await self._join_reader()
            return
        steps: tuple[Callable[[], None] | None, ...] = (None, proc.terminate, proc.kill)
        if self._ready is not None and self._ready.done():
            with contextlib.suppress(EngineDead):
                await self._write(protocol.encode(protocol.SHUTDOWN))
        else:
            steps = steps[1:]  # still loading, reading no messages: terminate it now
        if proc.stdin is not None:
            proc.stdin.close()
        for action in steps:
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                await asyncio.wait_for(proc.wait(), grace)
                break
            except asyncio.TimeoutError:
                continue
        await self._join_reader()

    async def _join_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 2.0)

    async def _write(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or self._exited.is_set():
            raise EngineDead("the engine process is dead")
        async with self._write_lock:
            try:
                proc.stdin.write(data)
                await proc.stdin.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                raise EngineDead(f"the engine process is dead: {exc}") from None

    def _forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)
        self._states.pop(request_id, None)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        while True:
            try:
                line = await stdout.readline()
            except (ValueError, asyncio.LimitOverrunError, OSError):
                break
            if not line:
                break
            try:
                self._dispatch(protocol.decode(line))
            except ValueError:
                continue
        code = await self.proc.wait()
        self._exited.set()
        self.fail_all(EngineDead(f"the engine process exited with code {code}"))
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(EngineDead("the engine process is dead"))
        if self._ready is not None and not self._ready.done():
            message = self._fatal or f"the engine exited with code {code} while loading"
            self._ready.set_exception(EngineStartError(message, 2 if self._fatal else 1))
            self._ready.exception()  # retrieved: nobody waits for it when the start was stopped

    def _dispatch(self, message: dict[str, Any]) -> None:
        self._on_message(message)
        if message["type"] in (protocol.STEP, protocol.STARTED, protocol.DONE, protocol.FAILED):
            self._publish()

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        request_id = str(message.get("id", ""))
        if kind == protocol.READY:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif kind == protocol.FATAL:
            self._fatal = str(message.get("message", "engine failed"))
        elif kind == protocol.STEP:
            self.on_step(int(message.get("tokens") or 0))
        elif kind == protocol.STARTED:
            if request_id in self._states:
                self._states[request_id] = "running"
        elif kind == protocol.DONE:
            future = self._pending.pop(request_id, None)
            self._states.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(
                    Completion(
                        tokens=[str(token) for token in message.get("tokens", [])],
                        finish_reason=str(message.get("finish_reason", "stop")),
                        prompt_tokens=int(message.get("prompt_tokens", 0)),
                        pages=[str(page) for page in message.get("pages", [])],
                    )
                )
        elif kind == protocol.FAILED:
            future = self._pending.pop(request_id, None)
            self._states.pop(request_id, None)
            if future is not None and not future.done():
                future.set_exception(RequestFailed(str(message.get("message", "engine error"))))
        elif kind == protocol.ACK:
            ack = self._acks.get(int(message.get("seq") or 0))
            if ack is not None and not ack.done():
                if message.get("ok"):
                    ack.set_result(dict(message.get("state") or {}))
                else:
                    ack.set_exception(ControlError(str(message.get("message", "refused"))))
