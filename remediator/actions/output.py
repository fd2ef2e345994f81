"""Where a started component's output goes: journald, a log pipe into a capped file, or nowhere.

A log that cannot be opened or written never stops a start: the output is discarded and the
action's details say why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glyph_guard.common.config import CommandRestart
from glyph_guard.remediator.logpipe import RotatingFile

PIPE_DRAIN_SECONDS = 2.0  # how long a failed start's tail waits for the pipe to write it


@dataclass
class Output:
    """The descriptor the component writes to, what the record says of it, and the log pipe."""

    fd: int
    details: dict[str, Any] = field(default_factory=dict)
    pipe: subprocess.Popen[bytes] | None = None
    _owned: bool = True  # the fd is ours to close once the component has it

    def started(self) -> None:
        """The component holds its copy now: close ours, so the pipe ends with the component."""
        if self._owned:
            os.close(self.fd)
            self._owned = False

    def drained(self) -> None:
        """Wait a little for the pipe to write what the component printed (e.g. before a tail)."""
        if self.pipe is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.pipe.wait(PIPE_DRAIN_SECONDS)


def journal_fd() -> int | None:
    """Our stdout or stderr when it is the journal stream systemd gave us (JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM")
    for fd in (2, 1):
        try:
            stat = os.fstat(fd)
        except OSError:
            continue
        if stream == f"{stat.st_dev}:{stat.st_ino}":
            return fd
    return None


def reaped(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """The process, reaped by a thread of its own so it never lingers as a zombie."""
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def open_output(name: str, method: CommandRestart, path: Path) -> Output:
    """The output for one start of component `name`: journald when the remediator runs under
    systemd and no log_file is set, else a log pipe into path; /dev/null when that fails."""
    if method.log_file is None and (fd := journal_fd()) is not None:
        return Output(fd, {"output": "journal"}, _owned=False)
    details: dict[str, Any] = {"log_file": str(path)}
    read_end = write_end = -1
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = RotatingFile(path, method.log_max_bytes, method.log_backups)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        header.write(f"--- glyph-remediator starts {name} at {stamp}\n".encode())
        header.close()
        read_end, write_end = os.pipe()
        argv = [sys.executable, "-m", "glyph_guard.remediator.logpipe"]
        argv += ["--max-bytes", str(method.log_max_bytes), "--backups", str(method.log_backups)]
        pipe = subprocess.Popen(
            [*argv, str(path)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # apart from our process group: our signals are not its
            close_fds=True,
        )
    except OSError as exc:
        for end in (read_end, write_end):
            if end >= 0:
                os.close(end)
        details.update(
            output="discarded",
            log_error=f"cannot log to {path} ({exc.strerror or exc}): output discarded",
        )
        return Output(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), details)
    os.close(read_end)
    details["log_pipe_pid"] = pipe.pid
    return Output(write_end, details, reaped(pipe))
