"""Helpers the stand-in tests share: starting its components as real processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from glyph_guard_demo.testkit.support import REPO, Spawned, free_port, spawned, wait_for


def standin_api_argv(port: int, step_seconds: float, pages_dir: Path) -> list[str]:
    """The stand-in api on a port, its engine taking step_seconds per token, /load served,
    its rendered pages under pages_dir (the caller's temporary directory)."""
    return [
        sys.executable,
        "-m",
        "glyph_guard_demo.standin",
        "api",
        "--port",
        str(port),
        "--pages-dir",
        str(pages_dir),
        "--enable-server-load-tracking",
        "--step-seconds",
        str(step_seconds),
    ]


STANDIN = [sys.executable, "-m", "glyph_guard_demo.standin"]
START_TIMEOUT = 30.0


@dataclass
class Running:
    """A stand-in component started by a test."""

    proc: Spawned
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exited(self) -> int | None:
        code: int | None = self.proc.proc.poll()
        return code

    def find_engine(self) -> psutil.Process | None:
        """The engine child of this API process, if it has one now."""
        try:
            children = psutil.Process(self.pid).children()
            engines = [c for c in children if "glyph-standin-engine" in " ".join(c.cmdline())]
        except psutil.Error:
            return None
        assert len(engines) <= 1, f"more than one engine child: {engines}"
        return engines[0] if engines else None

    def engine(self) -> psutil.Process:
        engine = self.find_engine()
        assert engine is not None, f"no engine child of {self.pid}"
        return engine


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextmanager
def start(
    kind: str,
    tmp: Path,
    *flags: str,
    ready_path: str | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Running]:
    """Start `python -m standin KIND --port P FLAGS`; wait until ready_path answers 200."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"{kind}-{port}.log"
    argv: list[str] = [*STANDIN, kind, "--port", str(port), "--log-level", "warning"]
    if kind == "api":
        argv += ["--pages-dir", str(tmp / "pages")]
    argv += list(flags)
    with (
        log.open("wb") as out,
        spawned(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env(env)) as proc,
    ):
        running = Running(proc, port, log)
        if ready_path is not None:
            wait_until_ready(running, ready_path)
        yield running
        proc.stop()
    output = log.read_text(errors="replace")
    for sign in ("Traceback", "never retrieved", "Exception ignored", "was destroyed"):
        assert sign not in output, f"{kind} logged {sign!r}:\n{output}"


def wait_until_ready(running: Running, path: str, timeout: float = START_TIMEOUT) -> None:
    def ready() -> bool:
        code = running.exited()
        if code is not None:
            raise AssertionError(f"exited with {code} while starting:\n{running.output()}")
        return answers(running.url + path)

    wait_for(ready, timeout, interval=0.05)


@contextmanager
def api(tmp: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    with start("api", tmp, *flags, ready_path="/health", env=env) as running:
        yield running


@contextmanager
def ui(tmp: Path, api_url: str, *flags: str) -> Iterator[Running]:
    cache = ["--cache-dir", str(tmp / "cache")]
    with start("ui", tmp, "--api-url", api_url, *cache, *flags, ready_path="/config") as running:
        yield running


def run_to_end(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a stand-in command that is expected to exit by itself."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=_env(None),
        check=False,
    )


def chat(url: str, text: str = "hello", timeout: float = 10.0, **extra: object) -> httpx.Response:
    body = {"model": "glyph", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def admin(url: str, **fault: object) -> httpx.Response:
    return httpx.post(f"{url}/admin/fault", json=fault, timeout=10.0)


def metric(url: str, name: str, **labels: str) -> float:
    """One vllm: sample with vLLM's engine labels (model_name="glyph", engine="0")."""
    wanted = {"model_name": "glyph", "engine": "0", **labels}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5.0).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    raise AssertionError(f"{name}{wanted} not in /metrics")


def gone(pid: int) -> bool:
    """True when the process no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_pid(pid: int) -> None:
    with suppress(psutil.NoSuchProcess):
        psutil.Process(pid).kill()


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
