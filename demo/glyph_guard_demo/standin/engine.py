"""The stand-in's engine child process (like vLLM's EngineCore): renders pages, plays faults."""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from glyph_guard_demo.standin import protocol
from glyph_guard_demo.standin.gpu import GpuHog, GpuUnavailable
from glyph_guard_demo.standin.leak import MIB, MemoryHog
from glyph_guard_demo.standin.names import ENGINE_TITLE, WORKER_TITLE
from glyph_guard_demo.standin.render import prune, render_pages

_PARENT_POLL_SECONDS = 0.25
_TOKEN = re.compile(r"\S+\s*")


def log(message: str) -> None:
    print(f"{ENGINE_TITLE}[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Channel:
    """Messages to the API process on the engine's stdout; silent once the reader is gone."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        with self._lock:
            try:
                self._stream.write(protocol.encode(kind, **fields))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the API process is gone; the parent watch decides what happens next


def completion_tokens(
    pages: int, chars: int, max_tokens: int | None, ignore_eos: bool = False
) -> tuple[list[str], str]:
    """The stand-in's answer as word tokens, cut to max_tokens, and the finish reason; with
    ignore_eos (as vLLM's benchmarks ask) it runs on to max_tokens: a long generation."""
    plural = "" if pages == 1 else "s"
    text = (
        f"The Glyph stand-in rendered {pages} page{plural} from {chars} characters of text. "
        "No model was run."
    )
    tokens = _TOKEN.findall(text)
    if ignore_eos and max_tokens is not None:
        return list(islice(cycle(tokens), max_tokens)), "length"
    if max_tokens is not None and max_tokens < len(tokens):
        return tokens[:max_tokens], "length"
    return tokens, "stop"


@dataclass
class Sequence:
    """A request the engine has prefilled: its answer comes out one token per step."""

    answer: dict[str, Any]
    emitted: int = 0

    @property
    def done(self) -> bool:
        return self.emitted >= len(self.answer["tokens"])


class Engine:
    """The engine's state: a request queue served by one worker thread, and the faults."""

    def __init__(
        self, config: protocol.EngineConfig, channel: Channel, parent: int | None = None
    ) -> None:
        self.config = config
        self.channel = channel
        self.pages_dir = Path(config.pages_dir)
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.hang = threading.Event()
        if config.hang:
            self.hang.set()
        self.slow_seconds = config.slow_seconds
        self.slow_prefill_seconds = config.slow_prefill_seconds
        self.orphan = config.orphan_on_parent_death
        self.rss = MemoryHog()
        self.gpu = GpuHog()
        self.gpu_leak_mb_per_request = config.gpu_leak_mb_per_request
        self.parent = parent or os.getppid()
        self._orphaned = False

    # start-up ----------------------------------------------------------------------------
    def load(self) -> None:
        """Play model loading: wait, then take the GPU memory asked for (GpuUnavailable if none)."""
        if self.config.startup_delay:
            log(f"loading the model (stand-in: sleeping {self.config.startup_delay} s)")
            time.sleep(self.config.startup_delay)
        if self.config.gpu_memory_mb or self.config.gpu_leak_mb_per_request:
            self.gpu.open()
            self.gpu.allocate(self.config.gpu_memory_mb)
        self.rss.configure(self.config.rss_mb_per_request, self.config.rss_mb_per_minute)

    def watch_parent(self) -> None:
        threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()

    def start_threads(self) -> None:
        threading.Thread(target=self._work, name="worker", daemon=True).start()
        if self.config.death_after_seconds is not None:
            timer = threading.Timer(self.config.death_after_seconds, self.die, args=(1,))
            timer.daemon = True
            timer.start()

    # parent ------------------------------------------------------------------------------
    def _watch_parent(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(_PARENT_POLL_SECONDS)
        self.parent_gone()

    def parent_gone(self) -> None:
        """The API process vanished without telling us: exit, or stay behind as an orphan."""
        if not self.orphan:
            log("the API process is gone; exiting")
            os._exit(0)
        if self._orphaned:
            return
        self._orphaned = True
        log("the API process is gone; staying behind as an orphan (--orphan-engine-on-crash)")

    def die(self, code: int) -> None:
        log(f"engine death (fault): exiting with code {code}")
        os._exit(code)

    # requests ----------------------------------------------------------------------------
    def _work(self) -> None:
        """vLLM's loop in miniature: no steps while idle; each step either prefills the
        requests just admitted or decodes one token of every running one."""
        running: list[Sequence] = []
        while True:
            admitted = [] if running else [self.requests.get()]
            while len(running) + len(admitted) < self.config.max_running:
                try:
                    admitted.append(self.requests.get_nowait())
                except queue.Empty:
                    break
            while self.hang.is_set():  # requests in flight stay where they are
                time.sleep(0.1)
            if admitted:
                running.extend(self._prefill(admitted))
            else:
                self._decode(running)
            running = [seq for seq in running if not seq.done]

    def _prefill(self, requests: list[dict[str, Any]]) -> list[Sequence]:
        """One step per request admitted, as chunked prefill bounds each step's work."""
        for request in requests:
            self.channel.send(protocol.STARTED, id=request["id"])
        prefilled: list[Sequence] = []
        for request in requests:
            if self.slow_prefill_seconds:
                time.sleep(self.slow_prefill_seconds)  # one long step: steps pause, then go on
            try:
                seq = Sequence(self.complete(request))
            except Exception as exc:  # one bad request must not kill the engine
                self.channel.send(protocol.FAILED, id=request["id"], message=str(exc))
                continue
            self.channel.send(protocol.STEP, tokens=seq.answer["prompt_tokens"])
            self._finish([seq])
            prefilled.append(seq)
        return prefilled

    def _decode(self, running: list[Sequence]) -> None:
        time.sleep(self.config.step_seconds)
        for seq in running:
            seq.emitted += 1
        self.channel.send(protocol.STEP, tokens=len(running))
        self._finish(running)

    def _finish(self, sequences: list[Sequence]) -> None:
        for seq in sequences:
            if seq.done:
                self.channel.send(protocol.DONE, **seq.answer)

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.slow_seconds:
            time.sleep(self.slow_seconds)
        text = str(request.get("text", ""))
        out_dir = self.pages_dir / f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"
        pages = render_pages(text, out_dir)
        prune(self.pages_dir, self.config.keep_pages)
        self.rss.on_request()
        if self.gpu_leak_mb_per_request:
            self.gpu.allocate(self.gpu_leak_mb_per_request)
        max_tokens = request.get("max_tokens")
        tokens, finish = completion_tokens(
            len(pages),
            len(text),
            max_tokens if isinstance(max_tokens, int) else None,
            bool(request.get("ignore_eos")),
        )
        return {
            "id": request["id"],
            "tokens": tokens,
            "finish_reason": finish,
            "prompt_tokens": max(1, len(text.split())),
            "pages": [str(path) for path in pages],
        }

    # control -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "hang": self.hang.is_set(),
            "slow_seconds": self.slow_seconds,
            "slow_prefill_seconds": self.slow_prefill_seconds,
            "queued": self.requests.qsize(),
            "orphan_on_parent_death": self.orphan,
            "rss_leak": {
                "mb_per_request": self.rss.mb_per_request,
                "mb_per_minute": self.rss.mb_per_minute,
                "held_mb": round(self.rss.held_bytes / MIB, 1),
            },
            "gpu": {
                "backend": self.gpu.backend or None,
                "held_mb": round(self.gpu.held_bytes / MIB, 1),
                "leak_mb_per_request": self.gpu_leak_mb_per_request,
            },
        }

    def control(self, fault: dict[str, Any]) -> None:
        """Apply one fault switch (validated by the API process) and acknowledge it."""
        kind = fault.get("fault")
        if kind == "engine_death":
            self.die(int(fault.get("exit_code", 1)))
        elif kind == "hang":
            if fault.get("enabled", True):
                self.hang.set()
            else:
                self.hang.clear()
        elif kind == "slow":
            self.slow_seconds = float(fault["seconds"])
        elif kind == "slow_prefill":
            self.slow_prefill_seconds = float(fault["seconds"])
        elif kind == "rss_leak":
            self.rss.configure(float(fault["mb_per_request"]), float(fault["mb_per_minute"]))
        elif kind == "gpu_leak":
            self.gpu.allocate(float(fault.get("allocate_mb", 0.0)))
            self.gpu_leak_mb_per_request = float(fault.get("mb_per_request", 0.0))
            if self.gpu_leak_mb_per_request:
                self.gpu.open()
        elif kind == "orphan":
            self.orphan = bool(fault.get("enabled", True))
        elif kind == "clear":
            self.hang.clear()
            self.slow_seconds = 0.0
            self.slow_prefill_seconds = 0.0
            self.rss.configure(0.0, 0.0)
            self.gpu_leak_mb_per_request = 0.0

    def serve(self, stdin: BinaryIO) -> int:
        """Read requests and control messages until shutdown or until the API process is gone."""
        for line in stdin:
            try:
                message = protocol.decode(line)
            except ValueError as exc:
                log(f"ignoring a bad message: {exc}")
                continue
            kind = message["type"]
            if kind == protocol.REQUEST:
                self.requests.put(message)
            elif kind == protocol.CONTROL:
                seq = message.get("seq")
                try:
                    self.control(message.get("fault") or {})
                except GpuUnavailable as exc:
                    self.channel.send(protocol.ACK, seq=seq, ok=False, message=str(exc))
                else:
                    self.channel.send(protocol.ACK, seq=seq, ok=True, state=self.state())
            elif kind == protocol.SHUTDOWN:
                return 0
        self.parent_gone()
        while True:  # an orphan holds its memory until someone kills it
            time.sleep(3600)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def spawn_worker() -> None:
    """The engine's own child, as vLLM's EngineCore has its Worker: it lives as long as the
    engine does (an orphaned engine keeps it), and exits once the engine is gone."""
    subprocess.Popen(  # reaped by init when the engine ends before it
        [
            sys.executable,
            "-m",
            "glyph_guard_demo.standin.engine",
            f"--name={WORKER_TITLE}",
            "--worker",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # the protocol pipe must close when the engine dies
    )


def run_worker() -> int:
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=ENGINE_TITLE, description="Engine child of the Glyph stand-in API (not the model)."
    )
    parser.add_argument("--name", default=ENGINE_TITLE, help="a label that names the process")
    parser.add_argument("--api-pid", type=int, default=None, help="the API process (for ps)")
    parser.add_argument("--worker", action="store_true", help="run as the engine's worker")
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API process decides when we stop
    signal.signal(signal.SIGTERM, _terminate)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must never corrupt the protocol
    channel = Channel(out)
    first = sys.stdin.buffer.readline()
    if not first:
        return 0
    try:
        config = protocol.EngineConfig.model_validate_json(first)
    except ValueError as exc:
        channel.send(protocol.FATAL, code=2, message=f"bad engine config: {exc}")
        return 2
    engine = Engine(config, channel, args.api_pid)
    engine.watch_parent()
    try:
        engine.load()
    except GpuUnavailable as exc:
        channel.send(protocol.FATAL, code=2, message=str(exc))
        return 2
    spawn_worker()
    engine.start_threads()
    channel.send(protocol.READY, pid=os.getpid())
    log("ready")
    code = engine.serve(sys.stdin.buffer)
    sys.stderr.flush()
    os._exit(code)  # do not wait for a worker that may be hung on purpose


if __name__ == "__main__":
    sys.exit(main())
