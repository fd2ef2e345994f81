"""Starting and stopping the local stack's processes: each in its own session, logged to a file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from glyph_guard.common.stopping import group_members, stop_tree


class StackError(Exception):
    """The local stack cannot run; the message says what to do."""


def child_environment() -> dict[str, str]:
    """This environment, with this interpreter's bin directory first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def find_binary(*names: str) -> str:
    """The first of names found on PATH, or a StackError saying how to install it."""
    for name in names:
        path = shutil.which(name, path=child_environment()["PATH"])
        if path:
            return path
    raise StackError(
        f"{names[0]} is not installed: run `bash scripts/bootstrap.sh` (it installs Debian's "
        "prometheus and prometheus-alertmanager packages)"
    )


@dataclass
class Service:
    """One process of the stack."""

    name: str
    argv: Sequence[str]
    log: Path
    ready_url: str | None = None
    env: Mapping[str, str] = field(default_factory=child_environment)
    ready_check: Callable[[], bool] | None = None  # instead of ready_url answering 200
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(self.env),
                cwd=self.cwd,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> None:
        if self.ready_url is None and self.ready_check is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log}"
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise StackError(f"{self.name} was not ready within {timeout:g} s; see {self.log}")

    def _ready(self) -> bool:
        if self.ready_check is not None:
            return self.ready_check()
        assert self.ready_url is not None
        with suppress(httpx.HTTPError):
            return httpx.get(self.ready_url, timeout=1.0).status_code == 200
        return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the service's process group, then SIGKILL what is left of it."""
        if self.process is not None:
            stop_group(self.process.pid, grace, reap=self.process.poll)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(2.0)


def stop_group(pgid: int, grace: float, reap: Callable[[], object] | None = None) -> None:
    """End a process group this stack started, and the children of its members."""
    stop_tree(group_members(pgid), grace)
    if reap is not None:
        reap()  # our own child stays a zombie until reaped
