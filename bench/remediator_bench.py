"""Remediator benchmark: 5,000 webhook deliveries from 50 concurrent clients, one restart expected.

Starts a real glyph-remediator (uvicorn, loopback) in a subprocess with one `command` component
whose start is a trivial healthy HTTP process, sends the deliveries (mostly the same firing
alert, plus new fingerprints, resolved alerts and unknown components), and prints how many
restarts happened, how many 5xx came back, p50/p99 response times and throughput.
Every process it starts is ended by process group when it finishes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from glyph_guard_demo.testkit.support import free_port

TOKEN = "bench-token"
HEALTHY = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {
        "action": "restart",
        "alertname": "GlyphComponentDown",
        "component": "api",
        "severity": "critical",
    },
    "annotations": {"summary": "api is down"},
    "startsAt": "2026-11-24T17:24:52.426Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://vm:19090/graph?g0.expr=up&g0.tab=1",
    "fingerprint": "0841a20fe06ea8c7",
}


def delivery(index: int) -> dict[str, Any]:
    """Mostly the same firing alert; every 20th something else."""
    item = copy.deepcopy(ALERT)
    kind = index % 20 if index else 0
    if kind == 5:
        item["fingerprint"] = f"{index:016x}"  # another alert for the same component
        item["labels"]["alertname"] = "GlyphComponentHung"
    elif kind == 10:
        item["status"] = "resolved"
        item["endsAt"] = "2026-11-24T17:25:02.426Z"
    elif kind == 15:
        item["labels"]["component"] = "db"  # names no component
    return {
        "version": "4",
        "groupKey": '{}:{alertname="GlyphComponentDown"}',
        "truncatedAlerts": 0,
        "status": item["status"],
        "receiver": "remediator",
        "groupLabels": {"alertname": item["labels"]["alertname"]},
        "commonLabels": item["labels"],
        "commonAnnotations": item["annotations"],
        "externalURL": "http://vm:19093",
        "alerts": [item],
    }


def write_config(workdir: Path, port: int, service_port: int, mark: str) -> Path:
    (workdir / "token").write_text(TOKEN)
    (workdir / "token").chmod(0o600)
    config = {
        "components": {
            "api": {
                "match": {"cmdline": re.escape(mark)},
                "port": service_port,
                "probes": [{"name": "health", "path": "/health"}],
                "remediation": {
                    "actions": ["restart"],
                    "restart": {"start": [sys.executable, "-c", HEALTHY, str(service_port), mark]},
                    "stop_grace_seconds": 1,
                    "startup_timeout_seconds": 30,
                },
            }
        },
        "remediator": {
            "listen": f"127.0.0.1:{port}",
            "token_file": str(workdir / "token"),
            "state_db": str(workdir / "state.sqlite"),
            "log_dir": str(workdir / "logs"),
            "budget": {"cooldown_seconds": 600},
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def send_all(
    url: str, total: int, clients: int, rate: float
) -> tuple[list[float], Counter[int], float]:
    """Send total deliveries from `clients` concurrent clients (one connection each).

    With a rate, delivery j is due at start + j / rate and its time counts from then, so a
    client that falls behind is charged for the wait (no coordinated omission); without
    one, every client sends its next delivery as soon as the last one is answered.
    """
    bodies = [json.dumps(delivery(i)).encode() for i in range(total)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = 0
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1)
    pool = [
        httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30)
        for _ in range(clients)
    ]

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        async with http:
            await http.get("/healthz")  # connect before the clock starts
            await ready.wait()
            while next_index < total:
                index = next_index
                next_index += 1
                started = time.perf_counter()
                if rate:
                    due = began + index / rate
                    await asyncio.sleep(due - started)
                    started = due
                response = await http.post("/alerts", content=bodies[index])
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client(http)) for http in pool]
    await asyncio.sleep(0.5)
    began = time.perf_counter() + 0.01
    ready.set()
    await asyncio.gather(*tasks)
    return latencies, statuses, time.perf_counter() - began


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the remediator exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the remediator did not come up")


def wait_restarts(url: str, timeout: float = 60) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + timeout
    while True:
        actions: list[dict[str, Any]] = httpx.get(
            url + "/actions", params={"limit": 1000}, headers=headers
        ).json()
        if (actions and all(a["outcome"] for a in actions)) or time.monotonic() > deadline:
            return actions
        time.sleep(0.1)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


@dataclass(frozen=True)
class Phase:
    """One batch of deliveries and what came back."""

    name: str
    latencies: list[float]
    statuses: Counter[int]
    elapsed: float

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    def report(self) -> None:
        ms = [statistics.median(self.latencies), self.p99, max(self.latencies)]
        p50, p99, top = (f"{v * 1000:.2f}" for v in ms)
        print(f"{self.name}")
        print(f"  statuses            {dict(sorted(self.statuses.items()))} ({self.errors} 5xx)")
        print(f"  response time       p50 {p50} ms, p99 {p99} ms, max {top} ms")
        rate = len(self.latencies) / self.elapsed
        print(f"  throughput          {rate:.0f} deliveries/s over {self.elapsed:.2f} s")


def run_phases(url: str, args: argparse.Namespace) -> list[Phase]:
    phases = []
    for name, rate in [
        (f"paced: {args.rate:g} deliveries/s offered", args.rate),
        ("saturated: each client sends as soon as answered", 0.0),
    ]:
        latencies, statuses, elapsed = asyncio.run(
            send_all(url, args.deliveries, args.clients, rate)
        )
        phases.append(Phase(name, latencies, statuses, elapsed))
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=5000, help="per phase")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=400, help="offered load of the paced phase")
    args = parser.parse_args()
    mark = f"glyph-bench-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="remediator-bench-") as tmp:
        workdir = Path(tmp)
        port, service_port = free_port(), free_port()
        config = write_config(workdir, port, service_port, mark)
        url = f"http://127.0.0.1:{port}"
        with open(workdir / "remediator.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "glyph_guard.remediator", "--config", str(config)],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        actions: list[dict[str, Any]] = []
        try:
            wait_up(url, server)
            phases = run_phases(url, args)
            actions = wait_restarts(url)
            metrics = httpx.get(url + "/metrics").text
        finally:
            for action in actions:
                started = action["details"].get("started_pid")
                if started:
                    kill_group(started)
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                kill_group(server.pid)
                server.wait(5)

    restarts = [a for a in actions if a["action"] == "restart"]
    skipped = re.findall(r'alerts_skipped_total\{reason="(\w+)"\} ([0-9.e+]+)', metrics)
    total = sum(len(p.latencies) for p in phases)
    print(f"{total} webhook deliveries from {args.clients} concurrent clients, one firing alert")
    print(f"restarts              {len(restarts)} ({', '.join(a['outcome'] for a in restarts)})")
    print(
        f"skipped by reason     {', '.join(f'{r}={float(n):.0f}' for r, n in skipped if float(n))}"
    )
    for phase in phases:
        phase.report()
    print("  (saturated: latency is queueing, about clients / throughput, by Little's law)")
    targets = {
        "exactly one restart": len(restarts) == 1,
        "no 5xx": sum(p.errors for p in phases) == 0,
        "paced p99 <= 20 ms": phases[0].p99 <= 0.020,
    }
    for name, met in targets.items():
        print(f"target {name:<20} {'met' if met else 'MISSED'}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
