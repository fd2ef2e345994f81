"""The served engines the `vllm` tier compares: the stand-in and the real vLLM (CPU build)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from glyph_guard_demo.testkit import standin_fixtures, vllm_server

ENGINES = ("standin", pytest.param("vllm", marks=pytest.mark.vllm))


@dataclass(frozen=True)
class Served:
    """An API process and its engine, started by a test in its own session."""

    kind: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return int(self.popen.pid)

    @property
    def titles(self) -> tuple[str, str]:
        """What the engine and its worker are called in their command lines."""
        if self.kind == "vllm":
            return ("VLLM::EngineCore", "VLLM::Worker")
        return ("glyph-standin-engine", "glyph-standin-worker")

    def _named(self, title: str, under: int) -> psutil.Process | None:
        try:
            found = [
                p
                for p in psutil.Process(under).children(recursive=True)
                if title in " ".join(p.cmdline())
            ]
        except psutil.Error:
            return None
        assert len(found) <= 1, f"more than one {title}: {found}"
        return found[0] if found else None

    def engine(self) -> psutil.Process:
        engine = self._named(self.titles[0], self.pid)
        assert engine is not None, f"no {self.titles[0]} under {self.pid}"
        return engine

    def worker(self) -> psutil.Process:
        engine = self.engine()
        worker = self._named(self.titles[1], engine.pid)
        assert worker is not None, f"no {self.titles[1]} under the engine {engine.pid}"
        return worker

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve(kind: str, tmp: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """The stand-in's API or `vllm serve`, healthy, with the flags both understand."""
    if kind == "vllm":
        with vllm_server.vllm_server(tmp, *flags, env=env) as server:
            yield Served(kind, server.url, server.proc, server.log)
        return
    started: AbstractContextManager[standin_fixtures.Running] = standin_fixtures.start(
        "api", tmp, *flags, ready_path="/health", env=env
    )
    with started as running:
        yield Served(kind, running.url, running.proc.proc, running.log)


@pytest.fixture(scope="session")
def vllm_installed() -> None:
    """Install vLLM's CPU build and build the tiny model once (both are cached)."""
    try:
        vllm_server.ensure_model()
    except vllm_server.VllmUnavailable as exc:
        pytest.fail(str(exc))
