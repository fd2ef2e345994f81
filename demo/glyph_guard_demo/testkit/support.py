"""Helpers the tests share: free loopback ports, waiting, and processes the tests own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[3]  # the checkout the tests and benchmarks run from


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now and no earlier call returned."""
    with _HANDED_OUT_LOCK:
        while True:
            # The kernel may give a just-closed port 0 binding the same number twice in a row,
            # before the first caller's service has bound it.
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def wait_for(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Poll until check() returns something truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = check()
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
        return int(self.proc.pid)

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


_HOLDER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.monotonic() + 10
while True:  # the port may still be held by a process just killed
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)
s.listen()
print("ready", flush=True)
time.sleep(600)
"""


@contextmanager
def port_holder(port: int) -> Iterator[Spawned]:
    """A stray process (no component's) listening on the port, once it is free."""
    with spawned(python_argv(_HOLDER, str(port), "a-stray-process"), stdout=-1) as stray:
        assert stray.proc.stdout is not None
        try:
            assert stray.proc.stdout.readline().strip() == b"ready"
            yield stray
        finally:
            stray.proc.stdout.close()


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server that reads a request and lets answer() write whatever it likes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            answer(conn)
        except OSError:
            pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()
        listener.close()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of an exposition, keyed by sample name and label set."""
    from glyph_guard_demo.stack.scenario import parse_samples  # noqa: PLC0415

    return parse_samples(text)


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, /, **labels: str
) -> float | None:
    """One sample's value, or None when it is absent."""
    return samples.get((name, frozenset(labels.items())))


def past_cooldown(actions: Iterable[Mapping[str, Any]], cooldown: float) -> bool:
    """None of these recorded actions (the remediator's /actions) still runs, and the last one
    finished more than a cooldown ago: a new alert about the component then acts at once."""
    finished = [a["finished_at"] for a in actions]
    if None in finished:
        return False
    return time.time() > max((float(f) for f in finished), default=0.0) + cooldown


def webhooks_settled(alertmanager_url: str) -> bool:
    """Every webhook notification this Alertmanager began has ended: answered (the remediator
    judges and records a delivery before it answers) or failed for good, none in flight."""
    import httpx  # noqa: PLC0415

    text = httpx.get(f"{alertmanager_url}/metrics", timeout=5, trust_env=False).text
    samples = parse_metrics(text)

    def total(name: str) -> float:
        return sum(
            value
            for (sample_name, labels), value in samples.items()
            if sample_name == name and ("integration", "webhook") in labels
        )

    begun = total("alertmanager_notifications_total")
    answered = total("alertmanager_notification_requests_total") - total(
        "alertmanager_notification_requests_failed_total"
    )
    return begun == answered + total("alertmanager_notifications_failed_total")


class PrometheusServer:
    """A real Prometheus started by a test on loopback, with an instant-query helper."""

    def __init__(self, proc: Spawned, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def query(
        self, expr: str, timeout: float = 10.0, at: float | None = None
    ) -> list[dict[str, object]]:
        """The series of an instant query (now, or at Unix time `at`); AssertionError with
        Prometheus' message on an error."""
        import httpx  # noqa: PLC0415

        form = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        response = httpx.post(
            f"{self.url}/api/v1/query", data=form, timeout=timeout, trust_env=False
        )
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"query failed ({response.status_code}): {expr}\n{body}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])


@contextmanager
def running_prometheus(
    config: Path,
    work_dir: Path,
    *flags: str,
    port: int | None = None,
    timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Start `prometheus` with a config file on 127.0.0.1; yield once /-/ready answers 200.

    Its TSDB and log live in work_dir; the process group is ended on exit. Extra flags
    (e.g. "--rules.alert.resend-delay=2s") are appended to the command line.
    """
    import shutil  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError(
            "prometheus is not installed: run `bash scripts/bootstrap.sh --test` (it installs "
            "Debian's prometheus package)"
        )
    port = port or free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / f"prometheus-{port}.log"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={work_dir / f'prometheus-data-{port}'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    with log.open("wb") as out, spawned(argv, stdout=out, stderr=subprocess.STDOUT) as proc:
        server = PrometheusServer(proc, port, log)

        def ready() -> bool:
            code = proc.proc.poll()
            if code is not None:
                raise AssertionError(f"prometheus exited with {code}:\n{server.output()}")
            try:
                return httpx.get(f"{server.url}/-/ready", timeout=1.0, trust_env=False).is_success
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, interval=0.1)
        yield server
