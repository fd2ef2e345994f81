"""Helpers the tests share: free loopback ports, waiting, and processes the tests own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll until check() returns something truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {last!r})")
        time.sleep(interval)
        last = check()
    return last


def python_argv(code: str, *args: str) -> list[str]:
    """argv that runs a snippet in this interpreter."""
    return [sys.executable, "-c", code, *args]


class Spawned:
    """A process group started by a test, ended by its process group only."""

    def __init__(self, argv: Sequence[str], **kwargs: object) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            **kwargs,  # type: ignore[call-overload]
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        _signal_group(self.proc.pid, signal.SIGKILL)  # children that outlived their leader
        if self.proc.poll() is None:
            self.proc.wait(5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextmanager
def spawned(argv: Sequence[str], **kwargs: object) -> Iterator[Spawned]:
    """Start a process in its own session; end its whole group on exit."""
    proc = Spawned(argv, **kwargs)
    try:
        yield proc
    finally:
        proc.stop()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of an exposition, keyed by sample name and label set."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, /, **labels: str
) -> float | None:
    """One sample's value, or None when it is absent."""
    return samples.get((name, frozenset(labels.items())))
